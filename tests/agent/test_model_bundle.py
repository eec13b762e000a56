"""Model bundles on the gateway: format and integrity, compatibility checks, atomic install,
swap and rollback, and the uplink's signature check in front of it all (real LiteRT models)."""
from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atlas.agent.detect import Detector, packaged_models_dir
from atlas.link.bundle import META, Bundle, BundleError, pack_bundle, read_bundle_dir, unpack_bundle
from atlas.agent.detect.bundle import ModelDir, check_compatible
from atlas.agent.detect.update import ModelUpdater, load_installed
from atlas.link.signing import RuleSigner, RuleVerifier


def variant(version: str, **meta_changes) -> Bundle:
    """The packaged bundle under another version (and other meta.json fields if given)."""
    bundle = read_bundle_dir(packaged_models_dir())
    meta = bundle.meta
    meta["version"] = version
    meta["anomaly"]["version"] = f"{version}-ae"
    meta.update(meta_changes)
    return Bundle(version, {**bundle.files, META: json.dumps(meta).encode()})


def test_round_trip_of_the_packaged_models():
    bundle = read_bundle_dir(packaged_models_dir())
    assert set(bundle.files) == {"meta.json", "anomaly.tflite", "classifier.tflite"}
    data = pack_bundle(bundle)
    assert unpack_bundle(data).files == bundle.files
    assert pack_bundle(unpack_bundle(data)) == data  # deterministic bytes: one signature per content


@pytest.mark.parametrize("damage, field", [
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "sha256"),  # one bit of a model file
    (lambda d: d[:-10], "format"),  # truncated
    (lambda d: b"X" + d[1:], "format"),  # not a bundle
    (lambda d: d + b"junk", "format"),  # trailing bytes
])
def test_damaged_bundles_are_refused_naming_the_check(damage, field):
    with pytest.raises(BundleError) as err:
        unpack_bundle(damage(pack_bundle(read_bundle_dir(packaged_models_dir()))))
    assert err.value.field == field


def test_file_set_must_be_exactly_what_meta_names():
    bundle = read_bundle_dir(packaged_models_dir())
    extra = Bundle(bundle.version, {**bundle.files, "run.sh": b"#!/bin/sh"})
    with pytest.raises(BundleError, match="unexpected"):
        unpack_bundle(pack_bundle(extra))
    meta = bundle.meta
    meta["anomaly"]["file"] = "../etc/passwd"
    with pytest.raises(BundleError, match="plain model file name"):
        unpack_bundle(pack_bundle(Bundle(bundle.version, {**bundle.files, META: json.dumps(meta).encode()})))


def stage(tmp_path, bundle: Bundle):
    return ModelDir(tmp_path / "models").stage(bundle)


def test_compatibility_wrong_schema_unloadable_model_wrong_shapes(tmp_path):
    assert check_compatible(stage(tmp_path, variant("v-good"))).version == "v-good"
    with pytest.raises(BundleError) as err:
        check_compatible(stage(tmp_path, variant("v-schema", schema_version=99)))
    assert err.value.field == "schema_version"
    junk = variant("v-junk")
    junk.files["classifier.tflite"] = b"TFL3" + bytes(200)
    with pytest.raises(BundleError) as err:
        check_compatible(stage(tmp_path, junk))
    assert err.value.field == "load"
    swapped = variant("v-shape")
    meta = swapped.meta
    meta["anomaly"]["file"], meta["classifier"]["file"] = "classifier.tflite", "anomaly.tflite"
    swapped.files[META] = json.dumps(meta).encode()
    with pytest.raises(BundleError) as err:
        check_compatible(stage(tmp_path, swapped))
    assert err.value.field == "shape"


def update_of(bundle: Bundle, signer: RuleSigner):
    return signer.sign_model("bundle", bundle.version, pack_bundle(bundle))


def test_install_swap_refuse_rollback_and_reload(tmp_path):
    signer = RuleSigner(Ed25519PrivateKey.generate())
    swaps = []
    updater = ModelUpdater(tmp_path, Detector(), swap=swaps.append)
    ack = updater.handle(update_of(variant("v2"), signer))
    assert ack.applied and ack.model_versions["bundle"] == "v2" and ack.model_versions["anomaly"] == "v2-ae"
    assert [d.version for d in swaps] == ["v2"] and updater.detector.version == "v2"
    assert updater.models.current().name == "v2" and updater.models.previous() is None

    bad = updater.handle(update_of(variant("v3", schema_version=99), signer))
    assert not bad.applied and bad.error.startswith("schema_version:") and bad.model_versions["bundle"] == "v2"
    assert len(swaps) == 1 and updater.models.current().name == "v2"
    assert "v3" not in updater.models.versions()  # the refused one is not left on disk

    assert updater.handle(update_of(variant("v3"), signer)).applied
    assert (updater.models.current().name, updater.models.previous().name) == ("v3", "v2")
    again = updater.handle(update_of(variant("v3"), signer))  # resent after a reconnect
    assert again.applied and len(swaps) == 2

    assert updater.handle(update_of(variant("v4"), signer)).applied
    assert updater.models.versions() == ["v3", "v4"]  # current and previous only

    assert updater.rollback() == "v3" and swaps[-1].version == "v3"
    assert (updater.models.current().name, updater.models.previous().name) == ("v3", "v4")
    assert load_installed(tmp_path).version == "v3"  # what a restarted agent runs

    # A file changed on disk after install: not loaded; the previous bundle is used instead.
    model = updater.models.current() / "anomaly.tflite"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    assert load_installed(tmp_path).version == "v4"


def test_same_version_other_content_is_refused(tmp_path):
    signer = RuleSigner(Ed25519PrivateKey.generate())
    updater = ModelUpdater(tmp_path, Detector(), swap=lambda d: None)
    assert updater.handle(update_of(variant("v2"), signer)).applied
    other = variant("v2", clip=40.0)
    ack = updater.handle(update_of(other, signer))
    assert not ack.applied and ack.error.startswith("version:")


def test_uplink_refuses_a_bad_signature_before_the_updater_sees_it(tmp_path, monkeypatch):
    from atlas.link import serde
    from atlas.agent.uplink.client import Uplink

    signer = RuleSigner(Ed25519PrivateKey.generate())
    pub = tmp_path / "signing.pub"
    pub.write_bytes(signer.public_key_pem())
    seen = []
    up = Uplink.__new__(Uplink)  # only the model path: no channel, no spool
    from atlas.link.counters import Counters
    up.verifier, up.counters = RuleVerifier.from_pem_file(pub), Counters()
    up.on_model = lambda u: seen.append(u) or ModelUpdater(tmp_path, Detector(), swap=lambda d: None).handle(u)
    good = update_of(variant("v2"), signer)
    forged = RuleSigner(Ed25519PrivateKey.generate()).sign_model("bundle", "v2", good.content)
    ack = up.handle_model_update(serde.model_update_to_proto(forged))
    assert not ack.applied and ack.error.startswith("signature:") and seen == []
    ack = up.handle_model_update(serde.model_update_to_proto(good))
    assert ack.applied and [u.version for u in seen] == ["v2"]
    assert os.path.islink(tmp_path / "models" / "current")
