"""sd_notify for the ATLAS daemons: READY, STATUS, STOPPING and the watchdog, over $NOTIFY_SOCKET.

systemd's protocol is one AF_UNIX datagram of newline-separated ``KEY=value`` assignments sent to
the path in ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Outside systemd
the variable is absent and every call here is a cheap no-op that returns False, so the daemon
code needs no ``if under_systemd`` branches.

The watchdog is fed from the daemon's main loop: ``Watchdog.tick()`` is called once per loop
iteration and sends ``WATCHDOG=1`` at most every half ``$WATCHDOG_USEC``. There is deliberately
no background thread: a thread would keep pinging while the main loop is stuck, and systemd
would never restart the hung daemon.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, Mapping

__all__ = [
    "Notifier",
    "Watchdog",
    "default_notifier",
    "ready",
    "status",
    "stopping",
    "extend_timeout",
    "watchdog",
]


class Notifier:
    """Sends sd_notify datagrams to one socket; disabled (all no-ops) without an address."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram. True if the datagram was sent.

        A failure (systemd gone, socket removed) is reported as False, never raised: losing
        a notification must not take the daemon down.
        """
        if self.address is None or not assignments:
            return False
        for item in assignments:
            if "=" not in item or "\n" in item:
                raise ValueError(f"sd_notify assignment must be one KEY=value line: {item!r}")
        target = self.address
        if target.startswith("@"):  # abstract socket namespace
            target = "\0" + target[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(assignments).encode(), target)
            return True
        except OSError:
            self.close()
            return False

    def ready(self, status: str | None = None) -> bool:
        extra = (f"STATUS={_one_line(status)}",) if status else ()
        return self.send("READY=1", *extra)

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def stopping(self, status: str | None = None) -> bool:
        extra = (f"STATUS={_one_line(status)}",) if status else ()
        return self.send("STOPPING=1", *extra)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (a slow board loading its models)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog_ping(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """Feeds systemd's watchdog from the main loop: call ``tick()`` once per iteration.

    ``tick()`` costs one monotonic clock read when no ping is due, so it can run per batch.
    The interval is half of ``$WATCHDOG_USEC`` as systemd recommends; the watchdog is disabled
    when the variable is absent or ``$WATCHDOG_PID`` names another process.
    """

    def __init__(self, notifier: Notifier, interval: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._notifier = notifier
        self.interval = interval if (interval and interval > 0 and notifier.enabled) else None
        self._clock = clock
        self._last: float | None = None
        self.pings = 0

    @classmethod
    def from_env(cls, notifier: Notifier | None = None,
                 env: Mapping[str, str] | None = None) -> "Watchdog":
        env = os.environ if env is None else env
        notifier = notifier if notifier is not None else Notifier.from_env(env)
        return cls(notifier, _interval_from_env(env))

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def tick(self) -> bool:
        """Ping if half the watchdog period has passed since the last ping. True if it pinged."""
        if self.interval is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        if self._notifier.watchdog_ping():
            self.pings += 1
            return True
        return False


def _interval_from_env(env: Mapping[str, str]) -> float | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # the watchdog is meant for another process (e.g. we are a child)
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


_default: Notifier | None = None


def default_notifier() -> Notifier:
    """The process-wide notifier for $NOTIFY_SOCKET (read once, at first use)."""
    global _default
    if _default is None:
        _default = Notifier.from_env()
    return _default


def ready(status: str | None = None) -> bool:
    """Tell systemd the daemon is up (Type=notify units count as started only now)."""
    return default_notifier().ready(status)


def status(text: str) -> bool:
    """A one-line status shown by ``systemctl status``."""
    return default_notifier().status(text)


def stopping(status: str | None = None) -> bool:
    return default_notifier().stopping(status)


def extend_timeout(seconds: float) -> bool:
    return default_notifier().extend_timeout(seconds)


def watchdog() -> Watchdog:
    """A watchdog for this process, from $WATCHDOG_USEC; tick() it from the main loop."""
    return Watchdog.from_env(default_notifier())
