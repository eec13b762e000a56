"""Start the hub's gRPC server (mutual TLS, grpc.aio) with the GatewayLink servicer.

The server runs on its own event loop in one thread ("ingest-loop"); the hub's calls run on a
fixed pool of `workers` threads. So the process's thread count is fixed by this design (about
20 with gRPC's own), whatever the number of gateways; servicer.py says why.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time

import grpc

from atlas.link.serde import DEFAULT_MAX_RAW_BYTES
from atlas.link.tls import TlsFiles
from atlas.central.ingest.servicer import GatewayLinkServicer, HubLike, StreamLimits
from atlas.v1 import link_pb2

SERVICE = link_pb2.DESCRIPTOR.services_by_name["GatewayLink"].full_name  # "atlas.v1.GatewayLink"

log = logging.getLogger(__name__)

# What a gateway may send in one message (a compressed telemetry batch, a few kB normally).
MAX_RECEIVE_BYTES = 4 << 20
# What the hub may send (rule snapshots; model updates of a few MB).
MAX_SEND_BYTES = 16 << 20
# Hub calls at once. The hub is locked, but batches that wait for its lock are committed
# together (one fsync): 16 keep groups big enough for 1,000 gateways at one batch a second
# with an fsync of about 5 ms.
DEFAULT_WORKERS = 16
# Streams one TCP connection may hold open at once (HTTP/2 SETTINGS): only a backstop for
# memory. Below it the servicer refuses a certificate's extra streams itself, with a status
# naming its limit; past it the transport answers a bare REFUSED_STREAM.
MAX_STREAMS_PER_CONNECTION = 1024
HEARTBEAT_S = 1.0  # the loop proves it is alive this often (IngestServer.alive)
LOOP_STALL_S = 10.0  # a loop that has not beaten for this long serves no one: it counts as dead
START_TIMEOUT_S = 30.0


class ListenError(OSError):
    """The server cannot listen on the address it was given (in use, not this host's, ...)."""


class IngestServer:
    """A running ingest server: `.port`, `.counters()`, `.alive()`, `.stop(grace)`, `.wait()`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, servicer: GatewayLinkServicer,
                 pool: concurrent.futures.ThreadPoolExecutor):
        self.loop, self.thread, self.servicer, self.pool = loop, thread, servicer, pool
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.beat = time.monotonic()
        self._tasks: list[asyncio.Task] = []

    def counters(self) -> dict[str, int]:
        return self.servicer.counters.snapshot()

    def alive(self) -> bool:
        """True while the serving loop runs, beat within LOOP_STALL_S (not wedged), and still
        polls the rule feeds (a hub that takes telemetry but sends no rule is not serving)."""
        return (self.thread.is_alive() and time.monotonic() - self.beat < LOOP_STALL_S
                and not any(task.done() for task in self._tasks))

    def stop(self, grace: float | None = None) -> None:
        """Stop serving: streams get `grace` seconds, then are cancelled; returns when done."""
        if self.thread.is_alive():
            done = asyncio.run_coroutine_threadsafe(self._stop(grace), self.loop)
            try:
                done.result(timeout=(grace or 0) + 5)
            except (concurrent.futures.TimeoutError, RuntimeError):  # a wedged loop: stop it anyway
                log.error("ingest: the server did not stop within %.0f s", (grace or 0) + 5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        # Queued hub calls are dropped (a restart resets every gateway's connection); running
        # ones finish first, so none is cut off by the hub closing its store after this.
        self.pool.shutdown(wait=True, cancel_futures=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the server to end; True if it is still running after `timeout`."""
        self.thread.join(timeout)
        return self.thread.is_alive()

    async def _start(self, address: str, credentials: grpc.ServerCredentials, options: list,
                     max_rpcs: int) -> int:
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=max_rpcs)
        # Registered by hand (not add_GatewayLinkServicer_to_server) to use the servicer's own
        # request deserializer, which refuses oversized and malformed messages with a clear error.
        handler = grpc.stream_stream_rpc_method_handler(
            self.servicer.Connect,
            request_deserializer=self.servicer.deserialize,
            response_serializer=link_pb2.HubMessage.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Connect": handler}),))
        try:
            port = server.add_secure_port(address, credentials)
        except RuntimeError:  # taken between check_listen and here
            port = 0
        if port == 0:
            await server.stop(None)
            raise ListenError(f"cannot listen on {address} (gRPC could not bind it)")
        await server.start()
        self.server, self.port = server, port
        self._tasks = [asyncio.create_task(self.servicer.poll_feeds(), name="ingest-feeds"),
                       asyncio.create_task(self._heartbeat(), name="ingest-heartbeat")]
        return port

    async def _heartbeat(self) -> None:
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(HEARTBEAT_S)

    async def _stop(self, grace: float | None) -> None:
        if self.server is not None:
            await self.server.stop(grace)
        for task in self._tasks:
            task.cancel()


def check_listen(address: str) -> None:
    """Raise ListenError (one line: why) if `address` cannot be listened on. Asked of the OS
    before gRPC, which says only "Failed to bind" and logs its own error lines."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, ValueError) as err:
        raise ListenError(f"cannot listen on {address}: cannot resolve {host!r} "
                          f"({getattr(err, 'strerror', None) or err})") from None
    for family, kind, proto, _, sockaddr in infos:
        probe = socket.socket(family, kind, proto)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            probe.bind(sockaddr)
        except OSError as err:
            raise ListenError(f"cannot listen on {address}: {err.strerror or err}") from None
        finally:
            probe.close()


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    cert, key, ca = tls.read()
    # require_client_auth: a client without a certificate from our CA never gets past TLS.
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def serve(
    hub: HubLike,
    address: str,
    tls: TlsFiles,
    *,
    limits: StreamLimits = StreamLimits(),
    workers: int = DEFAULT_WORKERS,
    max_receive_bytes: int = MAX_RECEIVE_BYTES,
    max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES,
    packed_devices: bool = True,
) -> IngestServer:
    """Serve GatewayLink on `address` ("host:port", port 0 = any free one); returns once listening.

    Raises ListenError (one line: why) if the address cannot be listened on.
    """
    check_listen(address)
    credentials = server_credentials(tls)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-hub")
    _start_workers(pool, workers)
    servicer = GatewayLinkServicer(hub, pool, limits, max_raw_bytes=max_raw_bytes,
                                   max_message_bytes=max_receive_bytes, packed_devices=packed_devices)
    options = [
        # The servicer refuses (clearly, counted) above max_receive_bytes; this is the backstop.
        ("grpc.max_receive_message_length", 2 * max_receive_bytes),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # Agents ping every 30 s; allow it, and find dead agents within about a minute.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        # gRPC sets SO_REUSEPORT by default: a second hub would bind the same port silently.
        ("grpc.so_reuseport", 0),
    ]
    # The servicer's limits refuse clearly; gRPC's own limit is only a backstop above them.
    max_rpcs = limits.max_gateways * limits.max_streams_per_gateway + 64
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_run_loop, args=(loop,), name="ingest-loop", daemon=True)
    server = IngestServer(loop, thread, servicer, pool)
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(server._start(address, credentials, options, max_rpcs),
                                                loop).result(START_TIMEOUT_S)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        pool.shutdown(wait=False)
        raise
    log.info("ingest: listening on %s (port %d)", address, port)
    return server


def _start_workers(pool: concurrent.futures.ThreadPoolExecutor, workers: int) -> None:
    """Start every worker now (the pool starts them lazily): the thread count is fixed from
    the first minute, and a unit too small for it fails at start, not under load."""
    all_running = threading.Barrier(workers + 1)
    for _ in range(workers):
        pool.submit(all_running.wait, START_TIMEOUT_S)
    all_running.wait(START_TIMEOUT_S)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()
