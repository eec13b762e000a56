"""MQTT codec (atlas.agent.decode.mqtt): every message type in 3.1, 3.1.1 and 5.0, malformed
messages by kind, and agreement with Scapy's MQTT layer for 3.1.1."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

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
from atlas.agent.decode.mqtt import (
    LENGTH_INCOMPLETE,
    LENGTH_MALFORMED,
    parse_message,
    remaining_length,
    topic_hash,
)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/agent/mqtt_segments.py (importlib mode)
from mqtt_segments import (  # noqa: E402
    ack,
    connack,
    connect,
    msg,
    props,
    publish,
    s16,
    suback,
    subscribe,
    unsuback,
    unsubscribe,
    varint,
)

C2B, B2C = True, False


def parse(data: bytes, to_broker: bool = C2B, level: int = 4, **kw):
    m = parse_message(data, to_broker, level, **kw)
    assert m is not None
    return m


# ---- remaining length and fixed header -----------------------------------------------------


@pytest.mark.parametrize(
    "value,encoded",
    [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"),
     (2097151, b"\xff\xff\x7f"), (2097152, b"\x80\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f")],
)
def test_remaining_length_spec_examples(value, encoded):
    assert remaining_length(b"\x30" + encoded, 1) == (value, len(encoded))
    assert varint(value) == encoded


def test_remaining_length_incomplete_and_malformed():
    assert remaining_length(b"\x30", 1) == (LENGTH_INCOMPLETE, 0)
    assert remaining_length(b"\x30\x80\x80", 1) == (LENGTH_INCOMPLETE, 0)
    assert remaining_length(b"\x30\x80\x80\x80\x80\x01", 1) == (LENGTH_MALFORMED, 0)
    assert remaining_length(b"\x30\x80\x80\x80\x01", 1, end=3) == (LENGTH_INCOMPLETE, 0)


def test_five_byte_remaining_length_is_bad_length():
    m = parse(b"\x30\xff\xff\xff\xff\x7f" + b"x" * 10)
    assert m.error == MQTT_BAD_LENGTH and m.length == 5


def test_non_minimal_remaining_length_is_bad_length():
    m = parse(b"\xc0\x80\x00")  # PINGREQ with remaining length 0 in two bytes
    assert (m.mtype, m.error, m.length) == (PINGREQ, MQTT_BAD_LENGTH, 3)


def test_empty_buffer_is_none_and_header_only_is_truncated():
    assert parse_message(b"", True) is None
    m = parse(b"\x30")
    assert m.error == MQTT_TRUNCATED and m.length == 1
    m = parse(publish("a/b", b"payload")[:-3])
    assert m.error == MQTT_TRUNCATED and m.length == len(publish("a/b", b"payload"))


@pytest.mark.parametrize("first", [0x00, 0x0F, 0x81, 0x83, 0x88, 0xA0, 0xA3, 0x60, 0x61, 0x12, 0x21, 0xC1, 0xD8, 0xE2, 0x41])
def test_reserved_fixed_header_flags(first):
    m = parse(bytes([first, 2, 0, 1]), to_broker=first >> 4 not in (2, 9, 11, 13))
    assert m.error == MQTT_BAD_FLAGS, m.detail
    assert m.mtype == first >> 4 and m.flags == first & 15


def test_type_15_is_reserved_before_mqtt5_and_auth_in_mqtt5():
    assert parse(b"\xf0\x00", level=4).error == MQTT_BAD_FLAGS
    m = parse(b"\xf0\x00", level=5)
    assert (m.mtype, m.error, m.return_code) == (AUTH, MQTT_OK, 0)


def test_bytes_after_the_message_are_not_consumed():
    data = publish("a", b"1") + b"\xc0\x00"
    m = parse(data)
    assert m.length == len(publish("a", b"1")) and m.error == MQTT_OK


def test_oversize_is_reported_from_the_fixed_header_alone():
    full = publish("big", b"x" * 5000)
    m = parse(full[:4], max_size=1000)
    assert (m.mtype, m.error, m.length) == (PUBLISH, MQTT_OVERSIZE, len(full))
    assert parse(full, max_size=len(full)).error == MQTT_OK


# ---- CONNECT ---------------------------------------------------------------------------------


def test_connect_311_fields():
    m = parse(connect("meter-17", keepalive=30, username="ops", password=b"pw"))
    assert (m.mtype, m.error, m.proto_level, m.keepalive) == (CONNECT, MQTT_OK, 4, 30)
    assert m.client_id == "meter-17" and m.username == "ops"
    assert m.connect_flags == 0x80 | 0x40 | 0x02


def test_connect_31_mqisdp():
    m = parse(connect("old-client", level=3, clean=False))
    assert (m.error, m.proto_level, m.client_id, m.connect_flags) == (MQTT_OK, 3, "old-client", 0)


def test_connect_5_with_properties_and_will():
    p = props(b"\x11" + struct.pack(">I", 3600), b"\x21\x00\x10", b"\x26" + s16("site") + s16("north"))
    wp = props(b"\x18" + struct.pack(">I", 5), b"\x01\x01")
    m = parse(connect("ev-charger-3", level=5, properties=p, will=("lwt/ev3", b"gone"), will_properties=wp, username="u"))
    assert (m.error, m.proto_level, m.client_id, m.username) == (MQTT_OK, 5, "ev-charger-3", "u")
    assert m.connect_flags & 0x04


def test_connect_5_password_without_username_is_allowed_but_not_in_311():
    assert parse(connect("x", level=5, password=b"p")).error == MQTT_OK
    assert parse(connect("x", level=4, password=b"p")).error == MQTT_PROTOCOL


@pytest.mark.parametrize(
    "data,code",
    [
        (connect("x", flags=0x03), MQTT_PROTOCOL),  # reserved bit 0
        (connect("x", flags=0x18 | 0x02), MQTT_PROTOCOL),  # will QoS 3 (and no will flag)
        (connect("x", flags=0x08 | 0x02), MQTT_PROTOCOL),  # will QoS without will flag
        (connect("x", flags=0x20 | 0x02), MQTT_PROTOCOL),  # will retain without will flag
        (msg(0x10, s16("MQTX") + b"\x04\x02\x00\x3c" + s16("x")), MQTT_PROTOCOL),  # protocol name
        (msg(0x10, s16("MQTT") + b"\x03\x02\x00\x3c" + s16("x")), MQTT_PROTOCOL),  # MQTT with level 3
        (msg(0x10, s16("MQIsdp") + b"\x04\x02\x00\x3c" + s16("x")), MQTT_PROTOCOL),  # MQIsdp with level 4
        (msg(0x10, s16("MQTT") + b"\x06\x02\x00\x3c" + s16("x")), MQTT_PROTOCOL),  # unknown level
        (connect(b"bad\xff\xfeid"), MQTT_BAD_UTF8),
        (connect(b"nul\x00id"), MQTT_BAD_UTF8),
        (connect(b"\xed\xa0\x80"), MQTT_BAD_UTF8),  # UTF-16 surrogate
        (connect(b"\xc0\xaf"), MQTT_BAD_UTF8),  # overlong encoding
        (msg(0x10, s16("MQTT") + b"\x04\x02\x00\x3c" + b"\x00\x10abc"), MQTT_TRUNCATED),  # client id cut
        (msg(0x10, s16("MQTT") + b"\x04\x02\x00"), MQTT_TRUNCATED),  # keepalive cut
        (msg(0x10, s16("MQTT") + b"\x04\x82\x00\x3c" + s16("x")), MQTT_TRUNCATED),  # username announced, absent
        (msg(0x10, s16("MQTT") + b"\x04\x02\x00\x3c" + s16("x") + b"junk"), MQTT_BAD_LENGTH),  # bytes beyond
        (connect("x", username=b"\xff"), MQTT_BAD_UTF8),
        (connect("x", will=("a/#", b"m")), MQTT_PROTOCOL),
    ],
)
def test_connect_malformed(data, code):
    m = parse(data)
    assert m.mtype == CONNECT and m.error == code, m.detail
    assert m.detail


def test_connect_sent_to_the_client_is_a_protocol_error():
    assert parse(connect("x"), to_broker=B2C).error == MQTT_PROTOCOL


def test_connect_bridge_bit_in_level_is_accepted():
    m = parse(msg(0x10, s16("MQTT") + b"\x84\x02\x00\x3c" + s16("bridge")))
    assert (m.error, m.proto_level) == (MQTT_OK, 4)


# ---- CONNACK ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", range(6))
def test_connack_311_return_codes(code):
    m = parse(connack(code), B2C)
    assert (m.mtype, m.error, m.return_code) == (CONNACK, MQTT_OK, code)


def test_connack_311_invalid_code_and_reserved_flags():
    assert parse(connack(6), B2C).error == MQTT_PROTOCOL
    assert parse(msg(0x20, b"\x02\x00"), B2C).error == MQTT_PROTOCOL
    assert parse(msg(0x20, b"\x00\x00\x00"), B2C).error == MQTT_BAD_LENGTH
    assert parse(msg(0x20, b"\x00"), B2C).error == MQTT_TRUNCATED
    assert parse(connack(0), C2B).error == MQTT_PROTOCOL


def test_connack_5_reason_codes_and_properties():
    p = props(b"\x12" + s16("auto-42"), b"\x13\x00\x3c", b"\x24\x01", b"\x27" + struct.pack(">I", 1 << 20))
    m = parse(connack(0x87, level=5, properties=p), B2C, level=5)
    assert (m.error, m.return_code) == (MQTT_OK, 0x87)
    assert parse(connack(0x05, level=5), B2C, level=5).error == MQTT_PROTOCOL  # 3.1.1 code in a v5 CONNACK
    # A broker refusing the protocol version answers in the 3.1.1 format (no properties).
    assert parse(connack(1), B2C, level=5).error == MQTT_OK


# ---- PUBLISH ---------------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_fields(qos):
    m = parse(publish("city/north/lamp/7", b'{"on":1}', qos=qos, pid=513, retain=True))
    assert (m.mtype, m.error, m.qos, m.payload_len, m.topic_len) == (PUBLISH, MQTT_OK, qos, 8, 17)
    assert m.packet_id == (513 if qos else 0)
    assert m.topic == b"city/north/lamp/7" and m.topic_hash == topic_hash(b"city/north/lamp/7")
    assert m.flags == (qos << 1) | 1 and not m.sys_topic


def test_publish_sys_topic_and_utf8_topic():
    assert parse(publish("$SYS/broker/load")).sys_topic
    m = parse(publish("straße/温度"))
    assert m.error == MQTT_OK and m.topic_len == len("straße/温度".encode())


@pytest.mark.parametrize(
    "data,code",
    [
        (publish("a/+/b"), MQTT_PROTOCOL),
        (publish("a/#"), MQTT_PROTOCOL),
        (msg(0x36, s16("a") + b"\x00\x01"), MQTT_PROTOCOL),  # QoS 3
        (publish("a", qos=1, pid=0), MQTT_PROTOCOL),
        (publish("a", dup=True), MQTT_PROTOCOL),  # DUP at QoS 0
        (publish(""), MQTT_PROTOCOL),
        (publish(b"a\x00b"), MQTT_BAD_UTF8),
        (publish(b"\xff"), MQTT_BAD_UTF8),
        (msg(0x30, b"\x00\x09abc"), MQTT_TRUNCATED),  # topic length beyond the message
        (msg(0x32, s16("a") + b"\x00"), MQTT_TRUNCATED),  # packet id cut
    ],
)
def test_publish_malformed(data, code):
    m = parse(data)
    assert m.mtype == PUBLISH and m.error == code, m.detail


def test_publish_5_properties_are_skipped_before_the_payload():
    p = props(b"\x01\x01", b"\x02" + struct.pack(">I", 60), b"\x03" + s16("application/json"),
              b"\x08" + s16("resp/t"), b"\x09" + s16(b"\x00\x01corr"), b"\x0b\x81\x01", b"\x0b\x05",
              b"\x26" + s16("k") + s16("v"), b"\x26" + s16("k") + s16("w"))
    m = parse(publish("t/1", b"payload!", qos=1, level=5, properties=p), level=5)
    assert (m.error, m.payload_len, m.packet_id) == (MQTT_OK, 8, 1), m.detail
    # The same bytes read as 3.1.1 put the properties into the payload.
    assert parse(publish("t/1", b"payload!", qos=1, level=5, properties=p), level=4).payload_len == 8 + len(p)


def test_publish_5_empty_topic_needs_a_topic_alias():
    assert parse(publish("", level=5, properties=props(b"\x23\x00\x02")), level=5).error == MQTT_OK
    assert parse(publish("", level=5), level=5).error == MQTT_PROTOCOL


@pytest.mark.parametrize(
    "p,code",
    [
        (b"\x02\x7f\x00", MQTT_PROTOCOL),  # unknown property id
        (b"\x05\x7f\x00", MQTT_TRUNCATED),  # property block longer than what is left
        (b"\x02\x02\x00", MQTT_TRUNCATED),  # Message Expiry (4 bytes) cut short
        (b"\x05\x11\x00\x00\x00\x01", MQTT_PROTOCOL),  # Session Expiry not allowed in PUBLISH
        (b"\x06\x23\x00\x01\x23\x00\x02", MQTT_PROTOCOL),  # duplicated Topic Alias
        (b"\x03\x23\x00\x00", MQTT_PROTOCOL),  # Topic Alias 0
        (b"\x02\x01\x02", MQTT_PROTOCOL),  # Payload Format Indicator 2
        (b"\x7f", MQTT_TRUNCATED),  # property length beyond the message
        (b"\xff\xff\xff\xff\x7f", MQTT_BAD_LENGTH),  # property length varint of 5 bytes
        (b"\x80\x00", MQTT_BAD_LENGTH),  # non-minimal property length
        (b"\x04\x03\x00\x02\xff", MQTT_TRUNCATED),  # Content Type string cut
        (b"\x05\x03\x00\x02\xc3\x28", MQTT_BAD_UTF8),  # Content Type invalid UTF-8
        (b"\x02\x0b\x00", MQTT_PROTOCOL),  # Subscription Identifier 0
    ],
)
def test_publish_5_property_garbage(p, code):
    m = parse(publish("t", b"x", level=5, properties=p), level=5)
    assert m.error == code, m.detail


# ---- acknowledgements ------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", [PUBACK, PUBREC, PUBREL, PUBCOMP])
def test_publish_acks(mtype):
    m = parse(ack(mtype, 4242), B2C)
    assert (m.mtype, m.error, m.packet_id) == (mtype, MQTT_OK, 4242)
    assert parse(ack(mtype, 0)).error == MQTT_PROTOCOL
    assert parse(ack(mtype, 1, reason=0)).error == MQTT_BAD_LENGTH  # 3.1.1: exactly 2 bytes
    m5 = parse(ack(mtype, 7, reason=0x92 if mtype in (PUBREL, PUBCOMP) else 0x10, properties=props(b"\x1f" + s16("why"))), level=5)
    assert (m5.error, m5.return_code) == (MQTT_OK, 0x92 if mtype in (PUBREL, PUBCOMP) else 0x10), m5.detail
    assert parse(ack(mtype, 7, reason=0x42), level=5).error == MQTT_PROTOCOL


# ---- SUBSCRIBE and friends -------------------------------------------------------------------


def test_subscribe_filters_wildcards_sys_and_qos():
    m = parse(subscribe(("city/+/lamp", 1), ("$SYS/#", 0), ("grid/feeder/3", 2), pid=9))
    assert (m.mtype, m.error, m.n_filters, m.qos, m.packet_id) == (SUBSCRIBE, MQTT_OK, 3, 2, 9)
    assert m.wildcard and m.sys_topic
    assert m.topic_hash == topic_hash(b"city/+/lamp") and m.filters == ["city/+/lamp", "$SYS/#", "grid/feeder/3"]
    plain = parse(subscribe(("a/b", 0)))
    assert not plain.wildcard and not plain.sys_topic and plain.n_filters == 1


@pytest.mark.parametrize(
    "data,code",
    [
        (subscribe(("a", 0), flags=0), MQTT_BAD_FLAGS),
        (subscribe(("a", 3)), MQTT_PROTOCOL),  # QoS 3
        (subscribe(("a", 0x04)), MQTT_PROTOCOL),  # reserved option bits in 3.1.1
        (subscribe(("a/#/b", 0)), MQTT_PROTOCOL),
        (subscribe(("a/b#", 0)), MQTT_PROTOCOL),
        (subscribe(("a/b+/c", 0)), MQTT_PROTOCOL),
        (subscribe(("", 0)), MQTT_PROTOCOL),
        (subscribe(), MQTT_PROTOCOL),  # no filter at all
        (subscribe((b"\xff".decode("latin1"), 0)), MQTT_OK),  # U+00FF is valid UTF-8 once encoded
        (msg(0x82, b"\x00\x01" + s16(b"\xff") + b"\x00"), MQTT_BAD_UTF8),
        (msg(0x82, b"\x00\x01" + s16("a")), MQTT_TRUNCATED),  # options byte missing
        (subscribe(("a", 0), pid=0), MQTT_PROTOCOL),
    ],
)
def test_subscribe_malformed(data, code):
    m = parse(data)
    assert m.error == code, m.detail


def test_subscribe_5_options_and_shared_subscriptions():
    p = props(b"\x0b\x07")
    m = parse(subscribe(("$share/group/sensors/#", 0x2D), level=5, properties=p), level=5)  # QoS1, NL, RAP, RH 2
    assert (m.error, m.qos, m.wildcard) == (MQTT_OK, 1, True), m.detail
    assert parse(subscribe(("a", 0x30), level=5), level=5).error == MQTT_PROTOCOL  # retain handling 3
    assert parse(subscribe(("a", 0x40), level=5), level=5).error == MQTT_PROTOCOL  # reserved bit 6
    assert parse(subscribe(("$share/g+/x", 0), level=5), level=5).error == MQTT_PROTOCOL
    assert parse(subscribe(("$share/g", 0), level=5), level=5).error == MQTT_PROTOCOL


def test_suback_unsubscribe_unsuback():
    m = parse(suback(0, 1, 0x80, pid=3), B2C)
    assert (m.mtype, m.error, m.n_filters, m.return_code, m.packet_id) == (SUBACK, MQTT_OK, 3, 0x80, 3)
    assert parse(suback(0x87), B2C).error == MQTT_PROTOCOL  # 5.0 code in 3.1.1
    assert parse(suback(0x87, level=5), B2C, level=5).error == MQTT_OK
    assert parse(suback(pid=3), B2C).error == MQTT_PROTOCOL  # no return code
    m = parse(unsubscribe("a/b", "c/#", pid=5))
    assert (m.mtype, m.error, m.n_filters, m.wildcard, m.packet_id) == (UNSUBSCRIBE, MQTT_OK, 2, True, 5)
    assert parse(msg(0xA0, b"\x00\x05" + s16("a"))).error == MQTT_BAD_FLAGS
    assert parse(msg(0xA2, b"\x00\x05")).error == MQTT_PROTOCOL  # no filter
    m = parse(unsuback(5), B2C)
    assert (m.mtype, m.error, m.packet_id) == (UNSUBACK, MQTT_OK, 5)
    assert parse(unsuback(5, 0x00, 0x11, level=5), B2C, level=5).n_filters == 2
    assert parse(unsuback(5) + b"", C2B).error == MQTT_PROTOCOL


def test_ping_disconnect_auth():
    assert (parse(b"\xc0\x00").mtype, parse(b"\xc0\x00").error) == (PINGREQ, MQTT_OK)
    assert parse(b"\xd0\x00", B2C).mtype == PINGRESP and parse(b"\xd0\x00", B2C).error == MQTT_OK
    assert parse(b"\xc0\x00", B2C).error == MQTT_PROTOCOL
    assert parse(b"\xd0\x00", C2B).error == MQTT_PROTOCOL
    assert parse(b"\xc0\x01\x00").error == MQTT_BAD_LENGTH
    assert parse(b"\xe0\x00").error == MQTT_OK and parse(b"\xe0\x00").mtype == DISCONNECT
    assert parse(b"\xe0\x01\x00").error == MQTT_BAD_LENGTH  # 3.1.1 DISCONNECT has no body
    m = parse(msg(0xE0, b"\x8e" + props(b"\x1f" + s16("taken over"))), B2C, level=5)
    assert (m.error, m.return_code) == (MQTT_OK, 0x8E)
    assert parse(msg(0xE0, b"\x05"), level=5).error == MQTT_PROTOCOL
    m = parse(msg(0xF0, b"\x18" + props(b"\x15" + s16("SCRAM-SHA-1"), b"\x16" + s16(b"\x01\x02"))), level=5)
    assert (m.mtype, m.error, m.return_code) == (AUTH, MQTT_OK, 0x18)
    assert parse(msg(0xF0, b"\x18" + props(b"\x23\x00\x01")), level=5).error == MQTT_PROTOCOL  # alias in AUTH


# ---- topic hash ------------------------------------------------------------------------------


def test_topic_hash_is_fnv1a_64_and_stable_across_processes():
    # Published FNV-1a 64-bit test vectors.
    assert topic_hash(b"a") == 0xAF63DC4C8601EC8C
    assert topic_hash(b"foobar") == 0x85944171F73967E8
    assert topic_hash(b"") == 0
    code = "from atlas.agent.decode.mqtt import topic_hash; print(topic_hash('city/x/温度'.encode()))"
    values = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2")
    }
    assert values == {str(topic_hash("city/x/温度".encode()))}


# ---- against Scapy (MQTT 3.1.1) --------------------------------------------------------------

scapy_mqtt = pytest.importorskip("scapy.contrib.mqtt")


def _scapy_messages():
    M = scapy_mqtt
    yield M.MQTT() / M.MQTTConnect(protoname="MQTT", protolevel=4, cleansess=1, klive=45, clientId="lamp-0042",
                                   usernameflag=1, passwordflag=1, username="city", password="secret"), C2B
    yield M.MQTT() / M.MQTTConnect(protoname="MQIsdp", protolevel=3, klive=10, clientId="legacy",
                                   willflag=1, willQOSflag=1, willtopic="lwt/legacy", willmsg="bye"), C2B
    for code in range(6):
        yield M.MQTT() / M.MQTTConnack(sessPresentFlag=0, retcode=code), B2C
    for qos in (0, 1, 2):
        yield M.MQTT(QOS=qos, RETAIN=qos == 2) / M.MQTTPublish(topic="grid/substation/4/voltage", msgid=77 if qos else None,
                                                               value=b"230.1" * qos + b"!"), C2B
    yield M.MQTT(QOS=1) / M.MQTTSubscribe(msgid=12, topics=[M.MQTTTopicQOS(topic="city/+/lamp", QOS=1),
                                                            M.MQTTTopicQOS(topic="$SYS/#", QOS=0)]), C2B
    yield M.MQTT() / M.MQTTSuback(msgid=12, retcodes=[1, 0x80]), B2C
    yield M.MQTT(QOS=1) / M.MQTTUnsubscribe(msgid=13, topics=[M.MQTTTopic(topic="city/+/lamp")]), C2B
    yield M.MQTT() / M.MQTTUnsuback(msgid=13), B2C
    yield M.MQTT() / M.MQTTPuback(msgid=77), B2C
    yield M.MQTT() / M.MQTTPubrec(msgid=78), B2C
    yield M.MQTT(QOS=1) / M.MQTTPubrel(msgid=78), C2B
    yield M.MQTT() / M.MQTTPubcomp(msgid=78), B2C
    yield M.MQTT(type=12), C2B
    yield M.MQTT(type=13), B2C
    yield M.MQTT(type=14) / M.MQTTDisconnect(), C2B


@pytest.mark.parametrize("pkt,to_broker", list(_scapy_messages()), ids=lambda x: getattr(x, "summary", lambda: str(x))()[:40])
def test_scapy_built_messages_decode_to_the_same_fields(pkt, to_broker):
    data = bytes(pkt)
    m = parse(data, to_broker)
    assert m.error == MQTT_OK, m.detail
    assert m.length == len(data)
    assert m.mtype == pkt.type and m.flags == (pkt.DUP << 3) | (pkt.QOS << 1) | pkt.RETAIN
    layer = pkt.payload
    M = scapy_mqtt
    if isinstance(layer, M.MQTTConnect):
        assert m.proto_level == layer.protolevel and m.keepalive == layer.klive
        assert m.client_id == layer.clientId.decode()
        assert (m.username is not None) == bool(layer.usernameflag)
        assert bool(m.connect_flags & 0x04) == bool(layer.willflag)
    elif isinstance(layer, M.MQTTConnack):
        assert m.return_code == layer.retcode
    elif isinstance(layer, M.MQTTPublish):
        assert m.topic == layer.topic and m.payload_len == len(layer.value) and m.qos == pkt.QOS
        assert m.packet_id == (layer.msgid or 0)
    elif isinstance(layer, (M.MQTTSubscribe, M.MQTTUnsubscribe)):
        assert m.n_filters == len(layer.topics) and m.packet_id == layer.msgid
        assert m.filters == [t.topic.decode() for t in layer.topics]
    elif isinstance(layer, M.MQTTSuback):
        assert m.n_filters == len(layer.retcodes) and m.return_code == max(layer.retcodes)
    elif hasattr(layer, "msgid"):
        assert m.packet_id == layer.msgid


@pytest.mark.parametrize(
    "data,to_broker",
    [(connect("hand-built", keepalive=99, username="u", password=b"p"), C2B), (connack(4), B2C),
     (publish("a/b/c", b"0123456789", qos=1, pid=300), C2B), (subscribe(("x/#", 1), ("y", 0), pid=8), C2B),
     (suback(1, 0, pid=8), B2C), (ack(PUBACK, 300), B2C), (unsubscribe("x/#", pid=9), C2B)],
)
def test_hand_built_messages_read_the_same_in_scapy(data, to_broker):
    M = scapy_mqtt
    pkt = M.MQTT(data)
    m = parse(data, to_broker)
    assert m.error == MQTT_OK and pkt.type == m.mtype and pkt.len == m.length - 1 - len(varint(pkt.len))
    layer = pkt.payload
    if m.mtype == CONNECT:
        assert layer.clientId.decode() == m.client_id and layer.klive == m.keepalive and layer.username.decode() == m.username
    elif m.mtype == CONNACK:
        assert layer.retcode == m.return_code
    elif m.mtype == PUBLISH:
        assert layer.topic == m.topic and len(layer.value) == m.payload_len and layer.msgid == m.packet_id
    elif m.mtype in (SUBSCRIBE, UNSUBSCRIBE):
        assert [t.topic.decode() for t in layer.topics] == m.filters
    elif m.mtype == SUBACK:
        assert max(layer.retcodes) == m.return_code
    else:
        assert layer.msgid == m.packet_id
