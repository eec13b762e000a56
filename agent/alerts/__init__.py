"""Alerts: one structured incident per attacker and kind, updated while the attack lasts."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from atlas.link.incidents import Incident


@dataclass
class _Pending:
    """Positive ticks for a (device, kind) not yet confirmed as an incident."""

    first_ts: float
    hits: list[float]  # tick times
    score: float
    packets: int


class IncidentTracker:
    """Debounces positive detections into incidents, one per (attacker, kind).

    A (device, kind) becomes an incident after `confirm_hits` positive ticks within
    `confirm_window_s`, or at once when the score is at least `strong_score` (classifier
    probability) or `strong_anomaly` (anomaly error / threshold). While it lasts,
    further positive ticks update it; after `close_after_s` without one it closes. Debouncing is
    what keeps benign devices below one incident per device per day.

    Times are capture times. A tick whose time is not finite is ignored and counted
    (`bad_times`); time going back does not confuse it (an incident's `last_seen` never goes
    back), and `close_all` ends the incidents of a timeline the capture clock left.
    """

    def __init__(
        self,
        gateway: str,
        model_version: str,
        *,
        confirm_hits: int = 2,
        confirm_window_s: float = 10.0,
        strong_score: float = 0.99,
        strong_anomaly: float = 5.0,
        close_after_s: float = 60.0,
        max_open: int = 10_000,
        keep_closed: int | None = None,
    ) -> None:
        self.gateway = gateway
        self.model_version = model_version
        self.confirm_hits = confirm_hits
        self.confirm_window_s = confirm_window_s
        self.strong_score = strong_score
        self.strong_anomaly = strong_anomaly
        self.close_after_s = close_after_s
        self.max_open = max_open
        self.open: dict[tuple[str, str], Incident] = {}
        # A daemon keeps the latest closed incidents only (they went to the hub); replay keeps all.
        self.closed: deque[Incident] = deque(maxlen=keep_closed)
        self._pending: dict[tuple[str, str], _Pending] = {}
        self.dropped = 0  # incidents not opened because max_open were open
        self.bad_times = 0  # ticks ignored because their time was NaN or infinite

    def observe(
        self,
        now: float,
        src_ip: str,
        kind: str,
        score: float,
        first_ts: float,
        packets: int,
        dst_ip: str = "",
        device: str = "",
        evidence: dict[str, Any] | None = None,
    ) -> Incident | None:
        """Record one positive tick; returns the incident if it opened or changed."""
        if not math.isfinite(now):
            self.bad_times += 1
            return None
        if not math.isfinite(first_ts):
            first_ts = now
        key = (src_ip, kind)
        inc = self.open.get(key)
        if inc is not None:
            inc.last_seen = max(inc.last_seen, now)
            inc.score = max(inc.score, float(score))
            inc.packets += int(packets)
            if evidence:
                inc.evidence.update(evidence)
            return inc
        p = self._pending.get(key)
        if p is None or now - p.hits[0] > self.confirm_window_s:
            p = self._pending[key] = _Pending(first_ts, [], 0.0, 0)
        p.hits.append(now)
        p.score = max(p.score, float(score))
        p.packets += int(packets)
        strong = score >= (self.strong_anomaly if kind == "anomaly" else self.strong_score)
        if len(p.hits) < self.confirm_hits and not strong:
            return None
        del self._pending[key]
        if len(self.open) >= self.max_open:
            self.dropped += 1
            return None
        inc = Incident(
            id=f"{self.gateway}/{src_ip}/{kind}/{int(p.first_ts * 1000)}",
            kind=kind,
            src_ip=src_ip,
            dst_ip=dst_ip,
            device=device or src_ip,
            gateway=self.gateway,
            time=p.first_ts,
            last_seen=now,
            score=p.score,
            model_version=self.model_version,
            packets=p.packets,
            evidence=dict(evidence or {}),
        )
        self.open[key] = inc
        return inc

    def expire(self, now: float) -> list[Incident]:
        """Close incidents quiet for `close_after_s`; forget stale pending hits."""
        if not math.isfinite(now):
            return []
        done = [k for k, inc in self.open.items() if now - inc.last_seen > self.close_after_s]
        closed = []
        for k in done:
            inc = self.open.pop(k)
            inc.state = "closed"
            closed.append(inc)
        self.closed.extend(closed)
        for k in [k for k, p in self._pending.items() if now - p.hits[-1] > self.confirm_window_s]:
            del self._pending[k]
        return closed

    def close_all(self) -> list[Incident]:
        """Close every open incident and forget pending hits (the capture clock stepped back:
        their times belong to a timeline that ended)."""
        closed = list(self.open.values())
        self.open.clear()
        self._pending.clear()
        for inc in closed:
            inc.state = "closed"
        self.closed.extend(closed)
        return closed

    def all(self) -> list[Incident]:
        """Closed then open incidents, in order of their first packet."""
        return sorted([*self.closed, *self.open.values()], key=lambda i: i.time)
