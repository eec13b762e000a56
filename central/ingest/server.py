"""Start the hub's gRPC server (mutual TLS) with the GatewayLink servicer."""
from __future__ import annotations

import logging
from concurrent import futures

import grpc

from atlas.link.serde import DEFAULT_MAX_RAW_BYTES
from atlas.link.tls import TlsFiles
from atlas.central.ingest.servicer import GatewayLinkServicer, HubLike
from atlas.v1 import link_pb2

SERVICE = link_pb2.DESCRIPTOR.services_by_name["GatewayLink"].full_name  # "atlas.v1.GatewayLink"

log = logging.getLogger(__name__)

# What a gateway may send in one message (a compressed telemetry batch, a few kB normally).
MAX_RECEIVE_BYTES = 4 << 20
# What the hub may send (rule snapshots; model updates of a few MB).
MAX_SEND_BYTES = 16 << 20


class IngestServer:
    """A running ingest server: `.port`, `.counters()`, `.stop(grace)`, `.wait()`."""

    def __init__(self, server: grpc.Server, servicer: GatewayLinkServicer, port: int):
        self.server = server
        self.servicer = servicer
        self.port = port

    def counters(self) -> dict[str, int]:
        return self.servicer.counters.snapshot()

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace).wait()

    def wait(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    cert, key, ca = tls.read()
    # require_client_auth: a client without a certificate from our CA never gets past TLS.
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def serve(
    hub: HubLike,
    address: str,
    tls: TlsFiles,
    *,
    max_gateways: int = 256,
    max_receive_bytes: int = MAX_RECEIVE_BYTES,
    max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES,
    packed_devices: bool = True,
) -> IngestServer:
    """Serve GatewayLink on `address` ("host:port", port 0 = any free one); returns once listening.

    Each gateway stream holds one worker thread (plus a reader and a rule-feed thread), so the
    pool is sized by max_gateways; gateways beyond it are refused with RESOURCE_EXHAUSTED.
    """
    servicer = GatewayLinkServicer(hub, max_raw_bytes=max_raw_bytes, max_message_bytes=max_receive_bytes,
                                   packed_devices=packed_devices)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_gateways + 4, thread_name_prefix="ingest"),
        maximum_concurrent_rpcs=max_gateways,
        options=[
            # The servicer refuses (clearly, counted) above max_receive_bytes; this is the backstop.
            ("grpc.max_receive_message_length", 2 * max_receive_bytes),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            # Agents ping every 30 s; allow it, and find dead agents within about a minute.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
            # gRPC sets SO_REUSEPORT by default: a second hub would bind the same port silently.
            ("grpc.so_reuseport", 0),
        ],
    )
    # Registered by hand (not add_GatewayLinkServicer_to_server) to use the servicer's own
    # request deserializer, which refuses oversized and malformed messages with a clear error.
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.Connect,
        request_deserializer=servicer.deserialize,
        response_serializer=link_pb2.HubMessage.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Connect": handler}),))
    port = server.add_secure_port(address, server_credentials(tls))
    if port == 0:
        raise OSError(f"ingest: cannot listen on {address}")
    server.start()
    log.info("ingest: listening on %s (port %d)", address, port)
    return IngestServer(server, servicer, port)
