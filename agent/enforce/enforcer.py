"""The Enforcer owns the gateway's desired rule set and keeps the backends equal to it.

    hub --RuleChange--> Enforcer.apply --validate--> desired rules --(state file first)--> backends
                         Enforcer.expire (timer): drops rules whose TTL ran out
                         Enforcer.reconcile (start): state file + what backends hold -> converge

A snapshot replaces the desired set, an upsert adds or replaces rules by id, a withdraw
removes ids. Shadow rules are validated, recorded and reported, and go to a dry-run backend
only. A rule a backend failed to install stays desired and is retried by expire() every
RETRY_S seconds.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from atlas.link.rules import Rule
from atlas.agent.enforce.backend import Backend, BackendError, Element
from atlas.agent.enforce.dryrun import DryRunBackend
from atlas.agent.enforce.state import EnforceState, StateError, load_state, save_state
from atlas.link.rules import DEFAULT_MAX_TTL, Allowlist, RuleRejected
from atlas.agent.enforce.validate import rule_element
from atlas.link.wire import RuleAck, RuleChange

log = logging.getLogger(__name__)

KINDS = ("snapshot", "upsert", "withdraw")
RETRY_S = 5.0  # how often failed rules and backends unreachable at start are tried again


@dataclass
class EnforceReport:
    """What reconcile found: for the log at start and for `atlas-agent status`."""

    orphans: list[Element] = field(default_factory=list)  # removed: in force, not desired
    missing: list[Element] = field(default_factory=list)  # re-added: desired, not in force
    failed: dict[Element, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # rule id -> why (expired, now invalid)
    backend_errors: dict[str, str] = field(default_factory=dict)  # backend -> why it could not reconcile
    state_error: str = ""  # the state file was unreadable (moved aside)


class Enforcer:
    def __init__(
        self,
        backends: Sequence[Backend],
        state_path: str | Path,
        allowlist: Allowlist = Allowlist(),
        *,
        max_ttl: float = DEFAULT_MAX_TTL,
        clock: Callable[[], float] = time.time,
        mode: str = "enforce",
    ) -> None:
        self.backends = list(backends)
        self.shadow = DryRunBackend(name="shadow")
        self.route: dict[str, Backend] = {}
        for backend in self.backends:
            for action in backend.actions:
                if action in self.route:
                    raise ValueError(f"action {action!r} has two backends: {self.route[action].name}, {backend.name}")
                self.route[action] = backend
        self.state_path = Path(state_path)
        self.allowlist = allowlist
        self.max_ttl = max_ttl
        self.clock = clock
        self.mode = mode
        self._lock = threading.RLock()
        self._rules: dict[str, Rule] = {}
        self._elements: dict[str, Element] = {}
        self._errors: dict[str, str] = {}  # rule id -> last backend failure
        self._unreconciled: set[str] = {b.name for b in self.backends}
        self._candidates: dict[str, list[Element]] = {}  # from the state file: what backends may hold
        self._next_retry = 0.0
        self.state_error = ""  # last failure to write the state file, for status()
        self._started = False
        self._timer: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- the hub's changes ------------------------------------------------------------

    def apply(self, change: RuleChange) -> list[RuleAck]:
        """Apply one RuleChange; one ack per rule (and per withdrawn id), in order."""
        with self._lock:
            if not self._started:
                self.reconcile()
            now = self.clock()
            rules_in = [getattr(item, "rule", item) for item in change.rules]  # SignedRule or Rule
            if change.kind not in KINDS:
                why = f"kind: {change.kind!r} is not one of {', '.join(KINDS)}"
                return [RuleAck(str(getattr(r, "id", "")), False, why) for r in rules_in] + [RuleAck(i, False, why) for i in change.withdrawn]
            acks: dict[str, RuleAck] = {}
            if change.kind == "withdraw":
                rules = dict(self._rules)
                for rule_id in change.withdrawn:
                    rules.pop(rule_id, None)  # withdrawing an unknown id is already done
                    acks[rule_id] = RuleAck(rule_id, False, "")
                elements = dict(self._elements)
            else:
                rules = {} if change.kind == "snapshot" else dict(self._rules)
                elements = {} if change.kind == "snapshot" else dict(self._elements)
                for rule in rules_in:
                    rule_id = str(getattr(rule, "id", ""))
                    try:
                        element = self._check(rule, now)
                    except RuleRejected as exc:
                        acks[rule_id] = RuleAck(rule_id, False, str(exc))
                        continue
                    rules[rule.id] = copy.deepcopy(rule)  # the caller's object may change later
                    elements[rule.id] = element
                    acks[rule.id] = RuleAck(rule.id, True, "")
            errors = self._commit(rules, elements, now)
            for rule_id, error in errors.items():
                if rule_id in acks:
                    acks[rule_id] = RuleAck(rule_id, False, error)
            return list(acks.values())

    def expire(self, now: float | None = None) -> list[str]:
        """Remove rules whose TTL ran out (and retry failed ones); return the expired ids."""
        with self._lock:
            now = self.clock() if now is None else now
            retry = self._started and bool(self._errors or self._unreconciled) and now >= self._next_retry
            if retry and self._unreconciled:
                self._reconcile_backends(now, EnforceReport())
            expired = [rid for rid, rule in self._rules.items() if rule.expires_at <= now]
            if not expired and not retry:
                return []
            rules = {rid: r for rid, r in self._rules.items() if rid not in expired}
            elements = {rid: e for rid, e in self._elements.items() if rid in rules}
            self._commit(rules, elements, now)
            for rid in expired:
                log.info("enforce: rule %s expired", rid)
            return expired

    # ---- start and crash recovery -------------------------------------------------------

    def reconcile(self) -> EnforceReport:
        """Converge backends with the persisted desired state (call at start)."""
        with self._lock:
            now = self.clock()
            report = EnforceReport()
            try:
                state = load_state(self.state_path)
            except StateError as exc:
                report.state_error = str(exc)
                aside = self.state_path.with_name(f"{self.state_path.name}.corrupt-{int(now)}")
                try:
                    if not self.state_path.is_file():  # a folder or a device is not ours to move
                        raise OSError("not a regular file")
                    self.state_path.replace(aside)  # kept for a human to look at
                except OSError:
                    aside = self.state_path
                log.error("enforce: %s; kept as %s, starting from an empty rule set", exc, aside)
                state = EnforceState()
            self._rules, self._elements = {}, {}
            for rule in state.rules.values():
                try:
                    self._elements[rule.id] = self._check(rule, now)
                    self._rules[rule.id] = rule
                except RuleRejected as exc:
                    report.dropped[rule.id] = str(exc)
            self._candidates = state.applied
            self._unreconciled = {b.name for b in self.backends}
            self._reconcile_backends(now, report)
            self._started = True
            log.info(
                "enforce: reconciled %d rules: %d orphans removed, %d missing re-added, %d dropped",
                len(self._rules), len(report.orphans), len(report.missing), len(report.dropped),
            )
            return report

    def _reconcile_backends(self, now: float, report: EnforceReport) -> None:
        desired = self._desired(now)
        pending = [b for b in self.backends if b.name in self._unreconciled]
        self._save(desired)  # write-ahead
        for backend in pending:
            candidates = self._candidates.get(backend.name, [])
            try:
                result = backend.reconcile(desired[backend.name], candidates, now)
            except (BackendError, OSError) as exc:
                report.backend_errors[backend.name] = str(exc)
                log.error("enforce: cannot reconcile %s: %s (retrying every %.0f s)", backend.name, exc, RETRY_S)
                self._next_retry = now + RETRY_S
                continue
            self._unreconciled.discard(backend.name)
            report.orphans.extend(result.orphans)
            report.missing.extend(result.missing)
            report.failed.update(result.failed)
        self.shadow.apply(desired[self.shadow.name], now)
        self._errors = self._rule_errors(report.failed, report.backend_errors)
        self._save(desired)

    # ---- internals --------------------------------------------------------------------

    def _check(self, rule: Any, now: float) -> Element:
        if not isinstance(rule, Rule):
            raise RuleRejected("?", "rule", f"expected a Rule, got {type(rule).__name__}")
        element = rule_element(rule, now, self.allowlist, self.max_ttl)
        if not rule.shadow and rule.action not in self.route:
            raise RuleRejected(rule.id, "action", f"{rule.action} is not available on this gateway (no backend configured for it)")
        return element

    def _backend_of(self, rule: Rule) -> Backend:
        return self.shadow if rule.shadow else self.route[rule.action]

    def _desired(self, now: float) -> dict[str, dict[Element, float]]:
        desired: dict[str, dict[Element, float]] = defaultdict(dict)
        for b in (*self.backends, self.shadow):
            desired[b.name] = {}
        for rid, rule in self._rules.items():
            if rule.expires_at <= now:
                continue
            want = desired[self._backend_of(rule).name]
            element = self._elements[rid]
            want[element] = max(want.get(element, 0.0), rule.expires_at)
        return desired

    def _commit(self, rules: dict[str, Rule], elements: dict[str, Element], now: float) -> dict[str, str]:
        self._rules, self._elements = rules, elements
        desired = self._desired(now)
        before = self._save(desired)  # write-ahead: the file names everything a backend may hold
        failed: dict[Element, str] = {}
        backend_errors: dict[str, str] = {}
        for backend in (*self.backends, self.shadow):
            if backend.name in self._unreconciled:
                backend_errors[backend.name] = f"{backend.name}: not reconciled yet (unreachable at start)"
                continue
            try:
                failed.update(backend.apply(desired[backend.name], now))
            except (BackendError, OSError) as exc:
                backend_errors[backend.name] = str(exc)
        self._errors = self._rule_errors(failed, backend_errors)
        if self._errors:
            self._next_retry = now + RETRY_S
        self._save(desired, unless=before)  # shrink the applied record after removals
        return self._errors

    def _rule_errors(self, failed: dict[Element, str], backend_errors: dict[str, str]) -> dict[str, str]:
        errors: dict[str, str] = {}
        for rid, rule in self._rules.items():
            backend = self._backend_of(rule)
            why = backend_errors.get(backend.name) or failed.get(self._elements[rid], "")
            if why:
                errors[rid] = f"{why} (kept; retried every {RETRY_S:.0f} s)"
        return errors

    def _save(self, desired: dict[str, dict[Element, float]], unless: Any = None) -> dict[str, list[Element]]:
        """Write the state file (skipped if the applied record equals `unless`); return that record."""
        applied = {}
        for backend in self.backends:
            held = set(backend.view) | set(desired[backend.name])
            if backend.name in self._unreconciled:
                held |= set(self._candidates.get(backend.name, []))
            applied[backend.name] = sorted(held)
        if applied != unless:
            try:
                save_state(self.state_path, EnforceState(dict(self._rules), applied))
                self.state_error = ""
            except OSError as exc:  # keep enforcing: a full disk must not let an attacker in
                self.state_error = f"{self.state_path}: cannot write enforcement state: {exc.strerror or exc}"
                log.error("enforce: %s (rules are enforced but would not survive a restart)", self.state_error)
        return applied

    # ---- reporting and lifecycle --------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Active rules with remaining TTL and counters, for the CLI (JSON-ready)."""
        with self._lock:
            now = self.clock()
            counters, backends = {}, {}
            for b in (*self.backends, self.shadow):
                info: dict[str, Any] = {"enforces": b.enforces, "actions": sorted(b.actions), "elements": len(b.view)}
                try:
                    counters[b.name] = b.counters() if b.enforces else None
                except (BackendError, OSError) as exc:
                    counters[b.name], info["error"] = None, str(exc)
                if counters[b.name] is not None:
                    info["counters"] = {k: {"packets": c.packets, "bytes": c.bytes} for k, c in counters[b.name].rules.items()}
                if b.name in self._unreconciled:
                    info["error"] = info.get("error") or "not reconciled (unreachable)"
                backends[b.name] = info
            rules = []
            for rid, rule in sorted(self._rules.items(), key=lambda kv: (kv[1].expires_at, kv[0])):
                backend = self._backend_of(rule)
                element = self._elements[rid]
                c = counters.get(backend.name)
                count = c.elements.get(element) if c is not None else None
                if rule.shadow:
                    state = "shadow"
                elif rid in self._errors:
                    state = "failed"
                else:
                    state = "enforced" if backend.enforces else "recorded"
                rules.append({
                    "id": rid, "action": rule.action, "target": rule.target, "params": dict(rule.params),
                    "reason": rule.reason, "decision_id": rule.decision_id, "shadow": rule.shadow,
                    "expires_at": rule.expires_at, "remaining_s": round(max(0.0, rule.expires_at - now), 1),
                    "backend": backend.name, "state": state, "error": self._errors.get(rid, ""),
                    "packets": count.packets if count else None, "bytes": count.bytes if count else None,
                })
            return {"time": now, "mode": self.mode, "rules": rules, "backends": backends, "state_file": str(self.state_path), "state_error": self.state_error}

    def rules(self) -> list[Rule]:
        with self._lock:
            return [copy.deepcopy(r) for r in self._rules.values()]

    def start_timer(self, interval: float = 0.5) -> None:
        """Run expire() every `interval` seconds on a daemon thread until shutdown()."""
        if self._timer is not None:
            return
        self._stop.clear()

        def tick() -> None:
            while not self._stop.wait(interval):
                try:
                    self.expire()
                except Exception:  # a timer that dies would leave rules past their TTL
                    log.exception("enforce: expiry tick failed")

        self._timer = threading.Thread(target=tick, name="atlas-enforce-expiry", daemon=True)
        self._timer.start()

    def shutdown(self) -> None:
        """Stop the timer and close connections. Installed rules stay until their TTL."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=5)
            self._timer = None
        for backend in self.backends:
            try:
                backend.shutdown()
            except Exception:
                log.exception("enforce: shutdown of %s failed", backend.name)

