"""Test helpers for the wire: an in-memory hub, a throwaway PKI, and load gateways.

`MemoryHub` implements the seven methods the servicer calls (the contract of
atlas.central.hub.Hub) with plain dicts. Tests of the wire and the bench use it where the real
hub is not the subject, and to pin down what the servicer relies on: telemetry is idempotent
by seq, watch() feeds see every change pushed after they were made.
"""
from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import zstandard

from atlas.link import serde
from atlas.link.tls import TlsFiles
from atlas.link.wire import (DeviceSummary, GatewayInfo, Health, ModelAck, ModelUpdate, RuleAck, RuleChange,
                             SignedRule, TelemetryBatch)
from atlas.central.pki import PkiDir, init_pki, issue_gateway
from atlas.v1 import link_pb2, link_pb2_grpc, telemetry_pb2


@dataclass
class MemoryStore:
    """What survives a hub restart in tests (the real hub keeps it in SQLite)."""

    batches: dict[str, list[TelemetryBatch]] = field(default_factory=dict)
    highest: dict[str, int] = field(default_factory=dict)
    acks: dict[str, list[RuleAck]] = field(default_factory=dict)
    model_acks: dict[str, list[ModelAck]] = field(default_factory=dict)
    desired: dict[str, dict[str, SignedRule]] = field(default_factory=dict)

    def incidents(self, gateway_id: str) -> list:
        return [i for b in self.batches.get(gateway_id, []) for i in b.incidents]


class MemoryFeed:
    def __init__(self, hub: "MemoryHub", gateway_id: str):
        self.hub = hub
        self.gateway_id = gateway_id
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.snapshot_due = True  # like the hub's RuleFeed: the first get() is the whole set

    def get(self, timeout: float) -> RuleChange | ModelUpdate | None:
        if self.snapshot_due:
            self.snapshot_due = False
            return RuleChange(kind="snapshot", rules=self.hub.desired_rules(self.gateway_id))
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        with self.hub.lock:
            feeds = self.hub.feeds.get(self.gateway_id, [])
            if self in feeds:
                feeds.remove(self)


class MemoryHub:
    def __init__(self, store: MemoryStore | None = None, count_only: bool = False):
        self.store = store or MemoryStore()
        self.count_only = count_only  # bench: count records, keep nothing
        self.records = 0
        self.lock = threading.Lock()
        self.feeds: dict[str, list[MemoryFeed]] = {}
        self.hellos: list[GatewayInfo] = []
        self.connected: set[str] = set()
        self.disconnects = 0

    def hello(self, gateway_id: str, info: GatewayInfo) -> None:
        with self.lock:
            self.hellos.append(info)
            self.connected.add(gateway_id)

    def telemetry(self, gateway_id: str, batch: TelemetryBatch) -> int:
        with self.lock:
            highest = self.store.highest.get(gateway_id, 0)
            if batch.seq <= highest:  # resent after a lost ack: already stored
                return highest
            self.store.highest[gateway_id] = batch.seq
            self.records += len(batch.incidents) + len(batch.devices)
            if not self.count_only:
                self.store.batches.setdefault(gateway_id, []).append(batch)
            return batch.seq

    def rule_ack(self, gateway_id: str, ack: RuleAck) -> None:
        with self.lock:
            self.store.acks.setdefault(gateway_id, []).append(ack)

    def model_ack(self, gateway_id: str, ack: ModelAck) -> None:
        with self.lock:
            self.store.model_acks.setdefault(gateway_id, []).append(ack)

    def desired_rules(self, gateway_id: str) -> list[SignedRule]:
        with self.lock:
            return list(self.store.desired.get(gateway_id, {}).values())

    def watch(self, gateway_id: str) -> MemoryFeed:
        feed = MemoryFeed(self, gateway_id)
        with self.lock:
            self.feeds.setdefault(gateway_id, []).append(feed)
        return feed

    def disconnected(self, gateway_id: str) -> None:
        with self.lock:
            self.connected.discard(gateway_id)
            self.disconnects += 1

    # --- driving it from a test ---------------------------------------------------------

    def push(self, gateway_id: str, change: RuleChange | ModelUpdate) -> int:
        """Record a change in the desired set and send it to the gateway's open streams."""
        with self.lock:
            desired = self.store.desired.setdefault(gateway_id, {})
            if isinstance(change, RuleChange):
                for signed in change.rules:
                    desired[signed.rule.id] = signed
                for rule_id in change.withdrawn:
                    desired.pop(rule_id, None)
            feeds = list(self.feeds.get(gateway_id, []))
        for feed in feeds:
            feed.queue.put(change)
        return len(feeds)


def make_pki(directory: str | Path, gateways: list[str] = ()) -> PkiDir:
    """A CA, hub certificate, signing key and one certificate per gateway, in `directory`."""
    pki = init_pki(directory)
    for gateway_id in gateways:
        issue_gateway(directory, gateway_id)
    return pki


