"""PKI: the certificates and keys of an ATLAS deployment, made by `atlas-central pki ...`.

    pki init --dir DIR [--name HOST]...   CA, hub key + certificate, rule-signing key
    pki issue GATEWAY_ID --dir DIR        a gateway's key + certificate

Layout of DIR (keys are 0600, DIR is 0700):
    ca.crt ca.key                 the deployment's CA (ECDSA P-256: gRPC's BoringSSL takes it)
    hub.crt hub.key               the hub's server certificate (SAN: localhost, 127.0.0.1, ::1, --name)
    rule-signing.key .pub         Ed25519: the hub signs rules and models, agents hold the .pub
    gateways/ID.crt ID.key        one per gateway: CN = ID, SAN URI urn:atlas:gateway:ID (+ DNS ID)
A gateway needs ca.crt, rule-signing.pub and its own two files.
"""
from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atlas.link.tls import GATEWAY_URI_PREFIX, TlsFiles, check_gateway_id

CA_DAYS = 3650
LEAF_DAYS = 825
HUB_DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


class PkiError(Exception):
    """An operator mistake (missing CA, existing files, bad name): printed, never a traceback."""


@dataclass(frozen=True)
class PkiDir:
    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def signing_key(self) -> Path:
        return self.root / "rule-signing.key"

    @property
    def signing_pub(self) -> Path:
        return self.root / "rule-signing.pub"

    def hub_tls(self) -> TlsFiles:
        return TlsFiles(cert=self.root / "hub.crt", key=self.root / "hub.key", ca=self.ca_cert)

    def gateway_tls(self, gateway_id: str) -> TlsFiles:
        check_gateway_id(gateway_id)
        base = self.root / "gateways"
        return TlsFiles(cert=base / f"{gateway_id}.crt", key=base / f"{gateway_id}.key", ca=self.ca_cert)


