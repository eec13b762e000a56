"""Per-device features over damped sliding windows, computed per tick and vectorized.

Packets and MQTT messages are attributed to a *device*: the client side of the conversation
(the MQTT client, the TCP initiator). Each batch is added into the open tick's per-device
counts (default tick: 1 s of capture time) with `np.bincount`, so a tick keeps no rows. A
device's damped sums decay to the tick's end when the tick first sees it (the end is known
then) and absorb each batch's counts as it comes; the tick keeps only a few totals per device,
the distinct (device, port/host/topic/peer) pairs it saw (for novelty, counted at the close),
and the outgoing packets' times (for inter-arrival). When the tick closes, one feature row per
active device leaves the stage. There is no Python work per packet.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

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
_LONG_OF = {n: i for i, n in enumerate(LONG_COUNTERS)}
_EMIT_CHUNK = 4096  # devices whose rows are made at a time at the tick close
RATIO_MIN_EVENTS = 0.5  # decayed events in the short window below which a ratio feature is 0
_N_SHORT, _N_LONG = len(COUNTERS), len(LONG_COUNTERS)

# The per-packet projection of a batch: who the device is, and which way the packet went.
_PKT = np.dtype([("ts", "f8"), ("dev", "u8"), ("peer", "u8"), ("out", "?"), ("len", "u4"), ("flags", "u1"), ("dport", "u2")])


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


class _PairTally:
    """The open tick's distinct (slot, thing) pairs, each with per-pair counts (k columns).

    Most devices show one thing in a tick (they talk to their broker, publish to their topic),
    so the first thing a slot shows is counted in per-slot arrays; only other pairs are
    sorted, per batch, and merged as batches arrive (the tick holds each pair about once).
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self._has = np.zeros(0, dtype=bool)  # the slot has its first thing in this tick
        self._first = np.zeros(0, dtype=np.uint64)
        self._first_counts = [np.zeros(0, dtype=np.int64) for _ in range(k)]
        self._with_first: list[np.ndarray] = []  # the slots that got one, batch by batch
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._rows = 0
        self._merged = 0  # pairs after the last merge

    def grow(self, cap: int) -> None:
        extra = cap - len(self._has)
        self._has = np.concatenate([self._has, np.zeros(extra, dtype=bool)])
        self._first = np.concatenate([self._first, np.zeros(extra, dtype=np.uint64)])
        self._first_counts = [np.concatenate([c, np.zeros(extra, dtype=np.int64)]) for c in self._first_counts]

    def add(self, slot: np.ndarray, thing: np.ndarray, counts: np.ndarray) -> None:
        """Rows of (slot, thing) with their counts ([n, k] integers)."""
        if not len(slot):
            return
        thing = thing.astype(np.uint64, copy=False)
        new = ~self._has[slot]
        if new.any():
            got, at = np.unique(slot[new], return_index=True)
            self._has[got] = True
            self._first[got] = thing[new][at]
            self._with_first.append(got)
        first = self._first[slot] == thing
        for c in range(self.k):
            np.add.at(self._first_counts[c], slot[first], counts[first, c])
        if not first.all():
            part = _tally(slot[~first], thing[~first], counts[~first])
            self._parts.append(part)
            self._rows += len(part[0])
            if self._rows > 2 * max(self._merged, 4096):
                self._merge()

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tick's distinct pairs (in no particular order) and their counts; empties the tally."""
        self._merge()
        firsts = np.concatenate(self._with_first) if self._with_first else np.zeros(0, dtype=np.int64)
        pairs = [(firsts, self._first[firsts], np.stack([c[firsts] for c in self._first_counts], axis=1)
                  if self.k else np.zeros((len(firsts), 0), dtype=np.int64))]
        pairs += self._parts  # (never a slot's first thing: those were counted above)
        self._has[firsts] = False
        for c in self._first_counts:
            c[firsts] = 0
        self._with_first, self._parts, self._rows, self._merged = [], [], 0, 0
        return tuple(np.concatenate(col) for col in zip(*pairs))  # type: ignore[return-value]

    def _merge(self) -> None:
        if len(self._parts) > 1:
            self._parts = [_tally(*(np.concatenate(c) for c in zip(*self._parts)))]
        self._rows = self._merged = len(self._parts[0][0]) if self._parts else 0


