"""Vectorized header decode (atlas.agent.decode.packets), checked against Scapy's dissection."""
from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Padding, Raw

from atlas.agent.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD,
    FrameBatch,
)
from atlas.agent.capture.pcapfile import read_capture, write_pcap
from atlas.agent.decode import PACKET_DTYPE, TCP_ACK, TCP_PSH, TCP_SYN
from atlas.agent.decode.packets import IPV6_KEY_BASE, AddressBook, decode_packets

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/agent/fuzzing.py (importlib mode)
from fuzzing import ETH, V4, V6, fuzz_headers, ip_variants, link_wrap  # noqa: E402

MQTTSET = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mqttset"

# -- Scapy as the reference ------------------------------------------------------------------------


def _dissect(raw: bytes, linktype: int):
    if linktype == LINKTYPE_ETHERNET:
        return Ether(raw)
    if linktype == LINKTYPE_LINUX_SLL:
        return CookedLinux(raw)
    if linktype == LINKTYPE_LINUX_SLL2:
        return CookedLinuxV2(raw)
    if linktype == LINKTYPE_IPV6 or (linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD) and raw[:1] and raw[0] >> 4 == 6):
        return IPv6(raw)
    return IP(raw)


def _l4_payload(layer) -> bytes:
    data = bytes(layer.payload)
    if Padding in layer:
        data = data[: len(data) - len(bytes(layer[Padding]))]
    return data


def scapy_fields(raw: bytes, linktype: int, book: AddressBook) -> dict:
    """What Scapy says the PACKET_DTYPE fields of a frame are."""
    p = _dissect(raw, linktype)
    if IP in p:
        ip = p[IP]
        exp = dict(ipver=4, src=book.key(ip.src), dst=book.key(ip.dst), proto=ip.proto)
        wire_end = ip.len - ip.ihl * 4
    elif IPv6 in p:
        ip = p[IPv6]
        exp = dict(ipver=6, src=book.key(ip.src), dst=book.key(ip.dst))
        upper, nh = ip.payload, ip.nh
        while hasattr(upper, "nh") and type(upper).__name__.startswith("IPv6ExtHdr"):
            nh, upper = upper.nh, upper.payload
        exp["proto"] = nh
        wire_end = ip.plen - (len(bytes(ip.payload)) - len(bytes(upper)))
    else:
        return dict(ipver=0, sport=0, dport=0, payload_len=0)
    if TCP in p:
        t = p[TCP]
        pay = _l4_payload(t)
        exp.update(sport=t.sport, dport=t.dport, tcp_flags=int(t.flags), seq=t.seq, payload=pay)
        exp["payload_wirelen"] = wire_end - t.dataofs * 4
    elif UDP in p:
        u = p[UDP]
        exp.update(sport=u.sport, dport=u.dport, payload=_l4_payload(u), payload_wirelen=wire_end - 8)
    elif ICMP in p:
        c = p[ICMP]
        exp.update(sport=c.type, dport=c.code, payload=_l4_payload(c), payload_wirelen=wire_end - 8)
    elif exp["proto"] == 58:  # Scapy has one class per ICMPv6 type; all start with type, code
        body = bytes(upper)
        exp.update(sport=body[0], dport=body[1], payload=body[8:], payload_wirelen=wire_end - 8)
    else:
        exp.update(sport=0, dport=0, tcp_flags=0)
    return exp


def assert_matches_scapy(batch: FrameBatch, rows: np.ndarray, book: AddressBook) -> int:
    """Every row equals Scapy's dissection of its frame; returns how many rows carried a payload."""
    with_payload = 0
    for i in range(len(batch)):
        exp = scapy_fields(batch.frame(i), batch.linktype, book)
        payload = exp.pop("payload", None)
        got = {k: int(rows[i][k]) for k in exp}
        assert got == exp, f"frame {i}: {batch.frame(i).hex()}"
        if payload is not None:
            off, n = int(rows[i]["payload_off"]), int(rows[i]["payload_len"])
            assert batch.buf[off : off + n].tobytes() == payload, f"frame {i} payload"
            with_payload += n > 0
    return with_payload


def decode(frames: list[bytes], linktype: int = LINKTYPE_ETHERNET, book: AddressBook | None = None, wirelens=None):
    batch = FrameBatch.from_frames(frames, np.arange(len(frames), dtype=float), linktype)
    if wirelens is not None:
        batch.wirelens = np.asarray(wirelens, dtype=np.int32)
    book = AddressBook() if book is None else book
    return batch, decode_packets(batch, book), book


