"""Baseline 4: a static response playbook, against ATLAS's decision step, for the availability
of critical services during mitigation.

For every ATLAS incident of the run, two responses:

- ATLAS: the hub's real decision code (atlas.central.decide: the Playbook policy, then the
  shield) with the attacker's inventory entry from the city (criticality and the profile's
  `responses`: acceptable / needs_fallback). Decisions that wait for a human's approval are
  not applied (the simulation has no human), suppressed ones neither; shadow ones are ignored.
- Static playbook: quarantine the incident's source, for a fixed TTL, whatever it is.

Both start at the incident's raise time (`evidence.detected_at`, else its first evidence)
plus `dispatch_s` (the hub's decision and the rule's way to the gateway), on the incident's
gateway, and last their TTL. They are applied to the gateway's traffic as decoded from the
capture (atlas.sim.evaluate.baselines.decoded):

- quarantine X: every packet and MQTT message from X is lost while the rule lasts;
- filter X port/proto: X's packets to that port are lost (its MQTT messages if it is an MQTT port);
- rate_limit X pps: in each second, X's packets beyond `pps` are lost (each packet and message of
  that second delivered with probability pps / packets, counted as an expected value);
- revoke_mqtt ID: the messages of MQTT connections whose CONNECT client id is ID are lost, and
  every MQTT session from the device whose account ID is (its own, which may predate the
  capture, and any other it opens with its credentials): the broker disables the account.

Availability = delivered / expected MQTT PUBLISH messages of the critical devices (criticality
life_safety or essential) of each gateway during the mitigation windows (the union of both
policies' rule windows on that gateway, so both are measured on the same messages), not
counting a compromised device's messages while it attacks. Attacks stopped = the attackers'
packets (ground truth) lost to the rules, over their packets after the first rule against them.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from atlas.agent.decode import PUBLISH
from atlas.agent.decode.mqtt import topic_hash
from atlas.central.decide import NO_ACTION, Allowlist, Policy, decision_context, respond
from atlas.central.decide.inventory import (
    DeviceEntry,
    Inventory,
    ProfileInfo,
    default_profiles,
)
from atlas.central.decide.playbook import Playbook
from atlas.central.store import HubIncident
from atlas.sim.evaluate.baselines import BaselineResult, baseline
from atlas.sim.evaluate.baselines.decoded import (
    MQTT_PORTS,
    DecodedCapture,
    decode_capture,
)

CRITICAL = ("life_safety", "essential")
STATIC_TTL_S = 900.0
DISPATCH_S = 1.0  # the agent reports every second; incident -> rule in the kernel: p99 37 ms (bench/RESULTS.md)
STOPPED_SHARE = 0.9  # a step counts as stopped when this share of its packets after the first rule is lost


@dataclass(frozen=True)
class Response:
    """One rule as applied to a gateway's traffic."""

    policy: str
    gateway: str
    incident: str
    action: str  # quarantine | filter | rate_limit | revoke_mqtt
    target: str  # an address, or an MQTT client id for revoke_mqtt
    start: float
    end: float
    params: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # the incident's attacker address


def city_inventory(city: Any, profiles: Mapping[str, ProfileInfo] | None = None, *,
                   per_gateway: bool = False) -> Inventory:
    """The hub's inventory of the city's devices (city.json), with each profile's responses.

    Entries carry no gateway unless `per_gateway`: the city's subnets are distinct, so an
    address names one device city-wide, and a device that attacks another gateway (a pivot)
    is still known for what it is. With `per_gateway`, the hub would match it only behind its
    own gateway and take it for an outside host elsewhere."""
    profiles = default_profiles() if profiles is None else profiles
    entries = []
    for d in city.devices:
        info = profiles.get(str(d.get("class", "")))
        entries.append(DeviceEntry(
            address=str(d.get("ip", "")), client_id=str(d.get("client_id", "")),
            gateway=str(d.get("gateway", "")) if per_gateway else "",
            profile=str(d.get("class", "")), criticality=str(d.get("criticality") or (info.criticality if info else "ordinary")),
            acceptable=info.acceptable if info else None, needs_fallback=info.needs_fallback if info else (),
            fallback=info.fallback if info else ""))
    return Inventory(entries)


def _get(inc: Any, key: str, default: Any = None) -> Any:
    return inc.get(key, default) if isinstance(inc, Mapping) else getattr(inc, key, default)


