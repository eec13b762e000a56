"""MQTT over TCP: stream reassembly per connection and MQTT messages as MQTT_DTYPE rows.

The common case, one complete message per segment continuing a stream with nothing buffered,
is decoded for the whole batch at once with numpy (`decode_vectorized`). Per direction of a
connection, the run of such segments is taken vectorized; the packet that ends the run (a
message split across segments, several messages in one segment, a retransmission, a hole, a
CONNECT, a rare or malformed message) goes through the per-segment reference path, and the
next pass (`fast_rounds` per batch) resumes the vectorized run behind it. Each direction stays
in order; connections whose two directions depend on each other's order (a FIN, RST or reused
four-tuple in the batch; the broker talking before the client's first message) take the
reference path in batch order. Both paths give identical rows (tested differentially);
`mqtt.parse_message` is the reference for anything the vectorized decoder does not prove well
formed.

Memory is bounded: per connection by `max_message` (a partial message) and `max_ooo_bytes`
(segments waiting behind a hole), overall by `max_flows` and `max_buffered`, with eviction and
counters, so that no sender can make the tables grow without bound.
"""
from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from atlas.agent.capture import FrameBatch
from atlas.agent.decode import (
    CONNECT,
    MQTT_DTYPE,
    MQTT_OK,
    MQTT_PROTOCOL,
    MQTT_STREAM_GAP,
    PACKET_DTYPE,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
)
from atlas.agent.decode.flowtable import FlowTable, flow_hash
from atlas.agent.decode.mqtt import (
    DEFAULT_MAX_MESSAGE,
    FNV_OFFSET,
    FNV_PRIME,
    LENGTH_INCOMPLETE,
    LENGTH_MALFORMED,
    MqttMessage,
    fixed_header_error,
    parse_message,
    remaining_length,
    topic_hash,
)

log = logging.getLogger(__name__)

ERROR_NAMES = {1: "bad_length", 2: "bad_flags", 3: "bad_utf8", 4: "oversize", 5: "truncated", 6: "protocol", 7: "stream_gap"}

_M32 = 0xFFFFFFFF
_CTRL = TCP_SYN | TCP_FIN | TCP_RST
_FAST_TOPIC_MAX = 1024  # longer PUBLISH topics take the Python path
_ROW_KEY_SHIFT = 24  # row order: (packet index << 24) + index of the row within the packet
# First bytes a message can start with (type and fixed-header flags), before and in MQTT 5.
_B0_OK = np.array([not fixed_header_error(b >> 4, b & 15, 4) and (b >> 4 != 3 or (b >> 1) & 3 != 3) for b in range(256)])
_B0_OK_V5 = np.array([not fixed_header_error(b >> 4, b & 15, 5) and (b >> 4 != 3 or (b >> 1) & 3 != 3) for b in range(256)])
MAX_LEARNED_PORTS = 32  # a bound: a host sending CONNECTs to every port must not grow the list without end
_PROTOCOL_NAMES = (b"\x00\x04MQTT", b"\x00\x06MQIsdp")  # MQTT 3.1.1/5 and 3.1
_META_DTYPE = np.dtype([("ts", "f8"), ("client", "u8"), ("broker", "u8"), ("client_port", "u2"), ("to_broker", "u1"), ("client_hash", "u8")])


class _Half:
    """One direction of a TCP connection: where the stream is and what is waiting."""

    __slots__ = ("nxt", "buf", "ooo", "ooo_bytes", "skip", "resync", "started", "fin")

    def __init__(self) -> None:
        self.nxt = -1  # next expected sequence number; -1: not known yet
        self.buf: bytearray | None = None  # start of a message whose end has not arrived
        self.ooo: list[list] | None = None  # [seq, bytes, wirelen, ts] ahead of nxt, by seq
        self.ooo_bytes = 0
        self.skip = 0  # bytes of an oversize message still to discard
        self.resync = False  # framing lost: wait for a segment that starts with messages
        self.started = False  # has carried data
        self.fin = False

    def clean(self) -> bool:
        """Nothing pending: the next in-order segment may take the vectorized path."""
        return self.started and self.nxt >= 0 and not (self.buf or self.ooo or self.skip or self.resync or self.fin)

    def held(self) -> int:
        return (len(self.buf) if self.buf else 0) + self.ooo_bytes


class _Flow:
    """A TCP connection between an MQTT client and a broker, as the Python path works on it.

    The connection's state lives in the FlowTable row `slot`; this object exists while the
    Python path works on the connection (loaded from the row, stored back after) and for as
    long as it holds bytes (a partial message, segments behind a hole)."""

    __slots__ = ("key", "slot", "c2b", "b2c", "level", "connected", "client_hash", "last_ts", "tls", "accounted", "pinned")

    def __init__(self, key: tuple[int, int, int, int], slot: int, ts: float) -> None:
        self.key = key  # (client, broker, client_port, broker_port)
        self.slot = slot  # row in the FlowTable; -1 once closed
        self.c2b = _Half()
        self.b2c = _Half()
        self.level = 4  # protocol level, from the connection's CONNECT (3.1.1 until seen)
        # The client has sent its first message: only a CONNECT that is the first message
        # sets the protocol level and client id; any later CONNECT is a protocol error.
        self.connected = False
        self.client_hash = 0
        self.last_ts = ts
        self.tls = False  # MQTT over TLS on this port: nothing to decode
        self.accounted = 0  # bytes of this flow counted in MqttStreams._buffered
        self.pinned = False  # not findable through the table's index (a hash collision): keep the object

    def held(self) -> int:
        return self.c2b.held() + self.b2c.held()

    def holding(self) -> bool:
        """Has state that only this object can hold."""
        c, b = self.c2b, self.b2c
        return self.pinned or c.buf is not None or b.buf is not None or bool(c.ooo) or bool(b.ooo) or self.accounted != 0

    def load(self, row: tuple) -> None:
        """Scalars from a FlowTable row (`rows[slot].item()`)."""
        _, _, _, _, _, nxt, skip, started, fin, resync, _, self.level, self.connected, self.tls, self.client_hash, self.last_ts, _ = row
        b, c = self.b2c, self.c2b
        b.nxt, c.nxt = nxt
        b.skip, c.skip = skip
        b.started, c.started = started
        b.fin, c.fin = fin
        b.resync, c.resync = resync


class _Batch:
    """The MQTT packets of one batch, per field, in direction-grouped order."""

    def __init__(self, **cols: np.ndarray) -> None:
        self.__dict__.update(cols)


class _Out:
    """Rows produced while processing one batch, in two forms merged at the end."""

    __slots__ = ("py_keys", "py_rows", "v_off", "v_len", "runs", "sub", "cur")

    def __init__(self) -> None:
        self.py_keys: list[int] = []  # Python-decoded rows: order key and finished tuple
        self.py_rows: list[tuple] = []
        self.v_off: list[int] = []  # messages framed in the batch buffer, decoded vectorized
        self.v_len: list[int] = []
        # Consecutive v_* messages of one segment: (first index, first order key, meta, level),
        # meta = (ts, client, broker, client_port, to_broker, client_hash).
        self.runs: list[tuple[int, int, tuple, int]] = []
        self.sub = 0
        self.cur = 0  # index (in `packets`) of the packet being processed

    def key(self) -> int:
        self.sub += 1
        return (self.cur << _ROW_KEY_SHIFT) + self.sub

    def close_run(self, first: int, meta: tuple, level: int) -> None:
        """The v_* messages from index `first` on form one run: give them their order keys."""
        n = len(self.v_off) - first
        if n:
            self.runs.append((first, (self.cur << _ROW_KEY_SHIFT) + self.sub + 1, meta, level))
            self.sub += n


def _row(meta: tuple, m: MqttMessage) -> tuple:
    """A MqttMessage as an MQTT_DTYPE tuple (field order of MQTT_DTYPE)."""
    ts, client, broker, cport, tb, chash = meta
    return (
        ts, client, broker, cport, tb, m.mtype, m.flags, min(m.length, _M32), m.error, m.proto_level,
        m.keepalive, m.connect_flags, m.return_code, m.qos, m.topic_hash, min(m.topic_len, 0xFFFF),
        min(m.payload_len, _M32), min(m.n_filters, 0xFFFF), int(m.wildcard), int(m.sys_topic), m.packet_id, chash,
    )


# Columns that decode_vectorized fills (the rest of an MQTT_DTYPE row is per connection).
VECTOR_FIELDS = ("mtype", "flags", "length", "qos", "topic_hash", "topic_len", "payload_len", "packet_id", "sys_topic")


