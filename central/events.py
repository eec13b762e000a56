"""The hub's event stream: what happened, published after the change is committed.

Every stage that changes the store collects its events in the operation's `Outbox`
(atlas.central.dispatch) and the hub publishes them only once the transaction has committed,
so a subscriber never sees something the store could still roll back. Events are facts, not
commands: a subscriber (the correlator, a policy's `observe`, a metrics exporter) reacts in its
own thread and never under the ingest lock.

`LocalBus`, the default, runs in the hub's process: one worker thread per subscription with a
bounded queue, so each subscriber sees its events in publication order, a slow one falls
behind alone (and its drops are counted, never blocking ingest), and a handler that raises is
logged and counted while the others go on.

A broker can carry the stream later without changing a stage: stages only call
`EventBus.publish` and `EventBus.subscribe`. A NATS JetStream bus would publish
`event.to_dict()` (JSON) on subject `atlas.hub.<kind>` in one stream, and `subscribe` would
make one durable consumer per subscription name filtered on its kinds, acking after the
handler returns; `Event.from_dict` rebuilds the event on the other side.

The audit log is NOT a subscriber: its hash-chained rows are written inside the transaction
of the change they record, so a decision and its audit row commit together or not at all.
A subscriber runs after the commit, and a crash between the two would leave a decision with
no audit row (and a broker's redelivery could append one twice, breaking the chain's meaning).
"""
from __future__ import annotations

import abc
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

log = logging.getLogger("atlas.central.events")

EVENT_KINDS = (
    "incident_opened", "incident_updated", "incident_closed",
    "decision_made", "decision_approved", "decision_rejected",
    "rule_issued", "rule_acked", "rule_refused", "rule_expired", "rule_revoked",
    "model_pushed", "model_acked",
    "gateway_connected", "gateway_lost",
    "campaign_opened", "campaign_updated",
)
# What a response policy learns from (atlas.central.decide.Policy.observe).
OUTCOME_KINDS = ("rule_acked", "rule_refused", "rule_expired", "rule_revoked",
                 "decision_approved", "decision_rejected", "incident_closed")
DEFAULT_QUEUE = 10_000


@dataclass(frozen=True)
class Event:
    """One fact: its kind (EVENT_KINDS), the hub clock's time, and JSON-able details."""

    kind: str
    time: float
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")
        # read-only: every subscriber gets the same object
        object.__setattr__(self, "payload", MappingProxyType(dict(self.payload)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "time": self.time, "payload": dict(self.payload)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Event":
        return cls(str(data["kind"]), float(data["time"]), dict(data.get("payload") or {}))


Handler = Callable[[Event], None]


def _check_kinds(kinds: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(kinds)
    unknown = sorted(chosen - set(EVENT_KINDS))
    if unknown:
        raise ValueError(f"unknown event kind(s): {', '.join(unknown)}")
    return chosen


class EventBus(abc.ABC):
    """Where stages publish events and subscribers receive them."""

    @abc.abstractmethod
    def publish(self, events: Sequence[Event]) -> None:
        """Hand events on, in order; must not block on a subscriber."""

    @abc.abstractmethod
    def subscribe(self, kinds: Iterable[str], handler: Handler, name: str = "") -> None:
        """Call `handler(event)` for every later event of these kinds, in publication order."""

    @abc.abstractmethod
    def close(self, timeout: float = 2.0) -> None: ...

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """published, dropped (queue full), handler_errors, backlog."""


class _Subscription:
    def __init__(self, name: str, kinds: frozenset[str], handler: Handler, size: int):
        self.name, self.kinds, self.handler = name, kinds, handler
        self.queue: queue.Queue[Event | None] = queue.Queue(maxsize=size)
        self.dropped = 0
        self.errors = 0
        self.thread = threading.Thread(target=self._run, name=f"atlas-events-{name}",
                                       daemon=True)

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            event = self.queue.get()
            try:
                if event is None:
                    return
                self.handler(event)
            except Exception:  # noqa: BLE001 - one subscriber's bug must not stop the stream
                self.errors += 1
                log.exception("event subscriber %s failed on %s", self.name, event.kind)
            finally:
                self.queue.task_done()


class LocalBus(EventBus):
    """In-process: a worker thread and a bounded queue per subscription."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE):
        self._size = int(queue_size)
        self._subs: list[_Subscription] = []
        self._lock = threading.Lock()
        self._closed = False
        self.published = 0

    def subscribe(self, kinds: Iterable[str], handler: Handler, name: str = "") -> None:
        sub = _Subscription(name or getattr(handler, "__qualname__", "subscriber"),
                            _check_kinds(kinds), handler, self._size)
        with self._lock:
            if self._closed:
                raise RuntimeError("the event bus is closed")
            self._subs.append(sub)
        sub.thread.start()

    def publish(self, events: Sequence[Event]) -> None:
        with self._lock:  # one publisher at a time: every subscriber sees the same order
            if self._closed:
                return
            for event in events:
                self.published += 1
                for sub in self._subs:
                    if event.kind in sub.kinds:
                        sub.offer(event)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """True once every subscriber has handled everything published so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.queue.unfinished_tasks == 0 for s in self._subs):
                return True
            time.sleep(0.005)
        return False

    def close(self, timeout: float = 2.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.queue.put(None, timeout=timeout)
            except queue.Full:
                log.warning("event subscriber %s did not drain before close", sub.name)
        for sub in subs:
            sub.thread.join(timeout)

    def stats(self) -> dict[str, int]:
        subs = list(self._subs)
        return {"published": self.published, "dropped": sum(s.dropped for s in subs),
                "handler_errors": sum(s.errors for s in subs),
                "backlog": sum(s.queue.qsize() for s in subs)}
