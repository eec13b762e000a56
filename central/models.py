"""Model bundles at the hub: read what an operator uploads, summarise it for the store.

The bundle format and its checks are the contract's (atlas.link.bundle): the hub stores
and signs exactly the bytes a gateway will check, and refuses at upload what every gateway
would refuse anyway (damaged, wrong file set, no version). Whether the models load and fit a
gateway's feature schema is for each gateway to say: its ack, refused with the reason, is
recorded (`atlas-central models list`, `atlas-central gateways`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from atlas.link.bundle import Bundle, BundleError, pack_bundle, read_bundle_dir, unpack_bundle
from atlas.central.store import ModelBundleRecord

# meta.json fields worth showing an operator (mean/std are long and say nothing at a glance)
_META_SUMMARY = ("version", "schema_version", "trained_at")


class ModelUploadError(ValueError):
    """A path that is not a usable model bundle; the message names the path and the problem."""


def load_bundle(path: str | Path) -> Bundle:
    """A bundle from a models folder (meta.json + the two .tflite files) or a packed bundle file."""
    p = Path(path)
    try:
        if p.is_dir():
            return read_bundle_dir(p)
        if p.is_file():
            return unpack_bundle(p.read_bytes())
    except BundleError as exc:
        raise ModelUploadError(f"{p}: {exc}") from None
    raise ModelUploadError(f"{p}: no such folder or bundle file")


def summary(bundle: Bundle) -> dict:
    meta = bundle.meta
    out = {k: meta[k] for k in _META_SUMMARY if k in meta}
    for part in ("anomaly", "classifier"):
        entry = meta.get(part) or {}
        out[part] = {k: entry[k] for k in ("file", "version", "classes") if k in entry}
    return out


def bundle_record(bundle: Bundle, operator: str, now: float) -> ModelBundleRecord:
    content = pack_bundle(bundle)
    return ModelBundleRecord(version=bundle.version, sha256=hashlib.sha256(content).hexdigest(),
                             size=len(content), meta=summary(bundle), uploaded_at=now,
                             uploaded_by=operator, content=content)
