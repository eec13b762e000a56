"""Deep dissection of the few packets that deserve it (incident evidence), one line each.

Built on the agent's own decoders rather than Scapy: importing Scapy's layers costs the daemon
about 55 MB of resident memory for its whole life (the gateway's budget is 100 MB), while the
decoded header row and the MQTT codec already hold every field evidence needs.
"""
from __future__ import annotations

import numpy as np

from atlas.agent.capture import FrameBatch
from atlas.agent.decode import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG
from atlas.agent.decode.mqtt import parse_message
from atlas.agent.decode.packets import AddressBook

MQTT_TYPES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP",
    8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
    14: "DISCONNECT", 15: "AUTH",
}
_FLAGS = ((TCP_SYN, "S"), (TCP_FIN, "F"), (TCP_RST, "R"), (TCP_PSH, "P"), (TCP_ACK, "A"), (TCP_URG, "U"))
PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}


def summary(batch: FrameBatch, row: np.void, book: AddressBook, mqtt_ports: tuple[int, ...] = (1883, 8883)) -> str:
    """One line for one decoded packet (a PACKET_DTYPE row of `batch`); never raises."""
    try:
        return _summary(batch, row, book, mqtt_ports)
    except Exception as exc:  # evidence is best effort: malformed packets are what it shows
        return f"<undissectable frame {int(row['frame'])}: {exc.__class__.__name__}>"


def _summary(batch: FrameBatch, row: np.void, book: AddressBook, mqtt_ports: tuple[int, ...]) -> str:
    if row["ipver"] == 0:
        return f"non-IP frame of {int(row['wirelen'])} bytes"
    src, dst = book.name(int(row["src"])), book.name(int(row["dst"]))
    proto = int(row["proto"])
    name = PROTOCOLS.get(proto, f"proto {proto}")
    line = f"IPv{int(row['ipver'])} {src}:{int(row['sport'])} > {dst}:{int(row['dport'])} {name}"
    if proto == 6:
        flags = int(row["tcp_flags"])
        line += " [" + "".join(c for bit, c in _FLAGS if flags & bit) + "]"
    line += f" len {int(row['wirelen'])}"
    n = int(row["payload_len"])
    if proto == 6 and n and (int(row["sport"]) in mqtt_ports or int(row["dport"]) in mqtt_ports):
        start = int(row["payload_off"])
        payload = batch.buf[start : start + n].tobytes()
        line += " / " + mqtt_summary(payload, to_broker=int(row["dport"]) in mqtt_ports)
    elif n:
        line += f" / {n} bytes of payload"
    return line


def mqtt_summary(payload: bytes, to_broker: bool, limit: int = 3) -> str:
    """The MQTT messages at the start of a TCP payload (a segment may carry many)."""
    parts, pos = [], 0
    while pos < len(payload) and len(parts) < limit:
        m = parse_message(memoryview(payload)[pos:], to_broker)
        if m is None:
            break
        parts.append(_mqtt_one(m))
        if m.error or m.length <= 0:
            break
        pos += m.length
    rest = " ..." if pos < len(payload) and len(parts) == limit else ""
    return "MQTT " + "; ".join(parts) + rest


def _mqtt_one(m) -> str:
    text = MQTT_TYPES.get(m.mtype, f"type {m.mtype}")
    if m.mtype == 1:
        text += f" v{m.proto_level} client_id={m.client_id!r} keepalive={m.keepalive}"
        if m.username is not None:
            text += f" user={m.username!r}"
    elif m.mtype == 2:
        text += f" rc={m.return_code}"
    elif m.mtype == 3:
        text += f" topic={_topic(m)} qos={m.qos} payload={m.payload_len}B"
    elif m.mtype in (8, 10):
        text += f" filters={m.filters[:3]!r}"
    if m.error:
        text += f" MALFORMED({m.detail or m.error})"
    return text


def _topic(m) -> str:
    if m.topic is None:
        return "?"
    t = m.topic[:64].decode("utf-8", "replace")
    return repr(t + ("..." if m.topic_len > 64 else ""))
