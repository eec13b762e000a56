"""Baseline 1: signature and threshold rules in the style of Suricata/Snort.

Each rule is one row of RULES: which decoded records it looks at (`on`: packets or MQTT
messages as the agent's decoder produces them, or the payload of telnet packets), a match
(`match`: a named selector in SELECTORS), how it tracks (`track`: by source address, or by the
MQTT client's address), and a threshold in the manner of Suricata's
`threshold: type threshold, track by_src, count N, seconds T` / `detection_filter`: the rule
fires at the record where `count` matching records (or, with `measure = "bytes"`, bytes) fall
in the last `seconds`; with `distinct` each value (e.g. destination address and port) counts
once per window, as in a port-scan rule. `count = 1` is a plain signature (alert on the first
match).

Alerts of one rule and source less than CLOSE_AFTER_S apart make one detection (the way an
analyst's console groups them, and the way the agent's incidents are debounced), with
`time` = the first matching record of its first window and `detected_at` = the record at which
the rule first fired. They are scored by the harness with the same rules as ATLAS's incidents.

What the rules cannot see, by construction: values out of a device's physical range
(false_data) need the device profiles, which a generic IDS does not have; exfiltration is
seen only as a volume threshold to addresses outside HOME_NET, whatever the device.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from atlas.agent.decode import (
    CONNACK,
    CONNECT,
    MQTT_BAD_FLAGS,
    MQTT_BAD_LENGTH,
    MQTT_BAD_UTF8,
    MQTT_OVERSIZE,
    MQTT_PROTOCOL,
    MQTT_TRUNCATED,
    PUBLISH,
    SUBSCRIBE,
    TCP_ACK,
    TCP_SYN,
)
from atlas.sim.evaluate.baselines import BaselineResult, baseline
from atlas.sim.evaluate.baselines.decoded import TELNET_PORTS, DecodedCapture
from atlas.sim.evaluate.baselines.windows import crossings, episodes

CLOSE_AFTER_S = 60.0
MALFORMED_CODES = (MQTT_BAD_LENGTH, MQTT_BAD_FLAGS, MQTT_BAD_UTF8, MQTT_OVERSIZE, MQTT_TRUNCATED,
                   MQTT_PROTOCOL)  # not MQTT_STREAM_GAP: capture loss is no attack
# Default credentials from the Mirai source's scanner table (public since 2016): the login
# lines of a telnet brute force in the Mirai style; matched as whole lines of the payload.
MIRAI_CREDENTIALS = (
    b"xc3511", b"vizxv", b"888888", b"xmhdipc", b"default", b"juantech", b"123456", b"54321",
    b"support", b"root", b"admin", b"user", b"guest", b"password", b"12345", b"pass", b"admin1234",
    b"1111", b"smcadmin", b"666666", b"1234", b"klv123", b"Administrator", b"service",
    b"supervisor", b"admin1", b"administrator", b"ubnt", b"klv1234", b"Zte521", b"hi3518",
    b"jvbzd", b"anko", b"zlxx.", b"7ujMko0vizxv", b"7ujMko0admin", b"system", b"ikwb",
    b"dreambox", b"realtek", b"00000000", b"1111111", b"meinsm", b"tech", b"mother", b"fucker",
)


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # the attack kind the rule's alert names
    on: str  # "packets" | "mqtt" | "payload"
    match: str  # key of SELECTORS
    count: float
    seconds: float
    track: str = "by_src"  # by_src: the packet's source; by_client: the MQTT client's address
    distinct: tuple[str, ...] = ()  # record fields counted once per window
    measure: str = "records"  # "records" | "bytes" (wire bytes of the matching packets)
    doc: str = ""


# The rule table. Thresholds are what an operator would set for a city network without
# per-device knowledge: above the busiest benign device or back-end, below the attacks'
# documented rates (e.g. Suricata's ET SCAN rules use 5-70 SYNs in 60-120 s).
RULES: tuple[Rule, ...] = (
    Rule("syn_scan", "port_scan", "packets", "tcp_syn", 25, 10.0, distinct=("dst", "dport"),
         doc="TCP SYN (no ACK) to 25 distinct address:port pairs in 10 s"),
    Rule("telnet_scan", "mirai_scan", "packets", "telnet_syn", 5, 60.0, distinct=("dst",),
         doc="TCP SYN to 23/2323 of 5 distinct addresses in 60 s"),
    Rule("telnet_default_login", "mirai_scan", "payload", "mirai_credential", 1, 0.0,
         doc="a telnet payload line equal to a Mirai default user name or password"),
    Rule("mqtt_connect_failures", "mqtt_bruteforce", "mqtt", "connack_refused", 5, 60.0,
         track="by_client", doc="5 CONNACKs refusing a client (return code != 0) in 60 s"),
    Rule("mqtt_publish_rate", "mqtt_flood", "mqtt", "publish_in", 500, 5.0, track="by_client",
         doc="500 PUBLISH from one address in 5 s (100/s)"),
    Rule("mqtt_connect_rate", "connection_dos", "mqtt", "connect_in", 30, 10.0, track="by_client",
         doc="30 CONNECT from one address in 10 s"),
    Rule("mqtt_long_keepalive", "slowite", "mqtt", "connect_long_keepalive", 10, 60.0,
         track="by_client", doc="10 CONNECT with keepalive >= 3600 s from one address in 60 s"),
    Rule("mqtt_malformed", "malformed", "mqtt", "malformed", 1, 0.0, track="by_client",
         doc="an MQTT message the decoder rejects (bad length/flags/UTF-8, oversize, "
             "truncated, forbidden value)"),
    Rule("mqtt_wildcard_subscribe", "topic_scan", "mqtt", "wildcard_subscribe", 1, 0.0,
         track="by_client", doc="SUBSCRIBE to '#'-style wildcards or $SYS topics"),
    Rule("outbound_volume", "exfiltration", "packets", "outbound", 1_000_000, 60.0,
         measure="bytes", doc="1 MB from one HOME_NET device (not the broker) to outside "
                              "HOME_NET in 60 s"),
)


def _tcp_syn(p: np.ndarray, ctx: _Ctx) -> np.ndarray:
    return (p["proto"] == 6) & ((p["tcp_flags"] & (TCP_SYN | TCP_ACK)) == TCP_SYN)


def _telnet_syn(p: np.ndarray, ctx: _Ctx) -> np.ndarray:
    return _tcp_syn(p, ctx) & np.isin(p["dport"], TELNET_PORTS)


def _outbound(p: np.ndarray, ctx: _Ctx) -> np.ndarray:
    # the broker relays every device's data to the back-ends outside: not a device's volume
    return ctx.home(p["src"]) & ~ctx.home(p["dst"]) & (p["ipver"] == 4) & ~np.isin(p["src"], ctx.servers)


def _connack_refused(m: np.ndarray, ctx: _Ctx) -> np.ndarray:
    return (m["mtype"] == CONNACK) & (m["to_broker"] == 0) & (m["return_code"] != 0) & (m["error"] == 0)


def _publish_in(m: np.ndarray, ctx: _Ctx) -> np.ndarray:
    return (m["mtype"] == PUBLISH) & (m["to_broker"] == 1)


def _connect_in(m: np.ndarray, ctx: _Ctx) -> np.ndarray:
    return (m["mtype"] == CONNECT) & (m["to_broker"] == 1)


def _connect_long_keepalive(m: np.ndarray, ctx: _Ctx) -> np.ndarray:
    return _connect_in(m, ctx) & (m["keepalive"] >= 3600)


def _malformed(m: np.ndarray, ctx: _Ctx) -> np.ndarray:
    return (m["to_broker"] == 1) & np.isin(m["error"], MALFORMED_CODES)


def _wildcard_subscribe(m: np.ndarray, ctx: _Ctx) -> np.ndarray:
    return (m["mtype"] == SUBSCRIBE) & (m["to_broker"] == 1) & ((m["wildcard"] == 1) | (m["sys_topic"] == 1))


def mirai_credential(payload: bytes) -> bool:
    """Is one line of this payload a Mirai default credential?"""
    lines = payload.replace(b"\r", b"\n").replace(b"\x00", b"\n").split(b"\n")
    return any(line.strip() in _CREDENTIALS for line in lines)


_CREDENTIALS = frozenset(MIRAI_CREDENTIALS)

SELECTORS: dict[str, Callable[[np.ndarray, _Ctx], np.ndarray]] = {
    "tcp_syn": _tcp_syn, "telnet_syn": _telnet_syn, "outbound": _outbound,
    "connack_refused": _connack_refused, "publish_in": _publish_in, "connect_in": _connect_in,
    "connect_long_keepalive": _connect_long_keepalive, "malformed": _malformed,
    "wildcard_subscribe": _wildcard_subscribe,
}
PAYLOAD_SELECTORS: dict[str, Callable[[bytes], bool]] = {"mirai_credential": mirai_credential}


class _Ctx:
    """HOME_NET of the gateway (its device subnet), as Suricata's address variable, and the
    gateway's own servers (its broker)."""

    def __init__(self, home_net: list[str], servers: list[str] = ()):
        self.servers = np.array([int(ipaddress.IPv4Address(a)) for a in servers if a], dtype=np.uint64)
        self.nets = [ipaddress.ip_network(n, strict=False) for n in home_net if n]
        self.nets = [n for n in self.nets if n.version == 4]

    def home(self, keys: np.ndarray) -> np.ndarray:
        out = np.zeros(len(keys), dtype=bool)
        for net in self.nets:
            lo, size = int(net.network_address), net.num_addresses
            out |= (keys >= lo) & (keys < lo + size)
        return out


