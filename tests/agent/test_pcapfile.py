"""Reading pcap / pcapng files into FrameBatches (atlas.agent.capture.pcapfile)."""
from __future__ import annotations

import io
import logging
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas.agent.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    FrameBatch,
)
from atlas.agent.capture.pcapfile import (
    CaptureError,
    CaptureReader,
    read_capture,
    write_pcap,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/agent/capture_files.py (importlib mode)
from capture_files import block, epb, idb, old_pb, pcap_file, shb, spb  # noqa: E402

MQTTSET = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mqttset"


# -- builders for hand-made capture files -------------------------------------------------------


def frames_of(batches) -> list[tuple[int, bytes, int, float]]:
    return [(b.linktype, b.frame(i), int(b.wirelens[i]), float(b.ts[i])) for b in batches for i in range(len(b))]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def random_frames(rng: np.random.Generator, n: int) -> list[bytes]:
    return [rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes() for _ in range(n)]


# -- pcap ------------------------------------------------------------------------------------------


def test_write_pcap_round_trip_keeps_frames_lengths_and_times(tmp_path):
    rng = np.random.default_rng(7)
    frames = random_frames(rng, 1000)
    ts = 1_700_000_000 + np.sort(rng.random(1000)) * 1000
    batch = FrameBatch.from_frames(frames, ts, LINKTYPE_LINUX_SLL)
    batch.wirelens += rng.integers(0, 50, 1000).astype(np.int32)  # as if cut by a snap length
    path = tmp_path / "rt.pcap"
    write_pcap(path, batch)
    got = list(read_capture(path, batch_size=128))
    assert [len(b) for b in got][:7] == [128] * 7
    assert sum(len(b) for b in got) == 1000
    assert all(b.linktype == LINKTYPE_LINUX_SLL for b in got)
    assert [f for _, f, _, _ in frames_of(got)] == frames
    assert np.array_equal(np.concatenate([b.wirelens for b in got]), batch.wirelens)
    assert np.allclose(np.concatenate([b.ts for b in got]), ts, rtol=0, atol=1e-6)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_both_byte_orders_and_resolutions(tmp_path, order, nanos):
    recs = [(1_600_000_000, 999_999 if not nanos else 999_999_999, b"\x45abc", 60), (1_600_000_001, 5, b"", 0)]
    path = write(tmp_path, "x.pcap", pcap_file(recs, order=order, nanos=nanos, linktype=LINKTYPE_RAW))
    got = frames_of(read_capture(path))
    assert [(lt, f, w) for lt, f, w, _ in got] == [(LINKTYPE_RAW, b"\x45abc", 60), (LINKTYPE_RAW, b"", 0)]
    frac = 1e-6 if not nanos else 1e-9
    assert got[0][3] == pytest.approx(1_600_000_000 + recs[0][1] * frac, abs=1e-7)
    assert got[1][3] == pytest.approx(1_600_000_001 + 5 * frac, abs=1e-7)


def test_pcap_written_by_scapy(tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    pkts = [Ether() / IP(dst="127.0.0.1") / UDP(dport=1000 + i) / (b"p" * i) for i in range(50)]
    for i, p in enumerate(pkts):
        p.time = 1_650_000_000 + i / 8
    wrpcap(str(tmp_path / "s.pcap"), pkts)
    got = frames_of(read_capture(tmp_path / "s.pcap", batch_size=16))
    assert [f for _, f, _, _ in got] == [bytes(p) for p in pkts]
    assert [t for *_, t in got] == pytest.approx([float(p.time) for p in pkts], abs=1e-6)


def test_pcap_link_type_field_ignores_fcs_bits(tmp_path):
    # Bits 26-31 of the link-type field say whether frames carry an FCS; the type is the low 16 bits.
    path = write(tmp_path, "fcs.pcap", pcap_file([(1, 0, b"abc", 3)], linktype=LINKTYPE_ETHERNET | (1 << 26) | (4 << 28)))
    assert [b.linktype for b in read_capture(path)] == [LINKTYPE_ETHERNET]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 2000), min_size=0, max_size=60),
    chunk=st.integers(64, 3000),
    batch=st.integers(1, 20),
)
def test_any_chunk_and_batch_size_gives_the_same_frames(sizes, chunk, batch):
    # Records straddle chunk boundaries, or are larger than a whole chunk.
    frames = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    blob = io.BytesIO()
    write_pcap(blob, FrameBatch.from_frames(frames, np.arange(len(frames), dtype=float), LINKTYPE_ETHERNET))
    ng = shb("<") + idb("<", LINKTYPE_ETHERNET) + b"".join(epb("<", 0, i, f) for i, f in enumerate(frames))
    for data in (blob.getvalue(), ng):
        reader = CaptureReader(io.BytesIO(data), batch, chunk_size=chunk)
        got = list(reader)
        assert all(0 < len(b) <= batch for b in got)
        assert [f for _, f, _, _ in frames_of(got)] == frames
        assert reader.frames == len(frames) and reader.truncated_records == 0


