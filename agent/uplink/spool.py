"""Spool: the agent's on-disk queue of telemetry batches not yet acknowledged by the hub.

Bounded in bytes; when full, the oldest batches go first and are counted. Append-only segment
files (`<first seq>.seg`, rotated at `segment_bytes`) hold records

    u32 payload length | u32 crc32(seq, incidents, payload) | u64 seq | u32 incidents | payload

written with one write() each. A batch is deleted only once the hub acknowledged its seq: the
highest acknowledged seq is kept in the file `acked` (replaced atomically), whole segments at or
below it are unlinked. At start, segments are scanned and a torn last record (power cut
mid-write) is cut off and counted.

Fsync policy: a write() is in the page cache the moment it returns, so a killed process loses
nothing without fsync; fsync only matters for a power cut or kernel crash. `sync()` flushes; the
uplink calls it right away after a batch that carries incidents and at most every
`fsync_interval` seconds otherwise. So a power cut loses at most that interval of device
summaries and no incident that was synced, while an SD card sees at most about one fsync per
second and the pipeline thread never waits on one.

Seqs are strictly increasing and never reused, also across restarts: they continue after the
highest seq on disk or in `acked`; a spool that starts empty begins at the current time in
microseconds, so even a wiped gateway keeps counting upwards and the hub's dedup by seq holds.
"""
from __future__ import annotations

import bisect
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

HEADER = struct.Struct(">IIQI")  # length, crc, seq, incidents
_CRC_PART = struct.Struct(">QI")
SUFFIX = ".seg"
ACKED_FILE = "acked"


@dataclass
class _Segment:
    first: int  # seq of its first record (also its file name)
    path: Path
    size: int = 0
    records: int = 0
    incidents: int = 0
    last: int = 0  # seq of its last record


@dataclass
class SpoolStats:
    depth: int  # batches not yet acknowledged
    bytes: int  # on disk, segments (acknowledged ones not yet removed included)
    segments: int
    acked: int  # highest seq the hub acknowledged
    next_seq: int
    dropped_batches: int  # unacknowledged batches dropped because the spool was full (or a batch too big)
    dropped_incidents: int
    dropped_bytes: int
    torn_records: int  # records cut off at start because a write never completed


def _crc(seq: int, incidents: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_CRC_PART.pack(seq, incidents)))


