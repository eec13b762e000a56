"""The hub's side of GatewayLink.Connect: one long-lived stream per gateway.

Per stream: bind it to the gateway id in the client certificate, require hello with that same
id, call hub.hello, subscribe to the gateway's rule changes (hub.watch) and send the whole
desired set first (snapshot), then forward changes as they come. Meanwhile a reader thread
decodes telemetry, hands it to hub.telemetry and acknowledges the highest seq stored. Refused
input (bad identity, malformed, oversized, inflating past the limit) is counted and logged.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from typing import Iterator, Protocol

import grpc

from atlas.link.wire import GatewayInfo, ModelAck, ModelUpdate, RuleAck, RuleChange, SignedRule, TelemetryBatch
from atlas.link import serde
from atlas.link.counters import Counters
from atlas.central.pki import gateway_id_of
from atlas.v1 import link_pb2, link_pb2_grpc

log = logging.getLogger(__name__)

_END = object()  # outbox sentinel: the stream is over


class Refused:
    """A request the deserializer would not decode: the stream ends with `code`, counted as `counter`."""

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


class GatewayLinkServicer(link_pb2_grpc.GatewayLinkServicer):
    def __init__(self, hub: HubLike, max_raw_bytes: int = serde.DEFAULT_MAX_RAW_BYTES,
                 max_message_bytes: int = 4 << 20, packed_devices: bool = True):
        self.hub = hub
        # True: device summaries reach the hub in wire form (serde.PackedDevices) and are
        # stored as received; False decodes each one (the bench's before/after baseline).
        self.packed_devices = packed_devices
        self.max_raw_bytes = max_raw_bytes
        self.max_message_bytes = max_message_bytes
        self.counters = Counters()
        self._lock = threading.Lock()
        self._streams: dict[str, grpc.ServicerContext] = {}  # the live stream of each gateway

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

    def _refuse(self, context: grpc.ServicerContext, gateway_id: str, refused: Refused) -> None:
        self.counters.add(refused.counter)
        log.warning("ingest: %s: %s", gateway_id, refused.details)
        context.abort(refused.code, refused.details)

    # --- identity -----------------------------------------------------------------------

    def _identity(self, context: grpc.ServicerContext) -> str:
        auth = context.auth_context()
        pems = auth.get("x509_pem_cert") or []
        gateway_id = gateway_id_of(pems[0]) if pems else None
        if gateway_id is None:
            self.counters.add("refused_identity")
            log.warning("ingest: refused %s: no gateway certificate", context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "client certificate is not an ATLAS gateway certificate")
        return gateway_id

    def _hello(self, request_iterator, context: grpc.ServicerContext, gateway_id: str) -> GatewayInfo:
        try:
            first = next(request_iterator)
        except StopIteration:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream ended before hello")
        if isinstance(first, Refused):
            self._refuse(context, gateway_id, first)
        if first.WhichOneof("body") != "hello":
            self.counters.add("refused_hello")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
        hello = first.hello
        if hello.protocol_version != serde.PROTOCOL_VERSION:
            self.counters.add("refused_hello")
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"hello.protocol_version {hello.protocol_version}: this hub speaks {serde.PROTOCOL_VERSION}",
            )
        if hello.gateway_id != gateway_id:
            self.counters.add("refused_impersonation")
            log.warning("ingest: gateway %r claimed to be %r: refused", gateway_id, hello.gateway_id)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"hello.gateway_id {hello.gateway_id!r} differs from the certificate's gateway {gateway_id!r}",
            )
        return serde.gateway_info_from_proto(hello)

    # --- the stream ---------------------------------------------------------------------

    def Connect(self, request_iterator, context: grpc.ServicerContext) -> Iterator[link_pb2.HubMessage]:
        gateway_id = self._identity(context)
        info = self._hello(request_iterator, context, gateway_id)
        outbox: queue.SimpleQueue = queue.SimpleQueue()
        context.add_callback(lambda: outbox.put(_END))
        with self._lock:
            older = self._streams.get(gateway_id)
            self._streams[gateway_id] = context
        if older is not None:  # the newer stream wins: one stream per gateway, in seq order
            self.counters.add("replaced_streams")
            older.cancel()
        self.counters.add("streams")
        feed = None
        greeted = False
        try:
            try:
                self.hub.hello(gateway_id, info)
                greeted = True
                feed = self.hub.watch(gateway_id)
                snapshot = self._encode(self._snapshot(feed, gateway_id, outbox), gateway_id)
            except Exception as err:  # the hub's fault, not the gateway's: it retries with backoff
                self.counters.add("hub_errors")
                log.exception("ingest: %s: hub failed on hello", gateway_id)
                context.abort(grpc.StatusCode.UNAVAILABLE, f"hub error: {err}")
            yield link_pb2.HubMessage(rule_change=snapshot)
            threads = [
                threading.Thread(target=self._read, args=(request_iterator, context, gateway_id, outbox), daemon=True, name=f"ingest-read-{gateway_id}"),
                threading.Thread(target=self._pump, args=(feed, context, outbox), daemon=True, name=f"ingest-feed-{gateway_id}"),
            ]
            for thread in threads:
                thread.start()
            yield from self._send(outbox, context, gateway_id)
        finally:
            if feed is not None:
                feed.close()
            with self._lock:
                current = self._streams.get(gateway_id) is context
                if current:
                    del self._streams[gateway_id]
            if current and greeted:
                self.hub.disconnected(gateway_id)

    def _snapshot(self, feed: RuleFeed, gateway_id: str, outbox: queue.SimpleQueue) -> RuleChange:
        """The gateway's whole desired rule set, sent first on every stream.

        A hub feed starts with a snapshot of its own (computed under the hub's lock, so no
        change can fall between it and the changes that follow); a feed that does not gets
        one from desired_rules(), taken after watch() so nothing is missed (a change may
        then arrive twice, which the agent's idempotent apply absorbs).
        """
        first = feed.get(timeout=0.5)
        if isinstance(first, RuleChange) and first.kind == "snapshot":
            return first
        if first is not None:
            outbox.put(first)
        return RuleChange(kind="snapshot", rules=list(self.hub.desired_rules(gateway_id)))

    def _send(self, outbox: queue.SimpleQueue, context: grpc.ServicerContext, gateway_id: str) -> Iterator[link_pb2.HubMessage]:
        pending: deque = deque()  # taken from the outbox while merging acks, sent next, in order
        while context.is_active():
            item = pending.popleft() if pending else outbox.get()
            if item is _END:
                return
            if isinstance(item, Refused):
                context.abort(item.code, item.details)
            if isinstance(item, BaseException):
                context.abort(grpc.StatusCode.INTERNAL, f"hub could not take telemetry: {item}")
            if isinstance(item, link_pb2.TelemetryAck):
                yield link_pb2.HubMessage(telemetry_ack=self._coalesce(item, outbox, pending))
            elif isinstance(item, RuleChange):
                yield link_pb2.HubMessage(rule_change=self._encode(item, gateway_id))
            elif isinstance(item, ModelUpdate):
                yield link_pb2.HubMessage(model_update=serde.model_update_to_proto(item))

    def _encode(self, change: RuleChange, gateway_id: str):
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

    @staticmethod
    def _coalesce(ack: link_pb2.TelemetryAck, outbox: queue.SimpleQueue, pending: deque) -> link_pb2.TelemetryAck:
        """Merge the acks already waiting behind this one: the highest seq says it all."""
        while not pending:
            try:
                nxt = outbox.get_nowait()
            except queue.Empty:
                break
            if not isinstance(nxt, link_pb2.TelemetryAck):
                pending.append(nxt)
                break
            ack = link_pb2.TelemetryAck(
                seq=max(ack.seq, nxt.seq), refused=ack.refused + nxt.refused, error=nxt.error or ack.error
            )
        return ack

    def _pump(self, feed: RuleFeed, context: grpc.ServicerContext, outbox: queue.SimpleQueue) -> None:
        while context.is_active():
            change = feed.get(timeout=1.0)
            if change is not None:
                outbox.put(change)

    def _read(self, request_iterator, context: grpc.ServicerContext, gateway_id: str, outbox: queue.SimpleQueue) -> None:
        try:
            for message in request_iterator:
                if isinstance(message, Refused):
                    self.counters.add(message.counter)
                    log.warning("ingest: %s: %s", gateway_id, message.details)
                    outbox.put(message)
                    return
                body = message.WhichOneof("body")
                if body == "telemetry":
                    outbox.put(self._telemetry(gateway_id, message.telemetry))
                elif body == "rule_acks":
                    for ack in message.rule_acks.acks:
                        self.hub.rule_ack(gateway_id, serde.rule_ack_from_proto(ack))
                elif body == "model_ack":
                    self.counters.add("model_acks")
                    self.hub.model_ack(gateway_id, serde.model_ack_from_proto(message.model_ack))
                else:
                    self.counters.add("malformed_messages")
                    log.warning("ingest: %s sent a message with body %r: ignored", gateway_id, body)
        except grpc.RpcError:  # hang-up, cancel, or gRPC's own size backstop
            self.counters.add("stream_errors")
            log.info("ingest: %s stream ended by the transport", gateway_id)
        except Exception as err:  # the hub failed to store: end the stream, the agent resends
            self.counters.add("hub_errors")
            log.exception("ingest: %s: hub failed", gateway_id)
            outbox.put(err)
        finally:
            outbox.put(_END)

    def _telemetry(self, gateway_id: str, envelope) -> link_pb2.TelemetryAck:
        try:
            # summaries stay in wire form: the hub stores them as received (PackedDevices)
            batch = serde.telemetry_from_envelope(envelope, self.max_raw_bytes, packed_devices=self.packed_devices)
            for incident in batch.incidents:
                if incident.gateway not in ("", gateway_id):
                    raise serde.WireError(f"incident {incident.id!r} claims gateway {incident.gateway!r}")
                incident.gateway = gateway_id
        except serde.WireError as err:
            self.counters.add("refused_batches")
            log.error("ingest: %s: refused telemetry seq %d: %s", gateway_id, envelope.seq, err)
            return link_pb2.TelemetryAck(seq=envelope.seq, refused=1, error=str(err))
        stored = self.hub.telemetry(gateway_id, batch)
        self.counters.add("telemetry_batches")
        self.counters.add("telemetry_records", len(batch.incidents) + len(batch.devices))
        return link_pb2.TelemetryAck(seq=max(stored, 0))
