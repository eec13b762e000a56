"""Vectorized byte building: many variable-length byte strings at once, without a Python loop.

`Blobs` holds N byte strings back to back in one uint8 buffer. Text and binary messages are
built as *columns*: each column is an (N, width) uint8 matrix whose row i holds `lens[i]`
meaningful bytes, left-aligned. `join()` concatenates the columns of every row and drops the
padding with one boolean mask, so a million JSON payloads or MQTT headers cost a few numpy
passes instead of a million Python calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l), vectorized (int64)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    keep = lengths > 0
    if not keep.all():
        starts, lengths = starts[keep], lengths[keep]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    steps = np.ones(total, dtype=np.int64)
    ends = np.cumsum(lengths)
    # At each range start, jump from the previous range's last element to the new start.
    steps[ends[:-1]] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
    steps[0] = starts[0]
    return np.cumsum(steps)


_COPY_CHUNK = 1 << 22


def copy_ranges(dst: np.ndarray, dst_offs: np.ndarray, src: np.ndarray, src_offs: np.ndarray, lens: np.ndarray, *, big: int = 384) -> None:
    """dst[d:d+l] = src[s:s+l] for every (d, s, l): short ranges in one fancy-index pass, long
    ones as slice copies (a memcpy each beats 8-byte indices per byte)."""
    lens = np.asarray(lens, dtype=np.int64)
    small = lens < big
    rows = np.flatnonzero(small) if not small.all() else None
    d, s, n = (dst_offs, src_offs, lens) if rows is None else (dst_offs[rows], src_offs[rows], lens[rows])
    # A few MB of bytes at a time: the int64 index arrays stay small (no page-fault storms).
    cut = np.searchsorted(np.cumsum(n), np.arange(1, int(n.sum()) // _COPY_CHUNK + 1) * _COPY_CHUNK)
    for a, b in zip(np.concatenate([[0], cut]), np.concatenate([cut, [n.size]])):
        if b > a:
            dst[ranges(d[a:b], n[a:b])] = src[ranges(s[a:b], n[a:b])]
    if rows is None:
        return
    large = ~small
    for d, s, l in zip(dst_offs[large].tolist(), src_offs[large].tolist(), lens[large].tolist()):
        dst[d : d + l] = src[s : s + l]


def offsets_of(lens: np.ndarray) -> np.ndarray:
    """Start offsets of strings laid back to back with these lengths."""
    offs = np.zeros(len(lens), dtype=np.int64)
    if len(lens) > 1:
        np.cumsum(lens[:-1], out=offs[1:])
    return offs


@dataclass
class Blobs:
    """N byte strings back to back: string i is buf[offs[i] : offs[i] + lens[i]]."""

    buf: np.ndarray  # uint8
    offs: np.ndarray  # int64[N]
    lens: np.ndarray  # int64[N]

    def __len__(self) -> int:
        return int(self.lens.shape[0])

    def is_packed(self) -> bool:
        """Strings back to back in row order, filling buf exactly."""
        n = len(self)
        return (n == 0 or int(self.offs[0]) == 0) and int(self.lens.sum()) == self.buf.shape[0] and (
            n < 2 or bool(np.all(self.offs[1:] == self.offs[:-1] + self.lens[:-1])))

    def packed(self) -> "Blobs":
        """This Blobs, or a copy laid out back to back in row order."""
        if self.is_packed():
            return self
        offs = offsets_of(self.lens)
        buf = np.empty(int(self.lens.sum()), dtype=np.uint8)
        copy_ranges(buf, offs, self.buf, self.offs, self.lens)
        return Blobs(buf, offs, self.lens)

    def get(self, i: int) -> bytes:
        o = int(self.offs[i])
        return self.buf[o : o + int(self.lens[i])].tobytes()

    def tolist(self) -> list[bytes]:
        return [self.get(i) for i in range(len(self))]

    @staticmethod
    def empty() -> "Blobs":
        return Blobs(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))

    @staticmethod
    def from_list(items: Sequence[bytes]) -> "Blobs":
        lens = np.fromiter((len(b) for b in items), dtype=np.int64, count=len(items))
        return Blobs(np.frombuffer(b"".join(items), dtype=np.uint8).copy(), offsets_of(lens), lens)

    @staticmethod
    def repeat(item: bytes, n: int) -> "Blobs":
        """n copies of one byte string (shares nothing: the buffer holds all copies)."""
        lens = np.full(n, len(item), dtype=np.int64)
        buf = np.tile(np.frombuffer(item, dtype=np.uint8), n)
        return Blobs(buf, offsets_of(lens), lens)

    def take(self, idx: np.ndarray) -> "Blobs":
        """A new contiguous Blobs with strings idx (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.shape[0] == len(self) and bool(np.all(idx == np.arange(len(self)))):
            return self
        lens = self.lens[idx]
        offs = offsets_of(lens)
        buf = np.empty(int(lens.sum()), dtype=np.uint8)
        copy_ranges(buf, offs, self.buf, self.offs[idx], lens)
        return Blobs(buf, offs, lens)

    @staticmethod
    def concat(parts: Sequence["Blobs"]) -> "Blobs":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Blobs.empty()
        if len(parts) == 1:
            return parts[0]
        bases = np.cumsum([0] + [len(p.buf) for p in parts[:-1]])
        return Blobs(
            np.concatenate([p.buf for p in parts]),
            np.concatenate([p.offs + b for p, b in zip(parts, bases)]),
            np.concatenate([p.lens for p in parts]),
        )


# A column: a constant byte string (same for every row) or (matrix[N, w], lens[N]).
Column = Union[bytes, tuple]


def join(columns: Sequence[Column], n: int, *, chunk: int = 65536) -> Blobs:
    """Row-wise concatenation of columns into N byte strings (see module docstring)."""
    if n == 0:
        return Blobs.empty()
    pieces = []
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        mats, masks = [], []
        for col in columns:
            if isinstance(col, (bytes, bytearray)):
                if not col:
                    continue
                row = np.frombuffer(bytes(col), dtype=np.uint8)
                mats.append(np.broadcast_to(row, (hi - lo, len(row))))
                masks.append(np.ones((hi - lo, len(row)), dtype=bool))
            else:
                mat, lens = col
                mat = mat[lo:hi]
                if mat.shape[1] == 0:
                    continue
                mats.append(mat)
                masks.append(np.arange(mat.shape[1])[None, :] < np.asarray(lens[lo:hi])[:, None])
        m = np.hstack(mats) if len(mats) > 1 else np.ascontiguousarray(mats[0])
        k = np.hstack(masks) if len(masks) > 1 else masks[0]
        lens = k.sum(axis=1, dtype=np.int64)
        pieces.append(Blobs(m[k], offsets_of(lens), lens))
    return Blobs.concat(pieces)


def blobs_column(b: Blobs) -> tuple:
    """A Blobs as a join() column (padded matrix)."""
    n = len(b)
    w = int(b.lens.max()) if n else 0
    mat = np.zeros((n, w), dtype=np.uint8)
    if n and w:
        mask = np.arange(w)[None, :] < b.lens[:, None]
        # A boolean-mask assignment consumes its source in row order: laid-out-in-order
        # strings need no index arrays.
        mat[mask] = b.buf if b.is_packed() else b.buf[ranges(b.offs, b.lens)]
    return mat, b.lens


def table_column(strings: Sequence[bytes], idx: np.ndarray) -> tuple:
    """Column picking strings[idx[i]] for row i."""
    lens_t = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
    w = int(lens_t.max()) if len(strings) else 0
    table = np.zeros((len(strings), max(w, 1)), dtype=np.uint8)
    for i, s in enumerate(strings):
        table[i, : len(s)] = np.frombuffer(s, dtype=np.uint8)
    idx = np.asarray(idx, dtype=np.int64)
    return table[idx][:, :w], lens_t[idx]


_POW10 = 10 ** np.arange(19, dtype=np.int64)


def uint_column(values: np.ndarray, *, width: int | None = None) -> tuple:
    """Decimal text of non-negative integers (no leading zeros), or zero-padded to `width`."""
    v = np.asarray(values, dtype=np.int64)
    vmax = int(v.max()) if v.size else 0
    nd_max = len(str(vmax)) if width is None else width
    right = np.empty((v.size, nd_max), dtype=np.uint8)
    for j in range(nd_max):
        right[:, nd_max - 1 - j] = (v // _POW10[j]) % 10 + 48
    if width is not None:
        return right, np.full(v.size, width, dtype=np.int64)
    nd = np.ones(v.size, dtype=np.int64)
    for j in range(1, nd_max):
        nd += v >= _POW10[j]
    shift = nd_max - nd
    cols = np.minimum(np.arange(nd_max)[None, :] + shift[:, None], nd_max - 1)
    return np.take_along_axis(right, cols, axis=1), nd


def decimal_columns(values: np.ndarray, decimals: int) -> list[tuple]:
    """Columns spelling each value with exactly `decimals` decimals, like printf("%.*f")."""
    x = np.asarray(values, dtype=np.float64)
    scaled = np.rint(np.abs(x) * 10.0**decimals).astype(np.int64)
    neg = (x < 0) & (scaled > 0)
    sign = (np.full((x.size, 1), ord("-"), dtype=np.uint8), neg.astype(np.int64))
    if decimals == 0:
        return [sign, uint_column(scaled)]
    ip, fp = np.divmod(scaled, 10**decimals)
    frac_mat, frac_len = uint_column(fp, width=decimals)
    dot = np.full((x.size, 1), ord("."), dtype=np.uint8)
    return [sign, uint_column(ip), (np.hstack([dot, frac_mat]), frac_len + 1)]


def u16be_column(values: np.ndarray) -> tuple:
    v = np.asarray(values, dtype=np.int64)
    mat = np.empty((v.size, 2), dtype=np.uint8)
    mat[:, 0] = (v >> 8) & 0xFF
    mat[:, 1] = v & 0xFF
    return mat, np.full(v.size, 2, dtype=np.int64)


def varint_column(values: np.ndarray) -> tuple:
    """MQTT Variable Byte Integer (remaining length), 1 to 4 bytes."""
    v = np.asarray(values, dtype=np.int64)
    if v.size and int(v.max()) > 268_435_455:
        raise ValueError("MQTT remaining length above 268435455")
    mat = np.empty((v.size, 4), dtype=np.uint8)
    n = np.ones(v.size, dtype=np.int64)
    rest = v.copy()
    for j in range(4):
        byte = rest & 0x7F
        rest >>= 7
        more = rest > 0
        mat[:, j] = byte | np.where(more, 0x80, 0)
        if j < 3:
            n += more
    return mat, n


def varint_len(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.int64)
    return 1 + (v >= 128) + (v >= 16384) + (v >= 2_097_152)


def rowcat(parts: Sequence[Blobs]) -> Blobs:
    """Row-wise concatenation of Blobs with the same number of rows (no padding, any sizes)."""
    n = len(parts[0])
    lens = np.zeros(n, dtype=np.int64)
    for p in parts:
        lens += p.lens
    offs = offsets_of(lens)
    out = np.empty(int(lens.sum()), dtype=np.uint8)
    pos = offs.copy()
    for p in parts:
        copy_ranges(out, pos, p.buf, p.offs, p.lens)
        pos += p.lens
    return Blobs(out, offs, lens)


def last_at_or_before(group_a: np.ndarray, t_a: np.ndarray, group_q: np.ndarray, t_q: np.ndarray) -> np.ndarray:
    """For each query (group_q, t_q): index of the last row of a (sorted by (group, t)) in the
    same group with t_a <= t_q, or -1. Works for any time range (no packed keys)."""
    m = group_a.shape[0]
    typ = np.concatenate([np.zeros(m, dtype=np.int8), np.ones(group_q.shape[0], dtype=np.int8)])
    o = np.lexsort((typ, np.concatenate([t_a, t_q]), np.concatenate([group_a, group_q])))
    before = np.cumsum(typ[o] == 0)
    j = np.empty(group_q.shape[0], dtype=np.int64)
    qmask = typ[o] == 1
    j[o[qmask] - m] = before[qmask] - 1
    jj = np.maximum(j, 0)
    if m == 0:
        return np.full(group_q.shape[0], -1, dtype=np.int64)
    return np.where((j >= 0) & (group_a[jj] == group_q), j, -1)
