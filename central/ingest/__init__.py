"""Ingest: the hub's end of the wire, a gRPC server (mutual TLS) with one stream per gateway.

`serve(hub, address, tls)` starts it; see servicer.py for what happens on a stream.
"""