# --- load: many gateways and an abuser, on one event loop (tests and bench/hub_gateways.py) ---

HELLO_VERSION = "load-1"


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    cert, key, ca = tls.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


_LOAD_TEMPLATES: dict[int, telemetry_pb2.TelemetryBatch] = {}
_LOAD_ZSTD = zstandard.ZstdCompressor(level=serde.ZSTD_LEVEL)  # load clients: one loop, one thread


def load_batch(seq: int, devices: int = 5) -> link_pb2.AgentMessage:
    """A gateway's telemetry batch: health plus `devices` summaries, zstd as the agent sends
    (built once per size, then only seq and time change: the load clients stay cheap)."""
    template = _LOAD_TEMPLATES.get(devices)
    if template is None:
        now = time.time()
        template = _LOAD_TEMPLATES[devices] = serde.telemetry_batch_to_proto(TelemetryBatch(seq=1, time=now, devices=[
            DeviceSummary(f"dev-{i}", f"10.0.0.{i + 1}", now - 60.0, now, 40 + i, 4000 + i, [0.25, 0.5, 1.0])
            for i in range(devices)], health=Health(time=now, packets_per_s=120.0, cpu_percent=3.0)))
    template.seq, template.time = seq, time.time()
    raw = template.SerializeToString()
    return link_pb2.AgentMessage(telemetry=telemetry_pb2.TelemetryEnvelope(
        seq=seq, codec=telemetry_pb2.CODEC_ZSTD, raw_size=len(raw), payload=_LOAD_ZSTD.compress(raw)))


@dataclass
class GatewayLoad:
    """One load gateway: a stream over mutual TLS, hello, then a batch every `interval` seconds;
    records the ack round trip (sent -> ack covering that seq) of each batch sent at or after
    `measure_from` (wall clock; 0 = all)."""

    address: str
    gateway_id: str
    tls: TlsFiles
    interval: float = 1.0
    devices: int = 5
    measure_from: float = 0.0
    latencies: list[float] = field(default_factory=list)
    acked: int = 0
    unacked: int = 0  # measured batches without an ack when the stream ended
    snapshot: bool = False
    error: str = ""

    async def run(self, seconds: float, start_seq: int = 1) -> "GatewayLoad":
        sent: dict[int, tuple[float, bool]] = {}  # seq -> (monotonic send time, measured)
        deadline = time.monotonic() + seconds

        async def requests():
            yield link_pb2.AgentMessage(hello=telemetry_pb2.Hello(
                gateway_id=self.gateway_id, software_version=HELLO_VERSION, protocol_version=serde.PROTOCOL_VERSION))
            seq = start_seq
            # spread the gateways' batches over one interval, as real ones would be
            await asyncio.sleep(random.random() * self.interval)
            while time.monotonic() < deadline:
                sent[seq] = (time.monotonic(), time.time() >= self.measure_from)
                yield load_batch(seq, self.devices)
                seq += 1
                await asyncio.sleep(self.interval)

        async with grpc.aio.secure_channel(self.address, channel_credentials(self.tls)) as channel:
            call = link_pb2_grpc.GatewayLinkStub(channel).Connect(requests())
            try:
                async for message in call:
                    body = message.WhichOneof("body")
                    if body == "rule_change":
                        self.snapshot = True
                    elif body == "telemetry_ack":
                        now, seq = time.monotonic(), message.telemetry_ack.seq
                        for done in [s for s in sent if s <= seq]:
                            at, measured = sent.pop(done)
                            if measured:
                                self.latencies.append(now - at)
                            self.acked += 1
                    if not sent and time.monotonic() > deadline:
                        break
                    if time.monotonic() > deadline + 5 * self.interval:
                        break
            except grpc.aio.AioRpcError as err:
                self.error = f"{err.code().name}: {err.details()}"
            finally:
                call.cancel()
        self.unacked = sum(1 for _, measured in sent.values() if measured)
        return self


async def abusive_streams(address: str, tls: TlsFiles, streams: int, seconds: float) -> Counter:
    """Open `streams` streams on one connection with `tls`'s certificate and never say hello;
    returns how each ended (status code name; "open" if still open after `seconds`)."""
    async with grpc.aio.secure_channel(address, channel_credentials(tls)) as channel:
        stub = link_pb2_grpc.GatewayLinkStub(channel)

        async def silent():
            await asyncio.sleep(seconds + 60)
            yield link_pb2.AgentMessage()  # never reached: the stream ends first

        async def one() -> str:
            call = stub.Connect(silent())
            try:
                async for _ in call:
                    pass
                return "OK"
            except grpc.aio.AioRpcError as err:
                return err.code().name
            finally:
                call.cancel()

        tasks = [asyncio.create_task(one()) for _ in range(streams)]
        done, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            task.cancel()
        return Counter([t.result() for t in done] + ["open"] * len(pending))


def process_threads() -> int:
    """Threads of this process as the kernel counts them (gRPC's C threads included)."""
    return len(os.listdir("/proc/self/task"))
