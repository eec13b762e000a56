"""Profile conformance: what a device's firmware profile allows, checked on the wire.

The models learn what traffic usually looks like; a profile says what a device class may do at
all. Given the gateway's device inventory (which device is at which address, with which MQTT
client id and profile) this check flags:

- `profile_violation`: a device sending on a port, transport or direction its profile does not
  list (MQTT to the broker ports, the profile's `[[protocols]]`, and DHCP and DNS, which every
  device needs: INFRASTRUCTURE): a smart meter opening telnet connections (Mirai), a sensor
  uploading to an outside host on 443; or publishing readings on another device's topic (seen
  on the sampled PUBLISH messages below). Every TCP/UDP packet
  a known device sends is checked, vectorized (a few numpy passes per batch). RSTs are not
  "talking": a device refusing a scanner's probe is not its fault.
- `false_data`: an MQTT PUBLISH on a profile topic (`city/<district>/.../<client id>/...`) whose
  JSON values fall outside the field's physical [min, max] (or are not numbers). Message
  headers are located vectorized; topics and JSON are read in Python, so they are sampled:
  per publisher a token bucket of one read per `conformance_interval_s` (every message of a
  publisher within that rate is read; above it, messages are drawn at random, so a forgery
  sent right behind the device's own reading is not always the one skipped), at most
  `conformance_max_per_s` per second of traffic overall, both divided by the governor's
  `dissect_every` when it sheds deep dissection. The publisher may be anybody (a spoofer with stolen credentials is caught
  too); the device named is the one whose topic it is. Only PUBLISH messages that start and
  end in one segment are read (a device's readings are small).

## The inventory file (`[detect] inventory` in agent.toml)

The hub's inventory format (central/decide/inventory.py), TOML or JSON, so one city file can
serve the hub and every gateway:

    [[device]]
    address = "10.20.1.5"        # IPv4 (profile_violation needs it); optional if client_id is given
    client_id = "sm-d01-0001"    # MQTT client id; optional if address is given
    gateway = "gw-d01"           # optional: entries of other gateways are skipped
    profile = "smart_meter"      # a device profile (firmware_profiles/devices/<profile>.toml)
    criticality = "ordinary"     # optional, read by the hub only

JSON: {"device": [{...}, ...]} or just the list. `write_device_inventory()` writes one from the
simulator's device lists (city.json's `devices`, or a gateway's gateway.json's).

## Peers (`[detect] peers` in agent.toml, optional)

Profiles name their peers ("broker", "ntp", "csms", ...) but not their addresses. Without
`peers`, a protocol entry allows its port to any address. With, e.g.
`peers = { broker = ["10.20.0.1"], csms = ["172.16.50.0/24"] }`, traffic to a listed peer's port
must go to (or come from) those addresses; a peer given an empty list allows none. The peer
names are the profiles' (`peers = [...]` in each TOML) plus "broker", "dns" and "dhcp".
"""
from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from atlas.agent.capture import FrameBatch
from atlas.agent.decode import PUBLISH, TCP_ACK, TCP_RST, TCP_SYN
from atlas.agent.decode.mqtt import parse_message
from atlas.agent.decode.packets import IPV6_KEY_BASE
from atlas.link.inventory import ENTRY_KEYS, InventoryError, read_inventory  # noqa: F401 (re-exported)

# Allowed to every device whatever its profile: what any IP device needs to get an address and
# resolve its broker's name (as MUD managers allow them). Restricted by `peers` like the rest.
INFRASTRUCTURE = (("udp", 67, "outbound", "dhcp"), ("udp", 53, "outbound", "dns"), ("tcp", 53, "outbound", "dns"))
TCP, UDP = 6, 17
CAP_BURST = 2  # PUBLISH reads a quiet publisher has in hand (its reading and one more)
RATE_HALF_LIFE_PERIODS = 4  # a publisher's PUBLISH rate is measured over about this many periods
MAX_JSON = 16384  # larger payloads are not readings (snapshots, firmware): not parsed
_OUT, _IN = 0, 1  # rule roles: the remote's port (device connects out) / the device's own port