def raised_at(inc: Any) -> float:
    """When the agent raised the incident (the harness's `detected_at`), else its first evidence."""
    evidence = _get(inc, "evidence") or {}
    t = evidence.get("detected_at") if isinstance(evidence, Mapping) else None
    return float(t if t is not None else _get(inc, "time"))


def hub_incident(inc: Any, gateway: str) -> HubIncident:
    t = float(_get(inc, "time"))
    return HubIncident(id=str(_get(inc, "id")), kind=str(_get(inc, "kind")), src_ip=str(_get(inc, "src_ip")),
                       device=str(_get(inc, "device") or ""), dst_ip=str(_get(inc, "dst_ip") or ""),
                       first_seen=t, last_seen=float(_get(inc, "last_seen") or t), score=float(_get(inc, "score") or 0),
                       packets=int(_get(inc, "packets") or 0), state=str(_get(inc, "state") or "open"),
                       created_at=raised_at(inc), gateways=[gateway])


def atlas_responses(incidents: Mapping[str, Iterable[Any]], inventory: Inventory, *,
                    policy: Policy | None = None, allowlist: Allowlist | None = None,
                    dispatch_s: float = DISPATCH_S) -> list[Response]:
    """The rules the hub's decision step (policy + shield) would put in force for each incident."""
    policy = policy or Playbook()
    allowlist = allowlist or Allowlist()
    out = []
    for gw, items in sorted(incidents.items()):
        for inc in items:
            hub = hub_incident(inc, gw)
            now = raised_at(inc) + dispatch_s
            ctx = decision_context(inventory, hub, now, allowlist)
            for d in respond(policy, hub, ctx):
                if d.suppressed or d.requires_approval or d.shadow or d.action == NO_ACTION:
                    continue
                out.append(Response("atlas", gw, hub.id, d.action, d.target, now, now + float(d.ttl), dict(d.params),
                                    hub.src_ip))
    return out


def static_responses(incidents: Mapping[str, Iterable[Any]], *, ttl: float = STATIC_TTL_S,
                     dispatch_s: float = DISPATCH_S) -> list[Response]:
    """Quarantine the source of every incident for `ttl` seconds."""
    if not ttl > 0:
        raise ValueError(f"static playbook ttl: must be > 0 seconds, got {ttl!r}")
    out = []
    for gw, items in sorted(incidents.items()):
        for inc in items:
            now = raised_at(inc) + dispatch_s
            src = str(_get(inc, "src_ip"))
            out.append(Response("static", gw, str(_get(inc, "id")), "quarantine", src, now, now + ttl, {}, src))
    return out


def address_key(cap: DecodedCapture, address: str) -> int | None:
    try:
        return cap.key(address)
    except (ValueError, KeyError):
        return None