# -- pcapng ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_both_byte_orders_and_timestamp_resolutions(tmp_path, order):
    data = (
        shb(order)
        + idb(order, LINKTYPE_ETHERNET)  # default resolution: microseconds
        + idb(order, LINKTYPE_ETHERNET, tsresol=9)  # nanoseconds
        + idb(order, LINKTYPE_ETHERNET, tsresol=0x80 | 20, tsoffset=100)  # 2**-20 s, +100 s
        + epb(order, 0, 1_600_000_000_250_000, b"A" * 14, 1500)
        + epb(order, 1, 1_600_000_000_000_000_123, b"B" * 15)
        + epb(order, 2, (1_600_000_000 << 20) + (1 << 19), b"C" * 17)
    )
    got = frames_of(read_capture(write(tmp_path, "t.pcapng", data)))
    assert [(lt, f, w) for lt, f, w, _ in got] == [(1, b"A" * 14, 1500), (1, b"B" * 15, 15), (1, b"C" * 17, 17)]
    ts = [t for *_, t in got]
    assert ts[0] == pytest.approx(1_600_000_000.25, abs=1e-9)
    assert ts[1] == pytest.approx(1_600_000_000.000000123, abs=3e-7)
    assert ts[2] == pytest.approx(1_600_000_100.5, abs=1e-9)


def test_pcapng_interfaces_with_different_link_types_split_batches(tmp_path):
    o = "<"
    raw_ip = b"\x45" + b"\0" * 19
    data = (
        shb(o)
        + idb(o, LINKTYPE_ETHERNET)
        + idb(o, LINKTYPE_LINUX_SLL2)
        + idb(o, LINKTYPE_ETHERNET, tsresol=3)
        + epb(o, 0, 1, b"e1")
        + epb(o, 2, 2, b"e2")  # another Ethernet interface: same batch
        + epb(o, 1, 3, b"s1")
        + epb(o, 1, 4, b"s2")
        + block(o, 0x0BAD, b"custom block nobody knows")
        + epb(o, 0, 5, b"e3")
        + idb(o, LINKTYPE_RAW)
        + epb(o, 3, 6, raw_ip)
    )
    reader = CaptureReader(write(tmp_path, "multi.pcapng", data))
    batches = list(reader)
    assert [(b.linktype, len(b)) for b in batches] == [(1, 2), (276, 2), (1, 1), (101, 1)]
    assert [f for _, f, _, _ in frames_of(batches)] == [b"e1", b"e2", b"s1", b"s2", b"e3", raw_ip]
    assert batches[0].ts.tolist() == pytest.approx([1e-6, 2e-3])
    assert reader.skipped_blocks == 1


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path):
    o = ">"
    data = (
        shb(o)
        + idb(o, LINKTYPE_RAW, snaplen=8)
        + epb(o, 0, 5_000_000, b"first")
        + spb(o, b"0123456789", wirelen=10)  # cut to the interface snap length (8)
        + spb(o, b"xyz", wirelen=3)
        + old_pb(o, 0, 7_000_000, b"old")
    )
    got = frames_of(read_capture(write(tmp_path, "spb.pcapng", data)))
    assert [(f, w) for _, f, w, _ in got] == [(b"first", 5), (b"01234567", 10), (b"xyz", 3), (b"old", 3)]
    # A simple packet block has no time: it carries the previous frame's.
    assert [t for *_, t in got] == pytest.approx([5.0, 5.0, 5.0, 7.0])


