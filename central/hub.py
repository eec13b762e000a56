"""The hub's core: gateway registry, incident merge, decisions, rule dispatch, audit.

The gRPC servicer (atlas.central.ingest) calls `Hub` from many threads at once; one lock
serialises every change, and every change commits to the store (with its audit rows) before
anything is published to a gateway's RuleFeed, so a gateway never holds a rule the hub would
forget in a restart.

Flow for a telemetry batch: store seq/health/devices -> for each incident: find or create the
hub incident (same attacker + kind within the merge window, across gateways) -> the policy
proposes decisions -> the shield vets them -> rules are signed and stored for every gateway
where the attacker was seen -> upserts go to those gateways' feeds.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Protocol

from atlas.link.incidents import Incident
from atlas.link.rules import Rule
from atlas.link.bundle import BUNDLE_NAME
from atlas.link.wire import GatewayInfo, ModelAck, ModelUpdate, RuleAck, RuleChange, SignedRule, TelemetryBatch
from atlas.link.tls import check_gateway_id
from atlas.central.audit import AuditLog
from atlas.central.decide import (NO_ACTION, Allowlist, Decision, DecisionContext, Policy,
                                  decision_context, respond)
from atlas.central.decide.inventory import Inventory
from atlas.central.store import (RULE_SENT, RULE_UNENDED, DecisionRecord, GatewayRecord,
                                 HubIncident, HubState, IncidentReport, ModelStatus, RuleRecord,
                                 Store)

log = logging.getLogger("atlas.central.hub")

# Decision states in which a decision still stands (its rules live, or it waits for a human).
LIVE_DECISIONS = ("active", "shadow", "pending_approval")
# Decision states that never change again without an operator, so a policy proposing the same
# response again is not recorded again.
SETTLED_DECISIONS = ("none", "suppressed", "rejected")
RULE_LIVE = ("active", "shadow")
OPERATOR_COMMANDS = ("approve", "reject", "revoke", "model_push")
FEED_MAX_PENDING = 256  # changes a slow gateway may owe before it gets one fresh snapshot


class OperatorError(ValueError):
    """An operator asked for something that cannot be done (unknown id, wrong state)."""


class RuleSigner(Protocol):
    def sign_rule(self, rule: Rule) -> SignedRule: ...

    def sign_model(self, name: str, version: str, content: bytes) -> ModelUpdate: ...


def new_id(prefix: str) -> str:
    """Short, unguessable, safe in nftables comments and on a command line: d-1f2e3d4c5b."""
    return f"{prefix}-{secrets.token_hex(5)}"


class RuleFeed:
    """One gateway stream's view of its rules: a snapshot first, then changes, in order.

    The first get() returns the whole desired set (kind "snapshot"), computed at that moment,
    so nothing issued between watch() and the first get() can be missed. If a gateway falls
    more than FEED_MAX_PENDING changes behind, its queue is replaced by one fresh snapshot.
    """

    def __init__(self, hub: "Hub", gateway_id: str, max_pending: int = FEED_MAX_PENDING):
        self.gateway_id = gateway_id
        self._hub = hub
        self._max = max_pending
        self._cond = threading.Condition()
        self._items: deque[RuleChange | ModelUpdate] = deque()
        self._resync = True  # the first get() is a snapshot
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, timeout: float | None = None) -> RuleChange | ModelUpdate | None:
        """The next change, or None after `timeout` seconds without one (or once closed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._resync and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if self._closed:
                return None
            if not self._resync:
                return self._items.popleft()
        return self._hub._snapshot_for(self)

    def close(self) -> None:
        self._hub._unwatch(self)
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    # called by the hub, under the hub's lock
    def _push(self, change: RuleChange) -> None:
        with self._cond:
            if self._closed:
                return
            if self._resync:
                return  # the coming snapshot will include it
            if len(self._items) >= self._max:
                self._items.clear()
                self._resync = True
            else:
                self._items.append(change)
            self._cond.notify_all()

    def _push_model(self, update: ModelUpdate) -> None:
        with self._cond:
            if self._closed or self._resync:
                return  # the coming snapshot brings the gateway's due model too
            self._items.append(update)
            self._cond.notify_all()

    def _take_snapshot(self, change: RuleChange, then: Iterable[ModelUpdate] = ()) -> RuleChange:
        with self._cond:
            self._items.clear()
            self._items.extend(then)
            self._resync = False
        return change


class _Changes:
    """What one operation will publish, per gateway, once its transaction has committed."""

    def __init__(self) -> None:
        self.upserts: dict[str, list[SignedRule]] = {}
        self.withdrawn: dict[str, list[str]] = {}

    def merge(self, other: "_Changes") -> None:
        for gateway, rules in other.upserts.items():
            self.upserts.setdefault(gateway, []).extend(rules)
        for gateway, ids in other.withdrawn.items():
            self.withdrawn.setdefault(gateway, []).extend(ids)

    def upsert(self, gateway: str, signed: SignedRule) -> None:
        self.upserts.setdefault(gateway, []).append(signed)

    def withdraw(self, gateway: str, rule_id: str) -> None:
        self.withdrawn.setdefault(gateway, []).append(rule_id)


@dataclasses.dataclass(eq=False)
class _PendingBatch:
    gateway_id: str
    batch: TelemetryBatch
    result: int = 0
    error: BaseException | None = None
    done: bool = False


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
    def __init__(self, store: Store, policy: Policy, signer: RuleSigner,
                 inventory: Inventory | None = None, allowlist: Iterable[str] = (),
                 merge_window: float = 300.0, operator_poll: float = 0.2,
                 clock: Callable[[], float] = time.time, listen: str = "",
                 version: str = "", telemetry_retention: float = 86400.0):
        super().__init__(store)
        self.policy = policy
        self.signer = signer
        self.inventory = inventory or Inventory()
        self.allowlist = Allowlist.parse(allowlist)
        self.merge_window = float(merge_window)
        self.operator_poll = float(operator_poll)
        self.telemetry_retention = float(telemetry_retention)  # seconds; 0 keeps everything
        self.audit = AuditLog(store)
        self._clock = clock
        self._lock = threading.RLock()
        self._queue_lock = threading.Lock()
        self._queue: list[_PendingBatch] = []  # telemetry waiting for the next group commit
        self._feeds: dict[str, set[RuleFeed]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = clock()
        self.listen = listen  # the address gateways use; the daemon sets the bound port
        self._version = version
        self.last_tick = time.monotonic()  # the daemon's watchdog checks maintenance runs
        self.counters = {"batches": 0, "duplicate_batches": 0, "incident_reports": 0,
                         "decisions": 0, "rules_issued": 0, "rules_expired": 0,
                         "maintenance_errors": 0}
        # No stream survives a restart: whoever is connected will say hello again.
        with self._lock:
            store.reset_connections()

    # -- the servicer's interface ----------------------------------------------------------
    def hello(self, gateway_id: str, info: GatewayInfo) -> None:
        check_gateway_id(gateway_id)
        if info.gateway_id and info.gateway_id != gateway_id:
            # The certificate decides who this is; the hello's claim is only logged.
            log.warning("gateway %s said hello as %r; using the certificate's id", gateway_id,
                        info.gateway_id)
        with self._lock, self.store.transaction():
            self.store.record_hello(gateway_id, info, self._clock())

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

    def _commit_group(self) -> None:
        with self._queue_lock:
            group, self._queue = self._queue, []
        changes = _Changes()
        now = self._clock()
        try:
            with self.store.transaction():
                for item in group:
                    mine = _Changes()
                    try:
                        with self.store.transaction():  # a savepoint: fails alone
                            item.result = self._store_batch(item.gateway_id, item.batch, now,
                                                            mine)
                    except Exception as exc:  # noqa: BLE001 - reported to that caller only
                        log.exception("telemetry batch %s from %s failed", item.batch.seq,
                                      item.gateway_id)
                        item.error = exc
                    else:
                        changes.merge(mine)
        except Exception as exc:  # noqa: BLE001 - the commit itself failed (disk full...)
            log.exception("telemetry commit failed")
            for item in group:
                item.error = item.error or exc
            changes = _Changes()
        finally:
            for item in group:
                item.done = True
        self._publish(changes)

    def _store_batch(self, gateway_id: str, batch: TelemetryBatch, now: float,
                     changes: _Changes) -> int:
        stored = self.store.get_seq(gateway_id)
        if batch.seq <= stored:
            self.counters["duplicate_batches"] += 1
            return stored  # a re-sent batch: already kept, change nothing
        self.store.record_batch(gateway_id, batch.seq, now, batch.health)
        if batch.health is not None and batch.health.model_versions:
            self.store.set_gateway_models(gateway_id, batch.health.model_versions)
        # as they came: PackedDevices from the wire are stored without being decoded
        self.store.store_devices(gateway_id, batch.seq, _finite(batch.time, now), now,
                                 batch.devices)
        for incident in batch.incidents:
            self._ingest(gateway_id, incident, now, changes)
        self.counters["batches"] += 1
        return batch.seq

    def rule_ack(self, gateway_id: str, ack: RuleAck) -> None:
        with self._lock:
            record = self.store.get_rule(ack.rule_id)
            if record is None or record.gateway != gateway_id:
                # a gateway acknowledges only its own rules
                log.warning("gateway %s acknowledged rule %r it does not hold", gateway_id,
                            ack.rule_id)
                return
            now = self._clock()
            with self.store.transaction():
                self.store.set_rule_ack(ack.rule_id, ack.applied, ack.error, now)
                self.audit.append("rule_ack", {"rule": ack.rule_id, "gateway": gateway_id,
                                               "applied": ack.applied, "error": ack.error}, now)
            if not ack.applied:
                log.warning("gateway %s could not apply rule %s: %s", gateway_id, ack.rule_id,
                            ack.error)

    def desired_rules(self, gateway_id: str) -> list[SignedRule]:
        """The rules this gateway should enforce now: unexpired, not shadow, not withdrawn."""
        with self._lock:
            now = self._clock()
            return [SignedRule(rule=r.rule, signature=r.signature)
                    for r in self.store.rules_for_gateway(gateway_id, RULE_SENT)
                    if r.rule.expires_at > now]

    def model_ack(self, gateway_id: str, ack: ModelAck) -> None:
        """A gateway installed a pushed bundle, or refused it (and why): recorded and audited."""
        with self._lock:
            now = self._clock()
            version = str(ack.version)[:128]
            with self.store.transaction():
                sent = next((s.sent_at for s in self.store.model_status(gateway_id)
                             if s.version == version), None)
                self.store.put_model_status(ModelStatus(
                    gateway_id, version, "applied" if ack.applied else "refused",
                    str(ack.error)[:2000], sent, now))
                if ack.model_versions:
                    self.store.set_gateway_models(gateway_id, dict(ack.model_versions))
                self.audit.append("model_ack", {"gateway": gateway_id, "version": version,
                                                "applied": bool(ack.applied),
                                                "error": str(ack.error)[:2000],
                                                "running": dict(ack.model_versions)}, now)
        if not ack.applied:
            log.warning("gateway %s refused model %s: %s", gateway_id, version, ack.error)

    def push_model(self, version: str, gateways: Iterable[str] = (), operator: str = "") -> str:
        """Make bundle `version` the desired model of `gateways` (none: every gateway), sign it
        once, audit the push, and send it now to those connected that do not run it. Gateways
        away get it when they reconnect (after their rule snapshot)."""
        targets = list(dict.fromkeys(gateways))
        for gateway in targets:
            try:
                check_gateway_id(gateway)
            except ValueError as exc:
                raise OperatorError(str(exc)) from None
        with self._lock:
            now = self._clock()
            with self.store.transaction():
                record = self.store.get_model_bundle(version, content=True)
                if record is None:
                    raise OperatorError(f"no model bundle {version!r} (upload it with "
                                        "`atlas-central models push`)")
                if record.signature is None:
                    signed = self.signer.sign_model(BUNDLE_NAME, version, record.content)
                    self.store.set_model_signature(version, signed.signature)
                for target in targets or ["*"]:
                    self.store.set_model_target(target, version, now, operator)
                # a new push retries gateways that refused this version before
                for gateway in targets or [g.id for g in self.store.list_gateways()]:
                    known = self.store.get_gateway(gateway)
                    if known is None or known.model_versions.get(BUNDLE_NAME) != version:
                        self.store.put_model_status(ModelStatus(gateway, version, "pending"))
                self.audit.append("model_push", {
                    "version": version, "sha256": record.sha256, "size": record.size,
                    "gateways": targets or "all", "operator": operator,
                    "uploaded_by": record.uploaded_by}, now)
            sent = [g for g in list(self._feeds) if self._send_model_if_due(g, now)]
        where = ", ".join(targets) if targets else "every gateway"
        return (f"model {version} is the desired model of {where}; sent now to "
                f"{len(sent)} connected gateway(s){': ' + ', '.join(sent) if sent else ''}")

    def _model_due(self, gateway_id: str) -> ModelUpdate | None:
        """The signed bundle this gateway should run and does not (nor has refused), or None."""
        version = self.store.model_target(gateway_id)
        if version is None:
            return None
        gateway = self.store.get_gateway(gateway_id)
        if gateway is not None and gateway.model_versions.get(BUNDLE_NAME) == version:
            return None
        if any(s.version == version and s.state == "refused"
               for s in self.store.model_status(gateway_id)):
            return None  # a refusal waits for the operator's next push, not every reconnect
        record = self.store.get_model_bundle(version, content=True)
        if record is None or record.signature is None:
            return None
        return ModelUpdate(BUNDLE_NAME, version, record.content, record.signature)

    def _mark_sent(self, gateway_id: str, version: str, now: float) -> None:
        with self.store.transaction():
            self.store.put_model_status(ModelStatus(gateway_id, version, "sent", sent_at=now))

    def _send_model_if_due(self, gateway_id: str, now: float) -> bool:
        update = self._model_due(gateway_id)
        feeds = self._feeds.get(gateway_id, ())
        if update is None or not feeds:
            return False
        self._mark_sent(gateway_id, update.version, now)
        for feed in feeds:
            feed._push_model(update)
        return True

    def watch(self, gateway_id: str) -> RuleFeed:
        feed = RuleFeed(self, gateway_id)
        with self._lock:
            self._feeds.setdefault(gateway_id, set()).add(feed)
        return feed

    def disconnected(self, gateway_id: str) -> None:
        with self._lock, self.store.transaction():
            self.store.record_disconnect(gateway_id, self._clock())

    # -- operators -------------------------------------------------------------------------
    def approve(self, decision_id: str, operator: str) -> DecisionRecord:
        """Carry out a decision that waited for a human; returns it with its new state."""
        changes = _Changes()
        with self._lock:
            now = self._clock()
            with self.store.transaction():
                decision = self._pending(decision_id)
                if self.allowlist.matches(decision.target):
                    raise OperatorError(f"decision {decision_id}: target {decision.target} is "
                                        "on the allowlist; remove it from the config first")
                incident = self.store.get_incident(decision.incident)
                decision.gateways = incident.gateways if incident else decision.gateways
                decision.approved_by, decision.approved_at = operator, now
                decision.state = "shadow" if decision.shadow else "active"
                decision.expires_at = now + decision.ttl
                self.store.add_approval(decision.id, operator, "approved", now)
                self.store.put_decision(decision)
                self.audit.append("approval", {"decision": decision.id, "operator": operator,
                                               "verdict": "approved", "state": decision.state,
                                               "expires_at": decision.expires_at}, now)
                for gateway in decision.gateways:
                    self._issue(decision, gateway, now, changes)
            self._publish(changes)
            return decision

    def reject(self, decision_id: str, operator: str) -> DecisionRecord:
        with self._lock:
            now = self._clock()
            with self.store.transaction():
                decision = self._pending(decision_id)
                decision.state = "rejected"
                decision.approved_by, decision.approved_at = operator, now
                self.store.add_approval(decision.id, operator, "rejected", now)
                self.store.put_decision(decision)
                self.audit.append("approval", {"decision": decision.id, "operator": operator,
                                               "verdict": "rejected"}, now)
            return decision

    def revoke(self, rule_id: str, operator: str) -> RuleRecord:
        """Withdraw one rule now. Its incident is then left to the operator: the hub will not
        decide again on it (an operator who revokes has overruled the policy)."""
        changes = _Changes()
        with self._lock:
            now = self._clock()
            with self.store.transaction():
                record = self.store.get_rule(rule_id)
                if record is None:
                    raise OperatorError(f"no rule {rule_id!r}")
                if record.state not in RULE_UNENDED:
                    raise OperatorError(f"rule {rule_id} is already {record.state}")
                was = record.state
                record.state, record.ended_at = "revoked", now
                self.store.put_rule(record)
                self.audit.append("revocation", {"rule": rule_id, "gateway": record.gateway,
                                                 "decision": record.rule.decision_id,
                                                 "operator": operator}, now)
                self._settle_decision(record.rule.decision_id, "revoked")
                if was in RULE_SENT:
                    changes.withdraw(record.gateway, rule_id)
            self._publish(changes)
            return record

    def _pending(self, decision_id: str) -> DecisionRecord:
        decision = self.store.get_decision(decision_id)
        if decision is None:
            raise OperatorError(f"no decision {decision_id!r}")
        if decision.state != "pending_approval":
            raise OperatorError(f"decision {decision_id} is {decision.state}, not waiting for "
                                "approval")
        return decision

    # -- maintenance -----------------------------------------------------------------------
    def expire(self, now: float | None = None) -> int:
        """Withdraw every rule past its expires_at; returns how many expired."""
        changes = _Changes()
        with self._lock:
            now = self._clock() if now is None else now
            due = self.store.rules_due(now)
            if not due:
                return 0
            with self.store.transaction():
                for record in due:
                    was = record.state
                    record.state, record.ended_at = "expired", now
                    self.store.put_rule(record)
                    self.audit.append("expiry", {"rule": record.rule.id,
                                                 "gateway": record.gateway,
                                                 "decision": record.rule.decision_id}, now)
                    if was in RULE_SENT:
                        changes.withdraw(record.gateway, record.rule.id)
                for decision_id in {r.rule.decision_id for r in due}:
                    self._settle_decision(decision_id, "expired")
            self.counters["rules_expired"] += len(due)
            self._publish(changes)
            return len(due)

    def process_commands(self) -> int:
        """Run what operators queued through the CLI (see cli.py for why a queue)."""
        done = 0
        for command in self.store.queued_commands():
            ok, result = True, ""
            try:
                result = self._run_command(command.kind, command.argument, command.operator)
            except OperatorError as exc:
                ok, result = False, str(exc)
            with self._lock, self.store.transaction():
                self.store.finish_command(command.id, ok, result, self._clock())
            done += 1
        return done

    def _run_command(self, kind: str, argument: str, operator: str) -> str:
        if kind == "approve":
            decision = self.approve(argument, operator)
            rules = self.store.rules_for_decision(decision.id)
            issued = ", ".join(f"{r.rule.id} ({r.gateway})" for r in rules) or "none"
            return f"approved {decision.id}: {decision.action} {decision.target}, rules {issued}"
        if kind == "reject":
            return f"rejected {self.reject(argument, operator).id}"
        if kind == "model_push":
            try:
                request = json.loads(argument)
                version, gateways = str(request["version"]), list(request.get("gateways", []))
            except (ValueError, KeyError, TypeError):
                raise OperatorError(f"model_push: not a push request: {argument[:200]!r}") from None
            return self.push_model(version, gateways, operator)
        if kind == "revoke":
            record = self.revoke(argument, operator)
            return (f"revoked {record.rule.id}: {record.rule.action} {record.rule.target} "
                    f"on {record.gateway}")
        raise OperatorError(f"unknown command {kind!r}")

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
        with self._lock:
            feeds = [f for group in self._feeds.values() for f in group]
        for feed in feeds:
            feed.close()

    # -- internals: incidents --------------------------------------------------------------
    def _ingest(self, gateway_id: str, incident: Incident, now: float, changes: _Changes) -> None:
        self.counters["incident_reports"] += 1
        # The certificate decides the gateway; times and scores must be finite numbers (an
        # odd value from a gateway is replaced, never allowed to poison merges or sorting).
        first = _finite(incident.time, now)
        incident = dataclasses.replace(
            incident, gateway=gateway_id, time=first,
            last_seen=max(_finite(incident.last_seen, first), first),
            score=_finite(incident.score, 0.0))
        previous = self.store.get_report(gateway_id, str(incident.id))
        if previous is not None:
            hub_incident = self.store.get_incident(previous.incident)
            new_evidence = incident.last_seen > previous.last_seen
            added_packets = max(int(incident.packets) - previous.packets, 0)
        else:
            new_evidence = True
            added_packets = int(incident.packets)
            hub_incident = self.store.find_incident(
                str(incident.src_ip), str(incident.kind),
                since=incident.time - self.merge_window)
        created = hub_incident is None
        if created:
            hub_incident = HubIncident(
                id=new_id("i"), kind=str(incident.kind), src_ip=str(incident.src_ip),
                device=str(incident.device), dst_ip=str(incident.dst_ip),
                first_seen=incident.time, last_seen=incident.last_seen,
                score=incident.score, packets=0, state="open", created_at=now)
        known_gateways = list(hub_incident.gateways)
        self.store.put_incident(hub_incident)  # the report references it
        self.store.put_report(IncidentReport(
            gateway=gateway_id, agent_id=str(incident.id), incident=hub_incident.id,
            kind=str(incident.kind), src_ip=str(incident.src_ip), dst_ip=str(incident.dst_ip),
            device=str(incident.device), time=incident.time,
            last_seen=incident.last_seen, score=incident.score,
            packets=int(incident.packets), state=str(incident.state),
            model_version=str(incident.model_version), evidence=dict(incident.evidence or {}),
            received_at=now))
        was_state = hub_incident.state
        hub_incident.first_seen = min(hub_incident.first_seen, incident.time)
        hub_incident.last_seen = max(hub_incident.last_seen, incident.last_seen)
        hub_incident.score = max(hub_incident.score, incident.score)
        hub_incident.packets += added_packets
        hub_incident.state = "open" if self.store.count_open_reports(hub_incident.id) else "closed"
        self.store.put_incident(hub_incident)
        hub_incident.gateways = self.store.incident_gateways(hub_incident.id)
        if created:
            self.audit.append("incident", {"incident": hub_incident.to_dict(),
                                           "report": _report_payload(incident)}, now)
        elif previous is None:
            self.audit.append("incident_report", {"incident": hub_incident.id,
                                                  "report": _report_payload(incident)}, now)
        if was_state == "open" and hub_incident.state == "closed":
            self.audit.append("incident_closed", {"incident": hub_incident.id,
                                                  "last_seen": hub_incident.last_seen}, now)
        if not created and gateway_id not in known_gateways:
            self._extend(hub_incident, gateway_id, now, changes)
        if new_evidence:
            self._decide(hub_incident, incident, now, changes)

    def _extend(self, incident: HubIncident, gateway_id: str, now: float,
                changes: _Changes) -> None:
        """The attacker now shows up behind another gateway: standing decisions cover it too."""
        for decision in self.store.decisions_for_incident(incident.id):
            if decision.state not in LIVE_DECISIONS or gateway_id in decision.gateways:
                continue
            decision.gateways = decision.gateways + [gateway_id]
            self.store.put_decision(decision)
            if decision.state in RULE_LIVE and (decision.expires_at or 0) > now:
                self._issue(decision, gateway_id, now, changes)

    def _context(self, incident: HubIncident, report: Incident | None, now: float,
                 previous: list[DecisionRecord]) -> DecisionContext:
        return decision_context(self.inventory, incident, now, self.allowlist, previous, report)

    def _decide(self, incident: HubIncident, report: Incident | None, now: float,
                changes: _Changes) -> None:
        previous = self.store.decisions_for_incident(incident.id)
        if any(d.state == "revoked" for d in previous):
            return  # an operator overruled the policy on this incident
        context = self._context(incident, report, now, previous)
        try:
            decisions = respond(self.policy, incident, context)
        except Exception:  # noqa: BLE001 - a policy bug must not lose the telemetry batch
            log.exception("policy %s failed on incident %s", self.policy.name, incident.id)
            return
        for decision in decisions:
            if self._already_decided(decision, previous):
                continue
            self._record_decision(decision, incident, now, changes)

    @staticmethod
    def _already_decided(decision: Decision, previous: list[DecisionRecord]) -> bool:
        # The same response that still stands (or was settled) is not decided twice; one that
        # has expired is, if the attack goes on.
        for d in previous:
            if d.action == decision.action and d.target == decision.target and (
                    d.state in LIVE_DECISIONS or d.state in SETTLED_DECISIONS):
                return True
        return False

    def _record_decision(self, proposal: Decision, incident: HubIncident, now: float,
                         changes: _Changes) -> DecisionRecord:
        if proposal.suppressed:
            state = "suppressed"
        elif proposal.action == NO_ACTION:
            state = "none"
        elif proposal.requires_approval:
            state = "pending_approval"
        else:
            state = "shadow" if proposal.shadow else "active"
        decision = DecisionRecord(
            id=new_id("d"), incident=incident.id, policy=self.policy.name,
            action=proposal.action, target=proposal.target, params=dict(proposal.params),
            ttl=float(proposal.ttl), reason=proposal.reason, gateways=list(incident.gateways),
            requires_approval=proposal.requires_approval, shadow=proposal.shadow, state=state,
            created_at=now, expires_at=now + proposal.ttl if state in RULE_LIVE else None)
        self.store.put_decision(decision)
        self.audit.append("decision", decision.to_dict(), now)
        self.counters["decisions"] += 1
        if state in RULE_LIVE:
            for gateway in decision.gateways:
                self._issue(decision, gateway, now, changes)
        if state == "pending_approval":
            log.warning("decision %s waits for approval: %s %s (%s)", decision.id,
                        decision.action, decision.target, decision.reason)
        return decision

    def _issue(self, decision: DecisionRecord, gateway_id: str, now: float,
               changes: _Changes) -> RuleRecord:
        rule = Rule(id=new_id("r"), action=decision.action, target=decision.target,
                    expires_at=float(decision.expires_at), reason=decision.reason[:1024],
                    decision_id=decision.id, shadow=decision.shadow,
                    params=dict(decision.params))
        signed = self.signer.sign_rule(rule)
        record = RuleRecord(rule=rule, gateway=gateway_id,
                            state="shadow" if rule.shadow else "active",
                            signature=signed.signature, created_at=now)
        self.store.put_rule(record)
        self.audit.append("rule", {"rule": dataclasses.asdict(rule), "gateway": gateway_id,
                                   "state": record.state}, now)
        self.counters["rules_issued"] += 1
        if not rule.shadow:
            changes.upsert(gateway_id, signed)
        return record

    def _settle_decision(self, decision_id: str, state: str) -> None:
        """Mark a decision expired/revoked once none of its rules is live any more."""
        decision = self.store.get_decision(decision_id)
        if decision is None or decision.state not in RULE_LIVE:
            return
        if any(r.state in RULE_UNENDED for r in self.store.rules_for_decision(decision_id)):
            return
        decision.state = state
        self.store.put_decision(decision)

    # -- internals: feeds ------------------------------------------------------------------
    def _publish(self, changes: _Changes) -> None:
        # Called with the lock held, after commit: feeds see changes in commit order.
        for gateway, rules in changes.upserts.items():
            for feed in self._feeds.get(gateway, ()):
                feed._push(RuleChange(kind="upsert", rules=list(rules)))
        for gateway, ids in changes.withdrawn.items():
            for feed in self._feeds.get(gateway, ()):
                feed._push(RuleChange(kind="withdraw", withdrawn=list(ids)))

    def _snapshot_for(self, feed: RuleFeed) -> RuleChange:
        # The rules first, then the model the gateway should run (a gateway that was away
        # converges on both). A model that cannot be prepared must not cost the rules.
        with self._lock:
            snapshot = RuleChange(kind="snapshot", rules=self.desired_rules(feed.gateway_id))
            try:
                update = self._model_due(feed.gateway_id)
                if update is not None:
                    self._mark_sent(feed.gateway_id, update.version, self._clock())
            except Exception:  # noqa: BLE001
                log.exception("model for gateway %s could not be prepared", feed.gateway_id)
                update = None
            return feed._take_snapshot(snapshot, [update] if update is not None else [])

    def _unwatch(self, feed: RuleFeed) -> None:
        with self._lock:
            group = self._feeds.get(feed.gateway_id)
            if group is not None:
                group.discard(feed)
                if not group:
                    del self._feeds[feed.gateway_id]


def _finite(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _report_payload(incident: Incident) -> dict[str, Any]:
    out = incident.to_dict()
    out.pop("evidence", None)  # bulky; it stays in incident_reports
    return out
