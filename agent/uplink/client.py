"""Uplink client: the agent's end of the wire, one long-lived gRPC stream to the hub over mutual TLS.

    uplink = Uplink("hub:7443", "gw-01", tls, spool_dir, on_rules, signing_pub="rule-signing.pub")
    uplink.start()
    uplink.submit(batch)        # from the pipeline: spools to disk, never waits on the network
    uplink.stop()

A thread connects (exponential backoff with full jitter, capped), sends hello, then streams the
spool in seq order with at most `window` batches unacknowledged; the hub's acks free the spool.
Rule changes from the hub are checked (the contract's validate_rule, then the signature), the
accepted ones handed to `on_rules(change) -> list[RuleAck]`, and every rule is answered with an
ack (refused ones with the reason). Enforcement fails closed: when the hub sends a copy of a
rule that fails its check, the last verified copy of that rule id stays in force until its own
expiry (`kept`), unless the hub withdraws the rule. When the hub is away the agent keeps
working: `submit` only appends to the spool, and the stream resumes where the hub stopped.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator

import grpc

from atlas.link import __version__
from atlas.link.wire import GatewayInfo, ModelAck, ModelUpdate, RuleAck, RuleChange, SignedRule, TelemetryBatch
from atlas.link import serde
from atlas.link.counters import Counters
from atlas.link.signing import RuleVerifier
from atlas.agent.uplink.spool import Spool
from atlas.link.tls import TlsFiles, check_gateway_id
from atlas.link.rules import DEFAULT_MAX_TTL, SAFE_ID, Allowlist, Rule, RuleRejected, validate_rule
from atlas.v1 import link_pb2, link_pb2_grpc, rules_pb2, telemetry_pb2

log = logging.getLogger(__name__)

# Telemetry batches are small (kB); a model update may be a few MB. Anything bigger is refused
# by gRPC (RESOURCE_EXHAUSTED), counted, and the stream starts over.
MAX_SEND_BYTES = 4 << 20
MAX_RECEIVE_BYTES = 16 << 20
_ENVELOPE_OVERHEAD = 64  # AgentMessage + envelope framing around a spooled payload


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random = random._inst) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, initial * 2**attempt)].

    Full jitter spreads a city's gateways out when a hub comes back, instead of all of them
    reconnecting in the same instant.
    """
    return rng.uniform(0.0, min(cap, initial * (2 ** min(attempt, 32))))


def channel_options(max_send: int = MAX_SEND_BYTES, max_receive: int = MAX_RECEIVE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_send),
        ("grpc.max_receive_message_length", max_receive),
        # Notice a dead hub (or NAT that dropped the flow) within a minute, not at the next write.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 0),  # our own loop reconnects; the spool makes it safe
    ]


