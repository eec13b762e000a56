"""The hub's side of GatewayLink.Connect: one long-lived stream per gateway, all on one event loop.

Why this shape: the hub must serve a city's gateways inside its unit's TasksMax. A thread per
stream (the sync gRPC server held three: a worker, a reader, a rule-feed waiter) ran out of
threads at 120 gateways under TasksMax=256, and gRPC's serving thread died with them. Here
grpc.aio serves every stream as a coroutine on one loop, and the synchronous, locked Hub is
called only from a small fixed thread pool: one call at a time per stream, so one gateway
holds at most one worker, and concurrent batches still meet in the hub's group commit. Rule
feeds are not waited on per stream: one poller drains every feed without blocking
(`get(timeout=0)`) every FEED_POLL_S, and at once after a batch that carried incidents (what
makes new rules). Threads stay fixed as gateways grow (bench/hub_gateways.py measures it).

Per stream: bind it to the gateway id in the client certificate; admit it only within the
limits (streams per certificate, gateways per hub); require hello with that same id within
hello_timeout; call hub.hello and send the gateway's whole desired rule set first (snapshot),
then changes as they come. A reader decodes telemetry, hands it to hub.telemetry and
acknowledges the highest seq stored. Refused input is counted and logged; refusals a gateway
can repeat at will are logged once a minute per gateway and reason, with a count.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import grpc

from atlas.link.wire import GatewayInfo, ModelAck, ModelUpdate, RuleAck, RuleChange, SignedRule, TelemetryBatch
from atlas.link import serde
from atlas.link.counters import Counters
from atlas.central.pki import gateway_id_of
from atlas.v1 import link_pb2

log = logging.getLogger(__name__)

# Longest a rule change waits in its feed when nothing hurries it (operator commands, expiry;
# the maintenance loop itself runs every 0.2 s): one look at every feed costs about 3 us per
# gateway, so 0.25 s is about 1 % of a core at 1,000 gateways.
FEED_POLL_S = 0.25
FEED_POLL_MIN_S = 0.02  # looks hurried by incident batches: at most one per this interval
OUTBOX_ROOM = 64  # changes queued for a stream before the rest wait in the feed (which coalesces)
MAX_STORED_INT = (1 << 63) - 1  # SQLite's INTEGER is signed 64-bit; the wire's counters are uint64
REFUSAL_LOG_PERIOD_S = 60.0


@dataclass(frozen=True)
class StreamLimits:
    """What one certificate, and all of them together, may hold open (central.toml [ingest])."""

    max_gateways: int = 2048
    max_streams_per_gateway: int = 4
    hello_timeout: float = 5.0


class Refused:
    """A request the hub will not take: the stream ends with `code`, counted as `counter`."""

    def __init__(self, counter: str, code: grpc.StatusCode, details: str):
        self.counter, self.code, self.details = counter, code, details

    def WhichOneof(self, _name: str) -> None:  # reads like a message with no body
        return None


class RuleFeed(Protocol):
    def get(self, timeout: float) -> RuleChange | ModelUpdate | None: ...

    def close(self) -> None: ...


class HubLike(Protocol):
    """What the servicer needs from the hub (atlas.central.hub.Hub)."""

    def hello(self, gateway_id: str, info: GatewayInfo) -> None: ...

    def telemetry(self, gateway_id: str, batch: TelemetryBatch) -> int: ...

    def rule_ack(self, gateway_id: str, ack: RuleAck) -> None: ...

    def model_ack(self, gateway_id: str, ack: ModelAck) -> None: ...

    def desired_rules(self, gateway_id: str) -> list[SignedRule]: ...

    def watch(self, gateway_id: str) -> RuleFeed: ...

    def disconnected(self, gateway_id: str) -> None: ...


class RefusalLog:
    """Logs a refusal once per (gateway, reason) per period, saying how many it kept quiet."""

    def __init__(self, period: float = REFUSAL_LOG_PERIOD_S, clock: Callable[[], float] = time.monotonic):
        self.period, self.clock = period, clock
        self._last: dict[tuple[str, str], float] = {}
        self._quiet: Counter = Counter()

    def warn(self, gateway_id: str, reason: str, message: str) -> bool:
        """True if it logged; False if this (gateway, reason) was logged within the period."""
        key, now = (gateway_id, reason), self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._quiet[key] += 1
            return False
        if len(self._last) > 10_000:  # bounded: forget what is past its period
            self._last = {k: t for k, t in self._last.items() if now - t < self.period}
        self._last[key] = now
        quiet = self._quiet.pop(key, 0)
        more = f" ({quiet} more in the last {self.period:g} s)" if quiet else ""
        log.warning("ingest: %s: %s%s", gateway_id, message, more)
        return True


# outbox items besides messages: the reader is done / a newer stream of the gateway took over /
# acknowledgements are due (their content is folded into _Stream, so a gateway that does not
# read its acks cannot grow the outbox)
_END, _REPLACED, _ACK_DUE = object(), object(), object()


class _Stream:
    """One gateway stream, owned by the event loop (only the hub calls run elsewhere)."""

    def __init__(self, gateway_id: str, context: grpc.aio.ServicerContext):
        self.gateway_id = gateway_id
        self.context = context
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.feed: RuleFeed | None = None  # set by the pool once hub.watch returned
        self.greeted = False
        self.live = False  # snapshot sent: the poller may drain the feed
        self.greeting: concurrent.futures.Future | None = None
        self.ack_seq, self.ack_refused, self.ack_error = 0, 0, ""
        self.ack_due = False

    def acked(self, ack: link_pb2.TelemetryAck) -> None:
        """Fold an ack into the one pending: the highest seq says it all."""
        self.ack_seq = max(self.ack_seq, ack.seq)
        self.ack_refused += ack.refused
        self.ack_error = ack.error or self.ack_error
        if not self.ack_due:
            self.ack_due = True
            self.outbox.put_nowait(_ACK_DUE)

    def take_ack(self) -> link_pb2.TelemetryAck:
        ack = link_pb2.TelemetryAck(seq=self.ack_seq, refused=self.ack_refused, error=self.ack_error)
        self.ack_refused, self.ack_error, self.ack_due = 0, "", False
        return ack


class GatewayLinkServicer:
    """GatewayLink.Connect for grpc.aio; hub calls go to `pool` (a fixed, small executor)."""

    def __init__(self, hub: HubLike, pool: concurrent.futures.Executor, limits: StreamLimits = StreamLimits(),
                 max_raw_bytes: int = serde.DEFAULT_MAX_RAW_BYTES, max_message_bytes: int = 4 << 20,
                 packed_devices: bool = True):
        self.hub = hub
        self.pool = pool
        self.limits = limits
        # True: device summaries reach the hub in wire form (serde.PackedDevices) and are
        # stored as received; False decodes each one (the bench's before/after baseline).
        self.packed_devices = packed_devices
        self.max_raw_bytes = max_raw_bytes
        self.max_message_bytes = max_message_bytes
        self.counters = Counters()
        self.refusals = RefusalLog()
        self._admitted: Counter = Counter()  # open streams per gateway, with or without hello
        self._streams: dict[str, _Stream] = {}  # the greeted, current stream of each gateway
        self._closing: dict[str, concurrent.futures.Future] = {}  # a gateway's last stream's cleanup
        self._poll_now = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by poll_feeds, on the loop

    def deserialize(self, data: bytes) -> link_pb2.AgentMessage | Refused:
        """Request deserializer: size and shape are checked here so a refusal is clear and counted.

        (gRPC's own max_receive_message_length is set above this limit as a backstop; what it
        refuses reaches the servicer as a bare error that cannot be told from a hang-up.)
        """
        if len(data) > self.max_message_bytes:
            return Refused("oversized_messages", grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"message of {len(data)} bytes is over the {self.max_message_bytes}-byte limit")
        try:
            return link_pb2.AgentMessage.FromString(data)
        except Exception as err:  # protobuf's DecodeError
            return Refused("malformed_messages", grpc.StatusCode.INVALID_ARGUMENT, f"not an atlas.v1.AgentMessage: {err}")

    def open_streams(self) -> int:
        return sum(self._admitted.values())

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # --- identity and admission -----------------------------------------------------------

    async def _identity(self, context: grpc.aio.ServicerContext) -> str:
        auth = context.auth_context()
        pems = auth.get("x509_pem_cert") or []
        gateway_id = gateway_id_of(pems[0]) if pems else None
        if gateway_id is None:
            self.counters.add("refused_identity")
            log.warning("ingest: refused %s: no gateway certificate", context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "client certificate is not an ATLAS gateway certificate")
        return gateway_id

    def _admit(self, gateway_id: str) -> Refused | None:
        held, limits = self._admitted[gateway_id], self.limits
        if held >= limits.max_streams_per_gateway:
            return Refused("refused_streams_per_gateway", grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"gateway {gateway_id!r} already holds {held} streams: the limit is "
                           f"{limits.max_streams_per_gateway} per certificate (ingest.max_streams_per_gateway)")
        if held == 0 and len(self._admitted) >= limits.max_gateways:
            return Refused("refused_gateway_limit", grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"the hub serves its limit of {limits.max_gateways} gateways (ingest.max_gateways)")
        self._admitted[gateway_id] += 1
        return None

    def _release(self, gateway_id: str) -> None:
        self._admitted[gateway_id] -= 1
        if self._admitted[gateway_id] <= 0:
            del self._admitted[gateway_id]

    async def _refuse(self, context: grpc.aio.ServicerContext, gateway_id: str, refused: Refused) -> None:
        self.counters.add(refused.counter)
        self.refusals.warn(gateway_id, refused.counter, refused.details)
        await context.abort(refused.code, refused.details)

    async def _hello(self, context: grpc.aio.ServicerContext, gateway_id: str) -> GatewayInfo:
        timeout = self.limits.hello_timeout
        try:
            first = await asyncio.wait_for(context.read(), timeout)
        except asyncio.TimeoutError:
            await self._refuse(context, gateway_id, Refused(
                "hello_timeouts", grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no hello within {timeout:g} s of opening the stream (ingest.hello_timeout)"))
        if first is grpc.aio.EOF:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream ended before hello")
        if isinstance(first, Refused):
            await self._refuse(context, gateway_id, first)
        if first.WhichOneof("body") != "hello":
            self.counters.add("refused_hello")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
        hello = first.hello
        if hello.protocol_version != serde.PROTOCOL_VERSION:
            self.counters.add("refused_hello")
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"hello.protocol_version {hello.protocol_version}: this hub speaks {serde.PROTOCOL_VERSION}",
            )
        if hello.gateway_id != gateway_id:
            self.counters.add("refused_impersonation")
            log.warning("ingest: gateway %r claimed to be %r: refused", gateway_id, hello.gateway_id)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"hello.gateway_id {hello.gateway_id!r} differs from the certificate's gateway {gateway_id!r}",
            )
        return serde.gateway_info_from_proto(hello)

    # --- the stream -------------------------------------------------------------------------

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        gateway_id = await self._identity(context)
        refused = self._admit(gateway_id)
        if refused is not None:
            await self._refuse(context, gateway_id, refused)
        try:
            info = await self._hello(context, gateway_id)
            await self._serve(_Stream(gateway_id, context), info)
        finally:
            self._release(gateway_id)

    async def _serve(self, stream: _Stream, info: GatewayInfo) -> None:
        gateway_id, context = stream.gateway_id, stream.context
        older = self._streams.get(gateway_id)
        self._streams[gateway_id] = stream
        if older is not None:  # the newer stream wins: one stream per gateway, in seq order
            self.counters.add("replaced_streams")
            older.outbox.put_nowait(_REPLACED)
        self.counters.add("streams")
        reader = None
        try:
            closing = self._closing.pop(gateway_id, None)
            if closing is not None:  # the last stream's disconnect is recorded before this hello
                await asyncio.wait([asyncio.wrap_future(closing)])
            stream.greeting = self.pool.submit(self._greet, stream, info)
            try:
                snapshot, extra = await asyncio.wrap_future(stream.greeting)
            except Exception as err:  # the hub's fault, not the gateway's: it retries with backoff
                self.counters.add("hub_errors")
                log.error("ingest: %s: hub failed on hello: %s", gateway_id, err)
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"hub error: {err}")
            await context.write(link_pb2.HubMessage(rule_change=snapshot))
            if extra is not None:
                stream.outbox.put_nowait(extra)
            stream.live = True
            reader = asyncio.create_task(self._read(stream))
            await self._send(stream)
        finally:
            if reader is not None:
                reader.cancel()
            self._leave(stream)

    def _greet(self, stream: _Stream, info: GatewayInfo) -> tuple[Any, RuleChange | ModelUpdate | None]:
        """In the pool: hello, watch, and the gateway's whole desired rule set (encoded)."""
        self.hub.hello(stream.gateway_id, info)
        stream.greeted = True
        stream.feed = self.hub.watch(stream.gateway_id)
        snapshot, extra = self._snapshot(stream.feed, stream.gateway_id)
        return self._encode(snapshot, stream.gateway_id), extra

    def _snapshot(self, feed: RuleFeed, gateway_id: str) -> tuple[RuleChange, RuleChange | ModelUpdate | None]:
        """The gateway's whole desired rule set, sent first on every stream.

        A hub feed starts with a snapshot of its own (computed under the hub's lock, so no
        change can fall between it and the changes that follow); a feed that does not gets
        one from desired_rules(), taken after watch() so nothing is missed (a change may
        then arrive twice, which the agent's idempotent apply absorbs).
        """
        first = feed.get(timeout=0)
        if isinstance(first, RuleChange) and first.kind == "snapshot":
            return first, None
        return RuleChange(kind="snapshot", rules=list(self.hub.desired_rules(gateway_id))), first

    def _leave(self, stream: _Stream) -> None:
        current = self._streams.get(stream.gateway_id) is stream
        if current:
            del self._streams[stream.gateway_id]
        try:
            job = self.pool.submit(self._close, stream, current)
        except RuntimeError:  # the pool is shut down: the hub is stopping, and closes itself
            return
        if current:
            self._closing[stream.gateway_id] = job

    def _close(self, stream: _Stream, current: bool) -> None:
        """In the pool: drop the stream's feed; a gateway's last stream records the disconnect."""
        if stream.greeting is not None:
            try:
                stream.greeting.result()  # a hello still running must finish before its undo
            except BaseException:  # noqa: BLE001 - already reported by the stream
                pass
        if stream.feed is not None:
            stream.feed.close()
        if current and stream.greeted:
            try:
                self.hub.disconnected(stream.gateway_id)
            except Exception:  # noqa: BLE001 - a store error must not end the pool's worker
                log.exception("ingest: %s: hub failed to record the disconnect", stream.gateway_id)

    async def _send(self, stream: _Stream) -> None:
        context, outbox = stream.context, stream.outbox
        while True:
            item = await outbox.get()
            if item is _END:
                return
            if item is _REPLACED:
                await context.abort(grpc.StatusCode.CANCELLED,
                                    f"a newer stream of gateway {stream.gateway_id!r} replaced this one")
            if isinstance(item, Refused):
                await context.abort(item.code, item.details)
            if isinstance(item, BaseException):
                await context.abort(grpc.StatusCode.INTERNAL, f"hub could not take telemetry: {item}")
            if item is _ACK_DUE:
                await context.write(link_pb2.HubMessage(telemetry_ack=stream.take_ack()))
            elif isinstance(item, RuleChange):
                await context.write(link_pb2.HubMessage(rule_change=self._encode(item, stream.gateway_id)))
            elif isinstance(item, ModelUpdate):
                await context.write(link_pb2.HubMessage(model_update=serde.model_update_to_proto(item)))

    def _encode(self, change: RuleChange, gateway_id: str) -> Any:
        """The change as protobuf, leaving out (logged, counted) any rule atlas.v1 cannot carry:
        one bad rule must not keep a gateway from every other rule, reconnect after reconnect."""
        try:
            return serde.rule_change_to_proto(change)
        except serde.WireError:
            pass
        good = []
        for signed in change.rules:
            try:
                serde.rule_to_proto(signed.rule)
            except serde.WireError as err:
                self.counters.add("unencodable_rules")
                log.error("ingest: %s: rule left out: %s", gateway_id, err)
                continue
            good.append(signed)
        return serde.rule_change_to_proto(RuleChange(kind=change.kind, rules=good, withdrawn=change.withdrawn))

    async def _read(self, stream: _Stream) -> None:
        gateway_id, outbox = stream.gateway_id, stream.outbox
        try:
            while True:
                message = await stream.context.read()
                if message is grpc.aio.EOF:
                    return
                if isinstance(message, Refused):
                    self.counters.add(message.counter)
                    self.refusals.warn(gateway_id, message.counter, message.details)
                    outbox.put_nowait(message)
                    return
                body = message.WhichOneof("body")
                if body == "telemetry":
                    ack = await self._call(self._telemetry, gateway_id, message.telemetry)
                    if isinstance(ack, Refused):
                        outbox.put_nowait(ack)
                        return
                    stream.acked(ack)
                elif body == "rule_acks":
                    await self._call(self._rule_acks, gateway_id, list(message.rule_acks.acks))
                elif body == "model_ack":
                    self.counters.add("model_acks")
                    await self._call(self.hub.model_ack, gateway_id, serde.model_ack_from_proto(message.model_ack))
                else:
                    self.counters.add("malformed_messages")
                    self.refusals.warn(gateway_id, "malformed_messages", f"sent a message with body {body!r}: ignored")
        except asyncio.CancelledError:
            raise
        except (grpc.RpcError, grpc.aio.AioRpcError, grpc.aio.UsageError):  # hang-up, cancel, size backstop
            self.counters.add("stream_errors")
            log.info("ingest: %s stream ended by the transport", gateway_id)
        except Exception as err:  # the hub failed to store: end the stream, the agent resends
            self.counters.add("hub_errors")
            log.error("ingest: %s: hub failed: %s", gateway_id, err)
            outbox.put_nowait(err)
        finally:
            outbox.put_nowait(_END)

    def _rule_acks(self, gateway_id: str, acks: list) -> None:
        for ack in acks:
            self.hub.rule_ack(gateway_id, serde.rule_ack_from_proto(ack))

    def _telemetry(self, gateway_id: str, envelope: Any) -> link_pb2.TelemetryAck | Refused:
        """In the pool: decode, check, store; the ack for the gateway, or why the stream ends."""
        if envelope.seq > MAX_STORED_INT:  # valid uint64 on the wire, but no seq the store can keep
            refused = Refused("refused_seq", grpc.StatusCode.INVALID_ARGUMENT,
                              f"telemetry.seq {envelope.seq} is over the largest the hub keeps (2^63-1)")
            self.counters.add(refused.counter)
            self.refusals.warn(gateway_id, refused.counter, refused.details)
            return refused
        try:
            # summaries stay in wire form: the hub stores them as received (PackedDevices)
            batch = serde.telemetry_from_envelope(envelope, self.max_raw_bytes, packed_devices=self.packed_devices)
            for incident in batch.incidents:
                if incident.gateway not in ("", gateway_id):
                    raise serde.WireError(f"incident {incident.id!r} claims gateway {incident.gateway!r}")
                if incident.packets > MAX_STORED_INT:
                    raise serde.WireError(f"incident {incident.id!r}: packets {incident.packets} is over 2^63-1")
                incident.gateway = gateway_id
        except serde.WireError as err:
            self.counters.add("refused_batches")
            log.error("ingest: %s: refused telemetry seq %d: %s", gateway_id, envelope.seq, err)
            return link_pb2.TelemetryAck(seq=envelope.seq, refused=1, error=str(err))
        stored = self.hub.telemetry(gateway_id, batch)
        self.counters.add("telemetry_batches")
        self.counters.add("telemetry_records", len(batch.incidents) + len(batch.devices))
        if batch.incidents:  # incidents are what make new rules: look at the feeds now
            self._poll_now_threadsafe()
        return link_pb2.TelemetryAck(seq=max(stored, 0))

    # --- rule feeds ----------------------------------------------------------------------

    def _poll_now_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._poll_now.set)

    async def poll_feeds(self) -> None:
        """Forward every live stream's feed changes, one pool call for all of them at a time."""
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._poll_now.wait(), FEED_POLL_S)
            except asyncio.TimeoutError:
                pass
            self._poll_now.clear()
            streams = [s for s in self._streams.values() if s.live and s.outbox.qsize() < OUTBOX_ROOM]
            if not streams:
                continue
            try:
                found = await self._call(self._drain_feeds, streams)
            except RuntimeError:  # the pool is shut down: the server is stopping
                return
            except Exception:  # noqa: BLE001 - rules must keep flowing: log, look again next time
                log.exception("ingest: polling the rule feeds failed")
                found = []
            for stream, changes in found:
                for change in changes:
                    stream.outbox.put_nowait(change)
            await asyncio.sleep(FEED_POLL_MIN_S)

    @staticmethod
    def _drain_feeds(streams: list[_Stream]) -> list[tuple[_Stream, list]]:
        """In the pool: what each feed holds, up to its stream's room (the rest waits, and a
        feed that overflows turns into one fresh snapshot)."""
        found = []
        for stream in streams:
            room, changes = OUTBOX_ROOM - stream.outbox.qsize(), []
            try:
                while len(changes) < room:
                    change = stream.feed.get(timeout=0)
                    if change is None:
                        break
                    changes.append(change)
            except Exception:  # noqa: BLE001 - one gateway's feed must not stop the others'
                log.exception("ingest: %s: rule feed failed", stream.gateway_id)
            if changes:
                found.append((stream, changes))
        return found
