"""TLS files and gateway identity shared by the agent (client) and the hub (server).

Made by `atlas-central pki init` / `pki issue` (atlas/central/pki.py). A gateway's certificate
carries its id as CN and as a URI SAN `urn:atlas:gateway:<id>`; the hub reads the URI to bind a
stream to one gateway, so a certificate without it (the hub's own, say) can never report as one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

GATEWAY_URI_PREFIX = "urn:atlas:gateway:"
# Gateway ids name files, certificates and database rows: letters, digits, . _ - only.
GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_gateway_id(gateway_id: str) -> str:
    """Return the id, or raise ValueError saying what a gateway id may contain."""
    if not isinstance(gateway_id, str) or not GATEWAY_ID.fullmatch(gateway_id):
        raise ValueError(
            f"gateway id {gateway_id!r}: use 1..63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return gateway_id


@dataclass(frozen=True)
class TlsFiles:
    """PEM paths: this side's certificate and key, and the CA that must have signed the peer."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(cert, key, ca) bytes; a missing file raises FileNotFoundError naming it."""
        out = []
        for name in ("cert", "key", "ca"):
            path = Path(getattr(self, name))
            try:
                out.append(path.read_bytes())
            except FileNotFoundError:
                raise FileNotFoundError(f"TLS {name} file not found: {path}") from None
        return out[0], out[1], out[2]
