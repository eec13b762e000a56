"""Capture files: read pcap/pcapng into FrameBatches, write FrameBatches as pcap.

Reading streams the file in chunks (captures can be gigabytes) and does not copy frames: the
`buf` of a batch is a view of the chunk the frames were read from, so record headers stay
between the frames. Frames are in file order; `FrameBatch.offsets` says where each one starts.

The per-record Python work is one `struct.unpack_from` to find the next record; every header
field is then gathered for the whole batch with numpy.
"""
from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

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
from atlas.agent.capture.clock import carry_forward

log = logging.getLogger(__name__)

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 1
PCAPNG_PB = 2  # obsolete Packet Block, still written by old tools
PCAPNG_SPB = 3
PCAPNG_EPB = 6
_PCAPNG_BOM_LE = b"\x4d\x3c\x2b\x1a"
_PCAPNG_BOM_BE = b"\x1a\x2b\x3c\x4d"
_IDB_OPT_TSRESOL = 9
_IDB_OPT_TSOFFSET = 14

SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_RAW_BSD,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_LINUX_SLL2,
    }
)

DEFAULT_CHUNK = 4 << 20
# A record or block larger than this is corruption, not a packet (the largest real frames are
# 64 KB TSO segments; pcapng allows other blocks, but none this big in practice).
MAX_RECORD = 64 << 20
# A pcap record longer than both this and the file's snap length is corrupt (as in Wireshark).
MAX_SNAPLEN = 262144

_ARANGE16 = np.arange(16, dtype=np.int64)
_PAD = 16  # spare zero bytes after the data of each chunk (see the pcap hot loop)