@pytest.mark.parametrize("batch", [1, 2, 3, 4096])
def test_simple_packet_blocks_never_get_nan_times(tmp_path, caplog, batch):
    """Untimed frames take the time of the frame before them, across batches; before any
    timed frame, the epoch. One warning line says how many there were."""
    o = "<"
    data = (
        shb(o) + idb(o, LINKTYPE_RAW) + spb(o, b"a") + spb(o, b"b") + epb(o, 0, 5_000_000, b"c")
        + spb(o, b"d") + spb(o, b"e") + spb(o, b"f") + epb(o, 0, 9_000_000, b"g") + spb(o, b"h")
    )
    reader = CaptureReader(write(tmp_path, "spb.pcapng", data), batch)
    got = frames_of(reader)
    assert [f for _, f, _, _ in got] == [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"]
    assert [t for *_, t in got] == [0.0, 0.0, 5.0, 5.0, 5.0, 5.0, 9.0, 9.0]
    assert reader.untimed_frames == 6
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith(f"{tmp_path / 'spb.pcapng'}: 6 frames in simple packet blocks carry no timestamp")


def test_pcapng_new_section_with_other_byte_order(tmp_path):
    data = (
        shb("<")
        + idb("<", LINKTYPE_ETHERNET)
        + epb("<", 0, 1, b"le")
        + shb(">")
        + idb(">", LINKTYPE_LINUX_SLL, tsresol=9)
        + epb(">", 0, 2, b"be")
    )
    batches = list(read_capture(write(tmp_path, "sections.pcapng", data)))
    assert [(b.linktype, b.frame(0), float(b.ts[0])) for b in batches] == [
        (LINKTYPE_ETHERNET, b"le", pytest.approx(1e-6)),
        (LINKTYPE_LINUX_SLL, b"be", pytest.approx(2e-9)),
    ]


# -- errors ----------------------------------------------------------------------------------------


def test_bad_magic_names_file_and_offset(tmp_path):
    path = write(tmp_path, "notes.txt", b"hello, this is not a capture")
    with pytest.raises(CaptureError, match=r"notes\.txt.*magic 0x68656c6c at offset 0"):
        list(read_capture(path))


@pytest.mark.parametrize("data", [b"", b"\xd4\xc3\xb2\xa1\x02\x00"])
def test_empty_or_headless_file(tmp_path, data):
    path = write(tmp_path, "short.pcap", data)
    with pytest.raises(CaptureError, match=r"short\.pcap.*offset 0"):
        list(read_capture(path))


def test_missing_file_is_a_capture_error(tmp_path):
    with pytest.raises(CaptureError, match="nope.pcap: cannot open"):
        list(read_capture(tmp_path / "nope.pcap"))


def test_unsupported_link_type_pcap(tmp_path):
    path = write(tmp_path, "usb.pcap", pcap_file([(0, 0, b"x", 1)], linktype=189))
    with pytest.raises(CaptureError, match=r"usb\.pcap: unsupported link type 189 .*offset 20"):
        list(read_capture(path))


def test_unsupported_link_type_pcapng_names_the_packet_offset(tmp_path, caplog):
    head = shb("<") + idb("<", LINKTYPE_ETHERNET) + idb("<", 147)
    first = epb("<", 0, 1, b"ok")
    data = head + first + epb("<", 1, 2, b"user0")
    path = write(tmp_path, "dlt.pcapng", data)
    seen = []
    with pytest.raises(CaptureError, match=rf"dlt\.pcapng: packet block at offset {len(head) + len(first)} .*link type 147"):
        for b in CaptureReader(path, strict=True):
            seen.append(b.frame(0))
    assert seen == [b"ok"]  # the frames before the bad one were delivered
    # Not strict: the frames before it are kept and the rest is skipped, with one warning.
    reader = CaptureReader(path)
    assert [f for _, f, _, _ in frames_of(reader)] == [b"ok"]
    assert reader.corrupt_records == 1 and reader.skipped_bytes == len(data) - len(head) - len(first)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "link type 147" in line and "kept the 1 frames before it" in line


def test_packet_on_undeclared_interface(tmp_path):
    data = shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 3, 0, b"x")
    with pytest.raises(CaptureError, match="refers to interface 3"):
        list(read_capture(write(tmp_path, "if.pcapng", data)))