# -- crafted traffic -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "linktype", [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, LINKTYPE_RAW_BSD]
)
def test_each_link_type_matches_scapy(linktype):
    frames = [link_wrap(linktype, ip) for ip in ip_variants()]
    batch, rows, book = decode(frames, linktype)
    assert rows.dtype == PACKET_DTYPE
    assert set(rows["ipver"]) == {4, 6}
    assert assert_matches_scapy(batch, rows, book) >= 8
    assert rows["frame"].tolist() == list(range(len(frames)))
    assert rows["wirelen"].tolist() == [len(f) for f in frames]


def test_ipv4_only_and_ipv6_only_link_types():
    v4 = [bytes(ip) for ip in ip_variants() if IP in ip]
    v6 = [bytes(ip) for ip in ip_variants() if IPv6 in ip]
    for frames, lt, ver in ((v4, LINKTYPE_IPV4, 4), (v6, LINKTYPE_IPV6, 6)):
        batch, rows, book = decode(frames, lt)
        assert set(rows["ipver"]) == {ver}
        assert_matches_scapy(batch, rows, book)
    # An IPv6 packet on the IPv4-only link type is not decoded as IPv4.
    _, rows, _ = decode(v6[:1], LINKTYPE_IPV4)
    assert rows["ipver"][0] == 0


def test_vlan_tags():
    base = TCP(sport=1234, dport=1883, flags="S") / Raw(b"v")
    frames = [
        bytes(ETH() / Dot1Q(vlan=10) / V4 / base),
        bytes(ETH() / Dot1AD(vlan=20) / Dot1Q(vlan=30) / V4 / base),
        bytes(ETH() / Dot1Q(vlan=40) / V6 / base),
        bytes(ETH(type=0x9100) / Dot1Q(vlan=50) / V4 / base),
    ]
    batch, rows, book = decode(frames)
    assert rows["ipver"].tolist() == [4, 4, 6, 4]
    assert rows["sport"].tolist() == [1234] * 4 and rows["tcp_flags"].tolist() == [TCP_SYN] * 4
    # Scapy knows 802.1Q and 802.1ad; compare the first three with it.
    sub = FrameBatch.from_frames(frames[:3], [0, 0, 0], LINKTYPE_ETHERNET)
    assert_matches_scapy(sub, decode_packets(sub, book), book)
    payload = [batch.buf[o : o + n].tobytes() for o, n in zip(rows["payload_off"], rows["payload_len"])]
    assert payload == [b"v"] * 4


def test_non_ip_frames():
    frames = [
        bytes.fromhex("ffffffffffff020000000001 0806 0001080006040001".replace(" ", "")) + b"\0" * 20,  # ARP
        bytes(ETH(type=0x88CC) / Raw(b"lldp")),
        b"",
        b"\x45",
    ]
    _, rows, _ = decode(frames)
    assert rows["ipver"].tolist() == [0, 0, 0, 0]
    assert rows["payload_len"].sum() == 0 and rows["sport"].sum() == 0


def test_unknown_link_type_decodes_nothing_and_does_not_raise():
    batch, rows, _ = decode([link_wrap(LINKTYPE_ETHERNET, ip) for ip in ip_variants()], 147)
    assert len(rows) == len(batch) and not rows["ipver"].any()


def test_ip_fragments_are_not_read_as_tcp_headers():
    payload = bytes(TCP(sport=5555, dport=1883, flags="S")) + b"A" * 40  # looks like a TCP header
    first, later = V4.copy(), V4.copy()
    first.flags, first.frag, first.proto = "MF", 0, 6
    later.flags, later.frag, later.proto = 0, 3, 6  # offset 24 bytes
    frames = [bytes(ETH() / first / Raw(payload)), bytes(ETH() / later / Raw(payload))]
    frag6 = bytes(ETH() / V6 / IPv6ExtHdrFragment(nh=6, offset=5, m=0) / Raw(payload))
    first6 = bytes(ETH() / V6 / IPv6ExtHdrFragment(nh=6, offset=0, m=1) / Raw(payload))
    batch, rows, book = decode(frames + [frag6, first6])
    assert rows["proto"].tolist() == [6, 6, 6, 6]
    assert rows["sport"].tolist() == [5555, 0, 0, 5555]
    assert rows["tcp_flags"].tolist() == [TCP_SYN, 0, 0, TCP_SYN]
    # A later fragment's payload is its data, right after the IP (and fragment) header.
    assert rows["payload_len"].tolist() == [40, len(payload), len(payload), 40]
    assert batch.buf[rows["payload_off"][1] :][:20].tobytes() == payload[:20]
    assert_matches_scapy(FrameBatch.from_frames(frames, [0, 0], 1), rows[:2], book)


