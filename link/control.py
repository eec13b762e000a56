"""The local control endpoint of the ATLAS daemons: `atlas-agent status` talks to it.

A Unix stream socket (default /run/atlas/agent/control.sock, in the unit's RuntimeDirectory)
served by one daemon thread. The protocol is one JSON object per line each way:

    request:  {"cmd": "status", "args": {}}
    response: {"ok": true, "result": {...}}   or   {"ok": false, "error": "what went wrong"}

The daemon passes a provider: a callable returning the status dict, or a mapping from command
name to a handler called with the request's "args" as keyword arguments. Handlers run in the
control thread, so they must read the daemon's state without blocking (return a snapshot).
A bad request, a failing handler or a result that is not JSON gets an error answer; nothing a
client sends can stop the server or the daemon.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import grp
import json
import logging
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Union

__all__ = [
    "AGENT_SOCKET",
    "CENTRAL_SOCKET",
    "ControlError",
    "DaemonNotRunning",
    "DaemonNotResponding",
    "ControlServer",
    "serve",
    "query",
    "format_human",
]

log = logging.getLogger(__name__)

AGENT_SOCKET = "/run/atlas/agent/control.sock"
CENTRAL_SOCKET = "/run/atlas/central/control.sock"

MAX_REQUEST = 64 * 1024  # a request is a command name and a few arguments
CLIENT_TIMEOUT = 5.0  # a client that stalls mid-request is dropped after this
_SUN_PATH_MAX = 107

Handler = Callable[..., Any]
Provider = Union[Callable[[], Any], Mapping[str, Handler]]


class ControlError(RuntimeError):
    """The daemon answered with an error, or the answer could not be read."""


class DaemonNotRunning(ControlError):
    """Nothing listens on the control socket: the daemon is not running (or uses another path)."""


class DaemonNotResponding(ControlError):
    """The daemon accepted the connection but did not answer in time (hung or overloaded)."""


class ControlServer:
    """A control socket served by a daemon thread. Use `serve()` to create one; `close()` stops it."""

    def __init__(self, path: str | os.PathLike, handlers: Mapping[str, Handler],
                 mode: int = 0o660, group: str | int | None = None) -> None:
        self.path = Path(path)
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            raise ValueError(f"control socket path is longer than {_SUN_PATH_MAX} bytes: {self.path}")
        self.handlers = dict(handlers)
        self.handlers.setdefault("ping", lambda: {"pong": True, "pid": os.getpid()})
        self.handlers.setdefault("commands", lambda: sorted(self.handlers))
        self.requests = 0
        self.errors = 0
        self._stop = threading.Event()
        self._sock = self._bind(mode, group)
        self._thread = threading.Thread(target=self._serve, name=f"control:{self.path.name}",
                                        daemon=True)
        self._thread.start()

    def _bind(self, mode: int, group: str | int | None) -> socket.socket:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise FileExistsError(f"control socket path exists and is not a socket: {self.path}")
            if _someone_listens(self.path):
                raise FileExistsError(f"another daemon already listens on {self.path}")
            self.path.unlink()  # stale socket of a daemon that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(str(self.path))
            self._inode = self.path.lstat().st_ino
            # Permissions are set before listen(): until then nobody can connect, so there is
            # no window in which the socket is open to everyone.
            if group is not None:
                gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
                os.chown(self.path, -1, gid)
            os.chmod(self.path, mode)
            sock.listen(8)
            sock.settimeout(0.2)  # lets close() stop the accept loop promptly
        except BaseException:
            sock.close()
            raise
        return sock

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("control socket accept failed")
                continue
            try:
                self._handle(conn)
            except Exception:  # a broken client must never stop the server
                log.exception("control connection failed")
            finally:
                conn.close()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT)
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                return
            if not chunk:
                if buf.strip():  # a last request without its newline
                    self._reply(conn, buf)
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    self._reply(conn, line)
            if len(buf) > MAX_REQUEST:
                self._send(conn, {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"})
                self.errors += 1
                return

    def _reply(self, conn: socket.socket, line: bytes) -> None:
        self.requests += 1
        answer = self.answer(line)
        if not answer["ok"]:
            self.errors += 1
        self._send(conn, answer)

    def answer(self, line: bytes) -> dict:
        """The response to one request line (public so the protocol can be tested without I/O)."""
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return {"ok": False, "error": f"request is not JSON: {err}"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object like {\"cmd\": \"status\"}"}
        cmd = request.get("cmd")
        if not isinstance(cmd, str):
            return {"ok": False, "error": "request has no \"cmd\" string"}
        args = request.get("args", {})
        if not isinstance(args, dict):
            return {"ok": False, "error": "\"args\" must be a JSON object"}
        handler = self.handlers.get(cmd)
        if handler is None:
            return {"ok": False,
                    "error": f"unknown command {cmd!r}; known: {', '.join(sorted(self.handlers))}"}
        try:
            result = handler(**args)
        except TypeError as err:
            return {"ok": False, "error": f"bad arguments for {cmd!r}: {err}"}
        except Exception as err:
            log.exception("control command %r failed", cmd)
            return {"ok": False, "error": f"{cmd!r} failed: {type(err).__name__}: {err}"}
        try:
            json.dumps(result, default=_jsonable)
        except (TypeError, ValueError) as err:
            return {"ok": False, "error": f"{cmd!r} returned data that is not JSON: {err}"}
        return {"ok": True, "result": result}

    def _send(self, conn: socket.socket, answer: dict) -> None:
        try:
            conn.sendall(json.dumps(answer, default=_jsonable).encode() + b"\n")
        except OSError:
            pass  # the client went away; its loss

    def close(self) -> None:
        """Stop serving and remove the socket file (only if it is still ours)."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._sock.close()
        try:
            if self.path.lstat().st_ino == self._inode:  # a successor may have bound it since
                self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "ControlServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(path: str | os.PathLike, provider: Provider, *, mode: int = 0o660,
          group: str | int | None = None) -> ControlServer:
    """Serve the control socket at `path` from a daemon thread; returns the running server.

    `provider` is either the status callable (answers {"cmd": "status"}) or a mapping of
    command names to handlers. "ping" and "commands" are always answered.
    """
    if callable(provider):
        handlers: Mapping[str, Handler] = {"status": provider}
    elif isinstance(provider, Mapping):
        handlers = provider
    else:
        raise TypeError("provider must be a callable or a mapping of command names to callables")
    return ControlServer(path, handlers, mode=mode, group=group)


