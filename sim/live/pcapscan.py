"""What a live capture holds: per-packet time and IPv4 addresses, to measure each attack step
from what was actually sent (its first and last attacker packet inside the tool's run)."""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_ETH_IPV4 = 0x0800
_ETH_VLAN = 0x8100


@dataclass
class PacketIndex:
    ts: np.ndarray  # epoch seconds
    src: np.ndarray  # IPv4 as uint32 (0: not IPv4)
    dst: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)

    def window(self, addresses: list[str], t_from: float, t_to: float, *, to: list[str] | None = None) -> np.ndarray:
        """Indices of packets sent by `addresses` (to `to`, if given) within [t_from, t_to]."""
        src = np.array([int(ipaddress.IPv4Address(a)) for a in addresses], dtype=np.uint32)
        sel = np.isin(self.src, src) & (self.ts >= t_from) & (self.ts <= t_to)
        if to:
            sel &= np.isin(self.dst, np.array([int(ipaddress.IPv4Address(a)) for a in to], dtype=np.uint32))
        return np.flatnonzero(sel)

    def involving(self, addresses: list[str], t_from: float, t_to: float) -> int:
        """Packets from or to `addresses` within [t_from, t_to] (both directions of a step)."""
        a = np.array([int(ipaddress.IPv4Address(x)) for x in addresses], dtype=np.uint32)
        return int(((np.isin(self.src, a) | np.isin(self.dst, a)) & (self.ts >= t_from) & (self.ts <= t_to)).sum())


def index_pcap(path: str | Path) -> PacketIndex:
    """Read a classic pcap (Ethernet, as tcpdump writes on a bridge) into a PacketIndex."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file (too short)")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file (magic {magic.hex()})")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
    rec = struct.Struct(endian + "IIII")
    ts, src, dst = [], [], []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = rec.unpack_from(data, off)
        off += 16
        frame = data[off:off + incl]
        off += incl
        ts.append(sec + frac / (1e9 if nano else 1e6))
        eth = 12
        etype = int.from_bytes(frame[eth:eth + 2], "big") if len(frame) >= 14 else 0
        if etype == _ETH_VLAN and len(frame) >= 18:
            eth += 4
            etype = int.from_bytes(frame[eth:eth + 2], "big")
        ip = eth + 2
        if etype == _ETH_IPV4 and len(frame) >= ip + 20:
            src.append(int.from_bytes(frame[ip + 12:ip + 16], "big"))
            dst.append(int.from_bytes(frame[ip + 16:ip + 20], "big"))
        else:
            src.append(0)
            dst.append(0)
    return PacketIndex(np.array(ts, dtype=np.float64), np.array(src, dtype=np.uint32), np.array(dst, dtype=np.uint32))