def test_ipv6_extension_headers_are_skipped():
    l4 = TCP(sport=7, dport=1883, flags="PA") / Raw(b"after-ext")
    frames = [
        bytes(ETH() / V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / l4),
        bytes(ETH() / V6 / IPv6ExtHdrRouting(addresses=["2001:db8::99"]) / l4),
        bytes(ETH() / V6 / IPv6ExtHdrHopByHop() / UDP(sport=9, dport=10) / Raw(b"u")),
    ]
    batch, rows, book = decode(frames)
    assert rows["proto"].tolist() == [6, 6, 17]
    assert rows["sport"].tolist() == [7, 7, 9]
    assert_matches_scapy(batch, rows, book)


def test_ethernet_padding_is_not_payload():
    frame = bytes(ETH() / V4 / TCP(sport=1, dport=1883, flags="A"))
    assert len(frame) == 54
    batch, rows, book = decode([frame + b"\0" * 6])  # padded to the 60-byte minimum
    assert rows["payload_len"][0] == 0 and rows["payload_wirelen"][0] == 0
    assert_matches_scapy(batch, rows, book)


def test_snaplen_cut_keeps_headers_and_wire_payload_length():
    pkt = ETH() / V4 / TCP(sport=1, dport=1883, flags="PA", options=[("Timestamp", (1, 2))]) / Raw(b"m" * 1000)
    full = bytes(pkt)
    cut = full[:100]  # 14 + 20 + 32 header bytes + 34 payload bytes
    _, rows, _ = decode([cut], wirelens=[len(full)])
    r = rows[0]
    assert (r["ipver"], r["sport"], r["dport"], r["tcp_flags"]) == (4, 1, 1883, TCP_PSH | TCP_ACK)
    assert r["payload_len"] == 34 and r["payload_wirelen"] == 1000 and r["wirelen"] == len(full)
    assert r["payload_off"] == 66


def test_every_truncation_of_a_frame_is_safe_and_consistent():
    for ip in ip_variants():
        full = bytes(ETH() / ip)
        frames = [full[:k] for k in range(len(full) + 1)]
        batch, rows, _ = decode(frames, wirelens=[len(full)] * len(frames))
        end = batch.offsets + batch.caplens
        assert (rows["payload_off"] >= batch.offsets).all()
        assert (rows["payload_off"] + rows["payload_len"] <= end).all()
        _, ref, _ = decode([full])
        for k, r in enumerate(rows):
            if r["sport"]:  # ports are either right or absent, never garbage
                assert (r["sport"], r["dport"]) == (ref[0]["sport"], ref[0]["dport"]), k
            if r["ipver"]:
                assert r["ipver"] == ref[0]["ipver"] and r["src"] == ref[0]["src"]
                assert r["payload_wirelen"] in (0, ref[0]["payload_wirelen"])
        assert rows[-1]["payload_len"] == ref[0]["payload_len"]


def test_tso_segment_with_zero_total_length_uses_the_frame_length():
    big = bytearray(bytes(ETH() / V4 / TCP(sport=50000, dport=1883, flags="PA") / Raw(b"p" * 30000)))
    big[16:18] = b"\0\0"  # IPv4 total length 0, as captured before segmentation offload
    _, rows, _ = decode([bytes(big)])
    assert rows["payload_len"][0] == 30000 and rows["payload_wirelen"][0] == 30000
    assert rows["dport"][0] == 1883


def test_batches_read_from_a_file_have_gaps_between_frames(tmp_path):
    frames = [link_wrap(LINKTYPE_LINUX_SLL, ip) for ip in ip_variants()] * 3
    write_pcap(tmp_path / "g.pcap", FrameBatch.from_frames(frames, np.zeros(len(frames)), LINKTYPE_LINUX_SLL))
    (batch,) = list(read_capture(tmp_path / "g.pcap"))
    contiguous, ref, _ = decode(frames, LINKTYPE_LINUX_SLL)
    rows = decode_packets(batch, AddressBook())
    for field in ("ipver", "src", "proto", "sport", "dport", "tcp_flags", "seq", "payload_len", "payload_wirelen"):
        if field == "src":  # IPv6 keys are per book; compare IPv4 keys only
            m = ref["ipver"] == 4
            assert np.array_equal(rows[field][m], ref[field][m])
        else:
            assert np.array_equal(rows[field], ref[field]), field
    for i in range(len(frames)):
        got = batch.buf[rows["payload_off"][i] :][: rows["payload_len"][i]].tobytes()
        exp = contiguous.buf[ref["payload_off"][i] :][: ref["payload_len"][i]].tobytes()
        assert got == exp