@dataclass(frozen=True)
class InventoryDevice:
    address: str
    client_id: str
    profile: str
    gateway: str = ""


@dataclass
class Finding:
    """One device's breach of its profile in one batch (the pipeline turns it into an incident)."""

    kind: str  # "false_data" | "profile_violation"
    src_ip: str  # who sent it
    dst_ip: str
    device: str  # the device concerned: client id, else address
    first_ts: float
    last_ts: float
    packets: int
    evidence: dict[str, Any] = field(default_factory=dict)


# ---- the inventory ---------------------------------------------------------------------------

class DeviceInventory:
    """The devices behind this gateway, by address and by MQTT client id."""

    def __init__(self, devices: Iterable[InventoryDevice], source: str = "<inventory>") -> None:
        self.devices = list(devices)
        self.source = source
        self.by_client = {d.client_id: i for i, d in enumerate(self.devices) if d.client_id}
        v4 = [(int(ipaddress.IPv4Address(d.address)), i) for i, d in enumerate(self.devices)
              if d.address and ipaddress.ip_address(d.address).version == 4]
        v4.sort()
        self.keys = np.array([k for k, _ in v4], dtype=np.uint64)
        self.index = np.array([i for _, i in v4], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.devices)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Device index per host key, -1 where none (vectorized)."""
        keys = np.asarray(keys, dtype=np.uint64)
        if self.keys.size == 0:
            return np.full(keys.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        return np.where(self.keys[pos] == keys, self.index[pos], -1)


def load_device_inventory(path: str | Path, profiles: Mapping[str, Any], *, gateway: str = "") -> DeviceInventory:
    """Read and validate an inventory file (atlas.link.inventory); entries of other
    gateways are left out. Every problem names the file, the entry and the key."""
    out, seen_addr, seen_cid = [], {}, {}
    for i, e in enumerate(read_inventory(path)):
        if e.profile not in profiles:
            raise InventoryError(f"{e.where}.profile: unknown profile {e.profile!r} (known: {', '.join(sorted(profiles))})")
        if gateway and e.gateway and e.gateway != gateway:
            continue
        for key, value, seen in (("address", e.address, seen_addr), ("client_id", e.client_id, seen_cid)):
            if value and value in seen:
                raise InventoryError(f"{e.where}.{key}: {value} is also device[{seen[value]}]")
            if value:
                seen[value] = i
        out.append(InventoryDevice(e.address, e.client_id, e.profile, e.gateway))
    return DeviceInventory(out, str(path))


def write_device_inventory(path: str | Path, devices: Iterable[Mapping[str, Any]], *, gateway: str = "") -> int:
    """Write an inventory file (JSON, the format above) from device records as the simulator
    writes them: city.json's `devices` ({ip, class, client_id, gateway, criticality}) or a
    gateway's gateway.json `devices` ({ip, cls, client_id}). Returns the number written."""
    out = []
    for d in devices:
        entry = {"address": d.get("address") or d.get("ip", ""), "client_id": d.get("client_id", ""),
                 "profile": d.get("profile") or d.get("class") or d.get("cls", "")}
        gw = d.get("gateway") or gateway
        if gw:
            entry["gateway"] = gw
        if d.get("criticality"):
            entry["criticality"] = d["criticality"]
        out.append(entry)
    Path(path).write_text(json.dumps({"device": out}, indent=1) + "\n")
    return len(out)


# ---- peers -------------------------------------------------------------------------------------