def _words(buf: np.ndarray) -> np.ndarray:
    """buf as little-endian 64-bit words at every byte offset: words[i] = buf[i:i+8]."""
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    if len(buf) < 8:
        buf = np.concatenate([buf, np.zeros(8 - len(buf), dtype=np.uint8)])
    return np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))


def decode_vectorized(
    buf: np.ndarray, start: np.ndarray, length: np.ndarray, level: np.ndarray, to_broker: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Decode the messages buf[start[i] : start[i] + length[i]] at once.

    Returns (columns, ok): the VECTOR_FIELDS of MQTT_DTYPE, valid where `ok`. `ok` is True only
    for a well-formed PUBLISH (ASCII topic; MQTT 5 only without properties), PUBACK, PUBREC,
    PUBREL, PUBCOMP, PINGREQ, PINGRESP or DISCONNECT that fills exactly `length` bytes; anything
    else (other types, errors, several messages, a partial one) is left to `parse_message`, the
    reference for every rule.
    """
    k = len(start)
    if k < _SMALL:
        return _decode_each(buf, start, length, level, to_broker)
    start = start.astype(np.int64, copy=False)
    length = length.astype(np.int64, copy=False)
    words = _words(buf)
    top = len(words) - 1
    # Messages closer than 8 bytes to the end of the buffer: left to the Python path.
    ok = (length >= 2) & (start <= top)
    w0u = words[np.minimum(start, top)]  # bytes 0..7 of each message
    b0 = (w0u & np.uint64(0xFF)).astype(np.int64)
    mtype, flags = b0 >> 4, b0 & 0x0F
    # Remaining length: bytes beyond the message may be read, but never trusted (length checks).
    c = ((w0u >> np.uint64(8)) & np.uint64(0xFF)).astype(np.int64)
    rl, lb, last_b = c & 0x7F, np.ones(k, dtype=np.int64), c
    cont = (c & 0x80) != 0
    for i in range(2, 5):
        c = ((w0u >> np.uint64(8 * i)) & np.uint64(0xFF)).astype(np.int64)
        ok &= ~cont | (length > i)
        rl = np.where(cont, rl | ((c & 0x7F) << (7 * (i - 1))), rl)
        lb += cont
        last_b = np.where(cont, c, last_b)
        cont &= (c & 0x80) != 0
    hl = 1 + lb
    ok &= ~cont & ((lb == 1) | (last_b != 0)) & (hl + rl == length)

    qos = (flags >> 1) & 3
    pub = ok & (mtype == 3) & (qos != 3) & ~((qos == 0) & ((flags & 8) != 0))
    sh = (8 * hl).astype(np.uint64)
    two = (((w0u >> sh) & np.uint64(0xFF)) << np.uint64(8) | ((w0u >> (sh + np.uint64(8))) & np.uint64(0xFF))).astype(np.int64)
    ack = ok & (rl == 2) & (two != 0) & ((((mtype == 4) | (mtype == 5) | (mtype == 7)) & (flags == 0)) | ((mtype == 6) & (flags == 2)))
    ping = ok & (flags == 0) & (rl == 0) & (((mtype == 12) & to_broker) | ((mtype == 13) & ~to_broker))
    disc = ok & (mtype == 14) & (flags == 0) & (rl == 0)

    tl = np.where(pub, two, 0)
    hasq = qos > 0
    pid_pos = start + hl + 2 + tl
    pub &= pid_pos <= top
    w1 = words[np.minimum(pid_pos, top)]  # packet id (QoS > 0) and the MQTT 5 property length
    pid = np.where(hasq, ((w1 & np.uint64(0xFF)) << np.uint64(8) | ((w1 >> np.uint64(8)) & np.uint64(0xFF))).astype(np.int64), 0)
    props = ((w1 >> (16 * hasq).astype(np.uint64)) & np.uint64(0xFF)).astype(np.int64)
    v5 = level == 5
    body = hl + 2 + tl + 2 * hasq + v5
    pub &= (tl >= 1) & (tl <= _FAST_TOPIC_MAX) & (body <= length) & (~hasq | (pid != 0)) & (~v5 | (props == 0))

    cols = {"mtype": mtype, "flags": flags, "length": length}
    th = np.zeros(k, dtype=np.uint64)
    sys_topic = np.zeros(k, dtype=bool)
    p = np.flatnonzero(pub)
    if len(p):
        h, slow, sys_p = _topic_scan(buf, start[p] + hl[p] + 2, tl[p])
        pub[p[slow]] = False
        th[p], sys_topic[p] = h, sys_p
    cols["qos"] = np.where(pub, qos, 0)
    cols["topic_hash"] = np.where(pub, th, np.uint64(0))
    cols["topic_len"] = np.where(pub, tl, 0)
    cols["payload_len"] = np.where(pub, length - body, 0)
    cols["packet_id"] = np.where(pub, pid, np.where(ack, two, 0))
    cols["sys_topic"] = pub & sys_topic
    return cols, pub | ack | ping | disc


_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_HASHES = np.uint64(0x2323232323232323)  # '#' in every byte
_PLUSES = np.uint64(0x2B2B2B2B2B2B2B2B)  # '+'
_FILL = np.uint64(0x4141414141414141)  # 'A': harmless padding beyond a topic's end


def _has_zero_byte(w: np.ndarray) -> np.ndarray:
    # Exact test for "some byte of w is 0" (the classic bit trick; no false positives).
    return ((w - _ONES) & ~w & _HIGHS) != 0


_SMALL = 64  # below this many messages, numpy's per-call cost outweighs decoding one by one
_FAST_TYPES = frozenset({3, 4, 5, 6, 7, 12, 13, 14})  # what decode_vectorized may accept


def _decode_each(buf: np.ndarray, start: np.ndarray, length: np.ndarray, level: np.ndarray,
                 to_broker: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """decode_vectorized for a few messages: the reference decoder, one at a time."""
    k = len(start)
    cols = {name: np.zeros(k, dtype=MQTT_DTYPE[name]) for name in VECTOR_FIELDS}
    ok = np.zeros(k, dtype=bool)
    for i, (s, n, lv, tb) in enumerate(zip(start.tolist(), length.tolist(), level.tolist(), to_broker.tolist())):
        m = parse_message(buf[s : s + n].tobytes(), bool(tb), lv)
        if m is None or m.error != MQTT_OK or m.length != n or m.mtype not in _FAST_TYPES:
            continue
        ok[i] = True
        cols["mtype"][i], cols["flags"][i], cols["length"][i], cols["qos"][i] = m.mtype, m.flags, m.length, m.qos
        cols["topic_hash"][i], cols["topic_len"][i], cols["payload_len"][i] = m.topic_hash, m.topic_len, m.payload_len
        cols["packet_id"][i], cols["sys_topic"][i] = m.packet_id, m.sys_topic
    return cols, ok


def _topic_scan(buf: np.ndarray, tstart: np.ndarray, tlen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FNV-1a hashes, 'needs the Python path' and '$SYS' flags of many topics at once.

    Topics are read 8 bytes at a time (one gather per word, not per byte: the batch buffer is
    large and a gather per byte column walks all of it each time). Sorting by length makes the
    topics that still have bytes at a position a prefix, so the work follows the topic bytes.
    The Python path gets non-ASCII topics (UTF-8 validation), U+0000 and wildcards.
    """
    order = np.argsort(-tlen, kind="stable")
    idx, tl = tstart[order], tlen[order]
    n = len(order)
    words = _words(buf)
    top = len(words) - 1
    h = np.full(n, FNV_OFFSET, dtype=np.uint64)
    slow = np.zeros(n, dtype=bool)
    maxlen = int(tl[0])
    active = np.searchsorted(-tl, -np.arange(maxlen + 1), side="left")  # topics longer than j bytes
    prime, mask8 = np.uint64(FNV_PRIME), np.uint64(0xFF)
    sys_topic = np.zeros(n, dtype=bool)
    for j0 in range(0, maxlen, 8):
        m = int(active[j0])
        pos = idx[:m] + j0
        w = words[np.minimum(pos, top)]
        # Bytes past a topic's end (or past the buffer) are replaced by 'A' before the checks.
        valid = np.minimum(tl[:m] - j0, 8)
        keep = np.where(valid >= 8, np.uint64(0xFFFFFFFFFFFFFFFF), (np.uint64(1) << (valid * 8).astype(np.uint64)) - np.uint64(1))
        w = (w & keep) | (_FILL & ~keep)
        bad = ((w & _HIGHS) != 0) | _has_zero_byte(w) | _has_zero_byte(w ^ _HASHES) | _has_zero_byte(w ^ _PLUSES)
        bad |= pos > top  # too close to the end of the buffer for a word read
        slow[:m] |= bad
        if j0 == 0:
            sys_topic[:m] = (tl[:m] >= 4) & ((w & np.uint64(0xFFFFFFFF)) == np.uint64(int.from_bytes(b"$SYS", "little")))
        for i in range(8):
            k = int(active[j0 + i]) if j0 + i < maxlen else 0
            if not k:
                break
            hk = h[:k]
            hk ^= (w[:k] >> np.uint64(8 * i)) & mask8
            hk *= prime
    out_h, out_slow, out_sys = np.empty_like(h), np.empty_like(slow), np.empty_like(sys_topic)
    out_h[order], out_slow[order], out_sys[order] = h, slow, sys_topic
    return out_h, out_slow, out_sys


def _looks_like_tls(data, off: int, end: int) -> bool:
    # A TLS record (handshake, alert, change cipher spec, application data), version 3.x. No
    # valid MQTT message starts with these bytes (CONNECT with flags 4..7).
    return end - off >= 3 and 0x14 <= data[off] <= 0x17 and data[off + 1] == 3 and data[off + 2] <= 4


class MqttStreams:
    """Reassemble the TCP streams of MQTT connections and decode their messages, batch by batch.

    A connection is MQTT when one side's port is in `ports` (that side is the broker), and a
    port joins `ports` when an MQTT CONNECT is sent to it. A stream that starts (or, at a message
    boundary, goes on) with a TLS record is not MQTT in the clear: it is ignored. `feed` returns
    one MQTT_DTYPE row per message (malformed ones with `error` set, bytes lost on the way as a
    MQTT_STREAM_GAP row; bytes the capture's snap length cut are counted apart, with no row),
    ordered by the packet that completed them; `ts` is that packet's time.

    Bounds: `max_message` (larger messages are reported MQTT_OVERSIZE from their header and
    skipped unbuffered), `max_flows` connections (least recently used evicted),
    `max_ooo_bytes` / `max_ooo_segments` / `ooo_timeout` seconds per direction for segments
    waiting behind a hole (then the hole is declared a gap), `max_buffered` bytes overall
    (then the longest-holding flows drop what they buffer, a gap each), `idle_timeout` seconds
    without packets, `max_clients` entries per client-id table. `fast_rounds=0` turns the
    vectorized path off (the reference path alone, for tests and debugging).
    """

    def __init__(
        self,
        ports: tuple[int, ...] | list[int] = (1883,),
        max_message: int = DEFAULT_MAX_MESSAGE,
        max_flows: int = 65536,
        *,
        max_ooo_bytes: int = 256 * 1024,
        max_ooo_segments: int = 64,
        ooo_timeout: float = 2.0,
        max_buffered: int = 64 * 1024 * 1024,
        idle_timeout: float = 900.0,
        max_clients: int = 65536,
        fast_rounds: int = 4,
    ) -> None:
        for name, value in (("max_message", max_message), ("max_flows", max_flows), ("max_ooo_bytes", max_ooo_bytes),
                            ("max_ooo_segments", max_ooo_segments), ("max_buffered", max_buffered),
                            ("max_clients", max_clients)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"MqttStreams: {name} must be a positive integer, got {value!r}")
        for name, value in (("ooo_timeout", ooo_timeout), ("idle_timeout", idle_timeout)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"MqttStreams: {name} must be a number of seconds >= 0, got {value!r}")
        if not ports or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
            raise ValueError(f"MqttStreams: ports must be TCP port numbers, got {ports!r}")
        self.ports = np.array(sorted(set(ports)), dtype=np.uint16)
        self.max_message = max_message
        self.max_flows = max_flows
        self.max_ooo_bytes = max_ooo_bytes
        self.max_ooo_segments = max_ooo_segments
        self.ooo_timeout = ooo_timeout
        self.max_buffered = max_buffered
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        # Passes per batch in which a direction's fast path may resume after a packet that needed
        # the reference path (a new connection: CONNECT, then vectorized again). 0: reference
        # path only (tests, debugging).
        if not isinstance(fast_rounds, int) or fast_rounds < 0:
            raise ValueError(f"MqttStreams: fast_rounds must be an integer >= 0, got {fast_rounds!r}")
        self.max_rounds = fast_rounds
        self._table = FlowTable()  # every connection's state
        # Connections with a Python object: those holding bytes, and while the Python path works.
        self._flows: dict[tuple[int, int, int, int], _Flow] = {}
        self._touched: dict[int, _Flow] = {}  # slot -> object loaded in the current Python pass
        self._gone: set[int] = set()  # slots freed in the current Python pass
        self._holding: dict[tuple[int, int, int, int], _Flow] = {}  # flows with bytes buffered
        self._buffered = 0
        self._conn_ids: OrderedDict[tuple[int, int], str] = OrderedDict()
        self._host_ids: OrderedDict[int, str] = OrderedDict()
        self._count = dict.fromkeys(
            ("packets", "segments", "fast_path", "slow_path", "messages", "gaps", "bytes_missing",
             "bytes_dropped", "bytes_retransmitted", "ooo_segments", "oversize_bytes_skipped", "flows",
             "evicted_flows", "expired_flows", "closed_flows", "shed_flows", "tls_flows", "internal_errors",
             "snapped_segments", "bytes_snapped", "learned_ports"), 0)
        self._malformed = dict.fromkeys(ERROR_NAMES.values(), 0)
        self._out = _Out()

    # ---- public API ----------------------------------------------------------------------------

    def feed(self, batch: FrameBatch, packets: np.ndarray) -> np.ndarray:
        """MQTT messages completed by this batch's packets (PACKET_DTYPE rows over `batch`)."""
        if packets.dtype != PACKET_DTYPE:
            raise TypeError(f"MqttStreams.feed: packets must be PACKET_DTYPE, got {packets.dtype}")
        self._learn_ports(batch, packets)
        self._out = out = _Out()
        try:
            fast_rows, fast_keys = self._feed(batch, packets, out)
            rows = self._finish(batch.buf, out, fast_rows, fast_keys)
        finally:
            self._out = _Out()  # nothing of this batch stays referenced
        if len(packets):
            self._expire(float(packets["ts"].max()))
        return rows

    def flush(self) -> np.ndarray:
        """End of input: give up waiting for holes; rows for the data that was waiting behind them.

        Partial messages stay buffered (their connection may go on in a later capture).
        """
        self._out = out = _Out()
        try:
            for flow in sorted(self._flows.values(), key=lambda f: f.key):  # an order of its own
                if flow.c2b.ooo or flow.b2c.ooo:
                    self._touch(flow)
                for tb, half in ((1, flow.c2b), (0, flow.b2c)):
                    if half.ooo:
                        self._guarded(self._give_up_waiting, flow, half, tb, flow.last_ts)
            self._end_pass()
            return self._finish(np.zeros(1, dtype=np.uint8), out, [], [])
        finally:
            self._out = _Out()

    def client_id(self, client_key: int, client_port: int | None = None) -> str | None:
        """Client id of the connection from (client host key, client port); without a port, the
        latest client id seen from that host. None if no CONNECT was seen (or it was evicted)."""
        if client_port is None:
            return self._host_ids.get(int(client_key))
        return self._conn_ids.get((int(client_key), int(client_port)))

    def latest_client_id(self, client_key: int) -> str | None:
        """The latest client id seen in a CONNECT from this client host."""
        return self._host_ids.get(int(client_key))

    def stats(self) -> dict:
        """Counters since start.

        packets (MQTT-port TCP packets with data or SYN/FIN/RST), segments (with data),
        fast_path / slow_path (packets per path), messages (rows that are messages, malformed
        included), malformed {bad_length, bad_flags, bad_utf8, oversize, truncated, protocol},
        gaps and bytes_missing (bytes never seen: capture loss, snap length, holes given up),
        bytes_dropped (seen but not decoded: partial messages lost to a gap, eviction or the
        memory bound, bytes before framing was found), bytes_retransmitted, ooo_segments,
        oversize_bytes_skipped, flows (created), evicted_flows, expired_flows, closed_flows
        (FIN/RST), shed_flows (memory bound), tls_flows, internal_errors (decoder bugs caught;
        must stay 0), snapped_segments and bytes_snapped (cut by the capture's snap length: not
        malformed, no row), learned_ports (ports added on seeing an MQTT CONNECT there),
        active_flows, buffered_bytes, known_clients.
        """
        s: dict = dict(self._count)
        s["malformed"] = dict(self._malformed)
        s["active_flows"] = len(self._table)
        s["buffered_bytes"] = self._buffered
        s["known_clients"] = len(self._conn_ids)
        return s

    # ---- the batch -----------------------------------------------------------------------------

    def _learn_ports(self, batch: FrameBatch, packets: np.ndarray) -> None:
        """An MQTT CONNECT sent to a port not decoded yet: that port is a broker's, decode it from
        now on (MQTT is recognised by its handshake, whatever the port). At most MAX_LEARNED_PORTS."""
        if not len(packets) or self._count["learned_ports"] >= MAX_LEARNED_PORTS:
            return
        buf = batch.buf
        off = packets["payload_off"].astype(np.int64)
        idx = np.flatnonzero((packets["proto"] == 6) & (packets["payload_len"] >= 12) & (off + 12 <= len(buf)))
        if not len(idx):
            return
        idx = idx[buf[off[idx]] == CONNECT << 4]  # a CONNECT's first byte, flags 0
        idx = idx[~self._on_port(packets["dport"][idx])] if len(idx) else idx
        for i in idx.tolist():
            head = bytes(buf[off[i] : off[i] + 12])
            at = 2 if head[1] < 0x80 else 3  # after a remaining length of one or two bytes
            if not head[at:].startswith(_PROTOCOL_NAMES):
                continue
            port = int(packets["dport"][i])
            if port not in self.ports:
                self.ports = np.array(sorted({*self.ports.tolist(), port}), dtype=np.uint16)
                self._count["learned_ports"] += 1
                log.info("MQTT CONNECT seen on port %d: decoding it as MQTT", port)
                if self._count["learned_ports"] >= MAX_LEARNED_PORTS:
                    return

    def _on_port(self, port: np.ndarray) -> np.ndarray:
        if len(self.ports) > 4:
            return np.isin(port, self.ports)
        mask = port == self.ports[0]
        for p in self.ports[1:]:  # a few comparisons beat np.isin's set-up on small batches
            mask |= port == p
        return mask

    def _feed(self, batch: FrameBatch, packets: np.ndarray, out: _Out) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Fast rows (and their order keys) of the batch; the reference path fills `out`."""
        if not len(packets):
            return [], []
        # Field by field: gathering whole structured rows is several times slower.
        sport, dport = packets["sport"], packets["dport"]
        s_mqtt, d_mqtt = self._on_port(sport), self._on_port(dport)
        flags = packets["tcp_flags"]
        # Pure ACKs carry nothing for the streams: only data and SYN/FIN/RST matter.
        cand = np.flatnonzero((packets["proto"] == 6) & (packets["ipver"] != 0) & (s_mqtt | d_mqtt)
                              & (((flags & _CTRL) != 0) | (packets["payload_wirelen"] > 0)))
        self._count["packets"] += len(cand)
        if not len(cand):
            return [], []
        src, dst = packets["src"][cand], packets["dst"][cand]
        sp, dp = sport[cand].astype(np.int64), dport[cand].astype(np.int64)
        nbuf = len(batch.buf)
        off = np.clip(packets["payload_off"][cand], 0, nbuf)
        clen = np.minimum(packets["payload_len"][cand].astype(np.int64), nbuf - off)
        # The broker is the side on an MQTT port; if both are, the lower (host, port).
        dst_lower = (dst < src) | ((dst == src) & (dp < sp))
        tb = np.where(s_mqtt[cand] & d_mqtt[cand], dst_lower, d_mqtt[cand])
        order, gstart, gid = _group_directions(src, dst, sp, dp)
        # Everything per packet, in direction-grouped order (batch order inside a group).
        cand = cand[order]
        g = _Batch(
            cand=cand, src=src[order], dst=dst[order], sp=sp[order], dp=dp[order], tb=tb[order], off=off[order],
            clen=clen[order], ts=packets["ts"][cand], fl=flags[cand], seq=packets["seq"][cand].astype(np.int64),
            wlen=np.maximum(packets["payload_wirelen"][cand].astype(np.int64), clen[order]), gid=gid[order],
            npk=len(packets),
        )
        g.ctrl = (g.fl & _CTRL) != 0
        fast_rows: list[np.ndarray] = []
        fast_keys: list[np.ndarray] = []
        pending, deferred = np.arange(len(cand)), []
        # Rounds process the connections out of batch order (each in order): with more of them
        # in the batch than the flow table can hold, that would evict and re-create flows.
        rounds = self.max_rounds if len(gstart) <= self.max_flows // 2 else min(self.max_rounds, 1)
        for rnd in range(rounds):
            last = rnd == rounds - 1
            pending = self._round(batch, out, g, pending, rnd, fast_rows, fast_keys, deferred, last)
            if not len(pending):
                break
        if rounds == 0:  # keep the flow table's recency order the same as with rounds
            firsts = _run_starts(g.gid)
            self._lookup_groups(g, firsts, _run_ends(firsts, len(g.gid)) - 1, 0)
        deferred.append(pending)
        rest = np.concatenate(deferred)
        if len(rest):  # what is left goes through the reference path, in batch order
            self._slow_positions(batch, out, g, rest)
        return fast_rows, fast_keys

    def _round(self, batch: FrameBatch, out: _Out, g: "_Batch", pos: np.ndarray, rnd: int,
               fast_rows: list[np.ndarray], fast_keys: list[np.ndarray], deferred: list[np.ndarray],
               last: bool) -> np.ndarray:
        """One pass over the packets still to do (`pos`: positions in grouped order, each group a
        suffix of itself): per direction, the run of whole messages that continue a clean stream
        is decoded vectorized; the packet that ends the run goes through the reference path.
        Returns the positions still to do; appends to `deferred` those left to the end."""
        gid = g.gid[pos]
        first = _run_starts(gid)  # first pending packet per group
        n = len(pos)
        slots, clean, nxt, level, conn, tls, fresh = self._lookup_groups(g, pos[first], pos[_run_ends(first, n) - 1], rnd)
        local = np.repeat(np.arange(len(first)), _run_ends(first, n) - first)
        ctrl = g.ctrl[pos]
        # Over TLS there is nothing to decode: only SYN/FIN/RST still matter.
        drop = tls[local] & ~ctrl
        late = self._ordered_connections(g, pos, first, local, conn, slots >= 0) if rnd == 0 else np.zeros(n, dtype=bool)
        # Until the client's first message, a CONNECT may still set the protocol level and the
        # client id: the broker's packets that come after the client's next one in the batch
        # wait (they sit this round out). If the broker sent data before it, the whole
        # connection takes the ordered path.
        first_tb = g.tb[pos[first]]
        waiting = fresh & first_tb
        wait = np.zeros(n, dtype=bool)
        if waiting.any():
            bound = np.full(int(conn.max()) + 1, np.iinfo(np.int64).max)
            bound[conn[waiting]] = g.cand[pos[first[waiting]]]
            after = g.cand[pos] > bound[conn[local]]
            broker = ~g.tb[pos]
            early = np.bincount(conn[local], weights=broker & ~after & (g.wlen[pos] > 0), minlength=len(bound)) > 0
            early &= bound < np.iinfo(np.int64).max  # only connections whose client is waited for
            late |= early[conn[local]]
            wait = broker & after
        late &= ~drop
        if late.any():
            deferred.append(pos[late])
            drop |= late
        wait &= ~drop
        held = pos[wait]
        if drop.any() or wait.any():
            keep = ~(drop | wait)
            pos, local, ctrl = pos[keep], local[keep], ctrl[keep]
            n = len(pos)
            if not n:
                return held
            new_first = _run_starts(local)
            sel = local[new_first]
            slots, clean, nxt, level, conn = slots[sel], clean[sel], nxt[sel], level[sel], conn[sel]
            first = new_first
            local = np.repeat(np.arange(len(first)), _run_ends(first, n) - first)

        seq, wlen, clen = g.seq[pos], g.wlen[pos], g.clen[pos]
        try_i = np.flatnonzero((wlen > 0) & (clen == wlen) & ~ctrl & clean[local])
        ok = np.zeros(n, dtype=bool)
        cols, ok_try = decode_vectorized(batch.buf, g.off[pos[try_i]], clen[try_i], level[local[try_i]], g.tb[pos[try_i]])
        ok[try_i] = ok_try
        expect = np.empty(n, dtype=np.int64)
        expect[1:] = (seq[:-1] + wlen[:-1]) & _M32
        expect[first] = nxt
        bad_run = np.cumsum(~(ok & (seq == expect)))
        before = np.where(first > 0, bad_run[np.maximum(first - 1, 0)], 0)
        fast = (bad_run - before[local]) == 0  # a prefix of each group

        n_fast = np.bincount(local[fast], minlength=len(first))
        moved = np.flatnonzero(n_fast)
        if len(moved):  # each direction's stream moves past its last fast packet
            j = first[moved] + n_fast[moved] - 1
            rows, ms, mtb = self._table.rows, slots[moved], g.tb[pos[j]].astype(np.int64)
            rows["nxt"][ms, mtb] = (seq[j] + wlen[j]) & _M32
            rows["connected"][ms[mtb == 1]] = True
        fi = np.flatnonzero(fast)
        if len(fi):
            # Rows in batch order (a scatter over packet indices is cheaper than a sort).
            mark = np.zeros(g.npk, dtype=bool)
            mark[g.cand[pos[fi]]] = True
            back = np.empty(g.npk, dtype=np.int64)
            back[g.cand[pos[fi]]] = fi
            fi = back[np.flatnonzero(mark)]
            at = np.empty(n, dtype=np.int64)
            at[try_i] = np.arange(len(try_i))
            at = at[fi]
            p = pos[fi]
            rows = np.zeros(len(fi), dtype=MQTT_DTYPE)
            for name in VECTOR_FIELDS:
                rows[name] = cols[name][at]
            ftb = g.tb[p]
            rows["ts"] = g.ts[p]
            rows["client"] = np.where(ftb, g.src[p], g.dst[p])
            rows["broker"] = np.where(ftb, g.dst[p], g.src[p])
            rows["client_port"] = np.where(ftb, g.sp[p], g.dp[p])
            rows["to_broker"] = ftb
            # The client id as of now: a CONNECT still to come is a stop of this round (its own
            # direction) or holds the other direction back (has_connect).
            rows["client_hash"] = self._table.rows["chash"][slots[local[fi]]]  # fast packets: known connections
            fast_rows.append(rows)
            fast_keys.append(g.cand[p].astype(np.int64) << _ROW_KEY_SHIFT)
            self._count["fast_path"] += len(fi)
            self._count["segments"] += len(fi)
        # The packet that ends each run: the reference path, in batch order (after the last
        # round, with everything else left).
        if not last:
            stop = first + n_fast
            stops = stop[stop < _run_ends(first, n)]
            if len(stops):
                self._slow_positions(batch, out, g, pos[stops])
            fast[stops] = True
        rest = pos[~fast]
        return np.sort(np.concatenate([rest, held])) if len(held) else rest

    @staticmethod
    def _ordered_connections(g: "_Batch", pos: np.ndarray, first: np.ndarray, local: np.ndarray,
                             conn: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Packets of connections whose directions must be processed in batch order, not in
        rounds: a FIN or RST ends the connection for both directions (what comes after it in
        the batch belongs to a new one), and a SYN restarts a connection that exists (the
        four-tuple reused) or that already carried data in this batch."""
        fl, cand = g.fl[pos], g.cand[pos]
        big = np.iinfo(np.int64).max
        rst = np.bincount(local, weights=(fl & (TCP_RST | TCP_FIN)) != 0, minlength=len(first)) > 0
        last_syn = np.maximum.reduceat(np.where((fl & TCP_SYN) != 0, cand, -1), first)
        if not rst.any() and (last_syn < 0).all():
            return np.zeros(len(pos), dtype=bool)
        first_data = np.minimum.reduceat(np.where(g.wlen[pos] > 0, cand, big), first)
        nconn = int(conn.max()) + 1
        c_syn, c_data = np.full(nconn, -1), np.full(nconn, big)
        np.maximum.at(c_syn, conn, last_syn)
        np.minimum.at(c_data, conn, first_data)
        c_rst = np.bincount(conn, weights=rst, minlength=nconn) > 0
        c_known = np.bincount(conn, weights=known, minlength=nconn) > 0
        ordered = c_rst | ((c_syn >= 0) & (c_known | (c_data < c_syn)))
        return ordered[conn][local]

    def _slow_positions(self, batch: FrameBatch, out: _Out, g: "_Batch", pos: np.ndarray) -> None:
        """The reference path for these packets (grouped positions), in batch order."""
        pos = pos[np.argsort(g.cand[pos], kind="stable")]
        self._count["slow_path"] += len(pos)
        self._slow(batch, out, g.cand[pos], g.ts[pos], g.src[pos], g.dst[pos], g.sp[pos], g.dp[pos], g.tb[pos],
                   g.fl[pos], g.seq[pos], g.off[pos], g.clen[pos], g.wlen[pos])

    def _lookup_groups(self, g: "_Batch", firsts: np.ndarray, lasts: np.ndarray, rnd: int):
        """Per direction still to do: its connection's slot (-1 if not tracked), whether its
        stream is clean (nothing pending), the sequence number expected next, the protocol
        level, a per-call connection index (the same for both directions), whether it is TLS
        and whether the client's first message is still to come."""
        tb = g.tb[firsts]
        src, dst, sp, dp = g.src[firsts], g.dst[firsts], g.sp[firsts], g.dp[firsts]
        client, broker = np.where(tb, src, dst), np.where(tb, dst, src)
        cport, bport = np.where(tb, sp, dp), np.where(tb, dp, sp)
        h = flow_hash(client, broker, cport, bport)
        table = self._table
        slots = table.lookup(client, broker, cport, bport, h)
        fidx = _connection_index(h, client, broker, cport, bport)
        found = slots >= 0
        s = np.where(found, slots, 0)
        r = table.rows  # field by field: gathering whole structured rows is far slower
        d = tb.astype(np.int64)
        nxt = np.where(found, r["nxt"][s, d], -1)
        clean = (found & r["started"][s, d] & (nxt >= 0) & ~r["held"][s, d] & (r["skip"][s, d] == 0)
                 & ~r["resync"][s, d] & ~r["fin"][s, d])
        level = np.where(found, r["level"][s], 4).astype(np.uint8)
        tls = found & r["tls"][s]
        fresh = ~(found & r["connected"][s])
        if rnd == 0 and found.any():
            np.maximum.at(table.rows["last"], slots[found], g.ts[lasts][found])
        return slots, clean, nxt, level, fidx, tls, fresh

    def _slow(self, batch: FrameBatch, out: _Out, idx, ts, src, dst, sp, dp, tb, fl, seq, off, clen, wlen) -> None:
        try:
            self._slow_pass(batch, out, idx, ts, src, dst, sp, dp, tb, fl, seq, off, clen, wlen)
        finally:
            self._end_pass()

    def _slow_pass(self, batch: FrameBatch, out: _Out, idx, ts, src, dst, sp, dp, tb, fl, seq, off, clen, wlen) -> None:
        mv = memoryview(batch.buf)
        flows, count, segment = self._flows, self._count, self._segment
        touched, gone, rows = self._touched, self._gone, self._table.rows
        # The table's slot of each packet's connection, found for all of them at once (a slot
        # freed during this pass is in `gone`; connections created in it are in `flows`).
        hint = self._table.lookup(np.where(tb, src, dst), np.where(tb, dst, src), np.where(tb, sp, dp), np.where(tb, dp, sp))
        cols = (a.tolist() for a in (idx, ts, src, dst, sp, dp, tb, fl, seq, off, clen, wlen, hint))
        for i, t, s, d, a, b, to_b, f, q, o, c, w, slot in zip(*cols):
            out.cur, out.sub = i, 0
            key = (s, d, a, b) if to_b else (d, s, b, a)
            flow = flows.get(key)
            if flow is None:
                if slot >= 0 and slot not in gone:
                    flow = _Flow(key, slot, t)
                    flow.load(rows[slot].item())
                    flows[key] = touched[slot] = flow
                elif not w:
                    continue  # SYN/FIN/RST of a connection we hold nothing for
                else:
                    flow = self._new_flow(key, t)
            elif touched.get(flow.slot) is not flow:
                self._touch(flow)
            if t > flow.last_ts:
                flow.last_ts = t
            if w:
                count["segments"] += 1
                # The common case once more, without the general machinery: one whole message
                # (not a CONNECT) continuing a clean stream: framed here, decoded vectorized.
                half = flow.c2b if to_b else flow.b2c
                if c == w and q == half.nxt and not f & _CTRL and half.clean() and not flow.tls and c >= 2:
                    b1 = mv[o + 1]
                    if b1 < 0x80 and 2 + b1 == c and mv[o] >> 4 != CONNECT:
                        first = len(out.v_off)
                        out.v_off.append(o)
                        out.v_len.append(c)
                        out.close_run(first, (t, key[0], key[1], key[2], to_b, flow.client_hash), flow.level)
                        half.nxt = (q + w) & _M32
                        if to_b:
                            flow.connected = True
                        continue
            try:
                flow = segment(flow, to_b, t, f, q, mv, o, c, w)
            except Exception:  # noqa: BLE001 - a bug costs this flow's state, never the daemon
                self._internal_error(flow)
            c2b, b2c = flow.c2b, flow.b2c
            if flow.accounted or c2b.buf or b2c.buf or c2b.ooo or b2c.ooo:
                self._sync(flow)
                if self._buffered > self.max_buffered:
                    self._shed(t)

    def _touch(self, flow: _Flow) -> None:
        """The Python path is about to work on a connection: its scalars from the table (the
        vectorized path may have moved them since the object was last stored)."""
        if self._touched.get(flow.slot) is not flow and flow.slot >= 0:
            flow.load(self._table.rows[flow.slot].item())
            self._touched[flow.slot] = flow

    def _end_pass(self) -> None:
        """Store what the Python path changed into the table; objects that hold nothing go."""
        touched, self._touched, self._gone = self._touched, {}, set()
        live = [(slot, f) for slot, f in touched.items() if f.slot == slot]
        if live:
            sl = np.array([slot for slot, _ in live], dtype=np.int64)
            fs = [f for _, f in live]
            rows = self._table.rows
            rows["nxt"][sl] = [(f.b2c.nxt, f.c2b.nxt) for f in fs]
            rows["skip"][sl] = [(f.b2c.skip, f.c2b.skip) for f in fs]
            rows["started"][sl] = [(f.b2c.started, f.c2b.started) for f in fs]
            rows["fin"][sl] = [(f.b2c.fin, f.c2b.fin) for f in fs]
            rows["resync"][sl] = [(f.b2c.resync, f.c2b.resync) for f in fs]
            rows["held"][sl] = [(f.b2c.buf is not None or bool(f.b2c.ooo), f.c2b.buf is not None or bool(f.c2b.ooo)) for f in fs]
            rows["level"][sl] = [f.level for f in fs]
            rows["connected"][sl] = [f.connected for f in fs]
            rows["tls"][sl] = [f.tls for f in fs]
            rows["chash"][sl] = np.array([f.client_hash for f in fs], dtype=np.uint64)
            rows["last"][sl] = np.maximum(rows["last"][sl], [f.last_ts for f in fs])
        for slot in self._table.commit():  # not findable by the index: keep the object
            f = touched.get(slot)
            if f is not None and f.slot == slot:
                f.pinned = True
        flows = self._flows
        for _, f in live:
            if not f.holding() and flows.get(f.key) is f:
                del flows[f.key]

    def _guarded(self, step, flow: _Flow, *args) -> None:
        """Run one step on a flow; a bug must cost that flow's state, never the daemon."""
        try:
            flow = step(flow, *args) or flow
        except Exception:  # noqa: BLE001 - counted and logged; the fuzz tests require zero
            self._internal_error(flow)
        self._sync(flow)

    def _internal_error(self, flow: _Flow) -> None:
        self._count["internal_errors"] += 1
        if self._count["internal_errors"] <= 10:
            log.exception("MQTT stream decoder failed on connection %s; its state is dropped", flow.key)
        self._close(flow, None)

    def _segment(self, flow: _Flow, tb: int, ts: float, fl: int, seq: int, src, off: int, clen: int, wlen: int) -> _Flow:
        half = flow.c2b if tb else flow.b2c
        if fl & TCP_RST:
            self._end_half(flow, flow.c2b, 1, ts)
            self._end_half(flow, flow.b2c, 0, ts)
            self._close(flow, "closed_flows")
            return flow
        if fl & TCP_SYN:
            if half.started or half.fin:  # the four-tuple is reused by a new connection
                self._end_half(flow, flow.c2b, 1, ts)
                self._end_half(flow, flow.b2c, 0, ts)
                self._close(flow, "closed_flows")
                flow = self._new_flow(flow.key, ts)
                half = flow.c2b if tb else flow.b2c
            seq = (seq + 1) & _M32
            half.nxt = seq
        if wlen:
            self._data(flow, half, tb, ts, seq, src, off, clen, wlen)
        if fl & TCP_FIN and not half.fin:
            if half.ooo:  # the sender is done: what is still missing will not come
                self._give_up_waiting(flow, half, tb, ts)
            self._end_half(flow, half, tb, ts)
            half.fin = True
            half.nxt = (half.nxt + 1) & _M32 if half.nxt >= 0 else -1
            other = flow.b2c if tb else flow.c2b
            if other.fin:
                self._close(flow, "closed_flows")
        return flow

    def _data(self, flow: _Flow, half: _Half, tb: int, ts: float, seq: int, src, off: int, clen: int, wlen: int) -> None:
        if half.nxt < 0:  # first data seen on this direction: framing unknown until it looks right
            half.nxt = seq
            half.resync = True
        rel = (seq - half.nxt) & _M32
        if rel >= 1 << 31:
            back = (1 << 32) - rel
            if back >= wlen:
                self._count["bytes_retransmitted"] += clen
                return
            cut = min(back, clen)
            self._count["bytes_retransmitted"] += cut
            off, clen, wlen = off + cut, clen - cut, wlen - back
        elif rel:
            self._hold(flow, half, tb, ts, seq, bytes(src[off : off + clen]), wlen)
            return
        self._in_order(flow, half, tb, ts, src, off, clen, wlen, True)
        if half.ooo:
            self._drain(flow, half, tb, ts)
            if half.ooo and ts - min(e[3] for e in half.ooo) > self.ooo_timeout:
                self._give_up_waiting(flow, half, tb, ts)

    def _in_order(self, flow: _Flow, half: _Half, tb: int, ts: float, src, off: int, clen: int, wlen: int, live: bool) -> None:
        if clen:
            self._consume(flow, half, tb, ts, src, off, off + clen, live)
        half.nxt = (half.nxt + wlen) & _M32
        missing = wlen - clen  # cut by the capture's snap length
        if missing > 0:
            if half.skip >= missing:  # lost inside a message that was being discarded anyway
                half.skip -= missing
                self._count["oversize_bytes_skipped"] += missing
            else:
                self._snapped(half, missing - half.skip)

    def _snapped(self, half: _Half, nbytes: int) -> None:
        """Bytes the capture did not keep (snap length): framing is lost, but nothing about the
        sender is wrong, so no row (a gap row would read as malformed); counted apart."""
        self._count["snapped_segments"] += 1
        self._count["bytes_snapped"] += nbytes
        if half.buf:
            self._count["bytes_dropped"] += len(half.buf)
        half.buf = None
        half.skip = 0
        half.resync = True

    def _hold(self, flow: _Flow, half: _Half, tb: int, ts: float, seq: int, data: bytes, wlen: int) -> None:
        """Keep a segment that arrived ahead of a hole, within bounds."""
        ooo = half.ooo if half.ooo is not None else []
        half.ooo = ooo
        rel = (seq - half.nxt) & _M32
        pos = len(ooo)
        while pos and ((ooo[pos - 1][0] - half.nxt) & _M32) > rel:
            pos -= 1
        if pos and ooo[pos - 1][0] == seq and ooo[pos - 1][2] >= wlen:
            self._count["bytes_retransmitted"] += len(data)  # a copy of one already held
            return
        ooo.insert(pos, [seq, data, wlen, ts])
        half.ooo_bytes += len(data)
        self._count["ooo_segments"] += 1
        if (half.ooo_bytes > self.max_ooo_bytes or len(ooo) > self.max_ooo_segments
                or ts - min(e[3] for e in ooo) > self.ooo_timeout):
            self._give_up_waiting(flow, half, tb, ts)

    def _give_up_waiting(self, flow: _Flow, half: _Half, tb: int, ts: float) -> None:
        """The hole before the held segments is lost: count it, then go on with what is held."""
        first = half.ooo[0][0]
        self._gap(flow, half, tb, ts, (first - half.nxt) & _M32)
        half.nxt = first
        self._drain(flow, half, tb, ts)

    def _drain(self, flow: _Flow, half: _Half, tb: int, ts: float) -> None:
        """Consume the held segments that the stream has now reached."""
        ooo = half.ooo
        while ooo:
            seq, data, wlen, _ = ooo[0]
            rel = (seq - half.nxt) & _M32
            if rel and rel < 1 << 31:
                break
            ooo.pop(0)
            half.ooo_bytes -= len(data)
            back = (1 << 32) - rel if rel else 0
            if back >= wlen:
                self._count["bytes_retransmitted"] += len(data)
                continue
            cut = min(back, len(data))
            self._count["bytes_retransmitted"] += cut
            self._in_order(flow, half, tb, ts, data, cut, len(data) - cut, wlen - back, False)
        if not ooo:
            half.ooo = None

    def _gap(self, flow: _Flow, half: _Half, tb: int, ts: float, nbytes: int) -> None:
        """Bytes of the stream are lost: a MQTT_STREAM_GAP row, and framing must be found again."""
        self._count["gaps"] += 1
        self._count["bytes_missing"] += nbytes
        if half.buf:
            self._count["bytes_dropped"] += len(half.buf)
        half.buf = None
        half.skip = 0
        half.resync = True
        gap = MqttMessage(0, 0, nbytes, MQTT_STREAM_GAP, f"{nbytes} bytes of the stream lost")
        self._emit(flow, tb, ts, gap)

    def _consume(self, flow: _Flow, half: _Half, tb: int, ts: float, src, off: int, end: int, live: bool) -> None:
        """Frame the in-order bytes src[off:end] into messages."""
        if half.skip:
            k = min(half.skip, end - off)
            half.skip -= k
            off += k
            self._count["oversize_bytes_skipped"] += k
            if off >= end:
                return
        if flow.tls:
            return
        if half.resync or not half.started:
            if _looks_like_tls(src, off, end):
                self._become_tls(flow)
                return
            if half.resync:
                # A direction's first data most likely starts a message (the connection's start,
                # or a client's next write): a partial first message is fine there, not after a loss.
                if not self._plausible(src, off, end, flow.level, 0 if not half.started else 2):
                    self._count["bytes_dropped"] += end - off
                    return
                half.resync = False
            half.started = True
        if half.buf is not None:
            off = self._complete_pending(flow, half, tb, ts, src, off, end)
            if half.resync:
                self._count["bytes_dropped"] += end - off
                return
        out = self._out
        max_message, level = self.max_message, flow.level
        meta = self._meta(flow, tb, ts)
        v_off, v_len = out.v_off, out.v_len
        run = len(v_off)
        while off < end:
            if off + 1 < end and src[off + 1] < 0x80:  # remaining length < 128: one byte
                total = 2 + src[off + 1]
            else:
                rl, lb = remaining_length(src, off + 1, end)
                if rl == LENGTH_INCOMPLETE:
                    half.buf = bytearray(src[off:end])
                    break
                if rl == LENGTH_MALFORMED:
                    out.close_run(run, meta, level)
                    self._emit(flow, tb, ts, parse_message(src[off : off + 5], bool(tb), level, max_message))
                    self._count["bytes_dropped"] += end - off - 5
                    half.resync = True
                    return
                total = 1 + lb + rl
                if total > max_message:  # report it from its header, then discard it unbuffered
                    out.close_run(run, meta, level)
                    self._emit(flow, tb, ts, parse_message(src[off : off + 1 + lb], bool(tb), level, max_message))
                    run = len(v_off)
                    take = min(total, end - off)
                    off += take
                    half.skip = total - take
                    self._count["oversize_bytes_skipped"] += take
                    continue
            if off + total > end:
                half.buf = bytearray(src[off:end])
                break
            if live and src[off] >> 4 != CONNECT:
                v_off.append(off)
                v_len.append(total)
                if tb:
                    flow.connected = True
            else:
                out.close_run(run, meta, level)
                if _looks_like_tls(src, off, end):  # a record header reads as a CONNECT with bad flags
                    self._become_tls(flow)
                    return
                self._emit_parsed(flow, tb, ts, src[off : off + total])
                level, meta = flow.level, self._meta(flow, tb, ts)
                run = len(v_off)
            off += total
        out.close_run(run, meta, level)

    def _become_tls(self, flow: _Flow) -> None:
        """A TLS record on the stream: it is not MQTT in the clear, nothing more to decode."""
        flow.tls = True
        self._count["tls_flows"] += 1
        for h in (flow.c2b, flow.b2c):
            h.buf, h.skip = None, 0

    def _complete_pending(self, flow: _Flow, half: _Half, tb: int, ts: float, src, off: int, end: int) -> int:
        """Extend the buffered start of a message with src[off:end]; returns the new offset."""
        buf = half.buf
        rl, lb = remaining_length(buf, 1)
        while rl == LENGTH_INCOMPLETE and off < end:  # one byte at a time: the header is short
            buf.append(src[off])
            off += 1
            rl, lb = remaining_length(buf, 1)
        if rl == LENGTH_INCOMPLETE:
            return off
        if rl == LENGTH_MALFORMED:
            half.buf = None
            half.resync = True
            self._emit(flow, tb, ts, parse_message(bytes(buf), bool(tb), flow.level, self.max_message))
            return off
        total = 1 + lb + rl
        if total > self.max_message:
            half.buf = None
            self._emit(flow, tb, ts, parse_message(bytes(buf[: 1 + lb]), bool(tb), flow.level, self.max_message))
            skip = total - len(buf)
            take = min(skip, end - off)
            half.skip = skip - take
            self._count["oversize_bytes_skipped"] += len(buf) + take
            return off + take
        k = min(end - off, total - len(buf))
        buf += src[off : off + k]
        if len(buf) == total:
            half.buf = None
            self._emit_parsed(flow, tb, ts, bytes(buf))
        return off + k

    def _plausible(self, src, off: int, end: int, level: int, min_whole: int) -> bool:
        """After lost bytes: does src[off:end] start with whole, valid-looking messages?

        Accepted when the fixed headers chain to exactly the end of the segment, or at least
        `min_whole` whole messages come before a partial one. Otherwise the bytes are dropped and
        the next segment is tried (MQTT clients write a message per send, so segments mostly
        start one).
        """
        ok_b0 = _B0_OK_V5 if level == 5 else _B0_OK
        whole = 0
        while off < end:
            if not ok_b0[src[off]]:
                return False
            rl, lb = remaining_length(src, off + 1, end)
            if rl == LENGTH_MALFORMED or 1 + lb + rl > self.max_message:
                return False
            if rl == LENGTH_INCOMPLETE or off + 1 + lb + rl > end:
                return whole >= min_whole
            off += 1 + lb + rl
            whole += 1
            if whole >= 64:
                return True
        return True

    def _end_half(self, flow: _Flow, half: _Half, tb: int, ts: float) -> None:
        """The sender stopped: a message it started and never finished is truncated."""
        if half.ooo:
            self._give_up_waiting(flow, half, tb, ts)
        if half.buf:
            self._emit(flow, tb, ts, parse_message(bytes(half.buf), bool(tb), flow.level, self.max_message))
            half.buf = None

    # ---- rows ----------------------------------------------------------------------------------

    def _meta(self, flow: _Flow, tb: int, ts: float) -> tuple:
        client, broker, cport, _ = flow.key
        return (ts, client, broker, cport, tb, flow.client_hash)

    def _emit(self, flow: _Flow, tb: int, ts: float, msg: MqttMessage) -> None:
        if tb and msg.error != MQTT_STREAM_GAP:
            flow.connected = True
        out = self._out
        out.py_keys.append(out.key())
        out.py_rows.append(_row(self._meta(flow, tb, ts), msg))

    def _emit_parsed(self, flow: _Flow, tb: int, ts: float, data) -> None:
        msg = parse_message(data, bool(tb), flow.level, self.max_message)
        if msg.mtype == CONNECT and tb:
            if flow.connected:
                if msg.error == MQTT_OK:
                    msg.error, msg.detail = MQTT_PROTOCOL, "CONNECT that is not the client's first message"
            else:
                flow.connected = True
                if msg.proto_level in (3, 4, 5):
                    flow.level = msg.proto_level
                if msg.client_id is not None:
                    self._learn_client(flow, msg.client_id)
        self._emit(flow, tb, ts, msg)

    def _finish(self, buf: np.ndarray, out: _Out, fast_rows: list[np.ndarray], fast_keys: list[np.ndarray]) -> np.ndarray:
        """Merge the fast rows, the vectorized rows of the slow path and the Python rows, in order."""
        parts, keys = list(fast_rows), list(fast_keys)
        if out.v_off:
            start = np.array(out.v_off, dtype=np.int64)
            length = np.array(out.v_len, dtype=np.int64)
            firsts = np.array([r[0] for r in out.runs] + [len(start)], dtype=np.int64)
            sizes = np.diff(firsts)
            meta = np.repeat(np.array([r[2] for r in out.runs], dtype=_META_DTYPE), sizes)
            level = np.repeat(np.array([r[3] for r in out.runs], dtype=np.uint8), sizes)
            vkeys = np.repeat(np.array([r[1] for r in out.runs], dtype=np.int64) - firsts[:-1], sizes) + np.arange(len(start))
            cols, ok = decode_vectorized(buf, start, length, level, meta["to_broker"].astype(bool))
            okj = np.flatnonzero(ok)
            take = slice(None) if len(okj) == len(ok) else okj  # all decoded: no gather
            vrows = np.zeros(len(okj), dtype=MQTT_DTYPE)
            for name in VECTOR_FIELDS:
                vrows[name] = cols[name][take]
            for name in _META_DTYPE.names:
                vrows[name] = meta[name][take]
            parts.append(vrows)
            keys.append(vkeys[take])
            for j in np.flatnonzero(~ok).tolist():  # left to the reference decoder
                s, n = out.v_off[j], out.v_len[j]
                m = tuple(meta[j].tolist())
                try:
                    parsed = parse_message(buf[s : s + n].tobytes(), bool(m[4]), int(level[j]), self.max_message)
                except Exception:  # noqa: BLE001 - counted; the fuzz tests require zero
                    self._count["internal_errors"] += 1
                    log.exception("MQTT decoder failed on a %d-byte message", n)
                    continue
                out.py_keys.append(int(vkeys[j]))
                out.py_rows.append(_row(m, parsed))
        if out.py_rows:
            parts.append(np.array(out.py_rows, dtype=MQTT_DTYPE))
            keys.append(np.array(out.py_keys, dtype=np.int64))
        nonempty = [i for i, part in enumerate(parts) if len(part)]
        if not nonempty:
            return np.zeros(0, dtype=MQTT_DTYPE)
        only = nonempty[0] if len(nonempty) == 1 else -1
        if only >= 0 and (only < len(fast_rows) or bool(np.all(keys[only][1:] >= keys[only][:-1]))):
            rows = parts[only]  # one part, already in packet order (a round of fast rows always is)
        else:
            merged = np.concatenate([parts[i] for i in nonempty])
            perm = np.argsort(np.concatenate([keys[i] for i in nonempty]), kind="stable")
            rows = np.empty(len(perm), dtype=MQTT_DTYPE)
            for name in MQTT_DTYPE.names:  # field by field: faster than gathering whole rows
                rows[name] = merged[name][perm]
        counts = np.bincount(rows["error"], minlength=8)
        self._count["messages"] += len(rows) - int(counts[MQTT_STREAM_GAP])
        for code, name in ERROR_NAMES.items():
            if code != MQTT_STREAM_GAP:
                self._malformed[name] += int(counts[code])
        return rows

    # ---- tables and bounds ---------------------------------------------------------------------

    def _new_flow(self, key: tuple[int, int, int, int], ts: float) -> _Flow:
        table = self._table
        while len(table) >= self.max_flows:
            self._close_slot(self._least_recent(), "evicted_flows")
        flow = _Flow(key, table.add(*key, ts), ts)
        self._flows[key] = self._touched[flow.slot] = flow
        self._count["flows"] += 1
        return flow

    def _least_recent(self) -> int:
        """The slot of the connection seen least recently (this pass's own times included)."""
        rows = self._table.rows
        while True:
            slot = self._table.oldest()
            f = self._touched.get(slot)
            if f is None or f.slot != slot or f.last_ts <= rows["last"][slot]:
                return slot
            rows["last"][slot] = f.last_ts  # seen in this pass: not the oldest after all

    def _close_slot(self, slot: int, counter: str) -> None:
        """Forget the connection in a slot, with or without a Python object."""
        r = self._table.rows[slot]
        key = (int(r["client"]), int(r["broker"]), int(r["cport"]), int(r["bport"]))
        flow = self._flows.get(key)
        if flow is not None and flow.slot == slot:
            self._close(flow, counter)
        else:
            self._table.remove(slot)
            self._gone.add(slot)
            self._count[counter] += 1

    def _close(self, flow: _Flow, counter: str | None) -> None:
        """Forget a connection (its client id stays in the client tables)."""
        if self._flows.get(flow.key) is flow:
            del self._flows[flow.key]
        if flow.slot >= 0:
            self._table.remove(flow.slot)
            self._gone.add(flow.slot)
            flow.slot = -1
            if counter:
                self._count[counter] += 1
        for half in (flow.c2b, flow.b2c):
            self._count["bytes_dropped"] += half.held()
            half.buf, half.ooo, half.ooo_bytes, half.skip = None, None, 0, 0
        self._sync(flow)

    def _sync(self, flow: _Flow) -> None:
        """Keep the global count of buffered bytes, and the table of flows holding some, exact."""
        held = flow.held()
        if held != flow.accounted:
            self._buffered += held - flow.accounted
            flow.accounted = held
        if held and self._flows.get(flow.key) is flow:
            self._holding.setdefault(flow.key, flow)
        elif self._holding.get(flow.key) is flow:
            del self._holding[flow.key]

    def _shed(self, ts: float) -> None:
        """Over the global buffer budget: drop what the longest-holding flows buffer (a gap each)."""
        target = self.max_buffered * 3 // 4
        while self._buffered > target and self._holding:
            flow = next(iter(self._holding.values()))
            self._touch(flow)
            for tb, half in ((1, flow.c2b), (0, flow.b2c)):
                held = half.held()
                if held:
                    self._count["bytes_dropped"] += held
                    self._count["gaps"] += 1
                    half.buf, half.ooo, half.ooo_bytes, half.skip, half.resync = None, None, 0, 0, True
                    self._emit(flow, tb, ts, MqttMessage(0, 0, held, MQTT_STREAM_GAP, f"{held} buffered bytes dropped (memory bound)"))
            self._count["shed_flows"] += 1
            self._sync(flow)

    def _expire(self, now: float) -> None:
        """Forget connections idle for longer than idle_timeout (least recently used first)."""
        for slot in self._table.idle(now - self.idle_timeout).tolist():
            self._close_slot(slot, "expired_flows")
        self._gone = set()

    def _learn_client(self, flow: _Flow, client_id: str) -> None:
        flow.client_hash = topic_hash(client_id.encode("utf-8"))
        client, _, cport, _ = flow.key
        for table, key in ((self._conn_ids, (client, cport)), (self._host_ids, client)):
            table[key] = client_id
            table.move_to_end(key)
            while len(table) > self.max_clients:
                table.popitem(last=False)


def _run_starts(a: np.ndarray) -> np.ndarray:
    """Indices where a new run of equal values starts (a is not empty)."""
    change = np.empty(len(a), dtype=bool)
    change[0] = True
    np.not_equal(a[1:], a[:-1], out=change[1:])
    return np.flatnonzero(change)


def _run_ends(starts: np.ndarray, n: int) -> np.ndarray:
    """One past the last index of each run, from the runs' starts."""
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = n
    return ends


def _connection_index(h: np.ndarray, client: np.ndarray, broker: np.ndarray, cport: np.ndarray, bport: np.ndarray) -> np.ndarray:
    """The same small integer for equal four-tuples (`h`: their flow_hash)."""
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    f = first[inv]
    if (client[f] == client).all() and (broker[f] == broker).all() and (cport[f] == cport).all() and (bport[f] == bport).all():
        return inv.astype(np.int64)
    # A hash collision inside the batch: exact, slower.
    order = np.lexsort((bport, cport, broker, client))
    c, b, cp, bp = client[order], broker[order], cport[order], bport[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (c[1:] != c[:-1]) | (b[1:] != b[:-1]) | (cp[1:] != cp[:-1]) | (bp[1:] != bp[:-1])
    idx = np.empty(len(order), dtype=np.int64)
    idx[order] = np.cumsum(new) - 1
    return idx


def _group_directions(src: np.ndarray, dst: np.ndarray, sport: np.ndarray, dport: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group packets by direction (src, dst, sport, dport).

    Returns (order, group starts in `order`, group id per packet): `order` lists the packets
    group by group, in batch order inside each group.
    """
    n = len(src)
    a = (src.astype(np.uint64) << np.uint64(16)) | sport.astype(np.uint64)
    b = (dst.astype(np.uint64) << np.uint64(16)) | dport.astype(np.uint64)
    # One 64-bit mix sorts fast; equal (a, b) inside every group proves there was no collision.
    k = a * np.uint64(0x9E3779B97F4A7C15) ^ (b * np.uint64(0xC2B2AE3D27D4EB4F) + (b >> np.uint64(29)))
    order = np.argsort(k, kind="stable")
    ks = k[order]
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    np.not_equal(ks[1:], ks[:-1], out=boundary[1:])
    gstart = np.flatnonzero(boundary)
    gsorted = np.cumsum(boundary) - 1
    first = order[gstart][gsorted]
    wide = (src >> np.uint64(48)).any() or (dst >> np.uint64(48)).any()
    if wide or not ((a[order] == a[first]).all() and (b[order] == b[first]).all()):
        order = np.lexsort((dport, dst, sport, src))  # exact, slower; keeps batch order within a group
        s, d, sp, dp = src[order], dst[order], sport[order], dport[order]
        boundary[1:] = (s[1:] != s[:-1]) | (d[1:] != d[:-1]) | (sp[1:] != sp[:-1]) | (dp[1:] != dp[:-1])
        gstart = np.flatnonzero(boundary)
        gsorted = np.cumsum(boundary) - 1
    gid = np.empty(n, dtype=np.int64)
    gid[order] = gsorted
    return order, gstart, gid
