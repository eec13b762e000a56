"""The hub daemon, in one place: config -> store -> inventory + policy + correlation engine
(both chosen by name in central.toml) + signer -> Hub -> gRPC ingest (mutual TLS), control
socket, metrics. `atlas-central serve` calls `serve()`; tests call `build_hub()`.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import IO, Callable

from atlas.link import __version__, notify
from atlas.link.control import serve as serve_control
from atlas.central.config import ConfigError, HubConfig, require_files
from atlas.central.correlate.registry import CorrelationEngine, build_engine
from atlas.central.correlate.rules import GatewayPlace
from atlas.central.decide.inventory import Inventory, InventoryError, load_inventory
from atlas.central.decide.registry import build_policy
from atlas.central.hub import Hub, Signer
from atlas.central.ontology.knowledge import CityKnowledge
from atlas.central.store import StoreError, open_store

log = logging.getLogger("atlas.central")
MAINTENANCE_STALL_SECONDS = 10.0


def load_signer(config: HubConfig) -> Signer:
    from atlas.link.signing import RuleSigner as Ed25519Signer

    source = str(config.path or "<config>")
    if config.signing_key is None:
        raise ConfigError(f"{source}: hub.signing_key: missing (the hub signs every rule)")
    try:
        return Ed25519Signer.from_pem_file(config.signing_key)
    except FileNotFoundError:
        raise ConfigError(f"{source}: hub.signing_key: no such file "
                          f"{str(config.signing_key)!r}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: hub.signing_key: {config.signing_key}: not a usable "
                          f"Ed25519 private key ({exc})") from None


def load_city_inventory(config: HubConfig) -> Inventory:
    if config.inventory is None:
        return Inventory()
    try:
        return load_inventory(config.inventory)
    except InventoryError as exc:
        raise ConfigError(f"{config.path or '<config>'}: hub.inventory: {exc}") from None


def build_correlator(config: HubConfig) -> CorrelationEngine:
    from atlas.central.correlate.attention import ModelUnavailable

    try:
        return build_engine(config.correlate.engine, config.correlate.window)
    except (ModelUnavailable, ValueError) as exc:
        raise ConfigError(f"{config.path or '<config>'}: correlate.engine: "
                          f"{config.correlate.engine}: {exc}") from None


def gateway_places(config: HubConfig) -> dict[str, GatewayPlace]:
    return {gid: GatewayPlace(gid, p.domain, p.district, p.subnet)
            for gid, p in config.gateways.items()}


def build_hub(config: HubConfig, signer: Signer | None = None,
              clock: Callable[[], float] = time.time) -> Hub:
    """Open (and migrate) the store and assemble the hub; nothing listens yet."""
    inventory = load_city_inventory(config)
    policy = build_policy(config)
    signer = signer or load_signer(config)
    store = open_store(config.database, sync=config.sync)
    return Hub(store, policy, signer, inventory=inventory, allowlist=config.decide.allowlist,
               merge_window=config.merge_window, operator_poll=config.operator_poll,
               clock=clock, listen=config.listen, version=__version__,
               telemetry_retention=config.telemetry_retention,
               places=gateway_places(config), correlator=build_correlator(config),
               knowledge=city_knowledge(config, store))


def city_knowledge(config: HubConfig, store) -> CityKnowledge:
    """The city graph of the config's inventory and gateway places, plus the gateways the
    store knows; the hub starts building it (without the ontology extra: one log line)."""
    return CityKnowledge(config.inventory, config.gateways,
                         gateway_ids=lambda: [g.id for g in store.list_gateways()])


def check(config: HubConfig) -> dict:
    """What `atlas-central check` verifies before a start: files, keys, inventory, playbook."""
    require_files(config, for_serving=True)
    load_signer(config)
    inventory = load_city_inventory(config)
    policy = build_policy(config)
    return {"config": str(config.path), "database": str(config.database),
            "listen": config.listen, "inventory_devices": len(inventory),
            "allowlist": list(config.decide.allowlist), "shadow": config.decide.shadow,
            "policy": config.decide.policy, "correlate": config.correlate.engine,
            "gateways": {gid: vars(p) for gid, p in config.gateways.items()},
            "playbook": policy.table() if hasattr(policy, "table") else {},
            "graph": check_graph(config)}


def check_graph(config: HubConfig) -> dict:
    """The SHACL check of the inventory and the service declarations (the ontology extra);
    an error fails the check with the finding that names the device and the field."""
    from atlas.central.ontology import missing

    gone = missing("rdflib", "pyshacl")
    if config.inventory is None or gone:
        why = "no [hub] inventory" if config.inventory is None else f"ontology extra not installed ({', '.join(gone)})"
        return {"checked": False, "why": why, "errors": 0, "warnings": 0, "findings": []}
    from atlas.central.ontology.facts import FactsError, load_facts
    from atlas.central.ontology.graph import build_graph
    from atlas.central.ontology.shapes import check

    try:
        facts = load_facts(inventory=config.inventory)
    except FactsError as exc:
        raise ConfigError(f"{config.path or '<config>'}: hub.inventory: {exc}") from None
    findings = check(build_graph(facts), facts)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise ConfigError(f"{config.path or '<config>'}: hub.inventory: graph check: {errors[0]}"
                          + (f" (and {len(errors) - 1} more: atlas-central graph check)" if len(errors) > 1 else ""))
    return {"checked": True, "why": "", "errors": 0, "warnings": len(findings),
            "findings": [str(f) for f in findings]}


def lock_database(database: Path) -> IO[bytes]:
    """Hold an exclusive lock beside the database for the daemon's life: two hubs on one
    store would both expire rules and run operator commands (and gRPC's SO_REUSEPORT would let
    both listen on the same port without an error)."""
    path = database.with_name(database.name + ".lock")
    handle = open(path, "a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().decode(errors="replace").strip() or "unknown"
        handle.close()
        raise StoreError(f"{database}: another atlas-central is serving this database "
                         f"(pid {owner}); stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()).encode())
    handle.flush()
    return handle


class LiveStatus:
    """What the running hub says about itself: the store's view plus the wire's live counters.
    Served on the control socket (`atlas-central status`) and as Prometheus metrics."""

    METRICS_EVERY_S = 5.0  # the store's counts are SQL queries: not every loop

    def __init__(self, hub, server) -> None:
        self.hub, self.server = hub, server
        self.metrics = None
        self.metrics_server = None
        self._seen: dict[str, int] = {}
        self._events_seen: dict[str, int] = {}
        self._updated = 0.0
        self._cpu = (time.monotonic(), time.process_time())

    def status(self, _args=None) -> dict:
        out = self.hub.status()  # the store's view and the city graph's state
        out["running"] = True
        out["serving"] = self.server.alive()  # False: the gRPC loop is dead (the hub exits)
        out["wire"] = self.server.counters()
        return out

    def start_metrics(self, port: int):
        from atlas.central.metrics import CentralMetrics

        self.metrics = CentralMetrics(__version__)
        self.hub.metrics = self.metrics  # the hub observes decision latency as it dispatches
        self.metrics_server = self.metrics.serve(port)
        self.update_metrics()
        return self.metrics

    def update_metrics(self) -> None:
        if time.monotonic() - self._updated < self.METRICS_EVERY_S:
            return
        self._updated = time.monotonic()
        m, wire = self.metrics, self.server.counters()
        m.observe_telemetry(wire.get("telemetry_records", 0) - self._seen.get("telemetry_records", 0))
        for reason in ("refused_batches", "malformed_messages", "refused_identity", "refused_impersonation",
                       "refused_seq", "refused_streams_per_gateway", "refused_gateway_limit", "hello_timeouts"):
            m.drop_telemetry(reason, wire.get(reason, 0) - self._seen.get(reason, 0))
        self._seen = dict(wire)
        counts = self.hub.store.counts()
        m.set_gateway_streams({"connected": counts["gateways_online"], "disconnected": counts["gateways"] - counts["gateways_online"]})
        m.set_rules({"active": counts["rules_active"], "shadow": counts["rules_shadow"]})
        m.set_campaigns(counts["campaigns"])
        m.set_queue_depth(self.hub.queue_depth())
        m.set_cpu_share(self._cpu_share())
        events = self.hub.bus.stats()
        for outcome in ("published", "dropped", "handler_errors"):
            m.count_events(outcome, events[outcome] - self._events_seen.get(outcome, 0))
        self._events_seen = events

    def _cpu_share(self) -> float:
        """The hub's CPU time since the last update over the machine's capacity (0-1)."""
        wall, cpu = time.monotonic(), time.process_time()
        then_wall, then_cpu = self._cpu
        self._cpu = (wall, cpu)
        elapsed = wall - then_wall
        return (cpu - then_cpu) / (elapsed * (os.cpu_count() or 1)) if elapsed > 0 else 0.0


def serve(config: HubConfig, stop: threading.Event | None = None,
          on_ready: Callable[[int], None] | None = None) -> int:
    """Run the hub until SIGTERM/SIGINT (or `stop` is set). Returns the exit code."""
    from atlas.link.tls import TlsFiles
    from atlas.central.ingest.server import serve as serve_ingest
    from atlas.central.ingest.servicer import StreamLimits

    require_files(config, for_serving=True)
    check_graph(config)  # the inventory's SHACL shapes, as --check runs them: a start is a load too
    lock = lock_database(config.database)
    hub = build_hub(config)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    tls = TlsFiles(cert=config.tls.cert, key=config.tls.key, ca=config.tls.ca)
    try:
        limits = StreamLimits(max_gateways=config.ingest.max_gateways,
                              max_streams_per_gateway=config.ingest.max_streams_per_gateway,
                              hello_timeout=config.ingest.hello_timeout)
        server = serve_ingest(hub, config.listen, tls, limits=limits, workers=config.ingest.workers)
    except Exception:
        hub.store.close()
        lock.close()
        raise
    host = config.listen.rpartition(":")[0]
    hub.listen = f"{host}:{server.port}"  # the real port when the config says 0
    hub.start()
    live = LiveStatus(hub, server)
    control = serve_control(str(config.control_socket), {"status": live.status}) if config.control_socket else None
    metrics = live.start_metrics(config.metrics_port) if config.metrics_port else None
    log.info("atlas-central %s listening on %s (port %d), database %s", __version__,
             config.listen, server.port, config.database)
    notify.ready(f"listening on {config.listen}")
    if on_ready is not None:
        on_ready(server.port)
    dog = notify.watchdog()
    code = 0
    try:
        while not stop.wait(0.5):
            if not server.alive():  # no gateway can be served: exit so systemd restarts the hub
                log.error("ingest: the gRPC serving loop is dead; exiting")
                code = 1
                break
            # Feed systemd's watchdog only while maintenance (expiry, operator commands) runs
            # and the serving loop answers: a stuck hub must be restarted, not kept alive by
            # an idle main loop.
            if time.monotonic() - hub.last_tick < MAINTENANCE_STALL_SECONDS:
                dog.tick()
            if metrics is not None:
                live.update_metrics()
    finally:
        log.info("stopping")
        notify.stopping()
        if control is not None:
            control.close()
        if metrics is not None:
            live.metrics_server.close()
        server.stop(grace=2.0)
        hub.close()
        hub.store.close()
        lock.close()
    return code
