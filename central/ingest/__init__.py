"""Ingest: the hub's end of the wire, a gRPC server (mutual TLS) with one stream per gateway.

`serve(hub, address, tls) -> IngestServer` starts it; servicer.py says what happens on a stream.
"""
from __future__ import annotations

from atlas.central.ingest.server import IngestServer, serve

__all__ = ["IngestServer", "serve"]
