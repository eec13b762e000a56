"""Installed model bundles on the gateway: check a bundle works here, install it, roll back.

The bundle format itself is the contract's (atlas.link.bundle). Installed bundles live under
`<state_dir>/models/`:

    <version>/            meta.json, the .tflite files, MANIFEST.json (the bundle's header)
    current -> <version>  what the agent scores with (a symlink, replaced atomically)
    previous -> <version> the one before, kept for rollback

Nothing is made current before it passed `check_compatible` (schema, shapes, both models load
and score a probe row): a bad bundle is refused and the running model keeps running.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from atlas.agent.detect import Detector, ModelError
from atlas.agent.features.schema import FEATURE_NAMES, SCHEMA_VERSION
from atlas.link.bundle import (MANIFEST, META, Bundle, BundleError, _bundle_from_files, _sha256, check_version)

def check_compatible(folder: Path, batch: int = 256) -> Detector:
    """Load the models in `folder` the way the agent will use them, and prove they work here:
    the feature schema, the tensor shapes, and a probe row scored by both models."""
    try:
        detector = Detector(folder, batch=batch)  # checks schema_version and feature names
    except ModelError as exc:
        raise BundleError("schema_version", str(exc)) from None
    except (KeyError, TypeError) as exc:
        raise BundleError(META, f"missing or malformed field {exc}") from None
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise BundleError("load", str(exc)) from None
    n = len(FEATURE_NAMES)
    ae, clf = detector.anomaly_model, detector.classifier
    if (ae.n_inputs, ae.n_outputs) != (n, n):
        raise BundleError("shape", f"anomaly model maps {ae.n_inputs} -> {ae.n_outputs} values, "
                          f"schema {SCHEMA_VERSION} has {n} features")
    if (clf.n_inputs, clf.n_outputs) != (n, len(detector.classes)):
        raise BundleError("shape", f"classifier maps {clf.n_inputs} -> {clf.n_outputs} values, "
                          f"expected {n} features -> {len(detector.classes)} classes")
    if len(detector.mean) != n or len(detector.std) != n or not np.all(detector.std > 0):
        raise BundleError(META, f"mean and std must hold {n} values, std > 0")
    # A probe: a typical row (the training mean) and a busy one; both must score to finite values.
    probe = np.stack([detector.mean, detector.mean + 3 * detector.std]).astype(np.float32)
    try:
        scores = detector.score(probe)
    except Exception as exc:  # noqa: BLE001 - whatever the interpreter raises, the model is unusable
        raise BundleError("probe", f"scoring a probe row failed: {exc}") from None
    if not (np.all(np.isfinite(scores.score)) and np.all(np.isfinite(scores.anomaly))):
        raise BundleError("probe", "a probe row scored to a non-finite value")
    return detector


class ModelDir:
    """Installed bundles under `<state_dir>/models` (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _link(self, name: str) -> Path | None:
        link = self.root / name
        if not link.is_symlink():
            return None
        target = self.root / os.readlink(link)
        return target if target.is_dir() else None

    def current(self) -> Path | None:
        return self._link("current")

    def previous(self) -> Path | None:
        return self._link("previous")

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()
                      and not p.name.startswith("."))

    def verify(self, folder: Path) -> Bundle:
        """Re-read an installed bundle and check every file against its MANIFEST.json."""
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            files = {e["name"]: (folder / e["name"]).read_bytes() for e in manifest["files"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError("installed", f"{folder}: unreadable ({exc})") from None
        for entry in manifest["files"]:
            if _sha256(files[entry["name"]]).hexdigest() != entry["sha256"]:
                raise BundleError("sha256", f"{folder / entry['name']}: changed on disk since it was installed")
        return _bundle_from_files(files)

    def stage(self, bundle: Bundle) -> Path:
        """Write a bundle to `<root>/<version>` (durably, through a temporary folder); not current yet.

        The same version already there with the same files is reused; with other files it is
        refused (a version names one content, or rollback would be ambiguous)."""
        final = self.root / check_version(bundle.version)
        if final.is_dir():
            try:
                same = self.verify(final).files == bundle.files
            except BundleError:
                same = False
            if same:
                return final
            if final == self.current():
                raise BundleError("version", f"{bundle.version} is running with other content; "
                                  "a new model needs a new version")
            shutil.rmtree(final)  # a leftover that is not in use (a failed install)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".incoming-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for name, body in {**bundle.files, MANIFEST: json.dumps(bundle.manifest(), indent=1).encode()}.items():
                with open(tmp / name, "wb") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def discard(self, folder: Path) -> None:
        """Remove a staged bundle that failed its checks (never the current or previous one)."""
        if folder not in (self.current(), self.previous()):
            shutil.rmtree(folder, ignore_errors=True)

    def activate(self, folder: Path) -> None:
        """Make `folder` current; the current one becomes previous. Each link is replaced
        atomically (rename over it), so a crash leaves either the old or the new link."""
        current = self.current()
        if current == folder:
            return
        if current is not None:
            self._set_link("previous", current)
        self._set_link("current", folder)
        self.prune()

    def rollback(self) -> Path:
        """Make the previous bundle current again (and the current one previous)."""
        previous, current = self.previous(), self.current()
        if previous is None:
            raise BundleError("rollback", "no previous model is installed")
        self._set_link("current", previous)
        if current is not None:
            self._set_link("previous", current)
        return previous

    def prune(self) -> None:
        keep = {self.current(), self.previous()}
        for version in self.versions():
            if self.root / version not in keep:
                shutil.rmtree(self.root / version, ignore_errors=True)

    def _set_link(self, name: str, target: Path) -> None:
        tmp = self.root / f".{name}-{uuid.uuid4().hex[:8]}"
        os.symlink(target.name, tmp)  # relative: the state dir may move
        os.replace(tmp, self.root / name)
        _fsync_dir(self.root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