def test_corrupt_block_length_names_offset(tmp_path):
    good = shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, 0, b"abcd")
    bad = bytearray(epb("<", 0, 0, b"efgh"))
    bad[-4:] = struct.pack("<I", 999)  # trailing length copy disagrees
    seen = []
    path = write(tmp_path, "bad.pcapng", good + bytes(bad) + epb("<", 0, 0, b"ijkl"))
    with pytest.raises(CaptureError, match=rf"bad\.pcapng: corrupt pcapng packet block at offset {len(good)}"):
        for b in CaptureReader(path, strict=True):
            seen += [b.frame(i) for i in range(len(b))]
    assert seen == [b"abcd"]
    reader = CaptureReader(path)
    assert [f for _, f, _, _ in frames_of(reader)] == [b"abcd"]
    assert reader.corrupt_records == 1 and reader.skipped_bytes == path.stat().st_size - len(good)


def test_corrupt_first_record_is_an_error_even_when_not_strict(tmp_path):
    data = shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, 0, b"abcd")[:-4] + struct.pack("<I", 999)
    with pytest.raises(CaptureError, match="corrupt pcapng packet block"):
        list(read_capture(write(tmp_path, "first.pcapng", data)))


@pytest.mark.parametrize("length", [0x7FFFFFF0, 0xFFFFFFFF, 300_000])
def test_absurd_record_length_is_corruption_not_truncation(tmp_path, caplog, length):
    first = pcap_file([(0, 0, b"abc", 3), (1, 0, b"defg", 4)])
    data = first + struct.pack("<IIII", 0, 0, length, 10) + b"z" * 400_000 + pcap_file([(2, 0, b"hi", 2)])[24:]
    path = write(tmp_path, "huge.pcap", data)
    with pytest.raises(CaptureError, match=rf"huge\.pcap: corrupt pcap record at offset {len(first)}: captured length {length}"):
        list(CaptureReader(path, strict=True))
    reader = CaptureReader(path)
    assert [f for _, f, _, _ in frames_of(reader)] == [b"abc", b"defg"]
    assert reader.corrupt_records == 1 and reader.skipped_bytes == len(data) - len(first)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"offset {len(first)}" in line and f"skipped the rest of the file ({len(data) - len(first)} bytes)" in line


def test_corrupt_first_pcap_record_is_an_error(tmp_path):
    data = pcap_file([]) + struct.pack("<IIII", 0, 0, 0xFFFFFFFF, 10) + b"zz"
    with pytest.raises(CaptureError, match="corrupt pcap record at offset 24"):
        list(read_capture(write(tmp_path, "first.pcap", data)))


def test_pcapng_before_section_header_and_bad_byte_order(tmp_path):
    with pytest.raises(CaptureError, match="byte-order magic 0xdeadbeef at offset 8"):
        list(read_capture(write(tmp_path, "bom.pcapng", b"\x0a\x0d\x0d\x0a\x1c\0\0\0\xde\xad\xbe\xef" + b"\0" * 16)))