class Delivery:
    """Delivered share (0..1) of each packet and MQTT message of one gateway under some rules."""

    def __init__(self, cap: DecodedCapture, responses: Sequence[Response], devices_by_client: Mapping[str, str]):
        self.cap = cap
        p, m = cap.packets, cap.mqtt
        self.packets = np.ones(len(p))
        self.mqtt = np.ones(len(m))
        # (client address, client port) of every MQTT connection and its client id hash, for revoke_mqtt
        conn = m["client_hash"] != 0
        self._conn_key = conn_key(m["client"][conn], m["client_port"][conn])
        self._conn_hash = m["client_hash"][conn]
        self._packet_key = conn_key(p["src"], p["sport"])
        for r in responses:
            self._apply(r, devices_by_client)

    def _window(self, ts: np.ndarray, r: Response) -> np.ndarray:
        return (ts >= r.start) & (ts < r.end)

    def _apply(self, r: Response, devices_by_client: Mapping[str, str]) -> None:
        p, m = self.cap.packets, self.cap.mqtt
        if r.action == "revoke_mqtt":
            h = np.uint64(topic_hash(r.target.encode("utf-8")))
            hit_m = (m["client_hash"] == h)
            device = devices_by_client.get(r.target)
            key = address_key(self.cap, device) if device else None
            sessions = self._conn_key[self._conn_hash == h]
            if key is not None:
                # The broker disables the account (the MQTT username, a device's client id here), so
                # every session that logs in with it ends: the device's own (maybe opened before the
                # capture) and a second one it opens itself (a compromised device forging or flooding
                # with its own credentials under another client id).
                own = m["client"] == key
                hit_m |= own
                sessions = np.concatenate([sessions, conn_key(m["client"][own], m["client_port"][own])])
            hit_m &= self._window(m["ts"], r)
            pk = np.isin(self._packet_key, np.unique(sessions))
            self.mqtt[hit_m] = 0.0
            self.packets[pk & self._window(p["ts"], r)] = 0.0
            return
        key = address_key(self.cap, r.target)
        if key is None:
            return
        src_p = (p["src"] == key) & self._window(p["ts"], r)
        src_m = (m["client"] == key) & (m["to_broker"] == 1) & self._window(m["ts"], r)
        if r.action == "quarantine":
            self.packets[src_p | ((p["dst"] == key) & self._window(p["ts"], r))] = 0.0
            self.mqtt[src_m] = 0.0
        elif r.action == "filter":
            port, proto = int(r.params.get("port", 0)), str(r.params.get("proto", "tcp"))
            number = {"tcp": 6, "udp": 17}.get(proto, -1)
            self.packets[src_p & (p["dport"] == port) & (p["proto"] == number)] = 0.0
            if port in MQTT_PORTS and number == 6:
                self.mqtt[src_m] = 0.0
        elif r.action == "rate_limit":
            pps = float(r.params.get("pps", 0))
            sec = np.floor(p["ts"][src_p]).astype(np.int64)
            if not len(sec):
                return
            bins, inv, counts = np.unique(sec, return_inverse=True, return_counts=True)
            share = np.minimum(1.0, pps / counts)
            idx = np.flatnonzero(src_p)
            self.packets[idx] = np.minimum(self.packets[idx], share[inv.ravel()])
            msec = np.floor(m["ts"][src_m]).astype(np.int64)
            pos = np.searchsorted(bins, msec)
            ok = (pos < len(bins)) & (bins[np.minimum(pos, len(bins) - 1)] == msec)
            midx = np.flatnonzero(src_m)
            mshare = np.where(ok, share[np.minimum(pos, len(bins) - 1)], 1.0)
            self.mqtt[midx] = np.minimum(self.mqtt[midx], mshare)


def conn_key(address: np.ndarray, port: np.ndarray) -> np.ndarray:
    return (address.astype(np.uint64) << np.uint64(16)) | port.astype(np.uint64)


def _windows_mask(ts: np.ndarray, windows: Sequence[tuple[float, float]]) -> np.ndarray:
    out = np.zeros(len(ts), dtype=bool)
    for a, b in windows:
        out |= (ts >= a) & (ts < b)
    return out