def parse_peers(raw: Mapping[str, Any], where: str = "detect.peers") -> dict[str, list[tuple[int, int]]]:
    """{peer name: [address or network, ...]} -> {name: [(first, last) IPv4 ranges]}."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a table like {{ broker = [\"10.20.0.1\"] }}")
    out: dict[str, list[tuple[int, int]]] = {}
    for name, nets in raw.items():
        if not isinstance(nets, list) or not all(isinstance(n, str) for n in nets):
            raise ValueError(f"{where}.{name}: must be a list of addresses or networks, got {nets!r}")
        ranges = []
        for n in nets:
            try:
                net = ipaddress.ip_network(n, strict=False)
            except ValueError:
                raise ValueError(f"{where}.{name}: {n!r} is not an address or network") from None
            if net.version != 4:
                raise ValueError(f"{where}.{name}: {n!r}: only IPv4 peers are checked")
            ranges.append((int(net.network_address), int(net.broadcast_address)))
        out[str(name)] = ranges
    return out


# ---- the check ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _TopicRule:
    profile: str
    topic: str  # the profile's template
    fields: tuple  # numeric FieldSpecs: (name, min, max, unit, type)


class ConformanceCheck:
    """Checks each batch against the devices' profiles; `check()` returns Findings."""

    def __init__(self, inventory: DeviceInventory, profiles: Mapping[str, Any], *, mqtt_ports: Iterable[int] = (1883, 8883),
                 peers: Mapping[str, list[tuple[int, int]]] | None = None, interval_s: float = 5.0,
                 max_per_s: float = 50.0, max_publishers: int = 65536) -> None:
        self.inv = inventory
        self.profiles = profiles
        self.mqtt_ports = np.array(sorted(set(int(p) for p in mqtt_ports)), dtype=np.int64)
        self.peers = dict(peers or {})
        self.interval_s = float(interval_s)
        self.max_per_s = float(max_per_s)
        self.max_publishers = int(max_publishers)
        names = sorted({d.profile for d in inventory.devices})
        self._class_of = {n: i for i, n in enumerate(names)}
        self.dev_class = np.array([self._class_of[d.profile] for d in inventory.devices], dtype=np.int64)
        self._build_port_rules(names)
        self._build_topic_rules(names)
        # Rate cap of payload checks, per publisher (host key, sorted).
        self._cap_keys = np.zeros(0, dtype=np.uint64)
        self._cap_tokens = np.zeros(0, dtype=np.float64)  # reads in hand, per publisher
        self._cap_ts = np.zeros(0, dtype=np.float64)  # ... as of this time
        self._cap_seen = np.zeros(0, dtype=np.float64)  # decayed count of its PUBLISH candidates
        self._rng = np.random.default_rng(0)  # sampling over budget; seeded: replays repeat
        self.checked = 0  # PUBLISH payloads decoded, in total
        self.skipped = 0  # PUBLISH candidates left out by the rate cap
        self._names: Callable[[int], str] = _name
        self._tokens = 0.0
        self._bucket_ts: float | None = None
        self._topic_cache: dict[bytes, tuple | None] = {}

    # -- rules --------------------------------------------------------------------------------
    def _build_port_rules(self, names: list[str]) -> None:
        codes, peer_ids, self._peer_names = [], [], []
        self.allowed_text: dict[str, list[str]] = {}

        def peer_id(name: str) -> int:
            if name not in self.peers:
                return -1  # addresses unknown: the port alone decides
            if name not in self._peer_names:
                self._peer_names.append(name)
            return self._peer_names.index(name)

        for c, n in enumerate(names):
            prof = self.profiles[n]
            text = []
            for port in self.mqtt_ports.tolist():
                codes.append(_code(c, TCP, _OUT, port))
                peer_ids.append(peer_id("broker"))
                text.append(f"tcp/{port} out (broker)")
            entries = [(p.transport, p.port, p.direction, p.peer) for p in prof.protocols] + list(INFRASTRUCTURE)
            for transport, port, direction, peer in entries:
                codes.append(_code(c, TCP if transport == "tcp" else UDP, _IN if direction == "inbound" else _OUT, port))
                peer_ids.append(peer_id(peer))
                text.append(f"{transport}/{port} {'in' if direction == 'inbound' else 'out'} ({peer})")
            self.allowed_text[n] = text
        order = np.argsort(np.array(codes, dtype=np.int64), kind="stable")
        self._codes = np.array(codes, dtype=np.int64)[order]
        self._code_peer = np.array(peer_ids, dtype=np.int64)[order]

    def _build_topic_rules(self, names: list[str]) -> None:
        """Profile topics keyed by their template with the district and id segments blanked."""
        self._topics: dict[str, _TopicRule] = {}
        self._id_positions: set[tuple[int, int]] = set()  # (segments, index of {id})
        for n in names:
            for t in self.profiles[n].mqtt.topics:
                if t.direction != "publish" or t.format != "json":
                    continue
                fields = tuple((f.name, f.min, f.max, f.unit, f.type) for f in t.fields if f.type in ("int", "float", "counter"))
                if not fields:
                    continue
                segs = t.topic.split("/")
                k = segs.index("{id}")
                self._id_positions.add((len(segs), k))
                self._topics[t.topic] = _TopicRule(n, t.topic, fields)

    def topic_rule(self, topic: str) -> tuple[_TopicRule, str] | None:
        """The profile topic this concrete topic is an instance of, and the client id in it."""
        segs = topic.split("/")
        if len(segs) < 3 or segs[0] != "city":
            return None
        for n, k in self._id_positions:
            if n != len(segs):
                continue
            key = "/".join(["city", "{district}"] + ["{id}" if j == k else s for j, s in enumerate(segs[2:], 2)])
            rule = self._topics.get(key)
            if rule is not None:
                return rule, segs[k]
        return None

    # -- per batch ----------------------------------------------------------------------------
    def check(self, batch: FrameBatch, packets: np.ndarray, *, dissect_every: int = 1,
              names: Callable[[int], str] | None = None) -> list[Finding]:
        """Findings of one decoded batch. `dissect_every` is the governor's deep-dissection
        sampling (Shedding.dissect_every); `names` turns host keys into text (AddressBook.name)."""
        if len(packets) == 0:
            return []
        self._names = names or _name
        dport = packets["dport"]
        to_mqtt = dport == self.mqtt_ports[0]
        for port in self.mqtt_ports[1:].tolist():
            to_mqtt |= dport == port
        to_mqtt &= packets["proto"] == TCP
        out = self._ports(packets, to_mqtt)
        out += self._payloads(batch, packets, to_mqtt, dissect_every)
        return out

    def _ports(self, packets: np.ndarray, to_mqtt: np.ndarray) -> list[Finding]:
        proto = packets["proto"]
        talk = ((proto == TCP) & ((packets["tcp_flags"] & TCP_RST) == 0)) | (proto == UDP)
        # Skip the bulk early: MQTT to the broker is allowed to every device, and the broker's
        # own packets are not a device's.
        broker = self.peers.get("broker")
        if broker is None:
            talk &= ~to_mqtt
        else:
            talk &= ~(to_mqtt & _in_ranges(packets["dst"], broker)) & ~_in_ranges(packets["src"], broker)
        cand = np.flatnonzero(talk)
        if cand.size == 0 or self.inv.keys.size == 0:
            return []
        dev = self.inv.lookup(packets["src"][cand])
        mine = dev >= 0
        if not mine.any():
            return []
        rows, dev = cand[mine], dev[mine]
        p = packets[rows]
        c = self.dev_class[dev]
        remote = p["dst"]
        ok = self._allowed(c, p["proto"], _OUT, p["dport"], remote) | self._allowed(c, p["proto"], _IN, p["sport"], remote)
        if ok.all():
            return []
        bad, dev = p[~ok], dev[~ok]
        findings = []
        order = np.argsort(dev, kind="stable")  # packets stay in time order within a device
        dev_s = dev[order]
        starts = np.flatnonzero(np.concatenate([[True], dev_s[1:] != dev_s[:-1]]))
        ends = np.concatenate([starts[1:], [dev_s.size]])
        for a, b in zip(starts.tolist(), ends.tolist()):
            rows_d = bad[order[a:b]]
            first = rows_d[0]
            d = self.inv.devices[int(dev_s[a])]
            inbound = int(first["proto"]) == TCP and (int(first["tcp_flags"]) & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)
            port = int(first["sport"] if inbound else first["dport"])
            peers = np.unique(rows_d["dst"])
            findings.append(Finding(
                kind="profile_violation", src_ip=d.address, dst_ip=self._names(int(first["dst"])), device=d.client_id or d.address,
                first_ts=float(first["ts"]), last_ts=float(rows_d["ts"][-1]), packets=int(b - a),
                evidence={
                    "profile": d.profile, "proto": "tcp" if int(first["proto"]) == TCP else "udp", "port": port,
                    "direction": "inbound" if inbound else "outbound", "peer": self._names(int(first["dst"])),
                    "ports": sorted({int(x) for x in (rows_d["sport"] if inbound else rows_d["dport"])})[:20],
                    "peers": int(peers.size), "allowed": self.allowed_text[d.profile],
                }))
        return findings

    def _allowed(self, c: np.ndarray, proto: np.ndarray, role: int, port: np.ndarray, remote: np.ndarray) -> np.ndarray:
        code = _code(c, proto.astype(np.int64), role, port.astype(np.int64))
        pos = np.minimum(np.searchsorted(self._codes, code), self._codes.size - 1)
        hit = self._codes[pos] == code
        peer = np.where(hit, self._code_peer[pos], -1)
        for k, name in enumerate(self._peer_names):
            sel = hit & (peer == k)
            if sel.any():
                hit[sel] = _in_ranges(remote[sel], self.peers[name])
        return hit

    def _payloads(self, batch: FrameBatch, packets: np.ndarray, to_mqtt: np.ndarray, dissect_every: int) -> list[Finding]:
        if not self._topics:
            return []
        every = max(1, int(dissect_every))
        plen = packets["payload_len"]
        cand = np.flatnonzero(to_mqtt & (plen >= 8))
        if cand.size == 0:
            return []
        buf = batch.buf
        cand = cand[(_at(buf, packets["payload_off"][cand]) >> 4) == PUBLISH]
        if cand.size == 0:
            return []
        self._refill(float(packets["ts"][0]), float(packets["ts"][-1]), every)
        # Sample first (cheap), then locate the sampled messages' fields (a PUBLISH split over
        # segments or too large to be a reading uses up its publisher's turn: rare for readings).
        pick = self._rate_cap(packets["src"][cand], packets["ts"][cand], every)
        budget = int(self._tokens)
        self.skipped += cand.size - min(pick.size, budget)
        rows = cand[pick[:budget]]
        self._tokens -= rows.size
        self.checked += rows.size
        msgs = _publish_headers(buf, packets["payload_off"][rows], plen[rows].astype(np.int64))
        rows, msgs = rows[msgs["whole"]], {k: v[msgs["whole"]] for k, v in msgs.items()}
        findings = []
        ts, src, dst = packets["ts"][rows], packets["src"][rows], packets["dst"][rows]
        publisher = self.inv.lookup(src).tolist()
        t_off, t_len, p_off, p_end, fast, start = (msgs[k].tolist() for k in ("topic_off", "topic_len", "body_off", "end", "ok", "start"))
        for j in range(rows.size):
            hit = self._topic_cached(buf[t_off[j] : t_off[j] + t_len[j]].tobytes())
            if hit is None:
                continue
            if publisher[j] >= 0:
                f = self._foreign_topic(self.inv.devices[publisher[j]], hit, float(ts[j]), int(dst[j]))
                if f is not None:
                    findings.append(f)
            if fast[j]:
                payload = buf[p_off[j] : p_end[j]].tobytes()
            else:  # MQTT 5.0 with properties, or not JSON: the reference codec decides
                m = parse_message(buf[start[j] : p_end[j]].tobytes(), True, 5)
                if m is None or m.error or m.payload_len > MAX_JSON:
                    continue
                payload = buf[p_end[j] - m.payload_len : p_end[j]].tobytes()
                if payload[:1] != b"{":
                    continue
            f = self._judge(hit, payload, float(ts[j]), int(src[j]), int(dst[j]))
            if f is not None:
                findings.append(f)
        return findings

    def _foreign_topic(self, me: InventoryDevice, hit: tuple, ts: float, dst_key: int) -> Finding | None:
        """A device of the inventory publishing readings on another device's topic: its
        profile's topics all carry its own client id, so this is impersonation whatever the
        values (a compromised device spoofing a neighbour)."""
        rule, cid = hit
        if not me.client_id or me.client_id == cid:
            return None
        return Finding(kind="profile_violation", src_ip=me.address, dst_ip=self._names(dst_key), device=me.client_id,
                       first_ts=ts, last_ts=ts, packets=1,
                       evidence={"profile": me.profile, "proto": "mqtt", "why": "publishes on another device's topic",
                                 "topic": rule.topic.replace("{id}", cid), "owner": cid, "owner_profile": rule.profile})

    def _refill(self, first: float, now: float, every: int) -> None:
        """Token bucket over traffic time: `max_per_s` reads per second (divided by the
        governor's `dissect_every`); a batch may use what its own time span earned, and at
        least one second's worth."""
        rate = self.max_per_s / every
        cap = rate * max(1.0, now - first)
        if self._bucket_ts is None:
            self._tokens = cap
        else:
            self._tokens = min(cap, self._tokens + max(0.0, now - self._bucket_ts) * rate)
        self._bucket_ts = now

    def _topic_cached(self, topic: bytes):
        hit = self._topic_cache.get(topic, False)
        if hit is False:
            try:
                hit = self.topic_rule(topic.decode("utf-8"))
            except UnicodeDecodeError:
                hit = None
            if len(self._topic_cache) >= 65536:  # bounded: topics are the publishers' choice
                self._topic_cache.clear()
            self._topic_cache[topic] = hit
        return hit

    def _rate_cap(self, src: np.ndarray, ts: np.ndarray, every: int) -> np.ndarray:
        """Indices (into src, in time order) of the PUBLISH candidates to decode.

        Per publisher, a token bucket earning one read per interval_s x `every` seconds and
        holding up to CAP_BURST: a publisher within that rate has every message read. Over it,
        candidates are first drawn at random with probability budget / rate (the publisher's
        decayed rate of candidates), then the bucket applies. The previous rule, the first
        message of each fixed period, never read a forgery sent just after the device's own
        reading, and reading the first message after each refill would not either.

        The bucket without a loop: with e_k the whole reads earned by the k-th drawn candidate's
        time (non-decreasing), reads after k candidates are r_k = min(r_(k-1) + 1, e_k)
        = k + min(0, min_(j<=k) (e_j - j)); candidate k is read when r grows. Tokens are capped
        between batches, not within one (a batch spans seconds at most)."""
        period = self.interval_s * every
        order = np.lexsort((ts, src))
        s, t = src[order], ts[order]
        if s.size == 0:
            return order
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        counts = np.diff(np.r_[starts, s.size])
        last = np.r_[starts[1:] - 1, s.size - 1]
        us, group = s[starts], np.repeat(np.arange(starts.size), counts)
        tok0, t0, seen = np.full(us.size, float(CAP_BURST)), t[starts].copy(), np.zeros(us.size)
        keys, known = self._cap_keys, np.zeros(us.size, dtype=bool)
        if keys.size:
            pos = np.minimum(np.searchsorted(keys, us), keys.size - 1)
            known = keys[pos] == us
            tok0[known], t0[known], seen[known] = (a[pos[known]] for a in (self._cap_tokens, self._cap_ts, self._cap_seen))
        half_life = RATE_HALF_LIFE_PERIODS * period
        seen = seen * np.exp2(-np.maximum(t[last] - t0, 0.0) / half_life) + counts
        # Per second over the window (or over the batch, when it spans longer: replays); n
        # messages span n - 1 gaps.
        rate = np.maximum(seen - 1.0, 0.0) / np.maximum(half_life / np.log(2), t[last] - t[starts])
        p = np.minimum(1.0, 1.0 / np.maximum(rate * period, 1e-12))
        drawn = np.flatnonzero(self._rng.random(s.size) < p[group])
        g = group[drawn]
        earned = tok0[g] + np.maximum(t[drawn] - t0[g], 0.0) / period
        take = np.zeros(drawn.size, dtype=bool)
        if drawn.size:
            gstart = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
            k = np.arange(drawn.size) - np.repeat(gstart, np.diff(np.r_[gstart, drawn.size])) + 1
            slack = np.floor(earned + 1e-9) - k
            # Running minimum per publisher in one pass: each later publisher's values are
            # shifted below every earlier one's, so minima never cross publishers.
            shift = g * (float(slack.max() - slack.min()) + 1.0)
            r = k + np.minimum(np.minimum.accumulate(slack - shift) + shift, 0.0)
            prev = np.r_[0.0, r[:-1]]
            prev[gstart] = 0.0
            take = r > prev
        reads = np.bincount(g[take], minlength=us.size)
        left = np.minimum(tok0 + np.maximum(t[last] - t0, 0.0) / period - reads, float(CAP_BURST))
        self._store_caps(us, known, left, t[last], seen)
        return np.sort(order[drawn[take]])

    def _store_caps(self, us: np.ndarray, known: np.ndarray, tokens: np.ndarray, ts: np.ndarray, seen: np.ndarray) -> None:
        keys = self._cap_keys
        if keys.size and known.any():
            pos = np.minimum(np.searchsorted(keys, us[known]), keys.size - 1)
            self._cap_tokens[pos], self._cap_ts[pos], self._cap_seen[pos] = tokens[known], ts[known], seen[known]
        new = ~known
        if new.any():
            old = (self._cap_tokens, self._cap_ts, self._cap_seen)
            if keys.size + int(new.sum()) > self.max_publishers:  # bounded: start over
                keys, old = keys[:0], tuple(a[:0] for a in old)
            k2 = np.concatenate([keys, us[new]])
            o = np.argsort(k2, kind="stable")
            self._cap_keys = k2[o]
            self._cap_tokens, self._cap_ts, self._cap_seen = (np.concatenate([a, b[new]])[o] for a, b in zip(old, (tokens, ts, seen)))

    def _judge(self, hit: tuple, payload: bytes, ts: float, src_key: int, dst_key: int) -> Finding | None:
        """Compare one reading's numeric fields with the profile's physical ranges."""
        rule, cid = hit
        try:
            doc = json.loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):
            return None  # not JSON: the malformed/anomaly paths judge it, not this one
        if not isinstance(doc, dict):
            return None
        bad = []
        for fname, lo, hi, unit, ftype in rule.fields:
            if fname not in doc:
                continue
            v = doc[fname]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                bad.append({"field": fname, "value": v if isinstance(v, (str, type(None))) else repr(v)[:40],
                            "allowed": [lo, hi], "unit": unit, "why": "not a number"})
            elif not math.isfinite(v) or v < lo or v > hi:
                bad.append({"field": fname, "value": v if math.isfinite(v) else str(v), "allowed": [lo, hi], "unit": unit,
                            "why": "outside the physical range"})
        if not bad:
            return None
        src = self._names(src_key)
        idx = self.inv.by_client.get(cid)
        owner = self.inv.devices[idx] if idx is not None else None
        ev = {"topic": rule.topic.replace("{id}", cid), "profile": rule.profile, **bad[0], "fields": bad, "publisher": src}
        if owner is not None:
            ev["device_address"] = owner.address
            ev["spoofed"] = bool(owner.address) and owner.address != src
            if owner.profile != rule.profile:
                ev["inventory_profile"] = owner.profile
        return Finding(kind="false_data", src_ip=src, dst_ip=self._names(dst_key), device=cid,
                       first_ts=ts, last_ts=ts, packets=1, evidence=ev)


