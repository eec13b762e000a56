"""The enforcement backend interface: one small contract, one module per enforcement point.

A backend is told the *desired state* (every element that must be in force, with its expiry)
and makes its enforcement point match it. Desired-state rather than add/delete calls makes
"apply the same rule twice" a no-op by construction and lets reconcile-at-start be the same
operation as a normal apply (as CrowdSec bouncers do with init/add/delete/commit, folded into
one diff).

An `Element` is what a backend actually installs. Several rules can map to one element (two
decisions quarantining the same address); the element then lives as long as the longest of
them, and a withdrawal of one rule does not lift the other.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping


class BackendError(RuntimeError):
    """An enforcement point refused or could not be reached; the message names which and why."""


@dataclass(frozen=True, order=True)
class Element:
    """One installed enforcement item. `target` is normalized (ipaddress compressed form)."""

    action: str  # one of ACTIONS
    target: str  # address, or MQTT username for revoke_mqtt
    proto: str = ""  # filter: "tcp" | "udp"
    port: int = 0  # filter: destination port
    pps: int = 0  # rate_limit: packets per second allowed

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "proto": self.proto, "port": self.port, "pps": self.pps}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Element":
        return cls(
            action=str(raw["action"]),
            target=str(raw["target"]),
            proto=str(raw.get("proto", "")),
            port=int(raw.get("port", 0)),
            pps=int(raw.get("pps", 0)),
        )

    def describe(self) -> str:
        extra = {"filter": f" {self.proto}/{self.port}", "rate_limit": f" {self.pps} pps"}.get(self.action, "")
        return f"{self.action} {self.target}{extra}"


@dataclass
class ReconcileReport:
    """What a reconcile found and fixed (for the log and the CLI)."""

    orphans: list[Element] = field(default_factory=list)  # in force but not desired: removed
    missing: list[Element] = field(default_factory=list)  # desired but not in force: re-added
    failed: dict[Element, str] = field(default_factory=dict)  # could not be fixed (retried later)

    def merge(self, other: "ReconcileReport") -> None:
        self.orphans.extend(other.orphans)
        self.missing.extend(other.missing)
        self.failed.update(other.failed)


@dataclass
class Counter:
    packets: int = 0
    bytes: int = 0


@dataclass
class Counters:
    elements: dict[Element, Counter] = field(default_factory=dict)  # per installed element
    rules: dict[str, Counter] = field(default_factory=dict)  # per fixed rule, by its name


class Backend(ABC):
    """An enforcement point. Calls come from one thread at a time (the Enforcer's lock)."""

    name: str = "backend"
    actions: frozenset[str] = frozenset()
    enforces: bool = True  # False for dry-run: it records, nothing is blocked

    def __init__(self) -> None:
        # What this backend believes is in force: element -> expiry (epoch seconds).
        self.view: dict[Element, float] = {}

    @abstractmethod
    def observe(self, candidates: Iterable[Element] = ()) -> dict[Element, float | None]:
        """Read the enforcement point: elements in force now, with their expiry when known.

        `candidates` are elements this backend may have installed earlier (from the state
        file); a backend that cannot list its own items (the MQTT broker) checks just those.
        """

    @abstractmethod
    def apply(self, desired: Mapping[Element, float], now: float) -> dict[Element, str]:
        """Make the enforcement point hold exactly `desired`; return the elements that failed.

        Unchanged elements cost nothing. Failed elements stay out of `view`, so the next
        apply retries them.
        """

    def reconcile(self, desired: Mapping[Element, float], candidates: Iterable[Element], now: float) -> ReconcileReport:
        """At start: take the enforcement point's real state as the view, then apply."""
        observed = self.observe(candidates)
        report = ReconcileReport(
            orphans=sorted(set(observed) - set(desired)),
            missing=sorted(set(desired) - set(observed)),
        )
        self.view = {e: (exp if exp is not None else now) for e, exp in observed.items()}
        report.failed = self.apply(desired, now)
        return report

    def counters(self) -> Counters:
        return Counters()

    def shutdown(self) -> None:
        """Release connections. Installed elements stay until their TTL (that is intended)."""


def diff(view: Mapping[Element, float], desired: Mapping[Element, float], slack: float = 1.0) -> tuple[dict[Element, float], list[Element]]:
    """(to add or refresh, to remove). An expiry that moved by more than `slack` is refreshed."""
    upserts = {e: exp for e, exp in desired.items() if e not in view or abs(view[e] - exp) > slack}
    removals = sorted(e for e in view if e not in desired)
    return upserts, removals