def check_rules(rules: tuple[Rule, ...] = RULES) -> None:
    """Refuse a rule table that names an unknown selector, source or field."""
    for r in rules:
        where = f"signature rule {r.name!r}"
        if r.on not in ("packets", "mqtt", "payload"):
            raise ValueError(f"{where}: on: {r.on!r} is not packets, mqtt or payload")
        table = PAYLOAD_SELECTORS if r.on == "payload" else SELECTORS
        if r.match not in table:
            raise ValueError(f"{where}: match: unknown selector {r.match!r} for {r.on} "
                             f"(known: {', '.join(sorted(table))})")
        if r.track not in ("by_src", "by_client"):
            raise ValueError(f"{where}: track: {r.track!r} is not by_src or by_client")
        if r.track == "by_client" and r.on != "mqtt":
            raise ValueError(f"{where}: track by_client needs MQTT records")
        if r.measure not in ("records", "bytes") or (r.measure == "bytes" and r.on != "packets"):
            raise ValueError(f"{where}: measure: {r.measure!r} (bytes only on packets)")
        if r.count < 1 or r.seconds < 0:
            raise ValueError(f"{where}: count must be >= 1 and seconds >= 0")


def run_rules(cap: DecodedCapture, home_net: list[str], rules: tuple[Rule, ...] = RULES,
              servers: list[str] = ()) -> list[dict[str, Any]]:
    """Detections of every rule on one gateway's decoded capture, in time order. Each:
    {src_ip, kind, rule, time, detected_at, last_seen, alerts, gateway}. `home_net`: the
    gateway's subnets; `servers`: its broker's addresses."""
    check_rules(rules)
    ctx = _Ctx(home_net, servers)
    out: list[dict[str, Any]] = []
    for r in rules:
        ts, key, fired = _fire(cap, r, ctx)
        for src, first_fire, last_fire, alerts in episodes(ts[fired], key[fired], CLOSE_AFTER_S):
            # first evidence: the earliest matching record of the window that fired first
            mine = (key == src) & (ts >= first_fire - r.seconds) & (ts <= first_fire)
            out.append({"src_ip": cap.name(src), "kind": r.kind, "rule": r.name,
                        "time": float(ts[mine].min()), "detected_at": first_fire,
                        "last_seen": last_fire, "alerts": alerts, "gateway": cap.gateway})
    return sorted(out, key=lambda d: (d["detected_at"], d["src_ip"], d["rule"]))