@pytest.mark.parametrize("cut", [3, 15, 20])
def test_truncated_last_pcap_record_warns_and_keeps_the_rest(tmp_path, caplog, cut):
    rng = np.random.default_rng(3)
    frames = random_frames(rng, 300)
    frames[-1] = b"L" * 40
    blob = io.BytesIO()
    write_pcap(blob, FrameBatch.from_frames(frames, np.zeros(300), LINKTYPE_ETHERNET))
    data = blob.getvalue()[: -(56 - cut)]  # the last record (16 + 40 bytes) keeps `cut` bytes
    path = write(tmp_path, "cut.pcap", data)
    reader = CaptureReader(path, 64)
    got = frames_of(reader)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"cut.pcap: pcap record at offset {len(data) - cut} is cut short" in line
    assert [f for _, f, _, _ in got] == frames[:-1]
    assert reader.truncated_records == 1 and reader.frames == 299 and reader.skipped_bytes == cut
    with pytest.raises(CaptureError, match="cut short"):
        list(CaptureReader(path, strict=True))


def test_truncated_last_pcapng_block_warns_and_keeps_the_rest(tmp_path, caplog):
    body = shb("<") + idb("<", LINKTYPE_ETHERNET) + b"".join(epb("<", 0, i, b"%04d" % i) for i in range(100))
    path = write(tmp_path, "cut.pcapng", body + epb("<", 0, 0, b"last one")[:-5])
    reader = CaptureReader(path)
    got = frames_of(reader)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"pcapng block at offset {len(body)} is cut short" in line
    assert [f for _, f, _, _ in got] == [b"%04d" % i for i in range(100)]
    assert reader.truncated_records == 1


def test_reads_from_a_file_object():
    data = pcap_file([(1, 2, b"abc", 3)], nanos=True)
    got = frames_of(read_capture(io.BytesIO(data)))
    assert got == [(LINKTYPE_ETHERNET, b"abc", 3, pytest.approx(1.000000002))]


# -- the real MQTTset captures -----------------------------------------------------------------------


def _mqttset_files() -> list[Path]:
    return sorted(MQTTSET.glob("*.pcap*")) if MQTTSET.is_dir() else []


@pytest.mark.mqttset
@pytest.mark.skipif(not MQTTSET.is_dir(), reason=f"MQTTset captures not found at {MQTTSET}")
@pytest.mark.parametrize("path", _mqttset_files(), ids=lambda p: p.name)
def test_mqttset_frames_equal_scapy_raw_reader(path):
    from scapy.utils import RawPcapReader

    got = frames_of(read_capture(path, batch_size=1000))
    ref = []
    for data, meta in RawPcapReader(str(path)):
        ts = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol if hasattr(meta, "tshigh") else meta.sec + meta.usec / 1e6
        ref.append((data, meta.wirelen, ts))
    assert len(got) == len(ref) > 0
    assert [(f, w) for _, f, w, _ in got] == [(f, w) for f, w, _ in ref]
    assert np.allclose([t for *_, t in got], [t for *_, t in ref], rtol=0, atol=1e-6)
    assert {lt for lt, *_ in got} <= {LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL}


def test_concat_and_coalesce_keep_every_frame_in_order():
    from atlas.agent.daemon import coalesce

    a = FrameBatch.from_frames([b"abc", b"de"], [1.0, 2.0], 1)
    b = FrameBatch.from_frames([b"xyz1"], [3.0], 1)
    raw = FrameBatch.from_frames([b"q"], [4.0], 101)
    idle = FrameBatch.from_frames([], [], 1)
    c = FrameBatch.concat([a, b])
    assert [c.frame(i) for i in range(len(c))] == [b"abc", b"de", b"xyz1"] and list(c.ts) == [1.0, 2.0, 3.0]
    assert [len(x) for x in coalesce(iter([a, b, idle, a, idle]), 100, 10.0)] == [3, 0, 2, 0]  # idle hands over
    assert [len(x) for x in coalesce(iter([a, b, a]), 3, 10.0)] == [3, 2]  # size bound; the rest at the end
    assert [(len(x), x.linktype) for x in coalesce(iter([a, raw, b]), 100, 10.0)] == [(2, 1), (1, 101), (1, 1)]
    with pytest.raises(ValueError, match="link types"):
        FrameBatch.concat([a, raw])