def _write(path: Path, data: bytes, secret: bool) -> None:
    # Write then rename, so a crash never leaves half a key; keys are born 0600, never chmod-ed later.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):  # keep order, drop repeats
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _builder(subject_cn: str, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _leaf(ca_cert: x509.Certificate, ca_key, cn: str, sans: list[x509.GeneralName], usage, days: int):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(cn, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )  # digital_signature only: ECDHE key exchange signs, nothing else
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def init_pki(directory: str | Path, hub_names: Sequence[str] = (), days: int = LEAF_DAYS, force: bool = False) -> PkiDir:
    """Make the CA, the hub's key and certificate and the rule-signing key in `directory`."""
    pki = PkiDir(Path(directory))
    if pki.ca_key.exists() and not force:
        raise PkiError(f"{pki.ca_key} exists: refusing to replace the CA (every gateway certificate depends on it); use --force")
    pki.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(pki.root, 0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ATLAS CA")])
    ca_cert = (
        _builder("ATLAS CA", ca_name, ca_key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki.ca_key, _key_pem(ca_key), secret=True)
    _write(pki.ca_cert, _cert_pem(ca_cert), secret=False)
    hub = pki.hub_tls()
    hub_key, hub_cert = _leaf(
        ca_cert, ca_key, "atlas-hub", _san_entries([*HUB_DEFAULT_NAMES, *hub_names]), ExtendedKeyUsageOID.SERVER_AUTH, days
    )
    _write(hub.key, _key_pem(hub_key), secret=True)
    _write(hub.cert, _cert_pem(hub_cert), secret=False)
    signing = Ed25519PrivateKey.generate()
    _write(pki.signing_key, _key_pem(signing), secret=True)
    pub = signing.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write(pki.signing_pub, pub, secret=False)
    return pki


def _load_ca(pki: PkiDir):
    try:
        ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    except FileNotFoundError as err:
        raise PkiError(f"{err.filename}: no CA here; run `atlas-central pki init --dir {pki.root}` first") from None
    return ca_cert, ca_key


def issue_gateway(directory: str | Path, gateway_id: str, days: int = LEAF_DAYS, force: bool = False) -> TlsFiles:
    """Make a gateway's key and client certificate, signed by the CA in `directory`."""
    try:
        check_gateway_id(gateway_id)
    except ValueError as err:
        raise PkiError(str(err)) from None
    pki = PkiDir(Path(directory))
    ca_cert, ca_key = _load_ca(pki)
    files = pki.gateway_tls(gateway_id)
    if files.key.exists() and not force:
        raise PkiError(f"{files.key} exists: gateway {gateway_id!r} already has a key; use --force to replace it")
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(GATEWAY_URI_PREFIX + gateway_id)]
    if "_" not in gateway_id:  # "_" is not valid in a DNS name
        sans.append(x509.DNSName(gateway_id))
    key, cert = _leaf(ca_cert, ca_key, gateway_id, sans, ExtendedKeyUsageOID.CLIENT_AUTH, days)
    _write(files.key, _key_pem(key), secret=True)
    _write(files.cert, _cert_pem(cert), secret=False)
    return files


def gateway_id_of(cert_pem: bytes) -> str | None:
    """The gateway id a client certificate speaks for, or None if it is not a gateway's.

    A gateway certificate has exactly one `urn:atlas:gateway:` URI SAN, equal to its CN, and
    the clientAuth usage. (The TLS layer has already checked it chains to our CA.)
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    ids = [u[len(GATEWAY_URI_PREFIX):] for u in uris if u.startswith(GATEWAY_URI_PREFIX)]
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(ids) != 1 or cns != ids or ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return None
    try:
        return check_gateway_id(ids[0])  # a CA may have signed a name our pki would not issue
    except ValueError:
        return None


# --- command line ------------------------------------------------------------------------

def _cmd_init(args: argparse.Namespace) -> int:
    pki = init_pki(args.dir, args.name, days=args.days, force=args.force)
    print(f"CA, hub certificate and rule-signing key written to {pki.root}")
    print(f"  hub:      {pki.hub_tls().cert} {pki.hub_tls().key}")
    print(f"  agents need {pki.ca_cert} and {pki.signing_pub}; issue each gateway's with `pki issue ID`")
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    files = issue_gateway(args.dir, args.gateway_id, days=args.days, force=args.force)
    print(f"gateway {args.gateway_id}: {files.cert} {files.key} (copy with {files.ca} and rule-signing.pub)")
    return 0


def _days(text: str) -> int:
    """--days: a leaf certificate lives 1 day at least, and no longer than the CA that signs it."""
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not 1 <= days <= CA_DAYS:
        raise argparse.ArgumentTypeError(f"{days} is not in [1, {CA_DAYS}] (the CA itself is valid {CA_DAYS} days)")
    return days


_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _host_name(text: str) -> str:
    """--name: an IP address or a DNS name (labels of letters, digits and '-'), as the agents dial."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise argparse.ArgumentTypeError(f"{ascii(text)[:80]} is neither an IP address nor a DNS name")
    return text.rstrip(".")


def _run(func, args: argparse.Namespace) -> int:
    try:
        return func(args)
    except PkiError as err:
        print(f"atlas-central pki: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"atlas-central pki: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 2


def add_pki_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `pki init` and `pki issue` to a CLI; each sets `func(args) -> exit code`."""
    pki = subparsers.add_parser("pki", help="make the CA, hub and gateway certificates, and the rule-signing key")
    sub = pki.add_subparsers(dest="pki_command", required=True, metavar="{init,issue}")
    init = sub.add_parser("init", help="make the CA, the hub's key and certificate, and the rule-signing key")
    init.add_argument("--dir", required=True, type=Path, help="where to write them (created 0700)")
    init.add_argument("--name", action="append", default=[], metavar="HOST", type=_host_name,
                      help="another DNS name or IP address of the hub for its certificate (repeatable)")
    init.add_argument("--days", type=_days, default=LEAF_DAYS, help=f"validity of the hub certificate (days, 1..{CA_DAYS})")
    init.add_argument("--force", action="store_true", help="replace an existing CA (invalidates every gateway certificate)")
    init.set_defaults(func=lambda a: _run(_cmd_init, a))
    issue = sub.add_parser("issue", help="make a gateway's key and certificate")
    issue.add_argument("gateway_id")
    issue.add_argument("--dir", required=True, type=Path, help="the directory given to `pki init`")
    issue.add_argument("--days", type=_days, default=LEAF_DAYS, help=f"validity of the certificate (days, 1..{CA_DAYS})")
    issue.add_argument("--force", action="store_true", help="replace the gateway's existing key and certificate")
    issue.set_defaults(func=lambda a: _run(_cmd_issue, a))
    return pki


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atlas-central")
    add_pki_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
