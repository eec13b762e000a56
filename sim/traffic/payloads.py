"""Message payloads from a topic's profile: JSON built column by column, or binary blobs.

Numbers follow each device: a per-device base drawn from the field's `typical` range plus
per-message noise `sd`, clipped to the physical limits [min, max]; counters only grow. So a
device's readings look like one instrument's, and the fleet spans the typical range.
"""
from __future__ import annotations

import json
import zlib

import numpy as np

from atlas.firmware_profiles import FieldSpec, TopicSpec
from atlas.sim.traffic.vec import Blobs, decimal_columns, join, offsets_of, table_column, uint_column

NS = 1_000_000_000
_JPEG_HEAD = bytes.fromhex("ffd8ffe000104a46494600010101004800480000")
_JPEG_TAIL = bytes.fromhex("ffd9")


def field_values(f: FieldSpec, dev: np.ndarray, n_dev: int, rng: np.random.Generator, order_key: np.ndarray) -> np.ndarray:
    """Numeric values of an int/float/counter field for messages of devices `dev`."""
    if f.type == "counter":
        start = rng.uniform(f.start[0], f.start[1], n_dev)
        steps = rng.uniform(f.step[0], f.step[1], dev.shape[0])
        # Cumulative sum of each device's steps in time order.
        o = np.lexsort((order_key, dev))
        cs = np.cumsum(steps[o])
        d_sorted = dev[o]
        first = np.concatenate([[True], d_sorted[1:] != d_sorted[:-1]]) if d_sorted.size else np.zeros(0, bool)
        grp = np.maximum.accumulate(np.where(first, np.arange(d_sorted.size), 0))
        before = (cs - steps[o])[grp]
        out = np.empty(dev.shape[0])
        out[o] = start[d_sorted] + cs - before
        return np.minimum(out, f.max)
    base = rng.uniform(f.typical[0], f.typical[1], n_dev)
    vals = base[dev] + (rng.normal(0.0, f.sd, dev.shape[0]) if f.sd > 0 else 0.0)
    vals = np.clip(vals, f.min, f.max)
    if f.type == "int":
        vals = np.clip(np.rint(vals), np.ceil(f.min), np.floor(f.max))
    return vals


def json_payloads(
    topic: TopicSpec,
    dev: np.ndarray,
    n_dev: int,
    ts_ns: np.ndarray,
    client_ids: list[str],
    rng: np.random.Generator,
    overrides: dict[str, np.ndarray] | None = None,
) -> Blobs:
    """One JSON object per message; `overrides` replaces a numeric field's values (false data
    injection writes physically impossible values through it)."""
    n = dev.shape[0]
    cols: list = []
    for k, f in enumerate(topic.fields):
        cols.append((b"{" if k == 0 else b",") + json.dumps(f.name).encode() + b":")
        if overrides and f.name in overrides:
            cols.extend(decimal_columns(overrides[f.name], max(f.decimals, 0)))
        elif f.type == "timestamp":
            scale = 1_000_000 if f.unit == "ms" else NS
            cols.append(uint_column(ts_ns // scale))
        elif f.type in ("int", "float", "counter"):
            cols.extend(decimal_columns(field_values(f, dev, n_dev, rng, ts_ns), f.decimals))
        elif f.type == "bool":
            cols.append(table_column([b"false", b"true"], (rng.random(n) < f.p).astype(np.int64)))
        elif f.type == "enum":
            w = np.array(f.weights)
            pick = rng.choice(len(f.values), size=n, p=w / w.sum())
            cols.append(table_column([json.dumps(v).encode() for v in f.values], pick))
        elif f.type == "device_id":
            cols.append(table_column([json.dumps(c).encode() for c in client_ids], dev))
        elif f.type == "const":
            cols.append(json.dumps(f.value).encode())
    cols.append(b"}")
    return join(cols, n)


def random_payloads(n: int, lo: int, hi: int, rng: np.random.Generator) -> Blobs:
    """n payloads of random bytes, sizes uniform in [lo, hi] (firmware chunks, ciphertext)."""
    lens = rng.integers(lo, hi + 1, n).astype(np.int64)
    return Blobs(np.frombuffer(rng.bytes(int(lens.sum())), dtype=np.uint8).copy(), offsets_of(lens), lens)


def binary_payloads(topic: TopicSpec, n: int, rng: np.random.Generator) -> Blobs:
    """JPEG-shaped snapshots: a JFIF header, entropy-coded-looking bytes, an end marker."""
    lo, hi = topic.size
    lens = rng.integers(lo, hi + 1, n).astype(np.int64)
    buf = np.frombuffer(rng.bytes(int(lens.sum())), dtype=np.uint8).copy()
    offs = offsets_of(lens)
    head = np.frombuffer(_JPEG_HEAD, dtype=np.uint8)
    tail = np.frombuffer(_JPEG_TAIL, dtype=np.uint8)
    big = lens >= len(head) + len(tail)
    for j, b in enumerate(head):
        buf[offs[big] + j] = b
    for j, b in enumerate(tail):
        buf[offs[big] + lens[big] - len(tail) + j] = b
    return Blobs(buf, offs, lens)


def topic_payloads(topic: TopicSpec, dev: np.ndarray, n_dev: int, ts_ns: np.ndarray, client_ids: list[str], rng: np.random.Generator) -> Blobs:
    if topic.format == "binary":
        return binary_payloads(topic, dev.shape[0], rng)
    return json_payloads(topic, dev, n_dev, ts_ns, client_ids, rng)


def topic_rng(seed: int, *parts: str) -> np.random.Generator:
    """A generator keyed by seed and names, stable across Python runs (no hash salt)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32] + [zlib.crc32(p.encode()) for p in parts])
