"""The hub: its stages wired together, and the one lock that orders their commits.

Stages (one module each, like the agent's data path):

    ingest (gRPC, atlas.central.ingest) -> incidents (merge) -> decide -> dispatch (sign,
    feeds, acks, expiry);  correlate (a subscriber) -> campaigns -> decide again;
    operators (approve, reject, revoke, model push);  models (bundle rollout).

The gRPC servicer calls `Hub` from many threads at once; one lock serialises every change,
and every change commits to the store (with its audit rows) before anything is published:
rule changes to the gateways' feeds, then events to the bus (atlas.central.events). Whatever
is slow (correlation, a learning policy's `observe`) runs as a subscriber in the bus's
threads, never under the ingest lock.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import threading
import time
from typing import Any, Callable, Iterable, Mapping, TypeVar

from atlas.link.wire import GatewayInfo, ModelAck, RuleAck, RuleChange, SignedRule, TelemetryBatch
from atlas.link.tls import check_gateway_id
from atlas.central.audit import AuditLog
from atlas.central.correlate.live import TRIGGERS, CampaignTracker
from atlas.central.correlate.registry import DEFAULT_ENGINE, build_engine
from atlas.central.correlate.rules import DEFAULT_WINDOW_S, GatewayPlace
from atlas.central.decide import Allowlist, Policy
from atlas.central.decide.inventory import Inventory
from atlas.central.decide.stage import Decider
from atlas.central.dispatch import FEED_MAX_PENDING, RULE_LIVE, Dispatcher, RuleFeed, Signer
from atlas.central.events import OUTCOME_KINDS, Event, EventBus, LocalBus
from atlas.central.incidents import IncidentMerger, finite
from atlas.central.models import ModelPushError, ModelRollout
from atlas.central.ontology.knowledge import CityKnowledge
from atlas.central.operators import OperatorError, Operators, check_gateways, run_command
from atlas.central.outbox import Outbox
from atlas.central.store import (DecisionRecord, GatewayRecord, HubIncident,
                                 HubState, RuleRecord, Store)

log = logging.getLogger("atlas.central.hub")

# what the servicer, the daemon and tests use from here
__all__ = ["FEED_MAX_PENDING", "Hub", "HubView", "OperatorError", "RuleFeed", "Signer"]
T = TypeVar("T")
_DEFAULT = object()


@dataclasses.dataclass(eq=False)
class _PendingBatch:
    gateway_id: str
    batch: TelemetryBatch
    received: float = dataclasses.field(default_factory=time.monotonic)
    result: int = 0
    error: BaseException | None = None
    done: bool = False
    dispatched: int = 0  # decisions whose rules this batch issued


class HubView:
    """Read-only questions about the hub's state; the CLI uses it on a read-only store."""

    def __init__(self, store: Store):
        self.store = store

    def gateways(self) -> list[GatewayRecord]:
        return self.store.list_gateways()

    def incidents(self, limit: int = 50, state: str | None = None) -> list[HubIncident]:
        return self.store.list_incidents(limit=limit, state=state)

    def decisions(self, states: tuple[str, ...] | None = None,
                  limit: int = 100) -> list[DecisionRecord]:
        return self.store.list_decisions(states=states, limit=limit)

    def rules(self, states: tuple[str, ...] | None = None, limit: int = 1000) -> list[RuleRecord]:
        return self.store.list_rules(states=states, limit=limit)

    def status(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        state = self.store.get_hub_state()
        head = self.store.audit_head()
        return {
            "hub": dataclasses.asdict(state) if state else None,
            "heartbeat_age": (now - state.heartbeat) if state else None,
            "schema_version": self.store.schema_version(),
            "counts": self.store.counts(),
            "audit_head": {"seq": head.seq, "hash": head.hash} if head else None,
        }


class Hub(HubView):
    def __init__(self, store: Store, policy: Policy, signer: Signer,
                 inventory: Inventory | None = None, allowlist: Iterable[str] = (),
                 merge_window: float = 300.0, operator_poll: float = 0.2,
                 clock: Callable[[], float] = time.time, listen: str = "",
                 version: str = "", telemetry_retention: float = 86400.0,
                 bus: EventBus | None = None, places: Mapping[str, GatewayPlace] | None = None,
                 correlator: Any = _DEFAULT, knowledge: CityKnowledge | None = None):
        """correlator: the engine that links incidents into campaigns (default: the rules
        engine over DEFAULT_WINDOW_S); None runs none. places: gateway id -> where it stands,
        from the hub's config (a gateway's hello fills in the others). knowledge: the city
        graph, built from start() on in its own thread (the hub works without it)."""
        super().__init__(store)
        self.policy = policy
        allowlist = Allowlist.parse(allowlist)
        self.operator_poll = float(operator_poll)
        self.telemetry_retention = float(telemetry_retention)  # seconds; 0 keeps everything
        self.audit = AuditLog(store)
        self.bus = bus or LocalBus()
        self.metrics: Any = None  # CentralMetrics, set by the daemon
        self._clock = clock
        self._lock = threading.RLock()
        self._queue_lock = threading.Lock()
        self._queue: list[_PendingBatch] = []  # telemetry waiting for the next group commit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = clock()
        self.listen = listen  # the address gateways use; the daemon sets the bound port
        self._version = version
        self.last_tick = time.monotonic()  # the daemon's watchdog checks maintenance runs
        self.counters = {"batches": 0, "duplicate_batches": 0, "incident_reports": 0,
                         "decisions": 0, "rules_issued": 0, "rules_expired": 0,
                         "maintenance_errors": 0}
        # the stages
        self.dispatch = Dispatcher(store, signer, self.audit, self.counters)
        self.merger = IncidentMerger(store, self.audit, merge_window, self.counters)
        self.knowledge = knowledge
        self.decider = Decider(store, policy, self.audit, self.dispatch,
                               inventory or Inventory(), allowlist, self.counters, knowledge)
        self.models = ModelRollout(store, signer, self.audit, self.dispatch)
        self.operators = Operators(store, self.audit, self.dispatch, allowlist, self.committed)
        if correlator is _DEFAULT:
            correlator = build_engine(DEFAULT_ENGINE, DEFAULT_WINDOW_S)
        self.places = dict(places or {})
        self.correlator: CampaignTracker | None = None
        if correlator is not None:
            self.correlator = CampaignTracker(store, correlator, self.places, self.committed,
                                              knowledge)
            self.bus.subscribe(TRIGGERS, self.correlator.on_event, name="correlate")
            self.bus.subscribe(("campaign_opened", "campaign_updated"), self._on_campaign,
                               name="decide-campaign")
        self.bus.subscribe(OUTCOME_KINDS, policy.observe, name=f"policy-{policy.name}")
        # No stream survives a restart: whoever is connected will say hello again.
        with self._lock:
            store.reset_connections()

    def status(self, now: float | None = None) -> dict[str, Any]:
        out = super().status(now)
        out["graph"] = (self.knowledge.status() if self.knowledge is not None
                        else {"state": "off", "why": "no city graph configured"})
        return out

    # -- committing and publishing ---------------------------------------------------------
    def committed(self, change: Callable[[Outbox, float], T]) -> T:
        """Run `change(outbox, now)` under the lock in one transaction; publish its outbox
        only once that has committed (nothing, if it raised)."""
        outbox = Outbox()
        with self._lock:
            now = self._clock()
            with self.store.transaction():
                result = change(outbox, now)
            self._publish(outbox)
        return result

    def _publish(self, outbox: Outbox) -> None:
        # Called with the lock held, after commit: feeds and subscribers see commit order.
        self.dispatch.publish(outbox)
        if outbox.events:
            self.bus.publish(outbox.events)

    # -- the servicer's interface ----------------------------------------------------------
    def hello(self, gateway_id: str, info: GatewayInfo) -> None:
        check_gateway_id(gateway_id)
        if info.gateway_id and info.gateway_id != gateway_id:
            # The certificate decides who this is; the hello's claim is only logged.
            log.warning("gateway %s said hello as %r; using the certificate's id", gateway_id,
                        info.gateway_id)
        place = self.places.get(gateway_id)
        if place is not None:  # the hub's config wins: the store keeps where the hub places it
            info = dataclasses.replace(info, domain=place.domain, district=place.district,
                                       subnet=place.subnet)

        def change(outbox: Outbox, now: float) -> None:
            self.store.record_hello(gateway_id, info, now)
            outbox.event("gateway_connected", now, gateway=gateway_id,
                         software_version=info.software_version, board=info.board,
                         domain=info.domain, district=info.district, subnet=info.subnet)
        self.committed(change)

    def disconnected(self, gateway_id: str) -> None:
        def change(outbox: Outbox, now: float) -> None:
            self.store.record_disconnect(gateway_id, now)
            outbox.event("gateway_lost", now, gateway=gateway_id)
        self.committed(change)

    def telemetry(self, gateway_id: str, batch: TelemetryBatch) -> int:
        """Store a batch once; return the highest seq stored for this gateway.

        Returns only once the batch is committed (durable), since the agent frees its spool on
        the ack. Group commit: batches that arrive while another commit is in progress wait
        for the lock and are then committed together, one savepoint each, so many gateways
        share one fsync instead of queueing one fsync each.
        """
        check_gateway_id(gateway_id)
        item = _PendingBatch(gateway_id, batch)
        with self._queue_lock:
            self._queue.append(item)
        with self._lock:
            if not item.done:  # else an earlier lock holder committed it with its group
                self._commit_group()
        if item.error is not None:
            raise item.error
        return item.result

    def queue_depth(self) -> int:
        """Telemetry batches waiting for the next group commit."""
        return len(self._queue)

    def _commit_group(self) -> None:
        with self._queue_lock:
            group, self._queue = self._queue, []
        outbox = Outbox()
        now = self._clock()
        try:
            with self.store.transaction():
                for item in group:
                    mine = Outbox()
                    try:
                        with self.store.transaction():  # a savepoint: fails alone
                            item.result = self._store_batch(item.gateway_id, item.batch, now,
                                                            mine)
                    except Exception as exc:  # noqa: BLE001 - reported to that caller only
                        log.exception("telemetry batch %s from %s failed", item.batch.seq,
                                      item.gateway_id)
                        item.error = exc
                    else:
                        item.dispatched = sum(1 for e in mine.events if e.kind == "decision_made"
                                              and e.payload["state"] in RULE_LIVE)
                        outbox.merge(mine)
        except Exception as exc:  # noqa: BLE001 - the commit itself failed (disk full...)
            log.exception("telemetry commit failed")
            for item in group:
                item.error = item.error or exc
                item.dispatched = 0
            outbox = Outbox()
        finally:
            for item in group:
                item.done = True
        self._publish(outbox)
        self._observe_latency(group)

    def _observe_latency(self, group: list[_PendingBatch]) -> None:
        if self.metrics is None:
            return
        done = time.monotonic()
        for item in group:
            for _ in range(item.dispatched):
                self.metrics.observe_decision(done - item.received)

    def _store_batch(self, gateway_id: str, batch: TelemetryBatch, now: float,
                     outbox: Outbox) -> int:
        stored = self.store.get_seq(gateway_id)
        if batch.seq <= stored:
            self.counters["duplicate_batches"] += 1
            return stored  # a re-sent batch: already kept, change nothing
        self.store.record_batch(gateway_id, batch.seq, now, batch.health)
        if batch.health is not None and batch.health.model_versions:
            self.store.set_gateway_models(gateway_id, batch.health.model_versions)
        # as they came: PackedDevices from the wire are stored without being decoded
        self.store.store_devices(gateway_id, batch.seq, finite(batch.time, now), now,
                                 batch.devices)
        for incident in batch.incidents:
            merged = self.merger.merge(gateway_id, incident, now, outbox)
            if merged.new_gateway:
                self.decider.extend(merged.incident, gateway_id, now, outbox)
            if merged.new_evidence:
                self.decider.decide(merged.incident, merged.report, now, outbox)
        self.counters["batches"] += 1
        return batch.seq

    def rule_ack(self, gateway_id: str, ack: RuleAck) -> None:
        self.committed(lambda outbox, now: self.dispatch.ack(gateway_id, ack, now, outbox))

    def desired_rules(self, gateway_id: str) -> list[SignedRule]:
        """The rules this gateway should enforce now: unexpired, not shadow, not withdrawn."""
        with self._lock:
            return self.dispatch.desired_rules(gateway_id, self._clock())

    def model_ack(self, gateway_id: str, ack: ModelAck) -> None:
        """A gateway installed a pushed bundle, or refused it (and why): recorded and audited."""
        self.committed(lambda outbox, now: self.models.ack(gateway_id, ack, now, outbox))
        if not ack.applied:
            log.warning("gateway %s refused model %s: %s", gateway_id, ack.version, ack.error)

    def watch(self, gateway_id: str) -> RuleFeed:
        feed = RuleFeed(gateway_id, self._snapshot_for, self._unwatch)
        with self._lock:
            self.dispatch.add_feed(feed)
        return feed

    def _snapshot_for(self, feed: RuleFeed) -> RuleChange:
        # The rules first, then the model the gateway should run (a gateway that was away
        # converges on both). A model that cannot be prepared must not cost the rules.
        with self._lock:
            snapshot = RuleChange(kind="snapshot", rules=self.desired_rules(feed.gateway_id))
            try:
                update = self.models.due(feed.gateway_id)
                if update is not None:
                    self.models.mark_sent(feed.gateway_id, update.version, self._clock())
            except Exception:  # noqa: BLE001
                log.exception("model for gateway %s could not be prepared", feed.gateway_id)
                update = None
            return feed.take_snapshot(snapshot, [update] if update is not None else [])

    def _unwatch(self, feed: RuleFeed) -> None:
        with self._lock:
            self.dispatch.remove_feed(feed)

    # -- campaigns reach the policy ------------------------------------------------------
    def _on_campaign(self, event: Event) -> None:
        """The incident whose report made or grew a campaign is decided again with the
        campaign in its context (its first decision, at ingest, came before the correlator)."""
        trigger = str(event.payload.get("trigger", ""))

        def change(outbox: Outbox, now: float) -> None:
            incident = self.store.get_incident(trigger)
            if incident is not None and incident.state == "open":
                self.decider.decide(incident, None, now, outbox)
        if trigger:
            self.committed(change)

    # -- operators -------------------------------------------------------------------------
    def approve(self, decision_id: str, operator: str) -> DecisionRecord:
        """Carry out a decision that waited for a human; returns it with its new state."""
        return self.operators.approve(decision_id, operator)

    def reject(self, decision_id: str, operator: str) -> DecisionRecord:
        return self.operators.reject(decision_id, operator)

    def revoke(self, rule_id: str, operator: str) -> RuleRecord:
        """Withdraw one rule now; the hub will not decide again on its incident."""
        return self.operators.revoke(rule_id, operator)

    def push_model(self, version: str, gateways: Iterable[str] = (), operator: str = "") -> str:
        """Make bundle `version` the desired model of `gateways` (none: every gateway), sign it
        once, audit the push, and send it now to those connected that do not run it. Gateways
        away get it when they reconnect (after their rule snapshot)."""
        targets = check_gateways(list(gateways))
        try:
            self.committed(lambda outbox, now: self.models.push(version, targets, operator,
                                                                now, outbox))
        except ModelPushError as exc:
            raise OperatorError(str(exc)) from None
        with self._lock:
            now = self._clock()
            sent = [g for g in self.dispatch.watched_gateways()
                    if self.models.send_if_due(g, now)]
        where = ", ".join(targets) if targets else "every gateway"
        return (f"model {version} is the desired model of {where}; sent now to "
                f"{len(sent)} connected gateway(s){': ' + ', '.join(sent) if sent else ''}")

    def process_commands(self) -> int:
        """Run what operators queued through the CLI (see cli.py for why a queue)."""
        done = 0
        for command in self.store.queued_commands():
            ok, result = True, ""
            try:
                result = run_command(self, command.kind, command.argument, command.operator)
            except OperatorError as exc:
                ok, result = False, str(exc)
            with self._lock, self.store.transaction():
                self.store.finish_command(command.id, ok, result, self._clock())
            done += 1
        return done

    # -- maintenance -----------------------------------------------------------------------
    def expire(self, now: float | None = None) -> int:
        """Withdraw every rule past its expires_at; returns how many expired."""
        with self._lock:
            at = self._clock() if now is None else now
            due = self.store.rules_due(at)
            if not due:
                return 0
            self.committed(lambda outbox, _: self.dispatch.expire(due, at, outbox))
            return len(due)

    def heartbeat(self, stopped: bool = False) -> None:
        now = self._clock()
        state = HubState(pid=os.getpid(), host=socket.gethostname(), started_at=self._started_at,
                         heartbeat=now, listen=self.listen, version=self._version,
                         stopped_at=now if stopped else None)
        with self._lock, self.store.transaction():
            self.store.set_hub_state(state)

    def prune(self, now: float | None = None) -> int:
        """Drop stored device summaries older than the retention (in bounded steps)."""
        if self.telemetry_retention <= 0:
            return 0
        now = self._clock() if now is None else now
        with self._lock, self.store.transaction():
            return self.store.prune_telemetry(now - self.telemetry_retention)

    def tick(self, now: float | None = None) -> None:
        if self.knowledge is not None:
            self.knowledge.refresh()  # a changed inventory file: rebuilt in its own thread
        self.expire(now)
        self.process_commands()
        self.prune(now)
        self.heartbeat()
        self.last_tick = time.monotonic()

    def start(self) -> None:
        """Run tick() every operator_poll seconds in a background thread."""
        if self._thread is not None:
            return
        now = self._clock()
        with self._lock, self.store.transaction():
            self.audit.append("hub_start", {"pid": os.getpid(), "version": self._version,
                                            "listen": self.listen}, now)
        if self.knowledge is not None:
            self.knowledge.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._maintain, name="atlas-hub-maintenance",
                                        daemon=True)
        self._thread.start()

    def _maintain(self) -> None:
        logged = -math.inf
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a failed round must not stop expiry for good
                self.counters["maintenance_errors"] += 1
                if time.monotonic() - logged >= 60:  # a lasting fault: once a minute, not 5/s
                    logged = time.monotonic()
                    log.exception("hub maintenance round failed (%d so far); retrying",
                                  self.counters["maintenance_errors"])
            self._stop.wait(self.operator_poll)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            try:
                self.heartbeat(stopped=True)  # `status` then says stopped, not "running"
            except Exception:  # noqa: BLE001 - closing must finish
                log.exception("could not record the hub's stop")
        self.bus.close()  # subscribers finish what was committed before the store closes
        with self._lock:
            feeds = self.dispatch.all_feeds()
        for feed in feeds:
            feed.close()