class Uplink:
    """The agent's connection to the hub; see the module docstring."""

    def __init__(
        self,
        hub_address: str,
        gateway_id: str,
        tls: TlsFiles,
        spool_dir: str | Path,
        on_rules: Callable[[RuleChange], list[RuleAck]],
        *,
        signing_pub: str | Path | RuleVerifier,
        on_model: Callable[[ModelUpdate], ModelAck] | None = None,
        info: GatewayInfo | None = None,
        spool_bytes: int = 64 << 20,
        window: int = 32,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        fsync_interval: float = 1.0,
        compress: bool = True,
        max_receive_bytes: int = MAX_RECEIVE_BYTES,
        server_name: str | None = None,
        clock: Callable[[], float] = time.time,
        allowlist: Allowlist = Allowlist(),
        max_ttl: float = DEFAULT_MAX_TTL,
        verified: Iterable[Rule] = (),
    ):
        self.hub_address = hub_address
        self.gateway_id = check_gateway_id(gateway_id)
        self.info = info or GatewayInfo(gateway_id=gateway_id, software_version=__version__)
        if self.info.gateway_id != gateway_id:
            raise ValueError(f"info.gateway_id {self.info.gateway_id!r} differs from gateway_id {gateway_id!r}")
        self.verifier = signing_pub if isinstance(signing_pub, RuleVerifier) else RuleVerifier.from_pem_file(signing_pub)
        cert, key, ca = tls.read()
        self._credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        self._options = channel_options(MAX_SEND_BYTES, max_receive_bytes)
        if server_name:  # when the address is not a name in the hub's certificate
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self.spool = Spool(spool_dir, max_bytes=spool_bytes, max_record_bytes=min(spool_bytes // 4, MAX_SEND_BYTES - _ENVELOPE_OVERHEAD))
        self.on_rules = on_rules
        self.allowlist = allowlist  # the gateway's: its own, its broker's and the hub's addresses
        self.max_ttl = max_ttl
        self.on_model = on_model
        self.window = window
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.fsync_interval = fsync_interval
        self.compress = compress
        self.clock = clock
        self.counters = Counters()  # see counters_snapshot()
        self._stop = threading.Event()
        self._wake = threading.Condition()  # new spool data, an ack, or a control message
        self._sync_now = threading.Event()
        self._connected = threading.Event()
        self._appended = 0  # bumped under _wake by submit: the sender never sleeps past new data
        self._call: grpc.Future | None = None
        self._threads: list[threading.Thread] = []
        self.last_error = ""
        # Fail closed: the last verified copy of every rule handed to on_rules, so a copy from
        # the hub that fails its check (a target edited in the hub's database) cannot take
        # away what the hub signed before; kept until its own expiry or the hub's withdrawal.
        # `verified`: what the enforcer already holds (its state file survives a restart; every
        # rule in it was verified when it arrived).
        self._verified: dict[str, SignedRule] = {r.id: SignedRule(r, b"") for r in verified}
        self.kept: dict[str, str] = {}  # rule id -> why the hub's newer copy was refused

    # --- the pipeline's side ------------------------------------------------------------

    def submit(self, batch: TelemetryBatch) -> int:
        """Spool a batch for the hub; sets and returns batch.seq (0 if it was too big and dropped).

        Fills batch.health's spool_depth and spool_dropped, when the batch has health.

        Never waits on the network; disk writes go to the page cache (fsync happens on the
        uplink's own thread).
        """

        if batch.health is not None:  # the hub sees what the spool holds and had to drop
            stats = self.spool.stats()
            batch.health.spool_depth = stats.depth
            batch.health.spool_dropped = stats.dropped_batches

        def build(seq: int) -> bytes:
            batch.seq = seq
            return serde.telemetry_to_envelope(batch, compress=self.compress).SerializeToString()

        seq = self.spool.append(build, incidents=len(batch.incidents))
        self.counters.add("batches_submitted")
        if batch.incidents:
            self._sync_now.set()  # incidents reach the disk now, not at the next interval
        with self._wake:
            self._appended += 1
            self._wake.notify_all()
        return seq

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> "Uplink":
        for name, target in (("atlas-uplink", self._run), ("atlas-uplink-sync", self._sync_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._sync_now.set()
        call = self._call
        if call is not None:
            call.cancel()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self.spool.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def counters_snapshot(self) -> dict[str, int]:
        """Counters (sent, acked, refused rules by field, reconnects, ...) plus the spool's."""
        stats = self.spool.stats()
        out = self.counters.snapshot()
        out.update(
            spool_depth=stats.depth,
            spool_bytes=stats.bytes,
            spool_dropped_batches=stats.dropped_batches,
            spool_dropped_incidents=stats.dropped_incidents,
            spool_torn_records=stats.torn_records,
        )
        return out

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            self._sync_now.wait(self.fsync_interval)
            self._sync_now.clear()
            try:
                self.spool.sync()
            except OSError as err:
                self.counters.add("spool_sync_errors")
                log.error("uplink: spool sync failed: %s", err)

    # --- the connection -----------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            session = _Session(self)
            channel = grpc.secure_channel(self.hub_address, self._credentials, options=self._options)
            try:
                self.counters.add("connect_attempts")
                call = link_pb2_grpc.GatewayLinkStub(channel).Connect(session.requests())
                self._call = call
                if self._stop.is_set():
                    call.cancel()
                for message in call:
                    if not self._connected.is_set():
                        self._connected.set()
                        self.counters.add("connections")
                        attempt = 0  # the hub answered: start the backoff over next time
                        log.info("uplink: connected to %s as %s", self.hub_address, self.gateway_id)
                    self._handle(message, session)
                self.last_error = "hub ended the stream"
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else None
                self.last_error = f"{code.name if code else 'error'}: {err.details() if hasattr(err, 'details') else err}"
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self.counters.add("oversized_messages")
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    self.counters.add("refused_by_hub")
                if not self._stop.is_set():
                    log.warning("uplink: stream to %s ended: %s", self.hub_address, self.last_error)
            except Exception:  # a bug must not end the uplink: log, back off, reconnect
                self.counters.add("errors")
                log.exception("uplink: unexpected error")
            finally:
                session.close()
                self._call = None
                self._connected.clear()
                channel.close()
            if self._stop.is_set():
                break
            self.counters.add("reconnects")
            self._stop.wait(backoff_delay(attempt, self.backoff_initial, self.backoff_max))
            attempt += 1

    def _handle(self, message: link_pb2.HubMessage, session: "_Session") -> None:
        body = message.WhichOneof("body")
        if body == "telemetry_ack":
            ack = message.telemetry_ack
            self.spool.ack(ack.seq)
            session.acked(ack.seq)
            self.counters.add("telemetry_acks")
            if ack.refused:
                self.counters.add("telemetry_refused_by_hub", ack.refused)
                log.error("uplink: hub refused %d telemetry batch(es) up to seq %d: %s", ack.refused, ack.seq, ack.error)
        elif body == "rule_change":
            acks = self.apply_rule_change(message.rule_change)
            if acks:
                session.send(link_pb2.AgentMessage(rule_acks=rules_pb2.RuleAcks(acks=[serde.rule_ack_to_proto(a) for a in acks])))
        elif body == "model_update":
            self._model_update(message.model_update, session)
        else:
            self.counters.add("malformed_messages")
            log.error("uplink: hub message with no known body (%s): ignored", body)

    def apply_rule_change(self, msg: rules_pb2.RuleChange) -> list[RuleAck]:
        """Check a RuleChange from the hub, hand what passes to on_rules; return the acks to send.

        Each rule must be in the vocabulary (validate_rule) and signed by the hub (verify_rule);
        a refused rule is answered with applied=False and the reason, and counted by field.
        """
        try:
            change = serde.rule_change_from_proto(msg)
        except serde.WireError as err:
            self.counters.add("malformed_messages")
            log.error("uplink: malformed rule change: %s", err)
            return []
        now = self.clock()
        self._forget_expired(now)
        accepted, acks = [], []
        kept_now: set[str] = set()
        for signed in change.rules:
            try:
                validate_rule(signed.rule, now, self.allowlist, self.max_ttl)
                self.verifier.verify_rule(signed)
            except RuleRejected as err:
                self.counters.add("rules_refused")
                self.counters.add(f"rules_refused_{err.field.split('.')[0]}")
                rule_id, error = str(signed.rule.id)[:128], str(err)
                last = self._verified.get(rule_id)
                if last is not None:
                    accepted.append(last)
                    kept_now.add(rule_id)
                    self.kept[rule_id] = error
                    self.counters.add("rules_kept_last_verified")
                    error += "; the gateway keeps enforcing its last verified copy until its expiry"
                log.error("uplink: refused rule %r: %s", err.rule_id, error)
                acks.append(RuleAck(rule_id=rule_id, applied=False, error=error))
                continue
            accepted.append(signed)
            self.kept.pop(signed.rule.id, None)
        withdrawn = []
        for rule_id in change.withdrawn:
            if SAFE_ID.fullmatch(rule_id):
                withdrawn.append(rule_id)
            else:
                self.counters.add("rules_refused")
                self.counters.add("rules_refused_id")
                log.error("uplink: refused withdrawal of %r: not a rule id", rule_id)
        self.counters.add("rules_accepted", len(accepted) - len(kept_now))
        self._remember(change.kind, accepted, withdrawn)
        if accepted or withdrawn or change.kind == "snapshot":  # an empty snapshot still clears old rules
            try:
                applied = self.on_rules(RuleChange(kind=change.kind, rules=accepted, withdrawn=withdrawn)) or []
            except Exception as err:  # enforcement failed: tell the hub, keep the link up
                self.counters.add("on_rules_errors")
                log.exception("uplink: on_rules failed")
                applied = [RuleAck(rule_id=s.rule.id, applied=False, error=f"enforcement failed: {err}") for s in accepted]
            # a kept copy is answered with the refusal of the hub's copy, not as applied
            acks.extend(a for a in applied if a.rule_id not in kept_now)
        return acks

    def _remember(self, kind: str, accepted: list[SignedRule], withdrawn: list[str]) -> None:
        """Track the verified copies on_rules now holds (see `_verified`)."""
        if kind == "snapshot":
            self._verified = {}  # a rule the hub no longer lists is withdrawn, kept or not
        self._verified.update((s.rule.id, s) for s in accepted)
        for rule_id in withdrawn:
            self._verified.pop(rule_id, None)
        self.kept = {k: v for k, v in self.kept.items() if k in self._verified}

    def _forget_expired(self, now: float) -> None:
        for rule_id in [k for k, s in self._verified.items() if s.rule.expires_at <= now]:
            del self._verified[rule_id]
            self.kept.pop(rule_id, None)

    def _model_update(self, msg: rules_pb2.ModelUpdate, session: "_Session") -> None:
        ack = self.handle_model_update(msg)
        session.send(link_pb2.AgentMessage(model_ack=serde.model_ack_to_proto(ack)))

    def handle_model_update(self, msg: rules_pb2.ModelUpdate) -> ModelAck:
        """Check a model update's signature, hand it to on_model; return the ack for the hub.

        on_model(update) -> ModelAck does the rest (integrity, compatibility, install, swap);
        anything refused here or there leaves the running model in place.
        """
        update = serde.model_update_from_proto(msg)
        name, version = update.name[:64], update.version[:128]
        try:
            self.verifier.verify_model(update)
        except ValueError as err:
            self.counters.add("models_refused")
            log.error("uplink: refused %s", err)
            return ModelAck(name, version, applied=False, error=f"signature: {err}")
        if self.on_model is None:
            self.counters.add("models_refused")
            return ModelAck(name, version, applied=False, error="this agent does not take model updates")
        try:
            ack = self.on_model(update)
        except Exception as err:  # a bug in installing must not end the link
            self.counters.add("on_model_errors")
            log.exception("uplink: on_model failed")
            return ModelAck(name, version, applied=False, error=f"install failed: {err}")
        self.counters.add("models_accepted" if ack.applied else "models_refused")
        return ack


class _Session:
    """One stream's sending side: hello, then control messages first, then spooled telemetry."""

    def __init__(self, uplink: Uplink):
        self.uplink = uplink
        self.closed = False
        self.outbox: queue.SimpleQueue[link_pb2.AgentMessage] = queue.SimpleQueue()
        # Resend everything not acknowledged: the hub ignores a seq it already stored.
        self.sent = uplink.spool.acked
        self.in_flight: deque[int] = deque()

    def send(self, message: link_pb2.AgentMessage) -> None:
        self.outbox.put(message)
        with self.uplink._wake:
            self.uplink._wake.notify_all()

    def acked(self, seq: int) -> None:
        with self.uplink._wake:
            while self.in_flight and self.in_flight[0] <= seq:
                self.in_flight.popleft()
            self.uplink._wake.notify_all()

    def close(self) -> None:
        self.closed = True
        with self.uplink._wake:
            self.uplink._wake.notify_all()

    def requests(self) -> Iterator[link_pb2.AgentMessage]:
        up = self.uplink
        yield link_pb2.AgentMessage(hello=serde.gateway_info_to_proto(up.info))
        while not self.closed and not up._stop.is_set():
            try:
                yield self.outbox.get_nowait()
                continue
            except queue.Empty:
                pass
            with up._wake:
                appended = up._appended
            room = up.window - len(self.in_flight)
            records = up.spool.read_after(self.sent, max_records=room) if room > 0 else []
            for seq, payload in records:
                self.sent = seq
                try:
                    envelope = telemetry_pb2.TelemetryEnvelope.FromString(payload)
                except Exception:  # CRC-checked on disk, so only a bug gets here: skip, never loop on it
                    up.counters.add("spool_unreadable")
                    log.error("uplink: spooled batch seq %d is not an envelope: skipped", seq)
                    continue
                with up._wake:
                    self.in_flight.append(seq)
                up.counters.add("batches_sent")
                yield link_pb2.AgentMessage(telemetry=envelope)
            if records:
                continue
            with up._wake:
                idle = appended == up._appended or room <= 0
                if idle and self.outbox.empty() and not self.closed and not up._stop.is_set():
                    up._wake.wait(1.0)
