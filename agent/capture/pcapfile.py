"""Capture files: read pcap/pcapng into FrameBatches, write FrameBatches as pcap."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from atlas.agent.capture import FrameBatch

PCAP_MAGIC_NS = 0xA1B23C4D


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
