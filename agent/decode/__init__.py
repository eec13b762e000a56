"""Decode: IP/TCP/UDP headers of a FrameBatch (vectorized) and MQTT messages from TCP streams.

Two record types leave this stage, both numpy structured arrays so the features stage can
aggregate them without a Python object per packet:

- `PACKET_DTYPE`: one row per frame (IP, TCP/UDP header fields).
- `MQTT_DTYPE`: one row per MQTT control packet found in the TCP streams, including malformed
  ones (`error != 0`).

Addresses are *host keys* (uint64): an IPv4 address is its 32-bit value; an IPv6 address is
interned by `AddressBook` to a key above 2**32. `AddressBook.name(key)` turns a key back into text.
"""
from __future__ import annotations

import numpy as np

PACKET_DTYPE = np.dtype(
    [
        ("ts", "f8"),
        ("ipver", "u1"),  # 0: not IP (or unparseable), 4, 6
        ("src", "u8"),  # host key
        ("dst", "u8"),
        ("proto", "u1"),  # IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...)
        ("sport", "u2"),
        ("dport", "u2"),
        ("tcp_flags", "u1"),  # FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20
        ("seq", "u4"),
        ("wirelen", "u4"),  # bytes on the wire (frame)
        ("payload_off", "i8"),  # index of the L4 payload in FrameBatch.buf
        ("payload_len", "u4"),  # captured bytes of L4 payload
        ("payload_wirelen", "u4"),  # L4 payload length per the IP header (>= payload_len if truncated)
        ("frame", "u4"),  # index of the frame in its FrameBatch
    ]
)

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# MQTT control packet types.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

# Why an MQTT message is malformed (MQTT_DTYPE.error). 0 means well formed.
MQTT_OK = 0
MQTT_BAD_LENGTH = 1  # remaining length varint longer than 4 bytes or inconsistent
MQTT_BAD_FLAGS = 2  # reserved fixed-header flags or reserved type 0
MQTT_BAD_UTF8 = 3  # a string field that is not valid UTF-8 (or has U+0000)
MQTT_OVERSIZE = 4  # larger than the configured maximum message size
MQTT_TRUNCATED = 5  # the fields announced do not fit in the message
MQTT_PROTOCOL = 6  # a field with a forbidden value (bad protocol name/level, QoS 3, ...)
MQTT_STREAM_GAP = 7  # bytes lost in the stream (capture loss); parsing resynchronised

MQTT_DTYPE = np.dtype(
    [
        ("ts", "f8"),
        ("client", "u8"),  # host key of the MQTT client side of the connection
        ("broker", "u8"),  # host key of the broker side
        ("client_port", "u2"),
        ("to_broker", "u1"),  # 1: client -> broker, 0: broker -> client
        ("mtype", "u1"),  # control packet type (0 when the type itself is unusable)
        ("flags", "u1"),  # low nibble of the fixed header
        ("length", "u4"),  # whole message length: fixed header + remaining length
        ("error", "u1"),  # MQTT_OK or one of the MQTT_* error codes above
        ("proto_level", "u1"),  # CONNECT: 3 (3.1), 4 (3.1.1), 5 (5.0); else 0
        ("keepalive", "u2"),  # CONNECT
        ("connect_flags", "u1"),  # CONNECT: username 0x80, password 0x40, will 0x04, clean 0x02
        ("return_code", "u1"),  # CONNACK return code (3.x) or reason code (5.0)
        ("qos", "u1"),  # PUBLISH
        ("topic_hash", "u8"),  # PUBLISH topic, or first SUBSCRIBE filter: 64-bit hash, 0 if none
        ("topic_len", "u2"),
        ("payload_len", "u4"),  # PUBLISH application payload bytes
        ("n_filters", "u2"),  # SUBSCRIBE / UNSUBSCRIBE: number of topic filters
        ("wildcard", "u1"),  # SUBSCRIBE: a filter contains '#' or '+'
        ("sys_topic", "u1"),  # topic or filter starts with '$SYS'
        ("packet_id", "u2"),  # PUBLISH (QoS > 0), PUBACK..PUBCOMP, SUBSCRIBE/SUBACK, UNSUBSCRIBE/UNSUBACK
        ("client_hash", "u8"),  # 64-bit FNV-1a of the connection's CONNECT client id; 0 if not seen
    ]
)