def test_empty_batch():
    rows = decode_packets(FrameBatch.from_frames([], [], LINKTYPE_ETHERNET), AddressBook())
    assert rows.dtype == PACKET_DTYPE and len(rows) == 0


# -- never raises, never reads outside the frame ------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(st.binary(max_size=120), min_size=1, max_size=20),
    linktype=st.sampled_from([1, 12, 101, 113, 228, 229, 276, 0]),
)
def test_random_bytes_never_raise_and_stay_in_bounds(frames, linktype):
    batch, rows, _ = decode(frames, linktype)
    end = batch.offsets + batch.caplens
    assert len(rows) == len(frames)
    assert ((rows["payload_off"] >= batch.offsets) & (rows["payload_off"] + rows["payload_len"] <= end)).all()
    assert set(rows["ipver"]) <= {0, 4, 6}


def test_100k_mutated_and_truncated_real_headers():
    # Real frames of every link type with random bytes overwritten and random cuts, and random
    # frames: exercises every header path with hostile values (lengths, IHL, data offsets,
    # extension chains). bench/fuzz_packet_path.py runs the same fuzzer to 1M frames.
    run = fuzz_headers(100_000, 11)
    assert run.unexpected == 0, run.examples
    # Coverage of the fuzz itself: a good share of the inputs reached the IP and L4 parsers.
    s = run.stats
    assert s["ipv4"] > 12_000 and s["ipv6"] > 10_000 and s["l4"] > 10_000 and s["payload"] > 9_000


# -- AddressBook ------------------------------------------------------------------------------------


def test_address_book_keys_and_names():
    book = AddressBook()
    assert book.key("10.0.0.1") == int(ipaddress.IPv4Address("10.0.0.1"))
    assert book.name(book.key("192.168.1.254")) == "192.168.1.254"
    k = book.key("2001:db8::1")
    assert k > IPV6_KEY_BASE and book.key("2001:DB8:0::1") == k
    assert book.name(k) == "2001:db8::1"
    with pytest.raises(ValueError, match="not an IP address: 'gateway-7'"):
        book.key("gateway-7")
    with pytest.raises(KeyError):
        book.name(IPV6_KEY_BASE + 999)


def test_address_book_is_bounded_and_counts_evictions():
    book = AddressBook(capacity=3)
    keys = [book.key(f"2001:db8::{i}") for i in range(3)]
    book.key("2001:db8::0")  # recently used: survives
    k3 = book.key("2001:db8::3")  # evicts ::1, the least recently used
    assert len(book) == 3 and book.evictions == 1
    assert book.name(keys[1]) == "ipv6-evicted-2"
    assert book.name(keys[0]) == "2001:db8::" and book.name(k3) == "2001:db8::3"
    assert book.key("2001:db8::1") not in keys  # a returning address gets a fresh key


def test_ipv6_keys_are_stable_across_batches():
    book = AddressBook()
    frame = link_wrap(LINKTYPE_ETHERNET, V6 / UDP(sport=1, dport=2))
    _, a, _ = decode([frame, frame], book=book)
    _, b, _ = decode([frame], book=book)
    assert a["src"][0] == a["src"][1] == b["src"][0] == book.key("2001:db8::10")
    assert book.name(int(b["dst"][0])) == "2001:db8:1::7"


# -- the real MQTTset captures -----------------------------------------------------------------------


def _mqttset_files() -> list[Path]:
    return sorted(MQTTSET.glob("*.pcap*")) if MQTTSET.is_dir() else []


@pytest.mark.mqttset
@pytest.mark.slow
@pytest.mark.skipif(not MQTTSET.is_dir(), reason=f"MQTTset captures not found at {MQTTSET}")
@pytest.mark.parametrize("path", _mqttset_files(), ids=lambda p: p.name)
def test_mqttset_every_packet_matches_scapy(path):
    book = AddressBook()
    frames = with_payload = 0
    for batch in read_capture(path):
        rows = decode_packets(batch, book)
        with_payload += assert_matches_scapy(batch, rows, book)
        frames += len(batch)
        assert (rows["ipver"] == 4).all()  # MQTTset is IPv4 only
    assert frames > 0 and with_payload > 0
