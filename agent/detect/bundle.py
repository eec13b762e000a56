"""Model bundles: the two int8 models and their meta.json, shipped, checked and installed as one.

A bundle is what the hub pushes (ModelUpdate name "bundle") and what the agent keeps on disk.
Its bytes (all integers big-endian):

    b"ATLAS-MODEL-BUNDLE\\x00" u32(len(header)) header file bytes...
    header = JSON {"format": 1, "version": V, "files": [{"name", "size", "sha256"}, ...]}

The files follow the header in its order. The set of files is exactly meta.json plus the two
model files meta.json names (anomaly.file, classifier.file); names are plain file names. The
hub's Ed25519 signature covers the SHA-256 of the whole bundle (atlas.agent.uplink.signing),
and each file's own SHA-256 is checked again on unpacking and whenever an installed bundle is
loaded from disk, so a file damaged on the gateway's storage is found too.

Installed bundles live under `<state_dir>/models/`:

    <version>/            meta.json, the .tflite files, MANIFEST.json (the header above)
    current -> <version>  what the agent scores with (a symlink, replaced atomically)
    previous -> <version> the one before, kept for rollback

Nothing is made current before it passed `check_compatible` (schema, shapes, both models load
and score a probe row): a bad bundle is refused and the running model keeps running.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atlas.agent.detect import Detector, ModelError
from atlas.agent.features.schema import FEATURE_NAMES, SCHEMA_VERSION

MAGIC = b"ATLAS-MODEL-BUNDLE\x00"
FORMAT = 1
MAX_BUNDLE_BYTES = 8 << 20  # models are ~10 kB each; the hub's send limit is 16 MiB
MAX_HEADER_BYTES = 64 << 10
META = "meta.json"
MANIFEST = "MANIFEST.json"
BUNDLE_NAME = "bundle"  # ModelUpdate.name of a bundle
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
_HEADER_LEN = struct.Struct(">I")


def _sha256(data: bytes):
    """hashlib, imported when a bundle arrives: it maps OpenSSL's libcrypto (3.5 MB resident)
    into an agent that may never receive one."""
    import hashlib

    return hashlib.sha256(data)


class BundleError(ValueError):
    """A bundle that must not be used; `field` names the check that failed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class Bundle:
    version: str
    files: dict[str, bytes]  # file name -> bytes, meta.json included

    @property
    def meta(self) -> dict:
        return json.loads(self.files[META])

    @property
    def sha256(self) -> str:
        return _sha256(pack_bundle(self)).hexdigest()

    def manifest(self) -> dict:
        return {"format": FORMAT, "version": self.version,
                "files": [{"name": n, "size": len(b), "sha256": _sha256(b).hexdigest()}
                          for n, b in sorted(self.files.items())]}


def _meta_of(raw: bytes) -> dict:
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(META, f"not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise BundleError(META, "not a JSON object")
    return meta


def model_files(meta: dict) -> list[str]:
    """The file names meta.json says the bundle holds, besides meta.json."""
    names = []
    for part in ("anomaly", "classifier"):
        entry = meta.get(part)
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in (META, MANIFEST):
            raise BundleError(f"{META}: {part}.file", f"{name!r} is not a plain model file name")
        names.append(name)
    if names[0] == names[1]:
        raise BundleError(f"{META}: classifier.file", "the same file as anomaly.file")
    return names


def check_version(version: object) -> str:
    if not isinstance(version, str) or not _SAFE_VERSION.fullmatch(version):
        raise BundleError("version", f"{version!r} is not a version (letters, digits, . _ + -; at most 100)")
    return version


def _bundle_from_files(files: dict[str, bytes]) -> Bundle:
    if META not in files:
        raise BundleError("files", f"no {META}")
    meta = _meta_of(files[META])
    wanted = {META, *model_files(meta)}
    if set(files) != wanted:
        extra, missing = sorted(set(files) - wanted), sorted(wanted - set(files))
        raise BundleError("files", f"expected {sorted(wanted)}" + (f", missing {missing}" if missing else "")
                          + (f", unexpected {extra}" if extra else ""))
    return Bundle(version=check_version(meta.get("version")), files=dict(files))


def read_bundle_dir(path: str | Path) -> Bundle:
    """A bundle from a models folder (agent/detect/models, or what central/train wrote)."""
    folder = Path(path)
    meta_path = folder / META
    try:
        meta_raw = meta_path.read_bytes()
    except FileNotFoundError:
        raise BundleError("files", f"{meta_path}: missing (not a models folder)") from None
    files = {META: meta_raw}
    for name in model_files(_meta_of(meta_raw)):
        try:
            files[name] = (folder / name).read_bytes()
        except FileNotFoundError:
            raise BundleError("files", f"{folder / name}: missing (named in {META})") from None
    return _bundle_from_files(files)


def pack_bundle(bundle: Bundle) -> bytes:
    manifest = bundle.manifest()
    header = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return b"".join([MAGIC, _HEADER_LEN.pack(len(header)), header]
                    + [bundle.files[f["name"]] for f in manifest["files"]])


def unpack_bundle(data: bytes, max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Parse and check a bundle's bytes: format, sizes, every file's SHA-256, the file set."""
    if len(data) > max_bytes:
        raise BundleError("size", f"{len(data)} bytes, over the {max_bytes}-byte limit")
    if not data.startswith(MAGIC):
        raise BundleError("format", "not an ATLAS model bundle (bad magic)")
    pos = len(MAGIC)
    if len(data) < pos + _HEADER_LEN.size:
        raise BundleError("format", "truncated before the header")
    (size,) = _HEADER_LEN.unpack_from(data, pos)
    pos += _HEADER_LEN.size
    if size > MAX_HEADER_BYTES or pos + size > len(data):
        raise BundleError("format", f"header of {size} bytes does not fit")
    try:
        header = json.loads(data[pos:pos + size])
        entries = header["files"]
        assert isinstance(entries, list)
    except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError):
        raise BundleError("format", "header is not the bundle's JSON manifest") from None
    if header.get("format") != FORMAT:
        raise BundleError("format", f"bundle format {header.get('format')!r}, this agent reads {FORMAT}")
    pos += size
    files: dict[str, bytes] = {}
    for entry in entries:
        try:
            name, length, digest = entry["name"], int(entry["size"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            raise BundleError("format", f"manifest entry {entry!r} lacks name, size or sha256") from None
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in files:
            raise BundleError("format", f"file name {name!r} is not a plain, unique file name")
        if length < 0 or pos + length > len(data):
            raise BundleError("format", f"{name}: {length} bytes do not fit (truncated bundle)")
        body = data[pos:pos + length]
        pos += length
        if _sha256(body).hexdigest() != digest:
            raise BundleError("sha256", f"{name}: content does not match its SHA-256 (damaged or tampered)")
        files[name] = body
    if pos != len(data):
        raise BundleError("format", f"{len(data) - pos} bytes after the last file")
    bundle = _bundle_from_files(files)
    if header.get("version") != bundle.version:
        raise BundleError("version", f"manifest says {header.get('version')!r}, {META} says {bundle.version!r}")
    return bundle


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
