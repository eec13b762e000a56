"""Model bundles at the hub: read what an operator uploads, summarise it for the store, and
roll the desired bundle out to the gateways (`ModelRollout`).

The bundle format and its checks are the contract's (atlas.link.bundle): the hub stores
and signs exactly the bytes a gateway will check, and refuses at upload what every gateway
would refuse anyway (damaged, wrong file set, no version). Whether the models load and fit a
gateway's feature schema is for each gateway to say: its ack, refused with the reason, is
recorded (`atlas-central models list`, `atlas-central gateways`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from atlas.link.bundle import (BUNDLE_NAME, Bundle, BundleError, pack_bundle, read_bundle_dir,
                               unpack_bundle)
from atlas.link.wire import ModelAck, ModelUpdate
from atlas.central.audit import AuditLog
from atlas.central.store import ModelBundleRecord, ModelStatus, Store

if TYPE_CHECKING:
    from atlas.central.dispatch import Dispatcher, Signer
    from atlas.central.outbox import Outbox

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


class ModelRollout:
    """Which bundle each gateway should run, sending it, and what the gateways answered.

    Callers hold the hub's lock; `push` and `ack` run in the caller's store transaction."""

    def __init__(self, store: Store, signer: "Signer", audit: AuditLog,
                 dispatch: "Dispatcher"):
        self.store = store
        self.signer = signer
        self.audit = audit
        self.dispatch = dispatch

    def ack(self, gateway_id: str, ack: ModelAck, now: float, outbox: "Outbox") -> None:
        """A gateway installed a pushed bundle, or refused it (and why): recorded and audited."""
        version = str(ack.version)[:128]
        error = str(ack.error)[:2000]
        sent = next((s.sent_at for s in self.store.model_status(gateway_id)
                     if s.version == version), None)
        self.store.put_model_status(ModelStatus(
            gateway_id, version, "applied" if ack.applied else "refused", error, sent, now))
        if ack.model_versions:
            self.store.set_gateway_models(gateway_id, dict(ack.model_versions))
        self.audit.append("model_ack", {"gateway": gateway_id, "version": version,
                                        "applied": bool(ack.applied), "error": error,
                                        "running": dict(ack.model_versions)}, now)
        outbox.event("model_acked", now, gateway=gateway_id, version=version,
                     applied=bool(ack.applied), error=error)

    def push(self, version: str, targets: list[str], operator: str, now: float,
             outbox: "Outbox") -> None:
        """Make bundle `version` the desired model of `targets` (none: every gateway), sign it
        once and audit the push. Raises ModelPushError for an unknown version."""
        record = self.store.get_model_bundle(version, content=True)
        if record is None:
            raise ModelPushError(f"no model bundle {version!r} (upload it with "
                                 "`atlas-central models push`)")
        if record.signature is None:
            signed = self.signer.sign_model(BUNDLE_NAME, version, record.content)
            self.store.set_model_signature(version, signed.signature)
        for target in targets or ["*"]:
            self.store.set_model_target(target, version, now, operator)
        # a new push retries gateways that refused this version before
        for gateway in targets or [g.id for g in self.store.list_gateways()]:
            known = self.store.get_gateway(gateway)
            if known is None or known.model_versions.get(BUNDLE_NAME) != version:
                self.store.put_model_status(ModelStatus(gateway, version, "pending"))
        self.audit.append("model_push", {
            "version": version, "sha256": record.sha256, "size": record.size,
            "gateways": targets or "all", "operator": operator,
            "uploaded_by": record.uploaded_by}, now)
        outbox.event("model_pushed", now, version=version, gateways=targets or "all",
                     operator=operator)

    def due(self, gateway_id: str) -> ModelUpdate | None:
        """The signed bundle this gateway should run and does not (nor has refused), or None."""
        version = self.store.model_target(gateway_id)
        if version is None:
            return None
        gateway = self.store.get_gateway(gateway_id)
        if gateway is not None and gateway.model_versions.get(BUNDLE_NAME) == version:
            return None
        if any(s.version == version and s.state == "refused"
               for s in self.store.model_status(gateway_id)):
            return None  # a refusal waits for the operator's next push, not every reconnect
        record = self.store.get_model_bundle(version, content=True)
        if record is None or record.signature is None:
            return None
        return ModelUpdate(BUNDLE_NAME, version, record.content, record.signature)

    def mark_sent(self, gateway_id: str, version: str, now: float) -> None:
        with self.store.transaction():
            self.store.put_model_status(ModelStatus(gateway_id, version, "sent", sent_at=now))

    def send_if_due(self, gateway_id: str, now: float) -> bool:
        update = self.due(gateway_id)
        feeds = self.dispatch.feeds_of(gateway_id)
        if update is None or not feeds:
            return False
        self.mark_sent(gateway_id, update.version, now)
        for feed in feeds:
            feed.push_model(update)
        return True


class ModelPushError(ValueError):
    """An operator asked to push a bundle the hub does not hold."""
