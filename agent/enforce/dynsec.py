"""MQTT credential revocation through the broker's dynamic-security plugin.

Commands are JSON published to `$CONTROL/dynamic-security/v1` by an admin account; answers
come back on `$CONTROL/dynamic-security/v1/response`, matched by correlationData (another
admin client may share the response topic). `disableClient` disconnects the client at once
and refuses its reconnects (CONNACK 5); `enableClient` lifts that.

The broker has no TTL, so a revocation outlives a dead agent until the agent starts again and
reconciles (it re-enables every client it disabled that is no longer desired). Which clients
ATLAS disabled comes from the enforcer's state file, so a client disabled by an operator is
never re-enabled by ATLAS.
"""
from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import uuid
from typing import Any, Iterable, Mapping

import paho.mqtt.client as mqtt

from atlas.agent.enforce.backend import Backend, BackendError, Element, diff

log = logging.getLogger(__name__)

COMMAND_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"


class DynsecError(BackendError):
    pass


class DynsecClient:
    """A small synchronous client for dynamic-security commands (paho-mqtt 2.x underneath)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        tls_ca: str = "",
        timeout: float = 5.0,
        client_id: str = "",
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.where = f"MQTT broker {host}:{port}"
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"atlas-enforce-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv311,
        )
        self._client.username_pw_set(username, password)
        if tls_ca:
            self._client.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        self._client.reconnect_delay_set(1, 30)
        self._client.connect_timeout = timeout
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._cond = threading.Condition()
        self._ready = False  # connected and subscribed to the response topic
        self._refused = ""  # why the broker refused us, if it did
        self._pending: dict[str, dict[int, dict[str, Any]]] = {}  # batch id -> index -> response
        self._started = False

    # paho callbacks run on paho's network thread
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            with self._cond:
                self._refused = str(reason)
                self._cond.notify_all()
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        with self._cond:
            if any(r.is_failure for r in reasons):
                self._refused = f"subscription to {RESPONSE_TOPIC} refused (is the account a dynsec admin?)"
            else:
                self._ready, self._refused = True, ""
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._cond:
            self._ready = False  # paho reconnects; run() waits for the new subscription

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("%s: unreadable dynamic-security response %r", self.where, msg.payload[:200])
            return
        with self._cond:
            for resp in responses:
                corr = str(resp.get("correlationData", "")) if isinstance(resp, dict) else ""
                batch, _, index = corr.partition(":")
                if batch in self._pending and index.isdigit():
                    self._pending[batch][int(index)] = resp
            self._cond.notify_all()

    def connect(self) -> None:
        """Connect and subscribe; raise DynsecError naming the broker if that fails in time."""
        if not self._started:
            try:
                self._client.connect(self.host, self.port, keepalive=30)
            except OSError as exc:
                raise DynsecError(f"{self.where}: cannot connect: {exc}") from None
            self._client.loop_start()
            self._started = True
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._refused, self.timeout):
                raise DynsecError(f"{self.where}: no answer to CONNECT/SUBSCRIBE within {self.timeout:.0f} s")
            if not self._ready:
                raise DynsecError(f"{self.where}: refused: {self._refused}")

    def ensure_connected(self) -> None:
        if not self._started:
            self.connect()
        elif not self._ready:  # paho is reconnecting in the background: fail fast, retried later
            raise DynsecError(f"{self.where}: not connected ({self._refused or 'reconnecting'})")

    def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send commands in one message; return the broker's responses in the same order."""
        if not commands:
            return []
        self.ensure_connected()
        batch = uuid.uuid4().hex
        payload = {"commands": [{**c, "correlationData": f"{batch}:{i}"} for i, c in enumerate(commands)]}
        with self._cond:
            self._pending[batch] = {}
        try:
            info = self._client.publish(COMMAND_TOPIC, json.dumps(payload), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise DynsecError(f"{self.where}: publish failed: {mqtt.error_string(info.rc)}")
            with self._cond:
                done = self._cond.wait_for(lambda: len(self._pending[batch]) == len(commands), self.timeout)
                got = self._pending[batch]
            if not done:
                raise DynsecError(f"{self.where}: {len(commands) - len(got)} of {len(commands)} dynamic-security commands unanswered within {self.timeout:.0f} s")
            return [got[i] for i in range(len(commands))]
        finally:
            with self._cond:
                self._pending.pop(batch, None)

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False
        self._ready = False


class DynsecBackend(Backend):
    """revoke_mqtt as disableClient/enableClient; the TTL is kept by the enforcer."""

    name = "mqtt-dynsec"
    actions = frozenset({"revoke_mqtt"})

    def __init__(self, client: DynsecClient) -> None:
        super().__init__()
        self.client = client

    def observe(self, candidates: Iterable[Element] = ()) -> dict[Element, float | None]:
        names = sorted({e.target for e in candidates if e.action == "revoke_mqtt"})
        responses = self.client.run([{"command": "getClient", "username": n} for n in names])
        found: dict[Element, float | None] = {}
        for name, resp in zip(names, responses):
            client = (resp.get("data") or {}).get("client") or {}
            if not resp.get("error") and client.get("disabled"):
                found[Element("revoke_mqtt", name)] = None
        return found

    def reconcile(self, desired: Mapping[Element, float], candidates: Iterable[Element], now: float):  # type: ignore[override]
        self.client.ensure_connected()  # an unreachable broker is reported at start
        # The broker cannot list "what ATLAS disabled": check the previous state and the desired.
        return super().reconcile(desired, {*candidates, *desired}, now)

    def apply(self, desired: Mapping[Element, float], now: float) -> dict[Element, str]:
        upserts, removals = diff(self.view, desired)
        new = [e for e in upserts if e not in self.view]
        for e in upserts:  # a changed expiry only matters to the enforcer's timer
            if e in self.view:
                self.view[e] = upserts[e]
        ops = [(e, "disableClient") for e in new] + [(e, "enableClient") for e in removals]
        if not ops:
            return {}
        try:
            responses = self.client.run([{"command": cmd, "username": e.target} for e, cmd in ops])
        except DynsecError as exc:
            return {e: str(exc) for e, _ in ops}
        failed: dict[Element, str] = {}
        for (element, cmd), resp in zip(ops, responses):
            error = resp.get("error")
            if cmd == "enableClient":
                # a client deleted meanwhile has nothing left to re-enable
                if error and error != "Client not found":
                    failed[element] = f"{self.client.where}: enableClient {element.target}: {error}"
                else:
                    self.view.pop(element, None)
            elif error:
                failed[element] = f"{self.client.where}: disableClient {element.target}: {error}"
            else:
                self.view[element] = upserts[element]
        return failed

    def shutdown(self) -> None:
        self.client.close()
