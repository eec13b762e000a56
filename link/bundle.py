"""Model bundles: the two int8 models and their meta.json, shipped, checked and installed as one.

A bundle is what the hub pushes (ModelUpdate name "bundle") and what the agent keeps on disk.
Its bytes (all integers big-endian):

    b"ATLAS-MODEL-BUNDLE\\x00" u32(len(header)) header file bytes...
    header = JSON {"format": 1, "version": V, "files": [{"name", "size", "sha256"}, ...]}

The files follow the header in its order. The set of files is exactly meta.json plus the two
model files meta.json names (anomaly.file, classifier.file); names are plain file names. The
hub's Ed25519 signature covers the SHA-256 of the whole bundle (atlas.link.signing),
and each file's own SHA-256 is checked again on unpacking and whenever an installed bundle is
loaded from disk, so a file damaged on the gateway's storage is found too.

How a gateway installs bundles is atlas.link.bundle's business.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path


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
    """A bundle from a models folder (agent/detect/models, or what train wrote)."""
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