class Spool:
    """Thread-safe: one producer (`append`) and one consumer (`read_after`, `ack`) may race."""

    def __init__(
        self,
        directory: str | Path,
        max_bytes: int = 64 << 20,
        segment_bytes: int | None = None,
        max_record_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if max_bytes < 4096:
            raise ValueError(f"spool max_bytes={max_bytes}: at least 4096")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, max_bytes // 16)
        # A record must fit in the bound with room for others, and in one gRPC message.
        self.max_record_bytes = max_record_bytes or max_bytes // 4
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # the active (last) segment, opened for append
        self._dirty = False
        self._dir_dirty = False
        self._cursor: tuple[int, int, int] | None = None  # (segment first, offset, last seq read)
        self.dropped_batches = self.dropped_incidents = self.dropped_bytes = self.torn_records = 0
        self._acked = self._read_acked()
        self._recover()
        last = max([self._acked] + [s.last for s in self._segments if s.records])
        self._next_seq = last + 1 if last > 0 else int(clock() * 1e6)

    # --- start --------------------------------------------------------------------------

    def _read_acked(self) -> int:
        try:
            return int((self.dir / ACKED_FILE).read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            log.warning("spool %s: unreadable %s file, resending from the oldest batch", self.dir, ACKED_FILE)
            return 0

    def _recover(self) -> None:
        for path in sorted(self.dir.glob("*" + SUFFIX), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
            if not path.stem.isdigit():
                log.warning("spool %s: ignoring stray file %s", self.dir, path.name)
                continue
            seg = _Segment(first=int(path.stem), path=path)
            good = self._scan(seg)
            if good < path.stat().st_size:
                self.torn_records += 1
                log.warning("spool %s: %s ends in a torn record at byte %d; cut off", self.dir, path.name, good)
                os.truncate(path, good)
            seg.size = good
            if seg.records == 0:
                path.unlink()
            elif seg.last <= self._acked:
                path.unlink()  # acknowledged before a crash that came before its removal
            else:
                self._segments.append(seg)

    def _scan(self, seg: _Segment) -> int:
        """Count seg's valid records; return the offset where valid data ends."""
        data = seg.path.read_bytes()
        offset = 0
        while offset + HEADER.size <= len(data):
            length, crc, seq, incidents = HEADER.unpack_from(data, offset)
            end = offset + HEADER.size + length
            if end > len(data) or _crc(seq, incidents, data[offset + HEADER.size : end]) != crc:
                break
            seg.records += 1
            seg.incidents += incidents
            seg.last = seq
            offset = end
        return offset

    # --- producer -----------------------------------------------------------------------

    def append(self, build: Callable[[int], bytes], incidents: int = 0) -> int:
        """Store the record `build(seq)` under the next seq and return that seq.

        `build` runs under the spool's lock, so seqs reach the disk in order even with several
        producers. A record over `max_record_bytes` is dropped and counted, its seq reused, and 0 returned.
        """
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            payload = build(seq)
            if len(payload) > self.max_record_bytes:
                self._next_seq -= 1  # seqs on disk stay contiguous: depth is last - acked
                self.dropped_batches += 1
                self.dropped_incidents += incidents
                self.dropped_bytes += len(payload)
                log.error("spool: batch seq %d is %d bytes, over the %d-byte record limit: dropped", seq, len(payload), self.max_record_bytes)
                return 0
            record = HEADER.pack(len(payload), _crc(seq, incidents, payload), seq, incidents) + payload
            seg = self._active_segment(seq, len(record))
            written = os.write(self._fd, record)
            if written != len(record):  # a short write on a regular file means the disk is full
                os.truncate(seg.path, seg.size)
                raise OSError(f"spool {seg.path}: short write ({written} of {len(record)} bytes), disk full?")
            seg.size += len(record)
            seg.records += 1
            seg.incidents += incidents
            seg.last = seq
            self._dirty = True
            self._enforce_bound()
            return seq

    def _active_segment(self, seq: int, record_bytes: int) -> _Segment:
        seg = self._segments[-1] if self._segments else None
        if seg is None or self._fd is None or seg.size + record_bytes > self.segment_bytes:
            if seg is not None and seg.size == 0:
                return seg  # an empty active segment takes any record
            self._close_active()
            seg = _Segment(first=seq, path=self.dir / f"{seq:020d}{SUFFIX}")
            self._segments.append(seg)
            self._dir_dirty = True
        if self._fd is None:
            self._fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return seg

    def _close_active(self) -> None:
        if self._fd is not None:
            if self._dirty:
                os.fsync(self._fd)  # a segment is sealed on disk before the next one starts
                self._dirty = False
            os.close(self._fd)
            self._fd = None

    def _enforce_bound(self) -> None:
        while sum(s.size for s in self._segments) > self.max_bytes and len(self._segments) > 1:
            seg = self._segments.pop(0)
            lost, lost_incidents = self._unacked_in(seg)
            self.dropped_batches += lost
            self.dropped_incidents += lost_incidents
            self.dropped_bytes += seg.size
            log.warning("spool full (%d bytes): dropped %d unacknowledged batches (%d incidents), oldest first", self.max_bytes, lost, lost_incidents)
            seg.path.unlink(missing_ok=True)
            self._dir_dirty = True

    def _unacked_in(self, seg: _Segment) -> tuple[int, int]:
        if seg.first > self._acked:
            return seg.records, seg.incidents
        if seg.last <= self._acked:
            return 0, 0
        records = incidents = 0  # partly acknowledged: count record by record
        for seq, n, _, _end in self._records(seg, 0):
            if seq > self._acked:
                records += 1
                incidents += n
        return records, incidents

    # --- consumer -----------------------------------------------------------------------

    def _records(self, seg: _Segment, offset: int):
        """Yield (seq, incidents, payload, end offset) from offset to the end of valid data."""
        with open(seg.path, "rb") as f:
            f.seek(offset)
            while offset < seg.size:
                header = f.read(HEADER.size)
                if len(header) < HEADER.size:
                    return
                length, _crc_value, seq, incidents = HEADER.unpack(header)
                payload = f.read(length)
                offset += HEADER.size + length
                yield seq, incidents, payload, offset

    def read_after(self, after_seq: int, max_records: int = 64, max_bytes: int = 4 << 20) -> list[tuple[int, bytes]]:
        """Up to max_records (seq, payload) with seq > after_seq, oldest first."""
        out: list[tuple[int, bytes]] = []
        size = 0
        with self._lock:
            after_seq = max(after_seq, self._acked)
            start = self._start_position(after_seq)
            if start is None:
                return out
            index, offset = start
            for seg in self._segments[index:]:
                for seq, _n, payload, end in self._records(seg, offset):
                    if seq <= after_seq:
                        continue
                    if out and (len(out) >= max_records or size + len(payload) > max_bytes):
                        return out
                    out.append((seq, payload))
                    size += len(payload)
                    self._cursor = (seg.first, end, seq)
                offset = 0
            return out

    def _start_position(self, after_seq: int) -> tuple[int, int] | None:
        firsts = [s.first for s in self._segments]
        if self._cursor and self._cursor[2] == after_seq:
            i = bisect.bisect_left(firsts, self._cursor[0])
            if i < len(firsts) and firsts[i] == self._cursor[0]:
                return i, self._cursor[1]  # continue where the last read stopped
        i = max(bisect.bisect_right(firsts, after_seq) - 1, 0)
        return (i, 0) if i < len(firsts) else None

    def ack(self, seq: int) -> None:
        """The hub is done with every batch up to seq: forget them."""
        with self._lock:
            if seq <= self._acked:
                return
            self._acked = min(seq, self._next_seq - 1)
            tmp = self.dir / (ACKED_FILE + ".tmp")
            tmp.write_text(str(self._acked))
            os.replace(tmp, self.dir / ACKED_FILE)
            self._dir_dirty = True
            while self._segments and self._segments[0].last <= self._acked and self._segments[0].records:
                if len(self._segments) == 1:
                    self._close_active()  # the active one is done too: start a fresh one next time
                self._segments.pop(0).path.unlink(missing_ok=True)

    def sync(self) -> None:
        """Make everything appended so far survive a power cut (see the module docstring)."""
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False
            if self._dir_dirty:
                fd = os.open(self.dir, os.O_RDONLY)
                try:
                    os.fsync(fd)  # new/removed segment names and the acked file
                finally:
                    os.close(fd)
                self._dir_dirty = False

    def close(self) -> None:
        with self._lock:
            self.sync()
            self._close_active()

    @property
    def acked(self) -> int:
        return self._acked

    def stats(self) -> SpoolStats:
        with self._lock:
            depth = max(0, self._segments[-1].last - max(self._acked, self._segments[0].first - 1)) if self._segments else 0
            return SpoolStats(
                depth=depth,
                bytes=sum(s.size for s in self._segments),
                segments=len(self._segments),
                acked=self._acked,
                next_seq=self._next_seq,
                dropped_batches=self.dropped_batches,
                dropped_incidents=self.dropped_incidents,
                dropped_bytes=self.dropped_bytes,
                torn_records=self.torn_records,
            )
