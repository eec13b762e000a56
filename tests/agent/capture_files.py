"""Capture files written byte by byte (pcap, and pcapng blocks per the pcapng spec) for tests."""
from __future__ import annotations

import struct

from atlas.agent.capture import LINKTYPE_ETHERNET


def pcap_file(records, *, order="<", nanos=False, linktype=LINKTYPE_ETHERNET, snaplen=65535) -> bytes:
    """records: (sec, frac, data, wirelen)."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for sec, frac, data, wirelen in records:
        out.append(struct.pack(order + "IIII", sec, frac, len(data), wirelen) + data)
    return b"".join(out)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def block(order: str, btype: int, body: bytes) -> bytes:
    body = _pad(body)
    blen = 12 + len(body)
    return struct.pack(order + "II", btype, blen) + body + struct.pack(order + "I", blen)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, linktype: int, *, snaplen: int = 0, tsresol: int | None = None, tsoffset: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += struct.pack(order + "HH", 9, 1) + _pad(bytes([tsresol]))
    if tsoffset is not None:
        opts += struct.pack(order + "HHq", 14, 8, tsoffset)
    if opts:
        opts += struct.pack(order + "HH", 0, 0)
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb(order: str, ifid: int, ticks: int, data: bytes, wirelen: int | None = None) -> bytes:
    wirelen = len(data) if wirelen is None else wirelen
    return block(order, 6, struct.pack(order + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wirelen) + data)


def spb(order: str, data: bytes, wirelen: int | None = None) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(data) if wirelen is None else wirelen) + data)


def old_pb(order: str, ifid: int, ticks: int, data: bytes) -> bytes:
    return block(
        order, 2, struct.pack(order + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data
    )
