"""Capture: frames from a live interface or a capture file, in batches.

Everything downstream works on `FrameBatch`: the raw bytes of many frames in one numpy buffer,
so that decoding can be vectorized instead of a Python object per packet.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Link types (DLT_* / LINKTYPE_*) that the decoder understands.
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4/IPv6, no link header
LINKTYPE_RAW_BSD = 12  # also raw IP on some systems
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL = 113  # Linux cooked capture v1 (tcpdump -i any)
LINKTYPE_LINUX_SLL2 = 276  # Linux cooked capture v2


@dataclass
class FrameBatch:
    """Raw frames of one link type, in order in `buf`, possibly with gaps between them (file
    record headers, the kernel ring's packet headers): always go through `offsets`.

    Frame i is `buf[offsets[i] : offsets[i] + caplens[i]]`; `wirelens[i]` is its length on the
    wire (larger than caplen when the capture was truncated by its snap length).
    """

    buf: np.ndarray  # uint8
    offsets: np.ndarray  # int64[N]
    caplens: np.ndarray  # int32[N]
    wirelens: np.ndarray  # int32[N]
    ts: np.ndarray  # float64[N], epoch seconds
    linktype: int

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def frame(self, i: int) -> bytes:
        """The bytes of frame i (for deep dissection and evidence, not for the hot path)."""
        start = int(self.offsets[i])
        return self.buf[start : start + int(self.caplens[i])].tobytes()

    @staticmethod
    def from_frames(frames: list[bytes], ts: list[float] | np.ndarray, linktype: int) -> "FrameBatch":
        """Build a batch from a list of frames (tests, crafted traffic, small captures)."""
        caplens = np.fromiter((len(f) for f in frames), dtype=np.int32, count=len(frames))
        offsets = np.zeros(len(frames), dtype=np.int64)
        if len(frames) > 1:
            np.cumsum(caplens[:-1], out=offsets[1:])
        buf = np.frombuffer(b"".join(frames), dtype=np.uint8)
        return FrameBatch(buf, offsets, caplens, caplens.copy(), np.asarray(ts, dtype=np.float64), linktype)

    @staticmethod
    def concat(batches: list["FrameBatch"]) -> "FrameBatch":
        """One batch of several of the same link type, in order (live capture hands over ring
        blocks; decoding costs per batch and per flow in a batch, so fewer, larger batches)."""
        if len(batches) == 1:
            return batches[0]
        linktype = batches[0].linktype
        if any(b.linktype != linktype for b in batches):
            raise ValueError("FrameBatch.concat: batches of different link types")
        shifts = np.cumsum([0] + [len(b.buf) for b in batches[:-1]])
        return FrameBatch(
            np.concatenate([b.buf for b in batches]),
            np.concatenate([b.offsets + shift for b, shift in zip(batches, shifts)]),
            np.concatenate([b.caplens for b in batches]),
            np.concatenate([b.wirelens for b in batches]),
            np.concatenate([b.ts for b in batches]),
            linktype,
        )
