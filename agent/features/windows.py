"""Per-device features over damped sliding windows, computed per tick and vectorized.

Packets and MQTT messages are attributed to a *device*: the client side of the conversation
(the MQTT client, the TCP initiator). Within a tick (default 1 s of capture time) their counts
are aggregated per device with `np.bincount`; when the tick closes, each active device's
damped sums decay by the time since its last update and absorb the tick's counts, and one
feature row per active device leaves the stage. There is no Python work per packet; Python
loops run over distinct (device, port/host/topic) pairs only, for novelty.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atlas.agent.decode import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBLISH,
    SUBSCRIBE,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
)
from atlas.agent.features.schema import C, COUNTERS, HALF_LIVES, LONG_COUNTERS, N_FEATURES

_LONG_IDX = np.array([C[n] for n in LONG_COUNTERS])
RATIO_MIN_EVENTS = 0.5  # decayed events in the short window below which a ratio feature is 0
_N_SHORT, _N_LONG = len(COUNTERS), len(LONG_COUNTERS)

# The compact per-packet projection buffered while a tick is open.
_PKT = np.dtype([("ts", "f8"), ("dev", "u8"), ("peer", "u8"), ("out", "?"), ("len", "u4"), ("flags", "u1"), ("dport", "u2")])
# The MQTT_DTYPE fields the tick close reads (44 of MQTT_DTYPE's 68 bytes a message): at 50k
# packets/s and 4 s ticks (shedding level 3) a tick holds some 100k messages.
_MQ_FIELDS = ("ts", "client", "broker", "topic_hash", "payload_len", "keepalive", "to_broker", "mtype", "error",
              "return_code", "wildcard", "sys_topic")


@dataclass
class FeatureRows:
    """The feature rows of the devices active in one tick."""

    tick_end: float
    devices: np.ndarray  # uint64 host keys
    first_ts: np.ndarray  # float64: first packet of each device in the tick
    packets: np.ndarray  # int64: the device's packets in the tick (both directions)
    top_peer: np.ndarray  # uint64: the peer the device exchanged most packets with
    X: np.ndarray  # float32 [n, N_FEATURES], schema order

    def __len__(self) -> int:
        return int(self.devices.shape[0])


@dataclass
class ExtractorStats:
    ticks: int = 0
    packets: int = 0
    non_ip: int = 0
    late_packets: int = 0  # timestamps older than the open tick (attributed to it)
    devices: int = 0
    evicted_devices: int = 0
    novelty_resets: int = 0


class _Novelty:
    """Which (device, thing) pairs were seen within the horizon, and when; bounded.

    Sorted arrays searched once per tick (a Python dict of tuples cost about 250 bytes and a
    lookup per pair, with tens of thousands of devices). Pairs are found by a 64-bit hash and
    then compared exactly: two pairs of the same hash (odds about n^2 / 2^65) are not merged,
    the later one simply counts as new each time.
    """

    def __init__(self, horizon: float, max_keys: int) -> None:
        self.horizon = horizon
        self.max_keys = max_keys
        self._h = np.zeros(0, dtype=np.uint64)  # sorted
        self._dev = np.zeros(0, dtype=np.uint64)
        self._thing = np.zeros(0, dtype=np.uint64)
        self._last = np.zeros(0)

    def __len__(self) -> int:
        return len(self._h)

    def count_new(self, dev: np.ndarray, thing: np.ndarray, now: float) -> np.ndarray:
        """For distinct (dev, thing) pairs: True where not seen within the horizon; all are
        seen now."""
        dev = dev.astype(np.uint64, copy=False)
        thing = thing.astype(np.uint64, copy=False)
        h = _pair_hash(dev, thing)
        n = len(self._h)
        if n:
            i = np.minimum(np.searchsorted(self._h, h), n - 1)
            hit = self._h[i] == h
            same = hit & (self._dev[i] == dev) & (self._thing[i] == thing)
            new = ~same | (now - self._last[i] > self.horizon)
            self._last[i[same]] = now
        else:
            hit = np.zeros(len(h), dtype=bool)
            new = np.ones(len(h), dtype=bool)
        add = np.flatnonzero(~hit)
        if len(add):
            ha = h[add]
            order = np.argsort(ha, kind="stable")
            add, ha = add[order], ha[order]
            once = np.ones(len(ha), dtype=bool)
            once[1:] = ha[1:] != ha[:-1]
            add, ha = add[once], ha[once]
            pos = np.searchsorted(self._h, ha)
            self._h = np.insert(self._h, pos, ha)
            self._dev = np.insert(self._dev, pos, dev[add])
            self._thing = np.insert(self._thing, pos, thing[add])
            self._last = np.insert(self._last, pos, now)
        return new

    def prune(self, now: float) -> bool:
        """Drop stale keys; if still over the bound, forget everything. True if forgot."""
        if len(self._h) <= self.max_keys:
            return False
        keep = now - self._last <= self.horizon
        self._h, self._dev, self._thing, self._last = self._h[keep], self._dev[keep], self._thing[keep], self._last[keep]
        if len(self._h) > self.max_keys:
            self._h, self._dev, self._thing, self._last = (np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64),
                                                           np.zeros(0, dtype=np.uint64), np.zeros(0))
            return True
        return False


def _pair_hash(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    h = a * np.uint64(0x9E3779B97F4A7C15) ^ (b * np.uint64(0xC2B2AE3D27D4EB4F) + (b >> np.uint64(29)))
    return h ^ (h >> np.uint64(31))


class FeatureExtractor:
    """Turns batches of decoded packets and MQTT messages into per-device feature rows."""

    def __init__(
        self,
        mqtt_ports: tuple[int, ...] = (1883, 8883),
        tick_s: float = 1.0,
        max_devices: int = 65536,
        novelty_horizon_s: float = 300.0,
        max_novelty_keys: int = 500_000,
    ) -> None:
        self.mqtt_ports = np.array(sorted(mqtt_ports), dtype=np.uint16)
        self.tick_s = float(tick_s)
        self.max_devices = int(max_devices)
        self.stats = ExtractorStats()
        # Device -> slot: sorted host keys and their slots, searched once per tick.
        self._slot = np.zeros(0, dtype=np.uint64)
        self._slot_of = np.zeros(0, dtype=np.int64)
        self._short = np.zeros((0, _N_SHORT))
        self._long = np.zeros((0, _N_LONG))
        self._updated = np.zeros(0)  # time of each slot's last decay update
        self._free = np.zeros(0, dtype=np.int64)  # slots given back by eviction
        self._used = 0  # slots handed out so far from the end of the arrays
        self._keys = np.zeros(0, dtype=np.uint64)  # host key of each slot
        self._ports = _Novelty(novelty_horizon_s, max_novelty_keys)
        self._hosts = _Novelty(novelty_horizon_s, max_novelty_keys)
        self._topics = _Novelty(novelty_horizon_s, max_novelty_keys)
        self._tick_end: float | None = None
        self._pkts: list[np.ndarray] = []
        self._mqtt: list[np.ndarray] = []
        self._mq_dtype: np.dtype | None = None  # the compact MQTT projection (from the first rows)

    # ---- input ------------------------------------------------------------------------------

    def update(self, packets: np.ndarray, mqtt: np.ndarray | None = None) -> list[FeatureRows]:
        """Absorb a batch (PACKET_DTYPE rows, MQTT_DTYPE rows); return rows of ticks it closed."""
        out: list[FeatureRows] = []
        ip = packets[packets["ipver"] != 0]
        self.stats.non_ip += len(packets) - len(ip)
        self.stats.packets += len(ip)
        pk = self._project(ip)
        mq = self._project_mqtt(mqtt)
        if self._tick_end is None:
            first = [a["ts"].min() for a in (pk, mq) if len(a)]
            if not first:
                return out
            self._tick_end = self._end_of(min(first))
        # Each row belongs to the tick its timestamp falls in; late rows join the open tick.
        pk, p_end = self._by_tick(pk)
        mq, m_end = self._by_tick(mq)
        for end in np.unique(np.concatenate([p_end, m_end])).tolist():
            if end > self._tick_end:
                rows = self._close_tick()
                if rows is not None:
                    out.append(rows)
                self._tick_end = end
            for rows_, ends, buf in ((pk, p_end, self._pkts), (mq, m_end, self._mqtt)):
                lo, hi = np.searchsorted(ends, end, "left"), np.searchsorted(ends, end, "right")
                if hi > lo:
                    buf.append(rows_[lo:hi])
        return out

    def _project_mqtt(self, mqtt: np.ndarray | None) -> np.ndarray:
        """The MQTT rows' fields the tick close reads, compactly (values unchanged)."""
        if mqtt is None:
            return np.zeros(0, dtype=self._mq_dtype if self._mq_dtype is not None else [("ts", "f8")])
        if self._mq_dtype is None:
            self._mq_dtype = np.dtype([(f, mqtt.dtype[f]) for f in _MQ_FIELDS])
        mq = np.empty(len(mqtt), dtype=self._mq_dtype)
        for f in _MQ_FIELDS:
            mq[f] = mqtt[f]
        return mq

    def _end_of(self, ts: float) -> float:
        return float((np.floor(ts / self.tick_s) + 1) * self.tick_s)

    def _by_tick(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ordered by the end of their tick (stable), and those ends."""
        ends = np.maximum((np.floor(rows["ts"] / self.tick_s) + 1) * self.tick_s, self._tick_end)
        self.stats.late_packets += int(np.count_nonzero(rows["ts"] < self._tick_end - self.tick_s))
        if len(ends) > 1 and not bool(np.all(ends[1:] >= ends[:-1])):
            order = np.argsort(ends, kind="stable")
            rows, ends = rows[order], ends[order]
        return rows, ends

    def advance(self, now: float) -> list[FeatureRows]:
        """Close the open tick if `now` is past its end (live capture with idle periods)."""
        if self._tick_end is None or now < self._tick_end:
            return []
        rows = self._close_tick()
        self._tick_end = self._end_of(now)
        return [rows] if rows is not None else []

    def flush(self) -> list[FeatureRows]:
        """Close the open tick (end of a capture)."""
        if self._tick_end is None:
            return []
        rows = self._close_tick()
        self._tick_end = None
        return [rows] if rows is not None else []

    def _project(self, p: np.ndarray) -> np.ndarray:
        """Attribute each packet to its device (client/initiator) and direction."""
        flags = p["tcp_flags"]
        tcp = p["proto"] == 6
        syn_only = tcp & (flags & TCP_SYN != 0) & (flags & TCP_ACK == 0)
        syn_ack = tcp & (flags & TCP_SYN != 0) & (flags & TCP_ACK != 0)
        sport, dport = p["sport"], p["dport"]
        s_mqtt, d_mqtt = np.isin(sport, self.mqtt_ports), np.isin(dport, self.mqtt_ports)
        # Who is the client? Handshake flags say it for sure; otherwise the well-known side
        # (MQTT port, then the lower port below 1024, then the lower port) is the server.
        src_is_server = np.where(
            s_mqtt != d_mqtt,
            s_mqtt,
            np.where((sport < 1024) != (dport < 1024), sport < 1024, sport < dport),
        )
        out = np.where(syn_only, True, np.where(syn_ack, False, ~src_is_server))
        r = np.empty(len(p), dtype=_PKT)
        r["ts"] = p["ts"]
        r["dev"] = np.where(out, p["src"], p["dst"])
        r["peer"] = np.where(out, p["dst"], p["src"])
        r["out"] = out
        r["len"] = p["wirelen"]
        r["flags"] = np.where(tcp, flags, 0)
        r["dport"] = np.where(out, dport, sport)
        return r

    # ---- tick close ---------------------------------------------------------------------------

    def _close_tick(self) -> FeatureRows | None:
        pk = np.concatenate(self._pkts) if self._pkts else np.zeros(0, dtype=_PKT)
        mq = np.concatenate(self._mqtt) if self._mqtt else None
        self._pkts, self._mqtt = [], []
        now = float(self._tick_end)
        self.stats.ticks += 1
        devs = pk["dev"] if mq is None else np.concatenate([pk["dev"], mq["client"]])
        if not len(devs):
            return None
        keys, inv = np.unique(devs, return_inverse=True)
        del devs  # 8 bytes a row: not kept through the close
        n = len(keys)
        pinv, minv = inv[: len(pk)], inv[len(pk) :]
        counts = np.zeros((n, _N_SHORT))
        self._packet_counts(pk, pinv, keys, counts, now)
        shape = np.zeros((n, 9))
        if mq is not None and len(mq):
            self._mqtt_counts(mq, minv, keys, counts, shape, now)
        self._packet_shape(pk, pinv, n, counts, shape)
        slots = self._slots_for(keys, now)
        X = self._decay_and_emit(slots, counts, shape, now)
        first_ts, packets, top_peer = self._device_summary(pk, pinv, n, mq, minv)
        for nov in (self._ports, self._hosts, self._topics):
            self.stats.novelty_resets += nov.prune(now)
        return FeatureRows(now, keys, first_ts, packets, top_peer, X)

    def _packet_counts(self, pk: np.ndarray, inv: np.ndarray, keys: np.ndarray, counts: np.ndarray, now: float) -> None:
        n = len(keys)
        out = pk["out"]
        f = pk["flags"]
        syn_only = (f & TCP_SYN != 0) & (f & TCP_ACK == 0)
        syn_ack = (f & TCP_SYN != 0) & (f & TCP_ACK != 0)
        rst = f & TCP_RST != 0
        w = pk["len"].astype(np.float64)

        def add(name: str, mask: np.ndarray, weights: np.ndarray | None = None) -> None:
            counts[:, C[name]] += np.bincount(inv[mask], None if weights is None else weights[mask], minlength=n)

        add("pkts_out", out)
        add("pkts_in", ~out)
        add("bytes_out", out, w)
        add("bytes_in", ~out, w)
        add("syn_out", out & syn_only)
        add("synack_in", ~out & syn_ack)
        add("rst_in", ~out & rst)
        add("rst_out", out & rst)
        # Novelty of destination ports (connection attempts) and hosts (anything sent).
        probe = out & (syn_only | (f == 0))
        if probe.any():
            self._count_new(self._ports, inv[probe], pk["dport"][probe], keys, counts[:, C["new_dports"]], now)
        if out.any():
            self._count_new(self._hosts, inv[out], pk["peer"][out], keys, counts[:, C["new_dhosts"]], now)

    @staticmethod
    def _count_new(nov: _Novelty, inv: np.ndarray, what: np.ndarray, keys: np.ndarray, into: np.ndarray, now: float) -> None:
        """Add to `into` (per device) the number of distinct `what` new for that device."""
        dev, things, _ = _unique_pairs(inv, what)
        new = nov.count_new(keys[dev], things, now)
        into += np.bincount(dev[new], minlength=len(into))

    def _mqtt_counts(self, mq: np.ndarray, inv: np.ndarray, keys: np.ndarray, counts: np.ndarray, shape: np.ndarray, now: float) -> None:
        n = len(keys)
        t = mq["mtype"]
        up = mq["to_broker"] == 1
        ok = mq["error"] == 0

        def add(name: str, mask: np.ndarray, weights: np.ndarray | None = None) -> None:
            counts[:, C[name]] += np.bincount(inv[mask], None if weights is None else weights[mask], minlength=n)

        connect = up & ok & (t == CONNECT)
        publish = up & ok & (t == PUBLISH)
        subscribe = up & ok & (t == SUBSCRIBE)
        add("mqtt_connect", connect)
        add("mqtt_refused", ~up & ok & (t == CONNACK) & (mq["return_code"] != 0))
        add("mqtt_publish_out", publish)
        add("mqtt_publish_bytes", publish, mq["payload_len"].astype(np.float64))
        add("mqtt_subscribe", subscribe)
        add("mqtt_wildcard", subscribe & (mq["wildcard"] != 0))
        add("mqtt_sys", up & ok & (mq["sys_topic"] != 0))
        add("mqtt_malformed", ~ok)
        add("mqtt_disconnect", up & ok & (t == DISCONNECT))
        add("mqtt_ping", up & ok & (t == PINGREQ))
        add("mqtt_msgs_out", up)
        topical = (publish | subscribe) & (mq["topic_hash"] != 0)
        if topical.any():
            self._count_new(self._topics, inv[topical], mq["topic_hash"][topical], keys, counts[:, C["mqtt_new_topics"]], now)
        if publish.any():
            # Shannon entropy of each device's PUBLISH topics in the tick.
            dev, _, c = _unique_pairs(inv[publish], mq["topic_hash"][publish])
            p = c / np.bincount(dev, weights=c, minlength=n)[dev]
            shape[:, 5] = np.bincount(dev, weights=-p * np.log2(p), minlength=n)
        if connect.any():
            ka = np.bincount(inv[connect], weights=mq["keepalive"][connect].astype(np.float64), minlength=n)
            nc = np.bincount(inv[connect], minlength=n)
            shape[:, 6] = np.log2(1.0 + np.divide(ka, nc, out=np.zeros(n), where=nc > 0))

    def _packet_shape(self, pk: np.ndarray, inv: np.ndarray, n: int, counts: np.ndarray, shape: np.ndarray) -> None:
        """Inter-arrival statistics of each device's outgoing packets within the tick."""
        out = pk["out"]
        if out.sum() < 2:
            return
        d, ts = inv[out], pk["ts"][out]
        order = np.lexsort((ts, d))
        d, ts = d[order], ts[order]
        same = d[1:] == d[:-1]
        gaps = np.diff(ts)[same]
        gd = d[1:][same]
        k = np.bincount(gd, minlength=n)
        s1 = np.bincount(gd, weights=gaps, minlength=n)
        s2 = np.bincount(gd, weights=gaps * gaps, minlength=n)
        has = k > 0
        mean = np.divide(s1, k, out=np.zeros(n), where=has)
        var = np.maximum(np.divide(s2, k, out=np.zeros(n), where=has) - mean * mean, 0.0)
        shape[:, 7] = np.where(has, np.log10(mean + 1e-6), 0.0)
        shape[:, 8] = np.divide(np.sqrt(var), mean, out=np.zeros(n), where=mean > 0)

    # ---- state --------------------------------------------------------------------------------

    def _slots_for(self, keys: np.ndarray, now: float) -> np.ndarray:
        """Slots of these devices (`keys`: sorted, distinct), new ones set up."""
        n = len(self._slot)
        if n:
            i = np.minimum(np.searchsorted(self._slot, keys), n - 1)
            slots = np.where(self._slot[i] == keys, self._slot_of[i], -1)
        else:
            slots = np.full(len(keys), -1, dtype=np.int64)
        new = np.flatnonzero(slots < 0)
        if len(new):
            slots[new] = self._new_slots(keys[new], now, slots[slots >= 0])
        return slots

    def _new_slots(self, keys: np.ndarray, now: float, keep: np.ndarray) -> np.ndarray:
        """Slots for devices not in the table (sorted keys), evicting if it is full (never the
        devices in `keep`, this tick's known ones)."""
        while len(self._slot) + len(keys) > self.max_devices and len(self._slot) > len(keep):
            self._evict(now, keep)
        # (More devices in one tick than the table holds: it runs over until the next tick.)
        take = min(len(keys), len(self._free))
        slots = np.concatenate([self._free[len(self._free) - take:][::-1], np.arange(self._used, self._used + len(keys) - take)])
        self._free = self._free[: len(self._free) - take]
        self._used += len(keys) - take
        if self._used > len(self._keys):
            self._grow(self._used)
        self._short[slots] = 0.0
        self._long[slots] = 0.0
        self._updated[slots] = now
        self._keys[slots] = keys
        pos = np.searchsorted(self._slot, keys)
        self._slot = np.insert(self._slot, pos, keys)
        self._slot_of = np.insert(self._slot_of, pos, slots)
        self.stats.devices += len(keys)
        return slots

    def _grow(self, need: int) -> None:
        cap = max(64, need, len(self._keys) * 3 // 2)  # 1.5x: the arrays are most of a device's memory
        extra = cap - len(self._keys)
        self._short = np.concatenate([self._short, np.zeros((extra, _N_SHORT))])
        self._long = np.concatenate([self._long, np.zeros((extra, _N_LONG))])
        self._updated = np.concatenate([self._updated, np.zeros(extra)])
        self._keys = np.concatenate([self._keys, np.zeros(extra, dtype=np.uint64)])

    def _evict(self, now: float, keep: np.ndarray) -> None:
        """Forget the least recently updated tenth of the devices (a bounded table)."""
        live = self._slot_of
        k = max(1, len(live) // 10)
        upd = self._updated[live].copy()
        if len(keep):
            upd[np.isin(live, keep)] = np.inf  # in this tick: not evictable
        k = min(k, int(np.count_nonzero(np.isfinite(upd))))
        if not k:
            return
        gone = np.zeros(len(live), dtype=bool)
        gone[np.argpartition(upd, k - 1)[:k]] = True
        self._free = np.concatenate([self._free, live[gone]])
        self._slot, self._slot_of = self._slot[~gone], self._slot_of[~gone]
        self.stats.evicted_devices += k

    def _decay_and_emit(self, slots: np.ndarray, counts: np.ndarray, shape: np.ndarray, now: float) -> np.ndarray:
        # In place where it changes no value: over 18,000 devices each [n, 41] float64
        # temporary is 6 MB, and the tick close's peak is what the agent's RSS follows.
        dt = np.maximum(now - self._updated[slots], 0.0)[:, None]
        short = self._short[slots]
        short *= np.exp2(-dt / HALF_LIVES[0])
        short += counts
        long_ = self._long[slots]
        long_ *= np.exp2(-dt / HALF_LIVES[1])
        long_ += counts[:, _LONG_IDX]
        self._short[slots], self._long[slots], self._updated[slots] = short, long_, now
        s = lambda name: short[:, C[name]]  # noqa: E731
        shape[:, 0] = np.divide(s("bytes_out"), s("pkts_out"), out=np.zeros(len(slots)), where=s("pkts_out") > 0)
        shape[:, 1] = np.divide(
            s("mqtt_publish_bytes"), s("mqtt_publish_out"), out=np.zeros(len(slots)), where=s("mqtt_publish_out") > 0
        )
        # Ratios of two decayed sums keep an attack's value after both sums have faded (a scan's
        # 0.99 unanswered for minutes): 0 once the short window holds under RATIO_MIN_EVENTS.
        answered = s("mqtt_connect")
        shape[:, 2] = np.clip(
            np.divide(s("mqtt_refused"), answered, out=np.zeros(len(slots)), where=answered >= RATIO_MIN_EVENTS), 0, 1
        )
        shape[:, 3] = np.divide(s("syn_out"), s("pkts_out"), out=np.zeros(len(slots)), where=s("pkts_out") > 0)
        syns = s("syn_out")
        shape[:, 4] = np.where(
            syns >= RATIO_MIN_EVENTS,
            np.clip(1.0 - np.divide(s("synack_in"), syns, out=np.ones(len(slots)), where=syns > 0), 0, 1),
            0.0,
        )
        shape[:, 0] = np.log1p(shape[:, 0])
        shape[:, 1] = np.log1p(shape[:, 1])
        # float32(log1p(x)) computed in float64 and rounded once, as astype did.
        X = np.empty((len(slots), N_FEATURES), dtype=np.float32)
        np.log1p(short, out=short)
        X[:, :_N_SHORT] = short
        np.log1p(long_, out=long_)
        X[:, _N_SHORT : _N_SHORT + _N_LONG] = long_
        X[:, _N_SHORT + _N_LONG :] = shape
        return X

    def _device_summary(self, pk: np.ndarray, pinv: np.ndarray, n: int, mq: np.ndarray | None, minv: np.ndarray):
        first_ts = np.full(n, np.inf)
        np.minimum.at(first_ts, pinv, pk["ts"])  # (a minimum: the same in any order, no concatenation)
        if mq is not None:
            np.minimum.at(first_ts, minv, mq["ts"])
        packets = np.bincount(pinv, minlength=n).astype(np.int64)
        top_peer = np.zeros(n, dtype=np.uint64)
        if len(pk):
            dev, peer, cnt = _unique_pairs(pinv, pk["peer"])
            order = np.lexsort((cnt, dev))  # per device, the most frequent peer comes last
            dev, peer = dev[order], peer[order]
            last = np.r_[dev[1:] != dev[:-1], True]
            top_peer[dev[last]] = peer[last]
        if mq is not None and len(mq):  # devices seen only through MQTT rows: the broker is the peer
            no_peer = top_peer == 0
            if no_peer.any():
                brokers = np.zeros(n, dtype=np.uint64)
                brokers[minv] = mq["broker"]
                top_peer[no_peer] = brokers[no_peer]
        return first_ts, packets, top_peer


def _unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs with their counts: a as int64 (group index), b as uint64."""
    a = a.astype(np.int64, copy=False)
    b = b.astype(np.uint64, copy=False)
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    first = np.empty(len(a), dtype=bool)
    first[:1] = True
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    starts = np.flatnonzero(first)
    return a[first], b[first], np.diff(np.r_[starts, len(a)])
