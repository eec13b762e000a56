"""The spool: on disk, bounded, oldest out first (counted), in order, kept until acknowledged."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from atlas.agent.uplink.spool import HEADER, Spool


def fill(spool: Spool, n: int, size: int = 100, incidents: int = 1) -> list[int]:
    return [spool.append(lambda seq: seq.to_bytes(8, "big") * (size // 8), incidents=incidents) for _ in range(n)]


def seqs(records) -> list[int]:
    return [seq for seq, _ in records]


def read_all(spool: Spool, after: int = 0) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while batch := spool.read_after(out[-1][0] if out else after, max_records=7):
        out.extend(batch)
    return out


def test_records_come_back_in_order_until_acknowledged(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1024)
    written = fill(spool, 40)
    assert written == list(range(written[0], written[0] + 40))
    records = read_all(spool)
    assert seqs(records) == written
    assert all(payload == seq.to_bytes(8, "big") * 12 for seq, payload in records)
    assert spool.stats().depth == 40
    segments_before = len(list(tmp_path.glob("*.seg")))
    spool.ack(written[24])
    assert seqs(read_all(spool)) == written[25:]
    assert spool.stats().depth == 15
    assert len(list(tmp_path.glob("*.seg"))) < segments_before  # acknowledged segments are gone
    spool.ack(written[-1])
    assert read_all(spool) == [] and spool.stats().depth == 0 and spool.stats().bytes == 0
    assert list(tmp_path.glob("*.seg")) == []


def test_read_after_an_unacknowledged_point_continues_from_there(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=512)
    written = fill(spool, 20)
    assert seqs(spool.read_after(written[9], max_records=3)) == written[10:13]
    assert seqs(spool.read_after(written[12], max_records=100)) == written[13:]  # cursor path
    assert seqs(spool.read_after(written[2], max_records=2)) == written[3:5]  # rewind (reconnect)


def test_restart_keeps_unacknowledged_batches_and_never_reuses_a_seq(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=700)
    written = fill(spool, 30)
    spool.ack(written[9])
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=700)
    assert again.acked == written[9]
    assert seqs(read_all(again)) == written[10:]
    assert fill(again, 1) == [written[-1] + 1]
    again.ack(written[-1] + 1)
    again.close()
    # Everything acknowledged and deleted: the next seq still follows on.
    third = Spool(tmp_path, max_bytes=1 << 20)
    assert fill(third, 1) == [written[-1] + 2]


def test_a_fresh_spool_starts_above_any_earlier_one(tmp_path):
    first = fill(Spool(tmp_path / "a"), 3)
    time.sleep(0.01)
    wiped = fill(Spool(tmp_path / "b"), 1)  # a gateway whose disk was wiped
    assert wiped[0] > first[-1]


def test_a_full_spool_drops_the_oldest_and_counts_them(tmp_path):
    spool = Spool(tmp_path, max_bytes=8192, segment_bytes=1024)
    written = fill(spool, 200, size=96, incidents=2)  # 200 * (20 + 96) bytes, far over the bound
    stats = spool.stats()
    assert stats.bytes <= 8192
    kept = seqs(read_all(spool))
    assert kept == written[-len(kept):]  # the newest survive, contiguous, in order
    assert stats.dropped_batches == 200 - len(kept) > 100
    assert stats.dropped_incidents == 2 * stats.dropped_batches
    assert stats.depth == len(kept)


def test_dropping_a_partly_acknowledged_segment_counts_only_unacknowledged(tmp_path):
    spool = Spool(tmp_path, max_bytes=4096, segment_bytes=1160)  # 10 records of 116 bytes per segment
    written = fill(spool, 10)
    spool.ack(written[3])  # segment 1: 4 acknowledged, 6 not
    fill(spool, 40)  # 50 records, 3 segments fit: two go
    stats = spool.stats()
    assert stats.dropped_batches == 6 + 10  # the rest of segment 1, and all of segment 2
    assert stats.depth == 30


def test_a_record_too_big_is_dropped_and_counted(tmp_path):
    spool = Spool(tmp_path, max_bytes=8192)
    first = fill(spool, 1)
    assert spool.append(lambda seq: b"x" * 5000, incidents=3) == 0
    assert fill(spool, 1) == [first[0] + 1]  # the seq was not used up
    stats = spool.stats()
    assert (stats.dropped_batches, stats.dropped_incidents) == (1, 3)


def test_a_torn_last_record_is_cut_off_and_the_rest_kept(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    written = fill(spool, 5)
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    with open(segment, "ab") as f:  # half a record, as a power cut mid-write leaves it
        f.write(HEADER.pack(100, 0, written[-1] + 1, 0) + b"x" * 10)
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert again.stats().torn_records == 1
    assert seqs(read_all(again)) == written
    assert fill(again, 1) == [written[-1] + 1]
    assert seqs(read_all(again)) == written + [written[-1] + 1]


def test_a_corrupted_record_ends_the_segment_there(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    written = fill(spool, 5)
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[3 * 116 + HEADER.size + 5] ^= 0xFF  # flip a payload bit in the 4th record
    segment.write_bytes(bytes(data))
    assert seqs(read_all(Spool(tmp_path, max_bytes=1 << 20))) == written[:3]


def test_survives_kill_9_mid_stream(tmp_path):
    """A writer killed with SIGKILL loses nothing whose append had returned."""
    child = textwrap.dedent(f"""
        import sys
        from atlas.agent.uplink.spool import Spool
        spool = Spool({str(tmp_path)!r}, max_bytes=1 << 22, segment_bytes=4096)
        for i in range(100000):
            seq = spool.append(lambda s: s.to_bytes(8, "big") * 16, incidents=1)
            print(seq, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    confirmed = []
    for line in proc.stdout:
        confirmed.append(int(line))
        if len(confirmed) == 2000:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(10)
    proc.stdout.close()
    records = read_all(Spool(tmp_path, max_bytes=1 << 22, segment_bytes=4096))
    got = seqs(records)
    assert got[: len(confirmed)] == confirmed  # every confirmed batch, in order (maybe a few more)
    assert got == list(range(got[0], got[0] + len(got)))
    assert all(payload == seq.to_bytes(8, "big") * 16 for seq, payload in records)


def test_small_bound_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="max_bytes=100"):
        Spool(tmp_path, max_bytes=100)
