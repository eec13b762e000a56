"""Model updates on the gateway: check a pushed bundle, install it, swap it in, answer the hub.

    updater = ModelUpdater(state_dir, detector, swap=pipeline.swap_detector)
    ack = updater.handle(update)     # the Uplink's on_model: signature already verified

Order, and why: unpack (every file's SHA-256), stage on disk, load and probe it (schema,
shapes, a scored row) while the running detector keeps scoring, then make it current on disk
and hand it to `swap`. Any refusal leaves the running model and the disk's `current` as they
were; the ack says which check failed.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from atlas.agent.detect import Detector
from atlas.link.bundle import BUNDLE_NAME, BundleError, unpack_bundle
from atlas.agent.detect.bundle import ModelDir, check_compatible
from atlas.link.wire import ModelAck, ModelUpdate

log = logging.getLogger("atlas.agent.models")


def running_versions(detector: Detector) -> dict[str, str]:
    """What the agent reports in hello, health and status: the bundle and each model."""
    return {BUNDLE_NAME: detector.version, **detector.versions}


def models_root(state_dir: str | Path) -> Path:
    return Path(state_dir) / "models"


def load_installed(state_dir: str | Path, batch: int = 256) -> Detector | None:
    """The bundle the hub last pushed (`<state_dir>/models/current`), checked again, or None.

    A current bundle that no longer passes (a file changed on disk, a new agent with another
    feature schema) is not used: the previous one is tried, then None (the configured models).
    """
    models = ModelDir(models_root(state_dir))
    for folder in (models.current(), models.previous()):
        if folder is None:
            continue
        try:
            models.verify(folder)
            return check_compatible(folder, batch)
        except BundleError as exc:
            log.error("installed model %s not usable: %s", folder.name, exc)
    return None


class ModelUpdater:
    def __init__(self, state_dir: str | Path, detector: Detector,
                 swap: Callable[[Detector], object], batch: int = 256):
        self.models = ModelDir(models_root(state_dir))
        self.detector = detector
        self._swap = swap
        self.batch = batch
        self._lock = threading.Lock()  # one update at a time
        self.history: deque[dict] = deque(maxlen=20)  # for `atlas-agent status`

    @property
    def versions(self) -> dict[str, str]:
        return running_versions(self.detector)

    def handle(self, update: ModelUpdate) -> ModelAck:
        """Install and swap in a signature-checked update; the ack for the hub either way."""
        t0 = time.perf_counter()
        with self._lock:
            try:
                replaced = self._install(update)
            except BundleError as exc:
                log.error("model %s %s refused: %s; still running %s", update.name, update.version, exc,
                          self.detector.version)
                ack = ModelAck(update.name, update.version, applied=False, error=str(exc), model_versions=self.versions)
            else:
                if replaced:
                    log.warning("model %s now running (was %s)", update.version, replaced)
                ack = ModelAck(update.name, update.version, applied=True, model_versions=self.versions)
            self.history.append({"time": time.time(), "version": update.version, "applied": ack.applied,
                                 "error": ack.error, "seconds": round(time.perf_counter() - t0, 4)})
            return ack

    def _install(self, update: ModelUpdate) -> str | None:
        if update.name != BUNDLE_NAME:
            raise BundleError("name", f"{update.name!r}: this agent takes whole bundles ({BUNDLE_NAME!r}) only")
        bundle = unpack_bundle(update.content)
        if bundle.version != update.version:
            raise BundleError("version", f"update says {update.version!r}, the bundle's meta.json {bundle.version!r}")
        folder = self.models.stage(bundle)  # refuses a running version with other content
        if folder == self.models.current() and self.detector.version == bundle.version:
            return None  # already running (a resend after a reconnect): nothing to do
        try:
            detector = check_compatible(folder, self.batch)
        except BundleError:
            self.models.discard(folder)
            raise
        self.models.activate(folder)
        old = self.detector.version
        self._swap(detector)
        self.detector = detector
        return old

    def rollback(self) -> str:
        """Run the previous installed bundle again; returns its version."""
        with self._lock:
            folder = self.models.previous()
            if folder is None:
                raise BundleError("rollback", "no previous model is installed")
            self.models.verify(folder)
            detector = check_compatible(folder, self.batch)
            self.models.rollback()
            self._swap(detector)
            self.detector = detector
            return detector.version