def _tally(a: np.ndarray, b: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs sorted by (a, b), with the counts of their rows summed."""
    a = a.astype(np.int64, copy=False)
    b = b.astype(np.uint64, copy=False)
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    first = np.empty(len(a), dtype=bool)
    first[:1] = True
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    starts = np.flatnonzero(first)
    summed = np.add.reduceat(counts[order], starts, axis=0) if counts.shape[1] else counts[starts]
    return a[first], b[first], summed


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
        # Device -> slot: sorted host keys and their slots, searched once per batch.
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
        # The open tick's totals per slot (besides its counts, added to the damped sums) ...
        self._t_seen = np.zeros(0, dtype=bool)  # the slot's sums are decayed to the tick's end
        self._t_first = np.zeros(0)  # first packet or message
        self._t_packets = np.zeros(0, dtype=np.int64)
        self._t_keepalive = np.zeros(0)  # sum over CONNECTs
        self._t_connects = np.zeros(0, dtype=np.int64)
        self._t_broker = np.zeros(0, dtype=np.uint64)  # the broker of its last MQTT message
        # ... its distinct pairs, and its outgoing packets' (slot, time) for inter-arrival.
        self._t_ports = _PairTally(0)  # (slot, probed port)
        self._t_peers = _PairTally(2)  # (slot, peer): packets, outgoing packets
        self._t_topics = _PairTally(2)  # (slot, topic hash): PUBLISH, PUBLISH or SUBSCRIBE with a topic
        self._t_out: list[tuple[np.ndarray, np.ndarray]] = []

    # ---- input ------------------------------------------------------------------------------

    def update(self, packets: np.ndarray, mqtt: np.ndarray | None = None) -> list[FeatureRows]:
        """Absorb a batch (PACKET_DTYPE rows, MQTT_DTYPE rows); return rows of ticks it closed."""
        out: list[FeatureRows] = []
        ip = packets[packets["ipver"] != 0]
        self.stats.non_ip += len(packets) - len(ip)
        self.stats.packets += len(ip)
        pk = self._project(ip)
        mq = mqtt  # None: no MQTT rows in this batch
        if self._tick_end is None:
            first = [a["ts"].min() for a in (pk, mq) if a is not None and len(a)]
            if not first:
                return out
            self._tick_end = self._end_of(min(first))
        # Each row belongs to the tick its timestamp falls in; late rows join the open tick.
        pk, p_end = self._by_tick(pk)
        if mq is not None:
            mq, m_end = self._by_tick(mq)
        else:
            m_end = np.zeros(0)
        for end in np.unique(np.concatenate([p_end, m_end])).tolist():
            if end > self._tick_end:
                rows = self._close_tick()
                if rows is not None:
                    out.append(rows)
                self._tick_end = end
            p_lo, p_hi = np.searchsorted(p_end, end, "left"), np.searchsorted(p_end, end, "right")
            m_lo, m_hi = np.searchsorted(m_end, end, "left"), np.searchsorted(m_end, end, "right")
            self._absorb(pk[p_lo:p_hi], mq[m_lo:m_hi] if mq is not None else None)
        return out

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

    # ---- a batch into the open tick -----------------------------------------------------------

    def _absorb(self, pk: np.ndarray, mq: np.ndarray | None) -> None:
        """Add one batch's rows of the open tick into its per-device totals and pairs."""
        devs = pk["dev"] if mq is None else np.concatenate([pk["dev"], mq["client"]])
        if not len(devs):
            return
        keys, inv = np.unique(devs, return_inverse=True)
        now = float(self._tick_end)
        slots = self._slots_for(keys, now)
        counts = np.zeros((len(keys), _N_SHORT))
        pinv = inv[: len(pk)]
        self._packet_counts(pk, pinv, slots, counts)
        if mq is not None and len(mq):
            self._mqtt_counts(mq, inv[len(pk):], slots, counts)
        fresh = slots[~self._t_seen[slots]]
        if len(fresh):
            self._decay_to(fresh, now)
        # Integer-valued counts added batch by batch: the same sums as one tick-sized add, up
        # to float64 rounding order.
        self._short[slots] += counts
        self._long[slots] += counts[:, _LONG_IDX]
        self._t_packets[slots] += np.bincount(pinv, minlength=len(keys))
        np.minimum.at(self._t_first, slots[pinv], pk["ts"])  # (a minimum: the same in any order)
        out = pk["out"]
        if out.any():
            self._t_out.append((slots[pinv[out]], pk["ts"][out]))

    def _packet_counts(self, pk: np.ndarray, inv: np.ndarray, slots: np.ndarray, counts: np.ndarray) -> None:
        out = pk["out"]
        f = pk["flags"]
        syn_only = (f & TCP_SYN != 0) & (f & TCP_ACK == 0)
        syn_ack = (f & TCP_SYN != 0) & (f & TCP_ACK != 0)
        rst = f & TCP_RST != 0
        w = pk["len"].astype(np.float64)
        add = partial(_count_into, counts, inv)

        add("pkts_out", out)
        add("pkts_in", ~out)
        add("bytes_out", out, w)
        add("bytes_in", ~out, w)
        add("syn_out", out & syn_only)
        add("synack_in", ~out & syn_ack)
        add("rst_in", ~out & rst)
        add("rst_out", out & rst)
        # Novelty (at the close) of destination ports (connection attempts) and hosts (anything
        # sent); the peers also give each device's top peer.
        probe = out & (syn_only | (f == 0))
        if probe.any():
            self._t_ports.add(slots[inv[probe]], pk["dport"][probe], np.zeros((int(probe.sum()), 0), np.int64))
        if len(pk):
            self._t_peers.add(slots[inv], pk["peer"], np.stack([np.ones(len(pk), np.int64), out.astype(np.int64)], axis=1))

    def _mqtt_counts(self, mq: np.ndarray, inv: np.ndarray, slots: np.ndarray, counts: np.ndarray) -> None:
        t = mq["mtype"]
        up = mq["to_broker"] == 1
        ok = mq["error"] == 0
        add = partial(_count_into, counts, inv)

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
        either = publish | topical
        if either.any():
            per = np.stack([publish[either], topical[either]], axis=1).astype(np.int64)
            self._t_topics.add(slots[inv[either]], mq["topic_hash"][either], per)
        if connect.any():
            s = slots[inv[connect]]
            np.add.at(self._t_keepalive, s, mq["keepalive"][connect].astype(np.float64))
            np.add.at(self._t_connects, s, 1)
        ms = slots[inv]
        np.minimum.at(self._t_first, ms, mq["ts"])
        self._t_broker[ms] = mq["broker"]  # the last message's broker, as the rows came

    # ---- tick close ---------------------------------------------------------------------------

    def _close_tick(self) -> FeatureRows | None:
        now = float(self._tick_end)
        self.stats.ticks += 1
        slots = np.flatnonzero(self._t_seen)
        if not len(slots):
            return None
        keys = self._keys[slots]
        order = np.argsort(keys)
        slots, keys = slots[order], keys[order]
        n = len(keys)
        # Pairs and times are kept by slot; the row order (and every per-device sum) is by key.
        rank = np.zeros(len(self._keys), dtype=np.int64)
        rank[slots] = np.arange(n)
        shape = np.zeros((n, 9))
        top_peer = self._peers_at_close(rank, slots, now)
        self._topics_at_close(rank, slots, shape, now)
        self._ports_at_close(rank, slots, now)
        self._packet_shape(rank, n, shape)
        nc = self._t_connects[slots]
        if nc.any():
            ka = self._t_keepalive[slots]
            shape[:, 6] = np.log2(1.0 + np.divide(ka, nc, out=np.zeros(n), where=nc > 0))
        first_ts, packets = self._t_first[slots], self._t_packets[slots]
        no_peer = top_peer == 0  # devices seen only through MQTT rows: the broker is the peer
        top_peer[no_peer] = self._t_broker[slots][no_peer]
        self._reset_tick(slots)
        X = self._emit(slots, shape)
        for nov in (self._ports, self._hosts, self._topics):
            self.stats.novelty_resets += nov.prune(now)
        return FeatureRows(now, keys, first_ts, packets, top_peer, X)

    def _reset_tick(self, slots: np.ndarray) -> None:
        self._t_seen[slots] = False
        self._t_first[slots] = np.inf
        self._t_packets[slots] = 0
        self._t_keepalive[slots] = 0.0
        self._t_connects[slots] = 0
        self._t_broker[slots] = 0
        self._t_out = []

    def _add_count(self, slots: np.ndarray, name: str, per_device: np.ndarray) -> None:
        """Counts found at the close (novelty) into the damped sums of the tick's devices."""
        self._short[slots, C[name]] += per_device
        if name in _LONG_OF:
            self._long[slots, _LONG_OF[name]] += per_device

    def _peers_at_close(self, rank: np.ndarray, slots: np.ndarray, now: float) -> np.ndarray:
        """New destination hosts into the sums; returns each device's top peer (0: none)."""
        s, peer, c = self._t_peers.take()
        dev, peer, c = _by_device(rank[s], peer, c)
        keys = self._keys[slots]
        out = c[:, 1] > 0
        if out.any():
            new = self._hosts.count_new(keys[dev[out]], peer[out], now)
            self._add_count(slots, "new_dhosts", np.bincount(dev[out][new], minlength=len(keys)))
        top_peer = np.zeros(len(keys), dtype=np.uint64)
        if len(dev):
            order = np.lexsort((c[:, 0], dev))  # per device, the most frequent peer comes last
            d, p = dev[order], peer[order]
            last = np.r_[d[1:] != d[:-1], True]
            top_peer[d[last]] = p[last]
        return top_peer

    def _topics_at_close(self, rank: np.ndarray, slots: np.ndarray, shape: np.ndarray, now: float) -> None:
        """New topics into the sums, and the Shannon entropy of each device's PUBLISH topics."""
        s, topic, c = self._t_topics.take()
        dev, topic, c = _by_device(rank[s], topic, c)
        n = len(slots)
        topical = c[:, 1] > 0
        if topical.any():
            new = self._topics.count_new(self._keys[slots][dev[topical]], topic[topical], now)
            self._add_count(slots, "mqtt_new_topics", np.bincount(dev[topical][new], minlength=n))
        pub = c[:, 0] > 0
        if pub.any():
            d, k = dev[pub], c[pub, 0]
            p = k / np.bincount(d, weights=k, minlength=n)[d]
            shape[:, 5] = np.bincount(d, weights=-p * np.log2(p), minlength=n)

    def _ports_at_close(self, rank: np.ndarray, slots: np.ndarray, now: float) -> None:
        s, port, _ = self._t_ports.take()
        if len(s):
            dev, port, _ = _by_device(rank[s], port, np.zeros((len(s), 0), np.int64))
            new = self._ports.count_new(self._keys[slots][dev], port, now)
            self._add_count(slots, "new_dports", np.bincount(dev[new], minlength=len(slots)))

    def _packet_shape(self, rank: np.ndarray, n: int, shape: np.ndarray) -> None:
        """Inter-arrival statistics of each device's outgoing packets within the tick."""
        if sum(len(s) for s, _ in self._t_out) < 2:
            return
        d = rank[np.concatenate([s for s, _ in self._t_out])]
        ts = np.concatenate([t for _, t in self._t_out])
        self._t_out = []
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

    def _new_slots(self, keys: np.ndarray, now: float, known: np.ndarray) -> np.ndarray:
        """Slots for devices not in the table (sorted keys), evicting if it is full (never the
        devices of the open tick, nor those in `known`: the batch's known ones)."""
        if len(self._slot) + len(keys) > self.max_devices:
            keep = np.union1d(known, np.flatnonzero(self._t_seen))
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
        grow = lambda a, fill: np.concatenate([a, np.full((extra,) + a.shape[1:], fill, dtype=a.dtype)])  # noqa: E731
        self._short, self._long = grow(self._short, 0.0), grow(self._long, 0.0)
        self._updated, self._keys = grow(self._updated, 0.0), grow(self._keys, 0)
        self._t_seen = grow(self._t_seen, False)
        self._t_first, self._t_packets = grow(self._t_first, np.inf), grow(self._t_packets, 0)
        self._t_keepalive, self._t_connects = grow(self._t_keepalive, 0.0), grow(self._t_connects, 0)
        self._t_broker = grow(self._t_broker, 0)
        for tally in (self._t_ports, self._t_peers, self._t_topics):
            tally.grow(cap)

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

    def _decay_to(self, slots: np.ndarray, now: float) -> None:
        """Decay these devices' damped sums to `now` (the open tick's end)."""
        dt = np.maximum(now - self._updated[slots], 0.0)[:, None]
        short = self._short[slots]
        short *= np.exp2(-dt / HALF_LIVES[0])
        long_ = self._long[slots]
        long_ *= np.exp2(-dt / HALF_LIVES[1])
        self._short[slots], self._long[slots], self._updated[slots] = short, long_, now
        self._t_seen[slots] = True

    def _emit(self, slots: np.ndarray, shape: np.ndarray) -> np.ndarray:
        """The feature rows of these devices (sorted by key) from their damped sums."""
        X = np.empty((len(slots), N_FEATURES), dtype=np.float32)
        # In chunks of devices: over 18,000 devices a [n, 22] float64 copy of the sums is 3 MB,
        # and the tick close's peak is what the agent's resident size follows.
        for i in range(0, len(slots), _EMIT_CHUNK):
            j = min(i + _EMIT_CHUNK, len(slots))
            self._emit_rows(slots[i:j], shape[i:j], X[i:j])
        return X

    def _emit_rows(self, slots: np.ndarray, shape: np.ndarray, X: np.ndarray) -> None:
        short = self._short[slots]
        long_ = self._long[slots]
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
        np.log1p(short, out=short)
        X[:, :_N_SHORT] = short
        np.log1p(long_, out=long_)
        X[:, _N_SHORT : _N_SHORT + _N_LONG] = long_
        X[:, _N_SHORT + _N_LONG :] = shape


def _count_into(counts: np.ndarray, inv: np.ndarray, name: str, mask: np.ndarray, weights: np.ndarray | None = None) -> None:
    """Add to counter `name` of each device (row of `counts`) its rows in `mask`, or their weights."""
    counts[:, C[name]] += np.bincount(inv[mask], None if weights is None else weights[mask], minlength=len(counts))


def _by_device(dev: np.ndarray, thing: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs re-sorted by (device row, thing) after slots became rows (still distinct)."""
    order = np.lexsort((thing, dev))
    return dev[order], thing[order], counts[order]