def query(socket_path: str | os.PathLike, cmd: str = "status", timeout: float = 5.0,
          args: Mapping[str, Any] | None = None) -> Any:
    """Send one command to the daemon and return its result (usually a dict).

    Raises DaemonNotRunning when nothing listens, DaemonNotResponding on a timeout,
    PermissionError (with a hint) when the socket is not ours to use, and ControlError when
    the daemon answers with an error.
    """
    path = str(socket_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise DaemonNotRunning(
                f"no ATLAS daemon is listening on {path} ({err.strerror.lower()}); "
                "is it running? (systemctl status atlas-agent)") from None
        except PermissionError:
            raise PermissionError(
                f"permission denied on {path}: run as root or as a member of group 'atlas'"
            ) from None
        request = {"cmd": cmd, "args": dict(args or {})}
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            raise DaemonNotResponding(f"the daemon on {path} did not answer within {timeout:g} s") from None
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(f"unreadable answer from {path}: {data[:200]!r}") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ControlError(f"unexpected answer from {path}: {str(answer)[:200]}")
    if not answer["ok"]:
        raise ControlError(str(answer.get("error", "unknown error")))
    return answer.get("result")


def _someone_listens(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _jsonable(obj: Any) -> Any:
    """JSON for the types a status snapshot naturally holds (numpy scalars, dataclasses, ...)."""
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()  # numpy scalar
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()  # numpy array
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, (Path, bytes)):
        return os.fsdecode(obj) if isinstance(obj, Path) else obj.hex()
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def format_human(data: Any, indent: int = 0) -> str:
    """A plain, indented key: value rendering of a status result for terminals."""
    pad = "  " * indent
    if isinstance(data, Mapping):
        if not data:
            return pad + "(none)"
        lines = []
        for key, value in data.items():
            if isinstance(value, (Mapping, list, tuple)) and value:
                lines.append(f"{pad}{key}:")
                lines.append(format_human(value, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(value)}")
        return "\n".join(lines)
    if isinstance(data, (list, tuple)):
        if not data:
            return pad + "(none)"
        lines = []
        for item in data:
            if isinstance(item, Mapping) and item:
                body = format_human(item, indent + 1).lstrip()
                lines.append(f"{pad}- {body}")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
        return "\n".join(lines)
    return pad + _scalar(data)


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (Mapping, list, tuple)):
        return "(none)"
    return str(value)