def _at(buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Bytes at offsets (never negative) as int64; past the end reads the last byte."""
    return buf[np.minimum(idx, buf.size - 1)].astype(np.int64)


def _publish_headers(buf: np.ndarray, off: np.ndarray, seg_len: np.ndarray) -> dict[str, np.ndarray]:
    """Where topic and payload lie in PUBLISH messages that start a TCP segment and end in it,
    vectorized (the fixed header, topic length, packet id of QoS 1/2, and a 5.0 empty property
    block). `whole`: a PUBLISH that fits the segment; `ok`: one whose payload is located here
    and starts like a JSON object (the others go through the reference codec, parse_message)."""
    off = off.astype(np.int64)
    b0 = _at(buf, off)
    rl = np.zeros(off.size, dtype=np.int64)
    lb = np.zeros(off.size, dtype=np.int64)
    going = np.ones(off.size, dtype=bool)
    for k in range(4):  # the remaining length: a varint of 1..4 bytes
        b = _at(buf, off + 1 + k)
        rl += np.where(going, (b & 0x7F) << (7 * k), 0)
        lb += going
        going &= (b & 0x80) > 0
    qos = (b0 >> 1) & 3
    end = off + 1 + lb + rl
    topic_len = (_at(buf, off + 1 + lb) << 8) | _at(buf, off + 2 + lb)
    topic_off = off + 3 + lb
    body = topic_off + topic_len + 2 * (qos > 0)
    first = _at(buf, body)
    v5_empty = (first == 0) & (_at(buf, body + 1) == ord("{"))  # MQTT 5.0 with no properties
    body = body + v5_empty
    whole = ~going & (qos < 3) & (end - off <= seg_len) & (topic_len > 0) & (topic_off + topic_len <= end)
    ok = whole & (body < end) & (end - body <= MAX_JSON) & ((first == ord("{")) | v5_empty)
    return {"whole": whole, "ok": ok, "start": off, "topic_off": topic_off, "topic_len": topic_len, "body_off": body, "end": end}


def _code(c, proto, role, port):
    """One int64 per (class, transport, role, port): sortable and searchable."""
    return ((np.asarray(c, dtype=np.int64) * 2 + (np.asarray(proto, dtype=np.int64) == UDP)) * 2 + role) * 65536 + np.asarray(port, dtype=np.int64)


def _in_ranges(addr: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    a = np.asarray(addr, dtype=np.uint64)
    out = np.zeros(a.shape, dtype=bool)
    for lo, hi in ranges:
        out |= (a >= np.uint64(lo)) & (a <= np.uint64(hi))
    return out & (a < np.uint64(IPV6_KEY_BASE))


def _name(key: int) -> str:
    return str(ipaddress.IPv4Address(key)) if key < IPV6_KEY_BASE else f"ipv6#{key - IPV6_KEY_BASE}"


def from_config(detect: Any, agent: Any, profiles: Mapping[str, Any] | None = None) -> ConformanceCheck | None:
    """The check configured by [detect] inventory / peers / conformance_* (None when no
    inventory is configured). Raises InventoryError / ValueError naming the key or file."""
    if not detect.inventory:
        return None
    if profiles is None:
        from atlas.firmware_profiles import load_device_profiles

        profiles = load_device_profiles()
    inv = load_device_inventory(detect.inventory, profiles, gateway=agent.gateway_id)
    return ConformanceCheck(inv, profiles, mqtt_ports=agent.mqtt_ports, peers=parse_peers(detect.peers),
                            interval_s=detect.conformance_interval_s, max_per_s=detect.conformance_max_per_s)