def evaluate_gateway(cap: DecodedCapture, policies: Mapping[str, Sequence[Response]], critical: Sequence[str],
                     steps: Sequence[Any], devices_by_client: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Per policy: expected and delivered critical messages in the mitigation windows (the
    union of every policy's rule windows), attacker packets after the first rule and lost."""
    m = cap.mqtt
    windows = [(r.start, r.end) for rs in policies.values() for r in rs]
    keys = [k for k in (address_key(cap, a) for a in critical) if k is not None]
    crit = (m["mtype"] == PUBLISH) & (m["to_broker"] == 1) & np.isin(m["client"], np.array(keys, dtype=np.uint64))
    crit &= _windows_mask(m["ts"], windows)
    for s in steps:  # a compromised device's own messages while it attacks are not a service
        for a in s.attackers or [s.attacker]:
            k = address_key(cap, a)
            if k is not None:
                crit &= ~((m["client"] == k) & (m["ts"] >= s.start) & (m["ts"] <= s.end))
    out = {}
    for name, responses in policies.items():
        d = Delivery(cap, responses, devices_by_client)
        res = {"expected": float(crit.sum()), "delivered": float(d.mqtt[crit].sum()),
               "attacker_packets": 0.0, "attacker_lost": 0.0, "steps": 0, "steps_stopped": 0, "rules": len(responses)}
        for s in steps:
            keys_s = [k for k in (address_key(cap, a) for a in s.attackers or [s.attacker]) if k is not None]
            p = cap.packets
            mine = np.isin(p["src"], np.array(keys_s, dtype=np.uint64)) & (p["ts"] >= s.start) & (p["ts"] <= s.end)
            first = min((r.start for r in responses if r.source in (s.attackers or [s.attacker])), default=None)
            res["steps"] += 1
            if first is None:
                continue
            after = mine & (p["ts"] >= first)
            lost = float((1.0 - d.packets[after]).sum())
            res["attacker_packets"] += float(after.sum())
            res["attacker_lost"] += lost
            if after.sum() and lost / float(after.sum()) >= STOPPED_SHARE:
                res["steps_stopped"] += 1
        out[name] = res
    return out


def policy_responses(city: Any, incidents: Mapping[str, Iterable[Any]], *, static_ttl: float = STATIC_TTL_S,
                     dispatch_s: float = DISPATCH_S) -> dict[str, list[Response]]:
    """{"atlas": the hub's decision step's rules, "static": the static playbook's} for the incidents."""
    incidents = {gw: list(v) for gw, v in incidents.items()}
    brokers = Allowlist.parse(g.get("broker", "") for g in city.gateways if g.get("broker"))
    return {"atlas": atlas_responses(incidents, city_inventory(city), allowlist=brokers, dispatch_s=dispatch_s),
            "static": static_responses(incidents, ttl=static_ttl, dispatch_s=dispatch_s)}


def gateway_outcome(city: Any, gw: str, cap: DecodedCapture | None,
                    policies: Mapping[str, Sequence[Response]]) -> dict[str, dict[str, float]] | None:
    """evaluate_gateway on one gateway of the city (decoding its capture if `cap` is None);
    None when no policy has a rule there."""
    mine = {name: [r for r in rs if r.gateway == gw] for name, rs in policies.items()}
    if not any(mine.values()):
        return None
    critical = [str(d["ip"]) for d in city.devices if d.get("gateway") == gw and d.get("criticality") in CRITICAL]
    devices_by_client = {str(d.get("client_id")): str(d.get("ip")) for d in city.devices if d.get("client_id")}
    cap = cap if cap is not None else decode_capture(city.pcap(gw), gw)
    return evaluate_gateway(cap, mine, critical, city.steps_of(gw), devices_by_client)


def summarize(policies: Mapping[str, Sequence[Response]],
              outcomes: Iterable[dict[str, dict[str, float]] | None]) -> dict[str, dict[str, Any]]:
    """City totals per policy from the gateways' outcomes, with availability and attacks stopped."""
    totals = {name: {"expected": 0.0, "delivered": 0.0, "attacker_packets": 0.0, "attacker_lost": 0.0,
                     "steps": 0, "steps_stopped": 0, "rules": 0, "actions": {}} for name in policies}
    for name, rs in policies.items():
        for r in rs:
            totals[name]["actions"][r.action] = totals[name]["actions"].get(r.action, 0) + 1
    for res in outcomes:
        for name, r in (res or {}).items():
            for k, v in r.items():
                totals[name][k] += v
    for t in totals.values():
        t["availability"] = t["delivered"] / t["expected"] if t["expected"] else None
        t["attacks_stopped"] = t["attacker_lost"] / t["attacker_packets"] if t["attacker_packets"] else None
    return totals


def _describe(t: dict[str, Any]) -> str:
    av = f"{100 * t['availability']:.2f} %" if t["availability"] is not None else "n/a"
    stop = f"{100 * t['attacks_stopped']:.1f} %" if t["attacks_stopped"] is not None else "n/a"
    acts = ", ".join(f"{v} {k}" for k, v in sorted(t["actions"].items())) or "no rules"
    return (f"availability {av} ({t['delivered']:.0f}/{t['expected']:.0f} critical messages), {acts}, "
            f"attacker packets after the first rule lost {stop}, steps stopped {t['steps_stopped']}")


@baseline("static_playbook")
def static_playbook_baseline(city: Any, agent: Any, report_dir: Path) -> BaselineResult:
    from atlas.sim.evaluate.baselines.passes import city_pass

    run = city_pass(city, agent, report_dir)
    totals = summarize(run.policies, (g.playbook for g in run.gateways.values()))
    a, s = totals["atlas"], totals["static"]
    notes = (f"responses to ATLAS's incidents applied to the captures, without the attacks' effects (only a response "
             f"can lose a message here; the closed loop with attacks that hurt services is report.json's "
             f"atlas.response, atlas.sim.evaluate.availability); "
             f"static playbook = quarantine every incident source for {STATIC_TTL_S:g} s: {_describe(s)}. "
             f"ATLAS (central.decide Playbook + shield, city inventory; approvals not given): {_describe(a)}.")
    if not a["expected"] and not s["expected"]:
        notes += " No critical device sent messages during a mitigation window."
    return BaselineResult("static_playbook", metrics={"availability": s["availability"]}, notes=notes,
                          atlas={"availability": a["availability"], "attacks_stopped": a["attacks_stopped"],
                                 "static_attacks_stopped": s["attacks_stopped"]})
