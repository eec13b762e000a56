"""MQTT codec: one control packet at a time, MQTT 3.1, 3.1.1 and 5.0.

`parse_message` is the reference decoder: every rule about what is well formed lives here, and
the vectorized fast path in `streams.py` only handles messages it can prove are well formed,
sending everything else here. It never raises on bad input: a malformed message comes back as
a `MqttMessage` whose `error` is one of the `MQTT_*` codes and whose `detail` names the problem.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from atlas.agent.decode import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    MQTT_BAD_FLAGS,
    MQTT_BAD_LENGTH,
    MQTT_BAD_UTF8,
    MQTT_OK,
    MQTT_OVERSIZE,
    MQTT_PROTOCOL,
    MQTT_TRUNCATED,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
)

DEFAULT_MAX_MESSAGE = 256 * 1024
MAX_REMAINING = 268_435_455  # largest value a 4-byte variable byte integer can carry

# remaining_length() results that are not a length.
LENGTH_INCOMPLETE = -2  # the buffer ends inside the varint: more bytes needed
LENGTH_MALFORMED = -1  # more than 4 bytes: no valid MQTT message

TYPE_NAMES = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK", PUBREC: "PUBREC",
    PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ", PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT", AUTH: "AUTH",
}

# Fixed-header flags that MQTT reserves: these types must carry exactly this low nibble.
_REQUIRED_FLAGS = {t: 0 for t in TYPE_NAMES if t != PUBLISH}
_REQUIRED_FLAGS.update({PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2})

# Which side may send what (client -> broker: True).
_CLIENT_ONLY = {CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ}
_BROKER_ONLY = {CONNACK, SUBACK, UNSUBACK, PINGRESP}

# Topic hash: 64-bit FNV-1a, stable across processes and platforms; streams.py computes the
# same function vectorized.
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1
_hash_cache: dict[bytes, int] = {}
_HASH_CACHE_MAX = 4096


def topic_hash(topic: bytes) -> int:
    """64-bit FNV-1a of the topic bytes; 0 for an empty topic (the MQTT_DTYPE "none" value)."""
    if not topic:
        return 0
    h = _hash_cache.get(topic)
    if h is None:
        h = FNV_OFFSET
        for b in topic:
            h = ((h ^ b) * FNV_PRIME) & _MASK64
        if len(_hash_cache) >= _HASH_CACHE_MAX:
            _hash_cache.clear()  # bounded: attackers can vary topics freely
        _hash_cache[bytes(topic)] = h
    return h


@dataclass(slots=True)
class MqttMessage:
    """One decoded MQTT control packet (fields not used by its type stay at their zero value)."""

    mtype: int  # control packet type, 0..15
    flags: int  # low nibble of the fixed header
    length: int  # fixed header + remaining length (what it occupies in the stream)
    error: int = MQTT_OK
    detail: str = ""  # why it is malformed, for evidence and logs
    proto_level: int = 0  # CONNECT only: 3, 4 or 5
    keepalive: int = 0
    connect_flags: int = 0
    return_code: int = 0  # CONNACK return/reason code; SUBACK worst code; DISCONNECT/AUTH/ack reason
    qos: int = 0  # PUBLISH QoS; SUBSCRIBE highest requested QoS
    packet_id: int = 0
    topic: bytes | None = None  # PUBLISH topic or first SUBSCRIBE/UNSUBSCRIBE filter
    topic_len: int = 0
    topic_hash: int = 0
    payload_len: int = 0
    n_filters: int = 0
    wildcard: bool = False
    sys_topic: bool = False
    client_id: str | None = None
    username: str | None = None
    filters: list[str] = field(default_factory=list)


class _Malformed(Exception):
    """Internal: aborts parsing of one message; parse_message turns it into an error code."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def remaining_length(buf: bytes | bytearray | memoryview, pos: int = 1, end: int | None = None) -> tuple[int, int]:
    """Decode the variable byte integer at `pos`: returns (value, number of bytes).

    (LENGTH_INCOMPLETE, 0) if the buffer (or `end`) comes first, (LENGTH_MALFORMED, 0) if it runs
    past 4 bytes.
    """
    value = 0
    n = len(buf) if end is None else end
    for i in range(4):
        if pos + i >= n:
            return LENGTH_INCOMPLETE, 0
        b = buf[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, i + 1
    return LENGTH_MALFORMED, 0


def fixed_header_error(mtype: int, flags: int, proto_level: int) -> str:
    """Why a fixed header is invalid ('' if it is not): reserved type or reserved flags."""
    if mtype == 0:
        return "reserved control packet type 0"
    if mtype == AUTH and proto_level < 5:
        return "reserved control packet type 15 before MQTT 5"
    if mtype == PUBLISH:
        return ""
    if flags != _REQUIRED_FLAGS[mtype]:
        return f"{TYPE_NAMES[mtype]} fixed-header flags must be 0b{_REQUIRED_FLAGS[mtype]:04b}, got 0b{flags:04b}"
    return ""


def parse_message(
    buf: bytes | bytearray | memoryview,
    to_broker: bool,
    proto_level: int = 4,
    max_size: int = DEFAULT_MAX_MESSAGE,
) -> MqttMessage | None:
    """Decode the MQTT control packet at the start of `buf`; None only if `buf` is empty.

    `proto_level` is the connection's protocol level (from its CONNECT; a CONNECT brings its own).
    Bytes after the message are ignored (`length` says where the next one starts). A buffer
    that holds only the fixed header of a message larger than `max_size` is enough to report
    MQTT_OVERSIZE. Never raises on malformed input.
    """
    n = len(buf)
    if n == 0:
        return None
    b0 = buf[0]
    mtype, flags = b0 >> 4, b0 & 0x0F
    rl, lb = remaining_length(buf, 1)
    if rl == LENGTH_INCOMPLETE:
        return MqttMessage(mtype, flags, n, MQTT_TRUNCATED, "buffer ends inside the remaining length")
    if rl == LENGTH_MALFORMED:
        return MqttMessage(mtype, flags, min(n, 5), MQTT_BAD_LENGTH, "remaining length longer than 4 bytes")
    hl = 1 + lb
    msg = MqttMessage(mtype, flags, hl + rl)
    why = fixed_header_error(mtype, flags, proto_level)
    if why:
        return _fail(msg, MQTT_BAD_FLAGS, why)
    if msg.length > max_size:
        return _fail(msg, MQTT_OVERSIZE, f"{TYPE_NAMES[mtype]} of {msg.length} bytes exceeds the maximum of {max_size}")
    if n < msg.length:
        return _fail(msg, MQTT_TRUNCATED, f"{TYPE_NAMES[mtype]} announces {msg.length} bytes, only {n} present")
    data = bytes(buf[: msg.length])
    try:
        if lb > 1 and data[lb] == 0:
            raise _Malformed(MQTT_BAD_LENGTH, "remaining length not encoded in the minimum number of bytes")
        if to_broker and mtype in _BROKER_ONLY or not to_broker and mtype in _CLIENT_ONLY:
            side = "client" if not to_broker else "broker"
            raise _Malformed(MQTT_PROTOCOL, f"{TYPE_NAMES[mtype]} sent to the {side}")
        _BODY[mtype](msg, data, hl, proto_level)
    except _Malformed as e:
        _fail(msg, e.code, e.detail)
    return msg


def _fail(msg: MqttMessage, code: int, detail: str) -> MqttMessage:
    msg.error, msg.detail = code, detail
    return msg


# --- field readers: (value, new position); raise _Malformed when the field does not fit ---------


def _u8(d: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    if pos + 1 > end:
        raise _Malformed(MQTT_TRUNCATED, f"{what} missing")
    return d[pos], pos + 1


def _u16(d: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    if pos + 2 > end:
        raise _Malformed(MQTT_TRUNCATED, f"{what} missing")
    return (d[pos] << 8) | d[pos + 1], pos + 2


def _u32(d: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    if pos + 4 > end:
        raise _Malformed(MQTT_TRUNCATED, f"{what} missing")
    return int.from_bytes(d[pos : pos + 4], "big"), pos + 4


def _varint(d: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    value, nb = remaining_length(d, pos, end)
    if value == LENGTH_INCOMPLETE:
        raise _Malformed(MQTT_TRUNCATED, f"{what} missing")
    if value == LENGTH_MALFORMED:
        raise _Malformed(MQTT_BAD_LENGTH, f"{what}: variable byte integer longer than 4 bytes")
    if nb > 1 and d[pos + nb - 1] == 0:
        raise _Malformed(MQTT_BAD_LENGTH, f"{what}: variable byte integer not in the minimum number of bytes")
    return value, pos + nb


def _binary(d: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    n, pos = _u16(d, pos, end, f"{what} length")
    if pos + n > end:
        raise _Malformed(MQTT_TRUNCATED, f"{what} announces {n} bytes, {end - pos} left")
    return d[pos : pos + n], pos + n


def _utf8(d: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    """A UTF-8 string field; returns its raw bytes (already validated)."""
    raw, pos = _binary(d, pos, end, what)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Malformed(MQTT_BAD_UTF8, f"{what} is not valid UTF-8 (byte {e.start})") from None
    if b"\x00" in raw:
        raise _Malformed(MQTT_BAD_UTF8, f"{what} contains U+0000")
    return raw, pos


def _text(raw: bytes) -> str:
    return raw.decode("utf-8")


# --- MQTT 5 properties ----------------------------------------------------------------------------

_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
_WILL = 0  # pseudo packet type for the will properties of a CONNECT
_ACKS = {PUBACK, PUBREC, PUBREL, PUBCOMP}
# id: (name, value type, packet types where it may appear)
_PROPERTIES: dict[int, tuple[str, int, frozenset[int]]] = {
    0x01: ("Payload Format Indicator", _BYTE, frozenset({PUBLISH, _WILL})),
    0x02: ("Message Expiry Interval", _U32, frozenset({PUBLISH, _WILL})),
    0x03: ("Content Type", _STR, frozenset({PUBLISH, _WILL})),
    0x08: ("Response Topic", _STR, frozenset({PUBLISH, _WILL})),
    0x09: ("Correlation Data", _BIN, frozenset({PUBLISH, _WILL})),
    0x0B: ("Subscription Identifier", _VARINT, frozenset({PUBLISH, SUBSCRIBE})),
    0x11: ("Session Expiry Interval", _U32, frozenset({CONNECT, CONNACK, DISCONNECT})),
    0x12: ("Assigned Client Identifier", _STR, frozenset({CONNACK})),
    0x13: ("Server Keep Alive", _U16, frozenset({CONNACK})),
    0x15: ("Authentication Method", _STR, frozenset({CONNECT, CONNACK, AUTH})),
    0x16: ("Authentication Data", _BIN, frozenset({CONNECT, CONNACK, AUTH})),
    0x17: ("Request Problem Information", _BYTE, frozenset({CONNECT})),
    0x18: ("Will Delay Interval", _U32, frozenset({_WILL})),
    0x19: ("Request Response Information", _BYTE, frozenset({CONNECT})),
    0x1A: ("Response Information", _STR, frozenset({CONNACK})),
    0x1C: ("Server Reference", _STR, frozenset({CONNACK, DISCONNECT})),
    0x1F: ("Reason String", _STR, frozenset({CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH})),
    0x21: ("Receive Maximum", _U16, frozenset({CONNECT, CONNACK})),
    0x22: ("Topic Alias Maximum", _U16, frozenset({CONNECT, CONNACK})),
    0x23: ("Topic Alias", _U16, frozenset({PUBLISH})),
    0x24: ("Maximum QoS", _BYTE, frozenset({CONNACK})),
    0x25: ("Retain Available", _BYTE, frozenset({CONNACK})),
    0x26: ("User Property", _PAIR, frozenset({CONNECT, CONNACK, PUBLISH, _WILL, PUBACK, PUBREC, PUBREL, PUBCOMP,
                                              SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH})),
    0x27: ("Maximum Packet Size", _U32, frozenset({CONNECT, CONNACK})),
    0x28: ("Wildcard Subscription Available", _BYTE, frozenset({CONNACK})),
    0x29: ("Subscription Identifier Available", _BYTE, frozenset({CONNACK})),
    0x2A: ("Shared Subscription Available", _BYTE, frozenset({CONNACK})),
}
_REPEATABLE = {0x26, 0x0B}  # User Property; Subscription Identifier (in PUBLISH)
_BOOLEAN = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}  # byte values that must be 0 or 1
_NONZERO = {0x0B, 0x21, 0x23, 0x27}  # values where 0 is a protocol error


def _properties(d: bytes, pos: int, end: int, ptype: int) -> tuple[dict[int, int], int]:
    """Skip and validate an MQTT 5 property block; returns ({id: last numeric value}, new pos)."""
    where = "will" if ptype == _WILL else TYPE_NAMES[ptype]
    plen, pos = _varint(d, pos, end, f"{where} property length")
    stop = pos + plen
    if stop > end:
        raise _Malformed(MQTT_TRUNCATED, f"{where} properties announce {plen} bytes, {end - pos} left")
    seen: dict[int, int] = {}
    while pos < stop:
        pid, pos = _varint(d, pos, stop, f"{where} property id")
        spec = _PROPERTIES.get(pid)
        if spec is None:
            raise _Malformed(MQTT_PROTOCOL, f"unknown {where} property 0x{pid:02x}")
        name, vtype, allowed = spec
        if ptype not in allowed:
            raise _Malformed(MQTT_PROTOCOL, f"property {name} not allowed in {where}")
        if pid in seen and pid not in _REPEATABLE:
            raise _Malformed(MQTT_PROTOCOL, f"property {name} appears twice in {where}")
        value = 0
        if vtype == _BYTE:
            value, pos = _u8(d, pos, stop, name)
        elif vtype == _U16:
            value, pos = _u16(d, pos, stop, name)
        elif vtype == _U32:
            value, pos = _u32(d, pos, stop, name)
        elif vtype == _VARINT:
            value, pos = _varint(d, pos, stop, name)
        elif vtype == _STR:
            _, pos = _utf8(d, pos, stop, name)
        elif vtype == _BIN:
            _, pos = _binary(d, pos, stop, name)
        else:
            _, pos = _utf8(d, pos, stop, f"{name} key")
            _, pos = _utf8(d, pos, stop, f"{name} value")
        if pid in _BOOLEAN and value > 1:
            raise _Malformed(MQTT_PROTOCOL, f"property {name} must be 0 or 1, got {value}")
        if pid in _NONZERO and value == 0:
            raise _Malformed(MQTT_PROTOCOL, f"property {name} must not be 0")
        seen[pid] = value
    return seen, pos


# --- bodies: fill `msg` from d[pos:] (the message is complete: end == len(d)) -------------------

_CONNACK_V5 = frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C,
                         0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F})
_PUBACK_V5 = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_PUBREL_V5 = frozenset({0x00, 0x92})
_SUBACK_V5 = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
_SUBACK_V3 = frozenset({0x00, 0x01, 0x02, 0x80})
_UNSUBACK_V5 = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
_DISCONNECT_V5 = frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90,
                            0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F,
                            0xA0, 0xA1, 0xA2})
_AUTH_V5 = frozenset({0x00, 0x18, 0x19})
_PROTOCOL_NAMES = {3: b"MQIsdp", 4: b"MQTT", 5: b"MQTT"}


def _trailing(d: bytes, pos: int, what: str) -> None:
    if pos != len(d):
        raise _Malformed(MQTT_BAD_LENGTH, f"{what}: {len(d) - pos} bytes beyond its fields")


def _connect(msg: MqttMessage, d: bytes, pos: int, _level: int) -> None:
    end = len(d)
    name, pos = _binary(d, pos, end, "CONNECT protocol name")
    raw_level, pos = _u8(d, pos, end, "CONNECT protocol level")
    level = raw_level & 0x7F  # bit 7: mosquitto bridges flag themselves there
    msg.proto_level = level
    if _PROTOCOL_NAMES.get(level) != name:
        raise _Malformed(MQTT_PROTOCOL, f"CONNECT protocol name {name[:16]!r} with level {raw_level}")
    cflags, pos = _u8(d, pos, end, "CONNECT flags")
    msg.connect_flags = cflags
    msg.keepalive, pos = _u16(d, pos, end, "CONNECT keepalive")
    if cflags & 0x01:
        raise _Malformed(MQTT_PROTOCOL, "CONNECT reserved flag bit 0 is set")
    will, will_qos, will_retain = cflags & 0x04, (cflags >> 3) & 3, cflags & 0x20
    if will_qos == 3:
        raise _Malformed(MQTT_PROTOCOL, "CONNECT will QoS 3")
    if not will and (will_qos or will_retain):
        raise _Malformed(MQTT_PROTOCOL, "CONNECT will QoS/retain set without the will flag")
    if level < 5 and cflags & 0x40 and not cflags & 0x80:
        raise _Malformed(MQTT_PROTOCOL, "CONNECT password flag without username flag")
    if level == 5:
        _, pos = _properties(d, pos, end, CONNECT)
    cid, pos = _utf8(d, pos, end, "CONNECT client id")
    msg.client_id = _text(cid)
    if will:
        if level == 5:
            _, pos = _properties(d, pos, end, _WILL)
        topic, pos = _utf8(d, pos, end, "CONNECT will topic")
        if b"#" in topic or b"+" in topic:
            raise _Malformed(MQTT_PROTOCOL, "CONNECT will topic contains a wildcard")
        _, pos = _binary(d, pos, end, "CONNECT will payload")
    if cflags & 0x80:
        user, pos = _utf8(d, pos, end, "CONNECT username")
        msg.username = _text(user)
    if cflags & 0x40:
        _, pos = _binary(d, pos, end, "CONNECT password")
    _trailing(d, pos, "CONNECT")


def _connack(msg: MqttMessage, d: bytes, pos: int, level: int) -> None:
    end = len(d)
    ack_flags, pos = _u8(d, pos, end, "CONNACK flags")
    msg.return_code, pos = _u8(d, pos, end, "CONNACK return code")
    if ack_flags & 0xFE:
        raise _Malformed(MQTT_PROTOCOL, f"CONNACK reserved flags 0x{ack_flags:02x}")
    # A broker refusing the protocol version answers a v5 CONNECT in the 3.1.1 format.
    if level == 5 and pos < end:
        if msg.return_code not in _CONNACK_V5:
            raise _Malformed(MQTT_PROTOCOL, f"CONNACK reason code 0x{msg.return_code:02x}")
        _, pos = _properties(d, pos, end, CONNACK)
    elif msg.return_code > 5 and level < 5:
        raise _Malformed(MQTT_PROTOCOL, f"CONNACK return code {msg.return_code}")
    _trailing(d, pos, "CONNACK")


def _publish(msg: MqttMessage, d: bytes, pos: int, level: int) -> None:
    end = len(d)
    msg.qos = (msg.flags >> 1) & 3
    if msg.qos == 3:
        raise _Malformed(MQTT_PROTOCOL, "PUBLISH with QoS 3")
    if msg.qos == 0 and msg.flags & 0x08:
        raise _Malformed(MQTT_PROTOCOL, "PUBLISH with DUP set at QoS 0")
    topic, pos = _utf8(d, pos, end, "PUBLISH topic")
    msg.topic, msg.topic_len, msg.topic_hash = topic, len(topic), topic_hash(topic)
    msg.sys_topic = topic.startswith(b"$SYS")
    if b"#" in topic or b"+" in topic:
        raise _Malformed(MQTT_PROTOCOL, "PUBLISH topic contains a wildcard")
    if msg.qos:
        msg.packet_id, pos = _u16(d, pos, end, "PUBLISH packet id")
        if msg.packet_id == 0:
            raise _Malformed(MQTT_PROTOCOL, "PUBLISH packet id 0")
    props: dict[int, int] = {}
    if level == 5:
        props, pos = _properties(d, pos, end, PUBLISH)
    if not topic and 0x23 not in props:
        raise _Malformed(MQTT_PROTOCOL, "PUBLISH with an empty topic" + (" and no topic alias" if level == 5 else ""))
    msg.payload_len = end - pos


def _ack(msg: MqttMessage, d: bytes, pos: int, level: int) -> None:
    end = len(d)
    name = TYPE_NAMES[msg.mtype]
    msg.packet_id, pos = _u16(d, pos, end, f"{name} packet id")
    if msg.packet_id == 0:
        raise _Malformed(MQTT_PROTOCOL, f"{name} packet id 0")
    if level == 5 and pos < end:
        msg.return_code, pos = _u8(d, pos, end, f"{name} reason code")
        valid = _PUBREL_V5 if msg.mtype in (PUBREL, PUBCOMP) else _PUBACK_V5
        if msg.return_code not in valid:
            raise _Malformed(MQTT_PROTOCOL, f"{name} reason code 0x{msg.return_code:02x}")
        if pos < end:
            _, pos = _properties(d, pos, end, msg.mtype)
    _trailing(d, pos, name)


def _topic_filter_error(f: str, level: int) -> str:
    if not f:
        return "empty topic filter"
    if level == 5 and f.startswith("$share/"):
        parts = f.split("/", 2)
        if len(parts) < 3 or not parts[1] or "#" in parts[1] or "+" in parts[1] or not parts[2]:
            return "malformed shared subscription"
        f = parts[2]
    levels = f.split("/")
    for i, lv in enumerate(levels):
        if "#" in lv and (lv != "#" or i != len(levels) - 1):
            return "'#' must be a whole last level"
        if "+" in lv and lv != "+":
            return "'+' must be a whole level"
    return ""


def _filter_list(msg: MqttMessage, d: bytes, pos: int, level: int, with_options: bool) -> None:
    end = len(d)
    name = TYPE_NAMES[msg.mtype]
    msg.packet_id, pos = _u16(d, pos, end, f"{name} packet id")
    if msg.packet_id == 0:
        raise _Malformed(MQTT_PROTOCOL, f"{name} packet id 0")
    if level == 5:
        _, pos = _properties(d, pos, end, msg.mtype)
    if pos >= end:
        raise _Malformed(MQTT_PROTOCOL, f"{name} without topic filters")
    while pos < end:
        raw, pos = _utf8(d, pos, end, f"{name} topic filter")
        text = _text(raw)
        if msg.topic is None:
            msg.topic, msg.topic_len, msg.topic_hash = raw, len(raw), topic_hash(raw)
        msg.filters.append(text)
        msg.n_filters += 1
        msg.wildcard |= "#" in text or "+" in text
        msg.sys_topic |= text.startswith("$SYS")
        why = _topic_filter_error(text, level)
        if why:
            raise _Malformed(MQTT_PROTOCOL, f"{name} topic filter {text[:64]!r}: {why}")
        if with_options:
            opts, pos = _u8(d, pos, end, "SUBSCRIBE options")
            qos = opts & 3
            msg.qos = max(msg.qos, qos)
            reserved = opts & (0xC0 if level == 5 else 0xFC)
            if qos == 3 or reserved or (level == 5 and (opts >> 4) & 3 == 3):
                raise _Malformed(MQTT_PROTOCOL, f"SUBSCRIBE options 0x{opts:02x}")


def _subscribe(msg: MqttMessage, d: bytes, pos: int, level: int) -> None:
    _filter_list(msg, d, pos, level, with_options=True)


def _unsubscribe(msg: MqttMessage, d: bytes, pos: int, level: int) -> None:
    _filter_list(msg, d, pos, level, with_options=False)


def _suback(msg: MqttMessage, d: bytes, pos: int, level: int) -> None:
    end = len(d)
    name = TYPE_NAMES[msg.mtype]
    msg.packet_id, pos = _u16(d, pos, end, f"{name} packet id")
    if msg.packet_id == 0:
        raise _Malformed(MQTT_PROTOCOL, f"{name} packet id 0")
    if msg.mtype == UNSUBACK and level < 5:
        _trailing(d, pos, name)  # 3.x UNSUBACK carries only the packet id
        return
    if level == 5:
        _, pos = _properties(d, pos, end, msg.mtype)
    codes = d[pos:end]
    msg.n_filters = len(codes)
    if not codes:
        raise _Malformed(MQTT_PROTOCOL, f"{name} without reason codes")
    msg.return_code = max(codes)
    valid = _UNSUBACK_V5 if msg.mtype == UNSUBACK else _SUBACK_V5 if level == 5 else _SUBACK_V3
    bad = [c for c in codes if c not in valid]
    if bad:
        raise _Malformed(MQTT_PROTOCOL, f"{name} return code 0x{bad[0]:02x}")


def _empty(msg: MqttMessage, d: bytes, pos: int, level: int) -> None:
    _trailing(d, pos, TYPE_NAMES[msg.mtype])


def _disconnect(msg: MqttMessage, d: bytes, pos: int, level: int) -> None:
    if level < 5:
        _trailing(d, pos, "DISCONNECT")
        return
    _reason_and_properties(msg, d, pos, _DISCONNECT_V5)


def _auth(msg: MqttMessage, d: bytes, pos: int, level: int) -> None:
    _reason_and_properties(msg, d, pos, _AUTH_V5)


def _reason_and_properties(msg: MqttMessage, d: bytes, pos: int, valid: frozenset[int]) -> None:
    """MQTT 5 DISCONNECT and AUTH: optional reason code, then optional properties."""
    end = len(d)
    name = TYPE_NAMES[msg.mtype]
    if pos < end:
        msg.return_code, pos = _u8(d, pos, end, f"{name} reason code")
        if msg.return_code not in valid:
            raise _Malformed(MQTT_PROTOCOL, f"{name} reason code 0x{msg.return_code:02x}")
    if pos < end:
        _, pos = _properties(d, pos, end, msg.mtype)
    _trailing(d, pos, name)


_BODY = {
    CONNECT: _connect, CONNACK: _connack, PUBLISH: _publish, PUBACK: _ack, PUBREC: _ack, PUBREL: _ack,
    PUBCOMP: _ack, SUBSCRIBE: _subscribe, SUBACK: _suback, UNSUBSCRIBE: _unsubscribe, UNSUBACK: _suback,
    PINGREQ: _empty, PINGRESP: _empty, DISCONNECT: _disconnect, AUTH: _auth,
}
