"""`atlas-central pki init/issue`: a CA, the hub's and gateways' certificates, the signing key."""
from __future__ import annotations

import argparse
import ipaddress
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atlas.central.pki import PkiError, add_pki_commands, gateway_id_of, init_pki, issue_gateway, main


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_makes_ca_hub_and_signing_key_with_private_modes(tmp_path):
    pki = init_pki(tmp_path / "pki", hub_names=["hub.city.example", "192.0.2.10"])
    hub = pki.hub_tls()
    for key in (pki.ca_key, hub.key, pki.signing_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(pki.root.stat().st_mode) == 0o700
    ca, cert = load(pki.ca_cert), load(hub.cert)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "hub.city.example"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"), ipaddress.ip_address("192.0.2.10")}
    assert ExtendedKeyUsageOID.SERVER_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert b"BEGIN PUBLIC KEY" in pki.signing_pub.read_bytes()


def test_issue_binds_the_gateway_id_into_the_certificate(tmp_path):
    pki = init_pki(tmp_path)
    files = issue_gateway(tmp_path, "gw-north.7")
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    cert = load(files.cert)
    cert.verify_directly_issued_by(load(pki.ca_cert))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-north.7"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:atlas:gateway:gw-north.7"]
    assert san.get_values_for_type(x509.DNSName) == ["gw-north.7"]
    assert gateway_id_of(files.cert.read_bytes()) == "gw-north.7"


def test_only_gateway_certificates_name_a_gateway(tmp_path):
    pki = init_pki(tmp_path)
    assert gateway_id_of(pki.hub_tls().cert.read_bytes()) is None  # same CA, but a server
    assert gateway_id_of(pki.ca_cert.read_bytes()) is None
    assert gateway_id_of(b"not a certificate") is None


def test_init_refuses_to_replace_a_ca_and_issue_needs_one(tmp_path):
    init_pki(tmp_path)
    with pytest.raises(PkiError, match="refusing to replace the CA"):
        init_pki(tmp_path)
    with pytest.raises(PkiError, match="no CA here"):
        issue_gateway(tmp_path / "empty", "gw-1")
    issue_gateway(tmp_path, "gw-1")
    with pytest.raises(PkiError, match="already has a key"):
        issue_gateway(tmp_path, "gw-1")
    issue_gateway(tmp_path, "gw-1", force=True)


@pytest.mark.parametrize("bad", ["", "gw 1", "../gw", "-gw", "gw/1", "g" * 64, "gw;rm"])
def test_bad_gateway_ids_are_refused(tmp_path, bad):
    init_pki(tmp_path)
    with pytest.raises(PkiError, match="gateway id"):
        issue_gateway(tmp_path, bad)


def test_command_line(tmp_path, capsys):
    assert main(["pki", "init", "--dir", str(tmp_path / "p"), "--name", "hub.local"]) == 0
    assert main(["pki", "issue", "gw-9", "--dir", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "gateways" / "gw-9.crt").exists()
    capsys.readouterr()
    assert main(["pki", "issue", "bad id", "--dir", str(tmp_path / "p")]) == 2
    assert main(["pki", "init", "--dir", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "gateway id 'bad id'" in err and "refusing to replace the CA" in err and "Traceback" not in err


def test_add_pki_commands_plugs_into_another_cli(tmp_path):
    parser = argparse.ArgumentParser(prog="atlas-central")
    add_pki_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pki", "init", "--dir", str(tmp_path)])
    assert args.func(args) == 0 and (tmp_path / "ca.crt").exists()


def test_runs_as_a_module(tmp_path):
    out = subprocess.run([sys.executable, "-m", "atlas.central.pki", "pki", "issue", "gw-1", "--dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no CA here" in out.stderr