class CaptureError(ValueError):
    """A capture file that cannot be read: the message names the file and the byte offset."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset  # where the file stops being readable (None: at its header)


def read_capture(path: str | Path | BinaryIO, batch_size: int = 4096) -> Iterator[FrameBatch]:
    """Frames of a pcap or pcapng file (detected by its magic, not its name), in batches.

    A batch holds at most `batch_size` frames of one link type; it may hold fewer (end of a
    chunk, a change of link type). What could not be read after the first frame (a last record
    cut short, a corrupt record) is logged in one warning line and counted; use `CaptureReader`
    to read the counters.
    """
    yield from CaptureReader(path, batch_size)


class CaptureReader:
    """Iterable over the FrameBatches of one capture file, with counters of what it read.

    A file that cannot be read from its start (not a capture, an unsupported link type, a
    corrupt or cut first record) raises `CaptureError`. Past its first frame, a corrupt record
    or block ends the reading: the frames before it are kept, and the corruption is logged in
    one line and counted (`corrupt_records`, `skipped_bytes`); the framing cannot be trusted
    past it, so the rest of the file is skipped. `strict=True` raises `CaptureError` for these
    too. Frames of simple packet blocks (no timestamp) get the time of the frame before them.
    """

    def __init__(
        self,
        path: str | Path | BinaryIO,
        batch_size: int = 4096,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        strict: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if chunk_size < 64:
            raise ValueError(f"chunk_size must be >= 64, got {chunk_size}")
        self.path = path
        self.name = str(path) if isinstance(path, (str, Path)) else str(getattr(path, "name", "<stream>"))
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.strict = strict
        self.format = ""  # "pcap" or "pcapng" once reading started
        self.frames = 0
        self.batches = 0
        self.truncated_records = 0  # 0 or 1: a last record cut short at the end of the file
        self.corrupt_records = 0  # 0 or 1: the corrupt record or block where reading stopped
        self.skipped_bytes = 0  # bytes not read because of a truncated or corrupt record
        self.skipped_blocks = 0  # pcapng blocks that carry no packets (name resolution, stats, ...)
        self.untimed_frames = 0  # frames of simple packet blocks (they carry no timestamp)
        self._section: _Section | None = None  # the current pcapng section
        self._last_ts = 0.0  # time of the last frame read (what an untimed frame is given)
        self._size: int | None = None  # file size, when the file can tell it

    def __iter__(self) -> Iterator[FrameBatch]:
        if isinstance(self.path, (str, Path)):
            try:
                f = open(self.path, "rb")
            except OSError as e:
                raise CaptureError(f"{self.name}: cannot open capture: {e.strerror}") from e
            with f:
                yield from self._read(f)
        else:
            yield from self._read(self.path)

    # -- format detection --------------------------------------------------------------------

    def _read(self, f: BinaryIO) -> Iterator[FrameBatch]:
        self._size = _file_size(f)
        src = _Chunks(f, self.chunk_size)
        src.refill(0, 4)
        if src.end < 4:
            raise CaptureError(f"{self.name}: not a capture file: {src.end} bytes, too short for a header (offset 0)")
        magic = bytes(src.buf[:4])
        if magic == b"\x0a\x0d\x0d\x0a":
            self.format = "pcapng"
            batches = self._read_pcapng(src)
        elif struct.unpack("<I", magic)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS) or struct.unpack(">I", magic)[0] in (
            PCAP_MAGIC_US,
            PCAP_MAGIC_NS,
        ):
            self.format = "pcap"
            batches = self._read_pcap(src)
        else:
            raise CaptureError(f"{self.name}: not a pcap or pcapng file: magic 0x{magic.hex()} at offset 0")
        try:
            for batch in batches:
                self.frames += len(batch)
                self.batches += 1
                self._last_ts = float(batch.ts[-1])
                yield batch
        except CaptureError as e:
            if self.strict or not self.frames or e.offset is None:
                raise
            self._corrupt(e)
        if self.untimed_frames:
            log.warning(
                "%s: %d frames in simple packet blocks carry no timestamp; each was given the time of the "
                "frame before it (0, the epoch, before the first timed frame)",
                self.name,
                self.untimed_frames,
            )

    def _truncated(self, offset: int, have: int, need: int, what: str) -> None:
        msg = f"{self.name}: {what} at offset {offset} is cut short at the end of the file ({have} of {need} bytes)"
        if self.strict or not self.frames:
            raise CaptureError(msg, offset)
        self.truncated_records += 1
        self.skipped_bytes += have
        log.warning("%s; kept the %d frames before it", msg, self.frames)

    def _corrupt(self, e: CaptureError) -> None:
        """Past the first frame, corruption ends the reading with one warning, not an error."""
        assert e.offset is not None
        self.corrupt_records += 1
        rest = "the rest of the file"
        if self._size is not None and self._size >= e.offset:
            self.skipped_bytes += self._size - e.offset
            rest += f" ({self._size - e.offset} bytes)"
        log.warning("%s; kept the %d frames before it and skipped %s", e, self.frames, rest)

    # -- pcap ----------------------------------------------------------------------------------

    def _read_pcap(self, src: "_Chunks") -> Iterator[FrameBatch]:
        src.refill(0, 24)
        if src.end < 24:
            raise CaptureError(f"{self.name}: pcap file header cut short: {src.end} of 24 bytes (offset 0)")
        if struct.unpack_from("<I", src.buf, 0)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            order = "<"
        else:
            order = ">"
        magic, _major, _minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(order + "IHHiIII", src.buf, 0)
        max_caplen = min(max(snaplen, MAX_SNAPLEN), MAX_RECORD)
        units = 1_000_000_000 if magic == PCAP_MAGIC_NS else 1_000_000
        # The upper bits of the link-type field carry FCS information, not the link type.
        linktype = network & 0xFFFF
        if linktype not in SUPPORTED_LINKTYPES:
            raise CaptureError(
                f"{self.name}: unsupported link type {linktype} in the pcap file header (offset 20); "
                f"supported: {sorted(SUPPORTED_LINKTYPES)}"
            )
        incl_at = struct.Struct(order + "I").unpack_from
        u4 = np.dtype(order + "u4")
        pos = 24
        batch_size = self.batch_size
        while True:
            buf, end = src.buf, src.end
            rows: list[int] = []
            append = rows.append
            need = 0
            # Hot loop: only find where each record starts; fields are gathered with numpy below.
            # The buffer has _PAD spare bytes, so reading a length past `end` is safe: the record
            # then ends past `end` too, and the loop stops.
            nxt = pos + 16 + incl_at(buf, pos + 8)[0]
            for _ in range(batch_size):
                if nxt > end:
                    need = 16 if pos + 16 > end else nxt - pos
                    break
                append(pos)
                pos = nxt
                nxt = pos + 16 + incl_at(buf, pos + 8)[0]
            if rows:
                batch, bad = _pcap_batch(src.arr, rows, u4, units, linktype, max_caplen)
                if batch is not None:
                    yield batch
                if bad >= 0:  # a record too long for the file: the error below
                    pos, need = rows[bad], 16 + incl_at(buf, rows[bad] + 8)[0]
            if not need:
                continue
            if need - 16 > max_caplen:
                raise CaptureError(
                    f"{self.name}: corrupt pcap record at offset {src.base + pos}: captured length "
                    f"{need - 16} is larger than the file's snap length ({max_caplen} bytes)",
                    src.base + pos,
                )
            if src.eof:
                if pos < end:
                    self._truncated(src.base + pos, end - pos, need, "pcap record")
                return
            pos = src.refill(pos, need)

    # -- pcapng --------------------------------------------------------------------------------

    def _read_pcapng(self, src: "_Chunks") -> Iterator[FrameBatch]:
        pos = 0
        while True:
            rows: list[int] = []
            fixups: list[tuple[int, int]] = []  # (row, block type) for SPB / obsolete PB rows
            error: CaptureError | None = None
            need, batch_lt = 0, -1
            try:
                pos, need, batch_lt = self._scan_pcapng(src, pos, rows, fixups)
            except CaptureError as e:
                error = e  # deliver the frames before the bad block, then fail
            if rows:
                assert self._section is not None
                batch, bad = _pcapng_batch(src, rows, fixups, self._section, batch_lt, self._last_ts)
                if batch is not None:
                    self.untimed_frames += sum(1 for row, btype in fixups if btype == PCAPNG_SPB and row < len(batch))
                    yield batch
                error = bad or error
            if error is not None:
                raise error
            if not need:
                continue
            if need > MAX_RECORD:
                raise CaptureError(f"{self.name}: corrupt pcapng block at offset {src.base + pos}: length {need}", src.base + pos)
            if src.eof:
                if pos < src.end:
                    self._truncated(src.base + pos, src.end - pos, need, "pcapng block")
                elif self._section is None:
                    raise CaptureError(f"{self.name}: empty pcapng file (offset 0)")
                return
            pos = src.refill(pos, need)

    def _scan_pcapng(
        self, src: "_Chunks", pos: int, rows: list[int], fixups: list[tuple[int, int]]
    ) -> tuple[int, int, int]:
        """Collect the packet blocks of one batch from pos: returns (pos, bytes needed, link type).

        Stops when the batch is full, at a change of link type or section, or when the next block
        is not wholly in the buffer (then `needed` > 0 is its length, or 12 for its header).
        """
        buf, end = src.buf, src.end
        section = self._section
        head = section.head if section else None
        append = rows.append
        batch_lt = -1
        fast_if = -1  # interface whose EPBs take the fast path (link type already checked)
        for _ in range(self.batch_size - len(rows)):
            if pos + 12 > end:
                return pos, 12, batch_lt
            if head is not None:
                btype, blen, ifid = head(buf, pos)
                # Hot path: an EPB of the current interface. Its length fields are checked for
                # the whole batch at once in _pcapng_batch.
                if btype == PCAPNG_EPB and ifid == fast_if:
                    nxt = pos + blen
                    if nxt > end:
                        return pos, blen, batch_lt
                    append(pos)
                    pos = nxt
                    continue
            else:
                btype = struct.unpack_from("<I", buf, pos)[0]
            if btype == PCAPNG_SHB:
                if rows:
                    return pos, 0, batch_lt  # a new section may change byte order: new batch
                blen = self._shb_length(buf, pos, end, src.base)
                if blen is None or pos + blen > end:
                    return pos, blen or 12, batch_lt
                section = self._section = _Section(self.name, buf, pos, src.base)
                head = section.head
                fast_if = -1
                pos += blen
                continue
            if section is None:
                raise CaptureError(
                    f"{self.name}: pcapng block of type 0x{btype:08x} at offset {src.base + pos} "
                    f"before any section header block",
                    src.base + pos,
                )
            btype, blen = section.type_len(buf, pos)
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                raise CaptureError(f"{self.name}: corrupt pcapng block at offset {src.base + pos}: length {blen}", src.base + pos)
            if pos + blen > end:
                return pos, blen, batch_lt
            if btype in (PCAPNG_EPB, PCAPNG_PB, PCAPNG_SPB):
                if blen < (16 if btype == PCAPNG_SPB else 32):
                    raise CaptureError(
                        f"{self.name}: corrupt pcapng packet block at offset {src.base + pos}: length {blen}",
                        src.base + pos,
                    )
                ifid = section.packet_interface(buf, pos, btype)
                lt = section.linktype_of(ifid, src.base + pos)
                if batch_lt != -1 and lt != batch_lt:
                    return pos, 0, batch_lt  # a batch holds one link type
                batch_lt = lt
                if btype == PCAPNG_EPB:
                    fast_if = ifid
                else:
                    fixups.append((len(rows), btype))
                append(pos)
            elif btype == PCAPNG_IDB:
                section.add_interface(buf, pos, blen, src.base)
            else:
                self.skipped_blocks += 1
            pos += blen
        return pos, 0, batch_lt

    def _shb_length(self, buf: bytearray, pos: int, end: int, base: int) -> int | None:
        """Total length of the section header block at pos, or None if more bytes are needed."""
        if pos + 12 > end:
            return None
        bom = bytes(buf[pos + 8 : pos + 12])
        if bom == _PCAPNG_BOM_LE:
            blen = struct.unpack_from("<I", buf, pos + 4)[0]
        elif bom == _PCAPNG_BOM_BE:
            blen = struct.unpack_from(">I", buf, pos + 4)[0]
        else:
            raise CaptureError(f"{self.name}: bad pcapng byte-order magic 0x{bom.hex()} at offset {base + pos + 8}", base + pos)
        if blen < 28 or blen % 4 or blen > MAX_RECORD:
            raise CaptureError(f"{self.name}: corrupt pcapng section header at offset {base + pos}: length {blen}", base + pos)
        return blen


class _Section:
    """Byte order and interfaces of one pcapng section."""

    def __init__(self, name: str, buf: bytearray, pos: int, base: int) -> None:
        self.name = name
        self.order = "<" if bytes(buf[pos + 8 : pos + 12]) == _PCAPNG_BOM_LE else ">"
        major, minor = struct.unpack_from(self.order + "HH", buf, pos + 12)
        if major != 1:
            raise CaptureError(f"{name}: unsupported pcapng version {major}.{minor} at offset {base + pos + 12}", base + pos)
        self.head = struct.Struct(self.order + "III").unpack_from
        self._type_len = struct.Struct(self.order + "II").unpack_from
        self.u4 = np.dtype(self.order + "u4")
        self.linktypes: list[int] = []
        self.idb_offsets: list[int] = []
        self.snaplens: list[int] = []
        self.units: list[int] = []  # timestamp units per second, per interface
        self.tsoffsets: list[int] = []  # seconds added to every timestamp, per interface

    def type_len(self, buf: bytearray, pos: int) -> tuple[int, int]:
        return self._type_len(buf, pos)

    def packet_interface(self, buf: bytearray, pos: int, btype: int) -> int:
        if btype == PCAPNG_SPB:
            return 0  # simple packet blocks belong to the first interface
        if btype == PCAPNG_PB:
            return struct.unpack_from(self.order + "H", buf, pos + 8)[0]
        return struct.unpack_from(self.order + "I", buf, pos + 8)[0]

    def linktype_of(self, ifid: int, offset: int) -> int:
        if ifid >= len(self.linktypes):
            raise CaptureError(
                f"{self.name}: packet block at offset {offset} refers to interface {ifid}, "
                f"but the section declares {len(self.linktypes)} interface(s)",
                offset,
            )
        lt = self.linktypes[ifid]
        if lt not in SUPPORTED_LINKTYPES:
            raise CaptureError(
                f"{self.name}: packet block at offset {offset} is on interface {ifid} with unsupported "
                f"link type {lt} (declared at offset {self.idb_offsets[ifid]}); "
                f"supported: {sorted(SUPPORTED_LINKTYPES)}",
                offset,
            )
        return lt

    def add_interface(self, buf: bytearray, pos: int, blen: int, base: int) -> None:
        if blen < 20:
            raise CaptureError(f"{self.name}: interface description block at offset {base + pos} too short ({blen})", base + pos)
        linktype, _reserved, snaplen = struct.unpack_from(self.order + "HHI", buf, pos + 8)
        units, tsoffset = 1_000_000, 0
        op, oend = pos + 16, pos + blen - 4
        while op + 4 <= oend:
            code, olen = struct.unpack_from(self.order + "HH", buf, op)
            if code == 0:
                break
            if op + 4 + olen > oend:
                raise CaptureError(f"{self.name}: interface option {code} at offset {base + op} overruns its block", base + pos)
            if code == _IDB_OPT_TSRESOL and olen >= 1:
                res = buf[op + 4]
                exp = res & 0x7F
                # High bit set: a power of two; else a power of ten.
                units = 2**exp if res & 0x80 else 10**exp
                if units >= 2**63:
                    raise CaptureError(
                        f"{self.name}: timestamp resolution 0x{res:02x} at offset {base + op + 4} is too fine",
                        base + pos,
                    )
            elif code == _IDB_OPT_TSOFFSET and olen >= 8:
                tsoffset = struct.unpack_from(self.order + "q", buf, op + 4)[0]
            op += 4 + ((olen + 3) & ~3)
        self.linktypes.append(linktype)
        self.idb_offsets.append(base + pos)
        self.snaplens.append(snaplen)
        self.units.append(units)
        self.tsoffsets.append(tsoffset)


class _Chunks:
    """The file as a sequence of fresh buffers; each new one starts with the unread tail of the last.

    A new buffer every time (never reused) because the batches yielded earlier are views of it.
    """

    def __init__(self, f: BinaryIO, chunk_size: int) -> None:
        self.f = f
        self.chunk_size = chunk_size
        self.buf = bytearray()
        self.arr = np.zeros(0, dtype=np.uint8)
        self.base = 0  # file offset of buf[0]
        self.end = 0  # bytes of buf that hold data
        self.eof = False

    def refill(self, pos: int, need: int) -> int:
        """Drop buf[:pos]; read until at least `need` bytes are buffered (or EOF). Returns the new pos."""
        tail = self.end - pos
        size = max(self.chunk_size, need, tail)
        new = bytearray(size + _PAD)
        new[:tail] = memoryview(self.buf)[pos : self.end]
        got = tail
        with memoryview(new) as view:
            while got < size:
                n = self.f.readinto(view[got:size])
                if not n:
                    self.eof = True
                    break
                got += n
        self.base += pos
        self.buf = new
        self.end = got
        self.arr = np.frombuffer(new, dtype=np.uint8, count=got)
        return 0


def _pcap_batch(
    arr: np.ndarray, rows: list[int], u4: np.dtype, units: int, linktype: int, max_caplen: int
) -> tuple[FrameBatch | None, int]:
    """The batch of the records at `rows`, and -1; with a record longer than `max_caplen`, the
    batch of those before it (None if none) and its row."""
    starts = np.array(rows, dtype=np.int64)
    # (n, 16) record headers -> (n, 4) of ts_sec, ts_frac, incl_len, orig_len.
    hdr = arr[starts[:, None] + _ARANGE16].view(u4)
    too_long = hdr[:, 2] > max_caplen
    if too_long.any():
        bad = int(np.argmax(too_long))
        return (_pcap_batch(arr, rows[:bad], u4, units, linktype, max_caplen)[0] if bad else None), bad
    caplens = hdr[:, 2].astype(np.int32)
    first = int(starts[0])
    last = int(starts[-1]) + 16 + int(caplens[-1])
    ts = hdr[:, 0] + hdr[:, 1] / units
    wirelens = np.minimum(hdr[:, 3], np.iinfo(np.int32).max).astype(np.int32)
    return FrameBatch(arr[first:last], starts + (16 - first), caplens, wirelens, ts, linktype), -1


def _pcapng_batch(
    src: _Chunks, rows: list[int], fixups: list[tuple[int, int]], section: _Section, linktype: int, last_ts: float
) -> tuple[FrameBatch | None, CaptureError | None]:
    """The batch of the packet blocks at `rows`; with a corrupt block, the batch of those before it
    and the error. A simple packet block gets the time of the frame before it (`last_ts` before
    the first frame of the batch)."""
    name = section.name
    starts = np.array(rows, dtype=np.int64)
    # Blocks are 4-byte aligned and every chunk starts at a block, so a uint32 view is aligned.
    # It spans the spare bytes after the data: the EPB fields of a short SPB at the end are read
    # (and then replaced) without an IndexError.
    u32 = np.frombuffer(src.buf, dtype=section.u4, count=(src.end + _PAD) // 4)
    q = starts >> 2
    blen = u32[q + 1].astype(np.int64)
    ifid = u32[q + 2].astype(np.int64)
    ts_hi = u32[q + 3].astype(np.uint64)
    ts_lo = u32[q + 4].astype(np.uint64)
    caplen = u32[q + 5].astype(np.int64)
    wirelen = u32[q + 6].astype(np.int64)
    data = starts + 28
    spb_rows: list[int] = []
    for row, btype in fixups:
        p = rows[row]
        if btype == PCAPNG_PB:
            ifid[row] = section.packet_interface(src.buf, p, btype)
        else:  # SPB: no interface id, no timestamp, no captured length
            spb_rows.append(row)
            ifid[row] = 0
            caplen[row] = 0
            data[row] = p + 12
            wirelen[row] = u32[(p >> 2) + 2]
    # Check every EPB's lengths at once: the trailing length copy and the captured length.
    bad = (blen < 32) | (blen % 4 != 0) | (caplen + 32 > blen)
    bad |= u32[q + np.maximum(blen, 4) // 4 - 1].astype(np.int64) != blen
    if spb_rows:
        bad[spb_rows] = False
    if bad.any():
        i = int(np.argmax(bad))
        error = CaptureError(
            f"{name}: corrupt pcapng packet block at offset {src.base + rows[i]}: "
            f"block length {int(blen[i])}, captured length {int(caplen[i])}",
            src.base + rows[i],
        )
        if i == 0:
            return None, error
        batch, _ = _pcapng_batch(src, rows[:i], [f for f in fixups if f[0] < i], section, linktype, last_ts)
        return batch, error
    units = np.array(section.units, dtype=np.uint64)[ifid]
    raw = (ts_hi << np.uint64(32)) | ts_lo
    sec = raw // units
    frac = raw - sec * units
    ts = sec.astype(np.float64) + frac / units + np.array(section.tsoffsets, dtype=np.float64)[ifid]
    for row in spb_rows:
        room = int(blen[row]) - 16
        snap = section.snaplens[0] or room
        caplen[row] = min(int(wirelen[row]), room, snap)
    if spb_rows:
        untimed = np.zeros(len(ts), dtype=bool)
        untimed[spb_rows] = True
        ts = carry_forward(ts, untimed, last_ts)
    first = int(starts[0])
    last = int(starts[-1] + blen[-1])
    batch = FrameBatch(
        src.arr[first:last],
        data - first,
        caplen.astype(np.int32),
        np.minimum(wirelen, np.iinfo(np.int32).max).astype(np.int32),
        ts,
        linktype,
    )
    return batch, None


def _file_size(f: BinaryIO) -> int | None:
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # a stream without a file behind it
        return None


def write_pcap(out: str | Path | BinaryIO, batch: FrameBatch, *, snaplen: int = 262144, header: bool = True) -> int:
    """Write `batch` as a nanosecond-resolution pcap; returns the number of bytes written.

    With `header=False` only the records are written (to append further batches to a file
    whose header was written by an earlier call).
    """
    n = len(batch)
    records = np.zeros(n, dtype=[("sec", "<u4"), ("nsec", "<u4"), ("incl", "<u4"), ("orig", "<u4")])
    ns = np.round(batch.ts * 1e9).astype(np.int64)
    records["sec"] = ns // 1_000_000_000
    records["nsec"] = ns % 1_000_000_000
    records["incl"] = batch.caplens
    records["orig"] = batch.wirelens
    # Interleave 16-byte record headers with frame bytes in one vectorized copy.
    total = 16 * n + int(batch.caplens.sum())
    out_buf = np.empty(total, dtype=np.uint8)
    rec_starts = np.arange(n, dtype=np.int64) * 16
    if n:
        rec_starts[1:] += np.cumsum(batch.caplens[:-1], dtype=np.int64)
    hdr_idx = (rec_starts[:, None] + np.arange(16)).ravel()
    out_buf[hdr_idx] = records.view(np.uint8).reshape(-1)
    data_idx = np.repeat(rec_starts + 16 - batch.offsets, batch.caplens) + _ranges(batch.offsets, batch.caplens)
    out_buf[data_idx] = batch.buf[_ranges(batch.offsets, batch.caplens)]
    blob = (struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, batch.linktype) if header else b"") + out_buf.tobytes()
    if isinstance(out, (str, Path)):
        with open(out, "wb") as f:
            f.write(blob)
    else:
        out.write(blob)
    return len(blob)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s+l) for each (s, l), vectorized."""
    lengths = lengths.astype(np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    idx = np.ones(total, dtype=np.int64)
    idx[0] = starts[0]
    nz = lengths > 0
    s, e = starts[nz].astype(np.int64), ends[nz]
    l = lengths[nz]
    # At each range start, jump from the previous range's last element to the new start.
    idx[e[:-1]] = s[1:] - (s[:-1] + l[:-1] - 1)
    idx[0] = s[0]
    return np.cumsum(idx)