def _fire(cap: DecodedCapture, r: Rule, ctx: _Ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, tracking keys, fired mask) of the records the rule matches."""
    if r.on == "payload":
        idx = np.array(sorted(i for i, b in cap.payloads.items() if PAYLOAD_SELECTORS[r.match](b)),
                       dtype=np.int64)
        rows = cap.packets[idx]
    else:
        recs = cap.packets if r.on == "packets" else cap.mqtt
        rows = recs[SELECTORS[r.match](recs, ctx)]
    ts = rows["ts"]
    key = rows["client"] if r.track == "by_client" else rows["src"]
    if r.count <= 1 and r.measure == "records":
        return ts, key, np.ones(len(rows), dtype=bool)
    distinct = _combine([rows[f] for f in r.distinct]) if r.distinct else None
    weight = rows["wirelen"] if r.measure == "bytes" else None
    return ts, key, crossings(ts, key, r.count, r.seconds, distinct=distinct, weight=weight)


def _combine(cols: list[np.ndarray]) -> np.ndarray:
    """One uint64 per combination of (small) field values, for distinct counting."""
    out = np.zeros(len(cols[0]), dtype=np.uint64)
    for c in cols:
        out = out * np.uint64(1 << 17) ^ c.astype(np.uint64)  # dst (32 bits) then port (16)
    return out


def rules_table(rules: tuple[Rule, ...] = RULES) -> str:
    """The rule table as Markdown, for the report."""
    lines = ["| rule | kind | on | threshold | track |", "|---|---|---|---|---|"]
    for r in rules:
        thr = "first match" if r.count <= 1 and r.measure == "records" else \
            f"{r.count:g} {'bytes' if r.measure == 'bytes' else 'records'}" + \
            (f" (distinct {'+'.join(r.distinct)})" if r.distinct else "") + f" in {r.seconds:g} s"
        lines.append(f"| {r.name}: {r.doc} | {r.kind} | {r.on} | {thr} | {r.track} |")
    return "\n".join(lines)


@baseline("signature")
def signature_baseline(city: Any, agent: Any, report_dir: Path) -> BaselineResult:
    """The rules on every gateway's capture (run_rules, in the shared pass over the captures);
    the harness scores the detections."""
    from atlas.sim.evaluate.baselines.passes import city_pass

    detections = {gw: g.signature for gw, g in city_pass(city, agent, report_dir).gateways.items()}
    notes = ("Suricata/Snort-style threshold rules (atlas.sim.evaluate.baselines.signature.RULES) on "
             "the agent's decoded packets and MQTT messages of the same captures; HOME_NET = each "
             "gateway's subnet; no rule for false_data (needs device profiles). Rules: "
             + "; ".join(f"{r.name} ({r.kind}): {r.doc}" for r in RULES) + ".")
    return BaselineResult("signature", notes=notes, detections=detections)
