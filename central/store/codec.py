"""Packing a batch's device summaries into one compact blob, and back.

The hub stores each telemetry batch's summaries as ONE row (one blob) instead of one row per
device: on the ingest path that is about twice as cheap per record as a row upsert. Two blob
formats, told apart by their first byte; never pickle (the database must not be able to run
code in whoever reads it):

- "W", what ingest writes: the batch exactly as the gateway sent it (the envelope's payload, a
  zstd-compressed atlas.v1.TelemetryBatch). Nothing is decoded or re-compressed on the way in;
  the summaries are decoded when read. This is what takes the hub's ingest well above 100k
  records/s on one core (bench/test_bench_hub.py).

    blob   = b"W" version(u8=1) codec(u8, atlas.v1.Codec) payload

- "D", for summaries that arrive as objects (not from the wire): the hub's own packing.

    blob   = b"D" version(u8=1) zstd( count(u32) record* )
    record = len(device)(u16) len(address)(u16) device address
             start(f64) end(f64) packets(i64) bytes(i64) schema_version(u16) n(u16) f32[n]

All little-endian; strings UTF-8.
"""
from __future__ import annotations

import struct
import sys
from array import array

import zstandard

from atlas.link.wire import DeviceSummary
from atlas.link.serde import PackedDevices, WireError, devices_from_payload

MAGIC = b"D"
WIRE_MAGIC = b"W"
VERSION = 1
_HEAD = struct.Struct("<HH")
_BODY = struct.Struct("<ddqqHH")
_COUNT = struct.Struct("<I")
_BIG_ENDIAN = sys.byteorder == "big"


class CodecError(ValueError):
    """A stored blob that is not a device-summary pack this code can read."""


def pack_devices(devices: list[DeviceSummary]) -> bytes:
    parts = [_COUNT.pack(len(devices))]
    append = parts.append
    head, body = _HEAD.pack, _BODY.pack
    for d in devices:
        name = d.device.encode("utf-8")
        address = d.address.encode("utf-8")
        features = array("f", d.features)  # C speed, unlike struct.pack(*features)
        if _BIG_ENDIAN:
            features.byteswap()
        append(head(len(name), len(address)))
        append(name)
        append(address)
        append(body(d.start, d.end, d.packets, d.bytes, d.schema_version, len(features)))
        append(features.tobytes())
    # a compressor context per call: contexts are not safe to share between threads, and
    # level 1 because this runs before the hub acknowledges the batch
    raw = b"".join(parts)
    return MAGIC + bytes((VERSION,)) + zstandard.ZstdCompressor(level=1).compress(raw)


def pack_wire(devices: PackedDevices) -> bytes:
    """The summaries as the gateway sent them: its payload, with a 3-byte header."""
    return WIRE_MAGIC + bytes((VERSION, devices.codec)) + devices.payload


def pack_any(devices) -> bytes:
    return pack_wire(devices) if isinstance(devices, PackedDevices) else pack_devices(list(devices))


def _unpack_wire(blob: bytes) -> list[DeviceSummary]:
    if len(blob) < 3 or blob[1] != VERSION:
        raise CodecError(f"wire device-summary blob version {blob[1] if len(blob) > 1 else '?'}, "
                         f"this code reads {VERSION}")
    try:
        return devices_from_payload(blob[3:], blob[2])
    except WireError as exc:
        raise CodecError(f"corrupt wire device-summary blob: {exc}") from None


def unpack_devices(blob: bytes) -> list[DeviceSummary]:
    if blob[:1] == WIRE_MAGIC:
        return _unpack_wire(blob)
    if len(blob) < 2 or blob[:1] != MAGIC:
        raise CodecError("not a device-summary pack")
    if blob[1] != VERSION:
        raise CodecError(f"device-summary pack version {blob[1]}, this code reads {VERSION}")
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob[2:])
    except zstandard.ZstdError as exc:
        raise CodecError(f"corrupt device-summary pack: {exc}") from None
    try:
        (count,) = _COUNT.unpack_from(raw, 0)
        pos = _COUNT.size
        out = []
        for _ in range(count):
            name_len, address_len = _HEAD.unpack_from(raw, pos)
            pos += _HEAD.size
            name = raw[pos:pos + name_len].decode("utf-8")
            pos += name_len
            address = raw[pos:pos + address_len].decode("utf-8")
            pos += address_len
            start, end, packets, nbytes, schema, n = _BODY.unpack_from(raw, pos)
            pos += _BODY.size
            features = list(struct.unpack_from(f"<{n}f", raw, pos))
            pos += 4 * n
            out.append(DeviceSummary(device=name, address=address, start=start, end=end,
                                     packets=packets, bytes=nbytes, features=features,
                                     schema_version=schema))
    except (struct.error, UnicodeDecodeError) as exc:
        raise CodecError(f"truncated device-summary pack: {exc}") from None
    return out
