"""TCP/IPv4 over Ethernet, vectorized: hosts, connections and segments in, pcap frames out.

Generators describe conversations at the level a socket sees them (open, send messages,
close, reset) for many connections at once. `Wire.build()` then does what a TCP stack does,
for every connection in a few numpy passes:

- sorts each connection's segments by time, inserts the receiver's pure ACKs for data that no
  reply acknowledges within its delay (every other segment when data streams in),
- numbers the bytes: seq = ISN + bytes sent before in that direction (SYN and FIN count one),
  ack = ISN of the peer + what the peer had sent by the time the segment left its sender (the
  capture point sits at the gateway; a distant host acknowledges only data it could have
  received, one round trip earlier),
- drops pure ACKs that acknowledge nothing new.

`frames()` then lays the segments out as Ethernet frames in capture order with correct IP and
TCP checksums, in chunks (FrameBatch) ready for `write_pcap`. All times are int64 nanoseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
import struct
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from atlas.agent.capture import LINKTYPE_ETHERNET, FrameBatch
from atlas.agent.capture.pcapfile import PCAP_MAGIC_NS
from atlas.sim.traffic.vec import Blobs, copy_ranges, last_at_or_before, offsets_of, ranges

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

# TCP/IP stacks as they show on the wire: SYN options, windows, TTL.
# linux: MSS, NOP, WS 7, NOP, NOP, SACK_PERM (12 bytes); lwip (MCUs): MSS only;
# scanner: a raw-socket SYN scanner (nmap -sS style): MSS only, window 1024.
# A linux peer of a stack without window scaling falls back to "linux_nows" (MSS only,
# unscaled window), as window scaling needs both SYNs to carry the option.
STACKS = ("linux", "lwip", "scanner", "linux_nows")
_STACK_OPTLEN = np.array([12, 4, 4, 4], dtype=np.int64)
_STACK_SYNWIN = np.array([64240, 5840, 1024, 64240], dtype=np.int64)
_STACK_WIN = np.array([502, 5840, 1024, 64240], dtype=np.int64)  # linux: scaled by 2**7 after the SYN
_STACK_TTL = np.array([64, 255, 64, 64], dtype=np.int64)

NS = 1_000_000_000


@dataclass
class Segments:
    """Every TCP segment of a capture after `Wire.build()`, sorted by (connection, time)."""

    ts: np.ndarray  # int64 ns
    conn: np.ndarray  # int64
    dir: np.ndarray  # uint8: 0 client -> server, 1 server -> client
    flags: np.ndarray  # uint8
    poff: np.ndarray  # int64 offset into `store`
    plen: np.ndarray  # int64
    seq: np.ndarray  # int64 (mod 2**32 on the wire)
    ack: np.ndarray  # int64
    owner: np.ndarray  # int32: who generated it (benign, attack step, look-alike)
    store: np.ndarray  # uint8: all payload bytes

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, idx: np.ndarray) -> "Segments":
        return Segments(self.ts[idx], self.conn[idx], self.dir[idx], self.flags[idx], self.poff[idx], self.plen[idx],
                        self.seq[idx], self.ack[idx], self.owner[idx], self.store)


class Wire:
    """Accumulates hosts, connections and segments; every method is vectorized over arrays."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        # hosts
        self._h_ip: list[int] = []
        self._h_mac: list[int] = []
        self._h_rtt: list[int] = []  # ns, round trip between the capture point and the host
        self._h_proc: list[int] = []  # ns, mean time the host takes to answer
        self._h_stack: list[int] = []
        self._h_ttl: list[int] = []
        self._h_mss: list[int] = []
        # connections (lists of arrays, concatenated lazily)
        self._c: dict[str, list[np.ndarray]] = {k: [] for k in ("ch", "sh", "cport", "sport", "cisn", "sisn", "cipid", "sipid")}
        self.n_conns = 0
        # segments
        # wt: when the application wrote the bytes (orders each direction's byte stream)
        self._s: dict[str, list[np.ndarray]] = {k: [] for k in ("ts", "wt", "conn", "dir", "flags", "poff", "plen", "noack", "owner")}
        self._stores: list[np.ndarray] = []
        self._store_size = 0
        self.owner = 0  # tag for segments added from now on

    # -- hosts and connections --------------------------------------------------------------
    def host(self, ip: int, mac: int, *, rtt_ns: int, proc_ns: int, stack: str = "linux", ttl: int | None = None, mss: int = 1460) -> int:
        """Register an endpoint; `ttl` is as seen at the capture point (default: the stack's)."""
        s = STACKS.index(stack)
        self._h_ip.append(int(ip))
        self._h_mac.append(int(mac))
        self._h_rtt.append(int(rtt_ns))
        self._h_proc.append(int(proc_ns))
        self._h_stack.append(s)
        self._h_ttl.append(int(_STACK_TTL[s] if ttl is None else ttl))
        self._h_mss.append(int(mss))
        return len(self._h_ip) - 1

    def hosts_array(self, name: str) -> np.ndarray:
        return np.asarray(getattr(self, f"_h_{name}"), dtype=np.int64)

    def connections(self, ch, sh, cport, sport, *, server_isn_zero=None) -> np.ndarray:
        """Open connection records (no packets yet); returns their ids."""
        ch = np.atleast_1d(np.asarray(ch, dtype=np.int64))
        n = ch.shape[0]
        sh = np.broadcast_to(np.asarray(sh, dtype=np.int64), (n,)).copy()
        cport = np.broadcast_to(np.asarray(cport, dtype=np.int64), (n,)).copy()
        sport = np.broadcast_to(np.asarray(sport, dtype=np.int64), (n,)).copy()
        rng = self.rng
        cisn = rng.integers(0, 2**32, n, dtype=np.int64)
        sisn = rng.integers(0, 2**32, n, dtype=np.int64)
        if server_isn_zero is not None:
            sisn[np.asarray(server_isn_zero, dtype=bool)] = 0  # a RST answering a SYN has seq 0
        for k, v in (("ch", ch), ("sh", sh), ("cport", cport), ("sport", sport), ("cisn", cisn), ("sisn", sisn),
                     ("cipid", rng.integers(0, 65536, n, dtype=np.int64)), ("sipid", rng.integers(0, 65536, n, dtype=np.int64))):
            self._c[k].append(v)
        ids = np.arange(self.n_conns, self.n_conns + n, dtype=np.int64)
        self.n_conns += n
        return ids

    def conn_array(self, name: str) -> np.ndarray:
        parts = self._c[name]
        if len(parts) > 1:
            self._c[name] = parts = [np.concatenate(parts)]
        return parts[0] if parts else np.zeros(0, dtype=np.int64)

    def reply_delay(self, conn: np.ndarray, responder_dir) -> np.ndarray:
        """Capture-time delay before the responder's answer to a segment just seen: its round
        trip from the capture point plus its processing time (exponential)."""
        conn = np.asarray(conn, dtype=np.int64)
        hosts = np.where(np.asarray(responder_dir) == 0, self.conn_array("ch")[conn], self.conn_array("sh")[conn])
        rtt = self.hosts_array("rtt")[hosts]
        proc = self.hosts_array("proc")[hosts]
        return rtt + 1000 + self.rng.exponential(1.0, conn.shape[0]) * proc

    # -- segments ---------------------------------------------------------------------------
    def segments(self, conn, ts, dir, flags, payload: Blobs | None = None, *, noack=False, wt=None) -> None:
        """Append raw segments (one per row). Payload rows must fit one segment each."""
        ts = np.atleast_1d(np.asarray(ts, dtype=np.int64))
        wt = ts if wt is None else np.asarray(wt, dtype=np.int64)
        n = ts.shape[0]
        if n == 0:
            return
        bc = lambda a, dt: np.broadcast_to(np.asarray(a, dtype=dt), (n,)).copy()
        if payload is None:
            poff = np.zeros(n, dtype=np.int64)
            plen = np.zeros(n, dtype=np.int64)
        else:
            assert len(payload) == n
            poff = payload.offs + self._store_size
            plen = payload.lens.astype(np.int64)
            self._stores.append(payload.buf)
            self._store_size += payload.buf.shape[0]
        for k, v in (("ts", ts), ("wt", wt), ("conn", bc(conn, np.int64)), ("dir", bc(dir, np.uint8)), ("flags", bc(flags, np.uint8)),
                     ("poff", poff), ("plen", plen), ("noack", bc(noack, bool)), ("owner", bc(self.owner, np.int32))):
            self._s[k].append(v)

    def send(self, conn, ts, dir, msgs: Blobs, *, noack=False, coalesce_ns: int = 0, max_burst: int = 65536,
             segment_bytes: int = 0) -> np.ndarray:
        """Send application messages: each becomes one or more PSH/ACK segments (split at the
        path MSS); returns the capture time of each message's last segment.

        With `coalesce_ns` > 0, consecutive messages of the same connection and direction
        written less than that apart leave in the same segments (Nagle / write batching, up to
        `max_burst` bytes); rows must then be ordered by (conn, time) with contiguous bytes.
        `segment_bytes` > 0 replaces the MSS: what a capture on a host with segmentation
        offload (TSO/GRO) shows, segments of up to 64 kB.
        """
        ts = np.atleast_1d(np.asarray(ts, dtype=np.int64))
        n = ts.shape[0]
        if n == 0:
            return ts
        conn = np.broadcast_to(np.asarray(conn, dtype=np.int64), (n,)).copy()
        dirs = np.broadcast_to(np.asarray(dir, dtype=np.uint8), (n,)).copy()
        noack = np.broadcast_to(np.asarray(noack, dtype=bool), (n,)).copy()
        if coalesce_ns > 0 and n > 1:
            msgs = msgs.packed()  # consecutive writes must be consecutive bytes
        offs, lens, t_last = msgs.offs.astype(np.int64), msgs.lens.astype(np.int64), ts
        coalesce = coalesce_ns > 0 and n > 1
        if coalesce:
            msg_offs, msg_lens = offs, lens
            contiguous = offs[1:] == offs[:-1] + lens[:-1]
            same = (conn[1:] == conn[:-1]) & (dirs[1:] == dirs[:-1]) & contiguous & (np.diff(ts) < coalesce_ns)
            cum = np.cumsum(lens)
            same &= (cum[1:] - 1) // max_burst == (cum[:-1] - 1) // max_burst
            group = np.concatenate([[0], np.cumsum(~same)])
            first = np.flatnonzero(np.concatenate([[True], ~same]))
            last = np.concatenate([first[1:] - 1, [n - 1]])
            offs, t_last = offs[first], ts[last]
            lens = np.bincount(group, weights=lens).astype(np.int64)
            conn, dirs, noack = conn[first], dirs[first], noack[first]
        ch, sh = self.conn_array("ch")[conn], self.conn_array("sh")[conn]
        mss = np.minimum(self.hosts_array("mss")[ch], self.hosts_array("mss")[sh])
        if segment_bytes > 0:
            mss = np.full(mss.shape, min(int(segment_bytes), 65495))
        if coalesce:
            mss = mss - 8  # room for cuts moved back to a header (see _keep_headers_whole)
        k = np.maximum(1, -(-lens // mss))
        rep = np.repeat(np.arange(lens.shape[0]), k)
        j = np.arange(rep.shape[0]) - np.repeat(offsets_of(k), k)
        seg_off = offs[rep] + j * mss[rep]
        if coalesce:
            seg_off = _keep_headers_whole(seg_off, j, msgs.buf, msg_offs, msg_lens)
        seg_end = np.concatenate([seg_off[1:], [0]])
        seg_end[np.concatenate([j[1:] == 0, [True]])] = (offs + lens)[rep][np.concatenate([j[1:] == 0, [True]])]
        seg_len = seg_end - seg_off
        # Segments of one write leave back to back (about 12 us per full segment).
        seg_ts = t_last[rep] + j * 12_000
        payload = Blobs(msgs.buf, seg_off, seg_len)
        self.segments(conn[rep], seg_ts, dirs[rep], PSH | ACK, payload, noack=noack[rep], wt=t_last[rep])
        out = t_last + (k - 1) * 12_000
        if coalesce:
            return out[group]
        return out

    def handshake(self, conn, t_syn) -> np.ndarray:
        """SYN, SYN-ACK, ACK; returns the time of the client's ACK (it may send right after)."""
        conn = np.atleast_1d(np.asarray(conn, dtype=np.int64))
        t_syn = np.broadcast_to(np.asarray(t_syn, dtype=np.int64), conn.shape)
        t1 = t_syn + self.reply_delay(conn, 1).astype(np.int64)
        t2 = t1 + self.reply_delay(conn, 0).astype(np.int64)
        self.segments(conn, t_syn, 0, SYN)
        self.segments(conn, t1, 1, SYN | ACK)
        self.segments(conn, t2, 0, ACK)
        return t2

    def close(self, conn, t, initiator) -> np.ndarray:
        """FIN/ACK from the initiator, FIN/ACK back, last ACK; returns the last ACK's time."""
        conn = np.atleast_1d(np.asarray(conn, dtype=np.int64))
        t = np.broadcast_to(np.asarray(t, dtype=np.int64), conn.shape)
        init = np.broadcast_to(np.asarray(initiator, dtype=np.uint8), conn.shape)
        t1 = t + self.reply_delay(conn, 1 - init).astype(np.int64)
        t2 = t1 + self.reply_delay(conn, init).astype(np.int64)
        self.segments(conn, t, init, FIN | ACK)
        self.segments(conn, t1, 1 - init, FIN | ACK)
        self.segments(conn, t2, init, ACK)
        return t2

    # -- TCP numbering ----------------------------------------------------------------------
    def build(self) -> Segments:
        s = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in self._s.items()}
        store = np.concatenate(self._stores) if self._stores else np.zeros(0, dtype=np.uint8)
        n = s["ts"].shape[0]
        _serialize(s)
        order = np.lexsort((np.arange(n), s["ts"], s["conn"]))
        s = {k: v[order] for k, v in s.items()}
        acks = self._auto_acks(s)
        if acks is not None:
            s = {k: np.concatenate([s[k], acks[k]]) for k in s}
            order = np.lexsort((np.arange(s["ts"].shape[0]), s["ts"], s["conn"]))
            s = {k: v[order] for k, v in s.items()}
        seq, ack = self._number(s)
        keep = self._useful_acks(s, ack)
        seg = Segments(s["ts"], s["conn"], s["dir"], s["flags"], s["poff"], s["plen"], seq, ack, s["owner"], store)
        return seg.take(np.flatnonzero(keep)) if not keep.all() else seg

    def _receiver_lag(self, conn: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Round trip of each segment's sender: how stale its view of the peer is."""
        h = np.where(dirs == 0, self.conn_array("ch")[conn], self.conn_array("sh")[conn])
        return self.hosts_array("rtt")[h]

    def _auto_acks(self, s: dict) -> dict | None:
        conn, dirs, ts = s["conn"], s["dir"], s["ts"]
        is_data = (s["plen"] > 0) & ~s["noack"]
        emit_parts = []
        for d in (0, 1):
            data_i = np.flatnonzero(is_data & (dirs == d))
            if data_i.size == 0:
                continue
            opp = np.flatnonzero(dirs == 1 - d)
            same = data_i
            # The receiver's first segment that can carry the ACK: sent after the data reached
            # it (its round trip after the data passed the capture point).
            t_reach = ts[data_i] + self._receiver_lag(conn[data_i], np.full(data_i.size, 1 - d))
            t_opp = np.full(data_i.size, np.iinfo(np.int64).max)
            if opp.size:
                j = last_at_or_before(conn[opp], ts[opp], conn[data_i], t_reach - 1) + 1
                jm = np.minimum(j, opp.size - 1)
                ok = (j < opp.size) & (conn[opp[jm]] == conn[data_i])
                t_opp[ok] = ts[opp[jm[ok]]]
            k = np.searchsorted(same, data_i, side="right")
            t_next = np.full(data_i.size, np.iinfo(np.int64).max)
            ok2 = k < same.size
            kk = same[np.minimum(k, same.size - 1)]
            ok2 &= conn[kk] == conn[data_i]
            t_next[ok2] = ts[kk[ok2]]
            delay = self.reply_delay(conn[data_i], 1 - d).astype(np.int64)
            t_ack = ts[data_i] + delay
            # ACK every other segment of a stream, and the last one; not if a reply carries it.
            emit = (t_opp > t_ack) & ((t_next >= t_ack) | (np.arange(data_i.size) % 2 == 1))
            sel = data_i[emit]
            emit_parts.append((sel, t_ack[emit], 1 - d))
        if not emit_parts:
            return None
        sel = np.concatenate([p[0] for p in emit_parts])
        m = sel.shape[0]
        t_acks = np.concatenate([p[1] for p in emit_parts])
        return {
            "ts": t_acks,
            "wt": t_acks,
            "conn": conn[sel],
            "dir": np.concatenate([np.full(p[0].shape[0], p[2], dtype=np.uint8) for p in emit_parts]),
            "flags": np.full(m, ACK, dtype=np.uint8),
            "poff": np.zeros(m, dtype=np.int64),
            "plen": np.zeros(m, dtype=np.int64),
            "noack": np.zeros(m, dtype=bool),
            "owner": s["owner"][sel],
        }

    def _number(self, s: dict) -> tuple[np.ndarray, np.ndarray]:
        conn, dirs, ts, flags = s["conn"], s["dir"], s["ts"], s["flags"]
        n = ts.shape[0]
        use = s["plen"] + ((flags & SYN) > 0) + ((flags & FIN) > 0)
        cisn, sisn = self.conn_array("cisn"), self.conn_array("sisn")
        seq = np.zeros(n, dtype=np.int64)
        ack = np.zeros(n, dtype=np.int64)
        lag = self._receiver_lag(conn, dirs)
        for d in (0, 1):
            pos = np.flatnonzero(dirs == d)
            if pos.size == 0:
                continue
            u = use[pos]
            cum = np.cumsum(u)
            c = conn[pos]
            first = np.concatenate([[True], c[1:] != c[:-1]])
            grp_start = np.maximum.accumulate(np.where(first, np.arange(pos.size), 0))
            base = (cum - u)[grp_start]  # bytes used by earlier connections
            isn = (cisn if d == 0 else sisn)[c]
            seq[pos] = isn + (cum - u) - base
            # Peers' view: for segments of the other direction, everything of direction d that
            # left before (time - sender's round trip) is acknowledged.
            other = np.flatnonzero(dirs != d)
            if other.size == 0:
                continue
            # The last d-segment of the same connection that left at or before t - lag.
            cq = conn[other]
            j = last_at_or_before(c, ts[pos], cq, ts[other] - lag[other])
            jj = np.maximum(j, 0)
            acked = np.where(j >= 0, cum[jj] - base[jj], 0)
            ack[other] = (cisn if d == 0 else sisn)[cq] + acked
        seq &= 0xFFFFFFFF
        ack &= 0xFFFFFFFF
        has_ack = (flags & ACK) > 0
        ack[~has_ack] = 0
        return seq, ack

    def _useful_acks(self, s: dict, ack: np.ndarray) -> np.ndarray:
        """Keep everything except pure ACKs that repeat the previous ack of their direction."""
        conn, dirs, flags = s["conn"], s["dir"], s["flags"]
        keep = np.ones(conn.shape[0], dtype=bool)
        pure = (flags == ACK) & (s["plen"] == 0)
        for d in (0, 1):
            pos = np.flatnonzero(dirs == d)
            if pos.size < 2:
                continue
            prev, cur = pos[:-1], pos[1:]
            dup = pure[cur] & (conn[prev] == conn[cur]) & (ack[prev] == ack[cur]) & ((flags[prev] & ACK) > 0)
            keep[cur[dup]] = False
        return keep

    # -- frames -------------------------------------------------------------------------------
    def frames(self, seg: Segments, *, chunk: int = 32768) -> Iterator[tuple[FrameBatch, np.ndarray]]:
        """Ethernet frames in capture order, `chunk` at a time; yields (batch, segment index).

        Each batch's `buf` holds the frames as pcap records (16-byte record header, frame, ...),
        so `write_frames` writes it with one write(); `write_pcap(f, batch)` gives the same bytes.
        """
        order = np.argsort(seg.ts, kind="stable")
        ch_all, sh_all = self.conn_array("ch"), self.conn_array("sh")
        h_ip, h_mac, h_ttl = self.hosts_array("ip"), self.hosts_array("mac"), self.hosts_array("ttl")
        h_stack, h_mss = self.hosts_array("stack"), self.hosts_array("mss")
        cport_all, sport_all = self.conn_array("cport"), self.conn_array("sport")
        cipid_all, sipid_all = self.conn_array("cipid"), self.conn_array("sipid")
        ipid = _ipid(seg, cipid_all, sipid_all)
        for lo in range(0, order.shape[0], chunk):
            idx = order[lo : lo + chunk]
            c, d = seg.conn[idx], seg.dir[idx]
            src_h = np.where(d == 0, ch_all[c], sh_all[c])
            dst_h = np.where(d == 0, sh_all[c], ch_all[c])
            sport = np.where(d == 0, cport_all[c], sport_all[c])
            dport = np.where(d == 0, sport_all[c], cport_all[c])
            yield _assemble(
                ts=seg.ts[idx], flags=seg.flags[idx], seq=seg.seq[idx], ack=seg.ack[idx], ipid=ipid[idx],
                src=h_ip[src_h], dst=h_ip[dst_h], smac=h_mac[src_h], dmac=h_mac[dst_h], ttl=h_ttl[src_h],
                stack=np.where((h_stack[src_h] == 0) & (h_stack[dst_h] != 0), 3, h_stack[src_h]), mss=h_mss[src_h], sport=sport, dport=dport,
                poff=seg.poff[idx], plen=seg.plen[idx], store=seg.store,
            ), idx


def _keep_headers_whole(seg_off: np.ndarray, j: np.ndarray, buf: np.ndarray, msg_offs: np.ndarray, msg_lens: np.ndarray) -> np.ndarray:
    """Move a cut that falls inside an MQTT fixed header back to the message's start.

    TCP itself cuts anywhere, and decoders must cope; but tshark 4.0's MQTT dissector reports
    a remaining-length field split across two segments as malformed, so coalesced writes keep
    each fixed header (type byte + 1..4 length bytes) in one segment. Payloads still split.
    """
    cuts = np.flatnonzero(j > 0)
    if cuts.size == 0:
        return seg_off
    order = np.argsort(msg_offs, kind="stable")
    m = order[np.searchsorted(msg_offs[order], seg_off[cuts], side="right") - 1]
    start = msg_offs[m]
    # Fixed header length: 1 + the varint's bytes (continuation bit 0x80 on all but the last).
    hdr = np.full(m.size, 2, dtype=np.int64)
    for b in range(1, 4):
        pos = np.minimum(start + b, buf.shape[0] - 1)
        cont = ((buf[pos] & 0x80) > 0) & (hdr == b + 1) & (msg_lens[m] > b + 1)
        hdr += cont
    inside = (seg_off[cuts] - start) < hdr
    out = seg_off.copy()
    out[cuts[inside]] = start[inside]
    return out


def _serialize(s: dict) -> None:
    """Each direction of a connection is one byte stream: its segments leave in the order the
    application wrote them, one after the other (about 1 Gbit/s), never interleaved. A segment
    scheduled while an earlier write is still going out is pushed back (in place)."""
    stream = np.flatnonzero((s["plen"] > 0) | ((s["flags"] & (SYN | FIN)) > 0))
    if stream.size < 2:
        return
    o = stream[np.lexsort((stream, s["wt"][stream], s["dir"][stream], s["conn"][stream]))]
    c, d, t = s["conn"][o], s["dir"][o], s["ts"][o]
    first = np.concatenate([[True], (c[1:] != c[:-1]) | (d[1:] != d[:-1])])
    gap = 1000 + 8 * s["plen"][o]  # ns to put the previous segment on the wire
    gap_before = np.concatenate([[0], gap[:-1]])
    gap_before[first] = 0
    cum = np.cumsum(gap_before)
    grp = np.cumsum(first) - 1
    start_idx = np.flatnonzero(first)
    g_cum = cum - cum[start_idx][grp]  # gaps since the stream's first segment
    u = t - g_cum
    s["ts"][o] = group_cummax(u, grp, start_idx) + g_cum


def group_cummax(u: np.ndarray, grp: np.ndarray, start_idx: np.ndarray) -> np.ndarray:
    """Running maximum restarted at each group (rows sorted by group)."""
    gmin = np.minimum.reduceat(u, start_idx)
    gmax = np.maximum.reduceat(u, start_idx)
    span = gmax - gmin + 1
    offset = np.concatenate([[0], np.cumsum(span[:-1])])
    if offset.size and int(offset[-1]) + int(span[-1]) < (1 << 62):
        shifted = u - gmin[grp] + offset[grp]
        return np.maximum.accumulate(shifted) - offset[grp] + gmin[grp]
    out = np.empty_like(u)  # spans too large to stack: one group at a time
    bounds = np.concatenate([start_idx, [u.size]])
    for a, b in zip(bounds[:-1], bounds[1:]):
        out[a:b] = np.maximum.accumulate(u[a:b])
    return out


def pcap_header(linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144) -> bytes:
    """The nanosecond pcap file header, as write_pcap() writes it."""
    return struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype)


def write_frames(f: BinaryIO, batches: Iterable[FrameBatch]) -> int:
    """Write frames() output as one pcap file (header first); returns the number of frames."""
    f.write(pcap_header())
    n = 0
    for batch in batches:
        f.write(memoryview(batch.buf))
        n += len(batch)
    return n


def _ipid(seg: Segments, cipid: np.ndarray, sipid: np.ndarray) -> np.ndarray:
    """IP ID: a per-connection, per-direction counter (segments are sorted by connection)."""
    out = np.zeros(len(seg), dtype=np.int64)
    for d in (0, 1):
        pos = np.flatnonzero(seg.dir == d)
        if pos.size == 0:
            continue
        c = seg.conn[pos]
        first = np.concatenate([[True], c[1:] != c[:-1]])
        start = np.maximum.accumulate(np.where(first, np.arange(pos.size), 0))
        out[pos] = ((cipid if d == 0 else sipid)[c] + np.arange(pos.size) - start) & 0xFFFF
    return out


_HDR = np.dtype([
    ("dmac", "u1", 6), ("smac", "u1", 6), ("etype", ">u2"),
    ("vihl", "u1"), ("tos", "u1"), ("tlen", ">u2"), ("id", ">u2"), ("frag", ">u2"), ("ttl", "u1"), ("proto", "u1"),
    ("ipsum", ">u2"), ("src", ">u4"), ("dst", ">u4"),
    ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("doff", "u1"), ("flags", "u1"), ("win", ">u2"),
    ("tcpsum", ">u2"), ("urg", ">u2"), ("opt", "u1", 12),
])  # 66 bytes: 14 Ethernet + 20 IP + 20 TCP + up to 12 option bytes


def _fold(x: np.ndarray) -> np.ndarray:
    for _ in range(3):
        x = (x & 0xFFFF) + (x >> 16)
    return x


def _mac_bytes(mac: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(mac.astype(">u8")).view(np.uint8).reshape(-1, 8)[:, 2:]


def _assemble(*, ts, flags, seq, ack, ipid, src, dst, smac, dmac, ttl, stack, mss, sport, dport, poff, plen, store) -> FrameBatch:
    n = ts.shape[0]
    syn = (flags & SYN) > 0
    optlen = np.where(syn, _STACK_OPTLEN[stack], 0)
    tcp_hlen = 20 + optlen
    h = np.zeros(n, dtype=_HDR)
    h["dmac"] = _mac_bytes(dmac)
    h["smac"] = _mac_bytes(smac)
    h["etype"] = 0x0800
    h["vihl"] = 0x45
    tlen = 20 + tcp_hlen + plen
    h["tlen"] = tlen
    h["id"] = ipid
    h["frag"] = 0x4000  # DF
    h["ttl"] = ttl
    h["proto"] = 6
    h["src"] = src
    h["dst"] = dst
    ip_sum = 0x4500 + tlen + ipid + 0x4000 + (ttl << 8) + 6 + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    h["ipsum"] = (~_fold(ip_sum)) & 0xFFFF
    h["sport"] = sport
    h["dport"] = dport
    h["seq"] = seq
    h["ack"] = ack
    h["doff"] = (tcp_hlen // 4) << 4
    h["flags"] = flags
    win = np.where(syn, _STACK_SYNWIN[stack], _STACK_WIN[stack])
    h["win"] = win
    # SYN options: MSS first for every stack; linux adds NOP, WS 7, NOP, NOP, SACK_PERM.
    opt = np.zeros((n, 12), dtype=np.int64)
    opt[:, 0], opt[:, 1], opt[:, 2], opt[:, 3] = 2, 4, mss >> 8, mss & 0xFF
    opt[:, 4:12] = np.array([1, 3, 3, 7, 1, 1, 4, 2])
    opt[~syn] = 0
    opt[syn & (stack != 0), 4:] = 0
    h["opt"] = opt
    # TCP checksum: pseudo-header + header + payload, summed as big-endian 16-bit words.
    tcp_len = tcp_hlen + plen
    words = opt[:, 0::2] * 256 + opt[:, 1::2]
    hdr_sum = (sport + dport + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
               + ((tcp_hlen // 4) << 12) + flags + win + words.sum(axis=1))
    pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6 + tcp_len
    # The buffer is laid out as pcap records: a 16-byte record header, then the frame, back to
    # back, so writing the file is one write() and the FrameBatch points into it.
    hlen = 34 + tcp_hlen
    flen = hlen + plen
    roff = offsets_of(16 + flen)
    foff = roff + 16
    total = int(roff[-1] + 16 + flen[-1]) if n else 0
    out = np.empty(total + 2, dtype=np.uint8)
    out[total:] = 0
    poff_out = foff + hlen
    copy_ranges(out, poff_out, store, poff, plen)
    h["tcpsum"] = (~_fold(pseudo + hdr_sum + _payload_sums(out, poff_out, plen))) & 0xFFFF
    hmat = h.view(np.uint8).reshape(n, _HDR.itemsize)
    mask = np.arange(_HDR.itemsize)[None, :] < hlen[:, None]
    out[ranges(foff, hlen)] = hmat[mask]
    # Record headers exactly as write_pcap() computes them from the float timestamps.
    tsf = ts.astype(np.float64) / NS
    rec = np.zeros(n, dtype=[("sec", "<u4"), ("nsec", "<u4"), ("incl", "<u4"), ("orig", "<u4")])
    ns = np.round(tsf * 1e9).astype(np.int64)
    rec["sec"] = ns // NS
    rec["nsec"] = ns % NS
    rec["incl"] = flen
    rec["orig"] = flen
    out[(roff[:, None] + np.arange(16)).ravel()] = rec.view(np.uint8)
    flen32 = flen.astype(np.int32)
    return FrameBatch(out[:total], foff, flen32, flen32.copy(), tsf, LINKTYPE_ETHERNET)


def _payload_sums(buf: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Ones' complement sum (folded to 16 bits) of each buf[o:o+l] read as big-endian 16-bit
    words, zero padded to even length.

    The ones' complement sum does not depend on byte order (RFC 1071, 2.B): the payloads are
    summed as native little-endian words, one cumulative sum per byte alignment, and the folded
    result byte-swapped. An odd-length payload's last word takes the following byte as its
    high half, which is subtracted again (buf must have two bytes after the last payload).
    """
    out = np.zeros(offs.shape[0], dtype=np.int64)
    nw = (lens + 1) // 2
    for align in (0, 1):
        rows = np.flatnonzero(((offs & 1) == align) & (lens > 0))
        if rows.size == 0:
            continue
        words = buf[align : align + 2 * ((buf.size - align) // 2)].view("<u2")
        w0 = (offs[rows] - align) // 2
        # reduceat over [start, end) pairs (payloads are in buffer order, so indices rise).
        idx = np.empty(2 * rows.size, dtype=np.int64)
        idx[0::2], idx[1::2] = w0, w0 + nw[rows]
        padded = np.concatenate([words, np.zeros(1, dtype=words.dtype)]) if idx[-1] >= words.size else words
        out[rows] = np.add.reduceat(padded, idx, dtype=np.int64)[0::2]
    out -= np.where((lens & 1) == 1, buf[offs + lens].astype(np.int64) << 8, 0)
    out = _fold(out)
    return ((out & 0xFF) << 8) | (out >> 8)
