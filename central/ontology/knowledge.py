"""The city graph as the running hub holds it: built in a background thread at start (never
under the ingest lock), rebuilt when the inventory file changes, and read lock-free by the
decide stage (the cost of a response) and the correlator (link evidence).

Until the graph is ready (or when the ontology extra or the inventory is missing) `query` is
None and the hub decides and correlates without it. rdflib is imported only in the builder
thread, so the hub imports this module without the extra.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from atlas.central.ontology import missing

if TYPE_CHECKING:
    from atlas.central.ontology.facts import CityFacts
    from atlas.central.ontology.query import BlastRadius, CityQuery, Relation

log = logging.getLogger("atlas.central.ontology")

# graph states, as `atlas-central status` shows them
OFF, BUILDING, READY, FAILED = "off", "building", "ready", "failed"


@dataclass(frozen=True)
class Place:
    """Where the hub's config puts a gateway (district, domain, subnet, broker)."""

    domain: str = ""
    district: str = ""
    subnet: str = ""
    broker: str = ""


class CityKnowledge:
    def __init__(self, inventory: str | Path | None, places: Mapping[str, Any] | None = None,
                 gateway_ids: Callable[[], Iterable[str]] = tuple,
                 services_dir: str | Path | None = None, profiles_dir: str | Path | None = None):
        """places: gateway id -> anything with domain/district/subnet (and maybe broker)
        attributes; gateway_ids: the gateways the hub's store knows, read at each build."""
        self.inventory = Path(inventory) if inventory is not None else None
        self.places = places_of(places or {})
        self.gateway_ids = gateway_ids
        self.services_dir, self.profiles_dir = services_dir, profiles_dir
        self.state = OFF
        self.why = ""  # why the graph is off or failed, one line
        self.query: CityQuery | None = None  # replaced whole: readers need no lock
        self.triples = 0
        self.build_seconds = 0.0
        self._stamp: tuple[float, int] | None = None  # the inventory file's (mtime, size) built from
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one build at a time

    # -- building ----------------------------------------------------------------------------
    def start(self) -> bool:
        """Build in the background if the extra and the inventory are there; else say (one log
        line) why the hub runs without the graph. True if a build started."""
        if self.state in (BUILDING, READY):
            return False  # started already (one holder may serve several hubs in tests)
        gone = missing("rdflib")
        if gone:
            self.why = (f"the ontology extra is not installed (missing: {', '.join(gone)}): "
                        "pip install 'atlas-iot[ontology]'")
        elif self.inventory is None:
            self.why = "no [hub] inventory"
        if self.why:
            # a hub without an inventory is a choice; a missing extra is worth a warning
            log.log(logging.WARNING if gone else logging.INFO,
                    "city graph off: %s; deciding and correlating without it", self.why)
            return False
        return self._spawn()

    def refresh(self) -> bool:
        """Rebuild in the background if the inventory file changed since the last build."""
        if self.inventory is None or self.state == OFF:
            return False  # never started: no extra, or no inventory
        stamp = self._file_stamp()
        if stamp == self._stamp or (self._thread is not None and self._thread.is_alive()):
            return False
        log.info("inventory %s changed: rebuilding the city graph", self.inventory)
        return self._spawn()

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait for a running build; True if the graph is ready."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.state == READY

    def _spawn(self) -> bool:
        self._thread = threading.Thread(target=self._build, name="atlas-city-graph", daemon=True)
        if self.state != READY:
            self.state = BUILDING
        self._thread.start()
        return True

    def _build(self) -> None:
        with self._lock:
            stamp = self._file_stamp()
            started = time.monotonic()
            try:
                facts = self.facts()
                query = self._query_of(facts)
            except Exception as exc:  # noqa: BLE001 - a bad inventory must not stop the hub
                self._stamp = stamp
                self.why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if self.query is None:
                    self.state = FAILED
                log.error("city graph not built from %s: %s%s", self.inventory, self.why,
                          "; keeping the previous one" if self.query is not None else "")
                return
            self.build_seconds = time.monotonic() - started
            self.triples = len(query.graph)
            self.query, self._stamp, self.state, self.why = query, stamp, READY, ""
            log.info("city graph ready: %d triples, %d devices, inventory version %s (%.2f s)",
                     self.triples, len(query.devices), query.version, self.build_seconds)

    def facts(self) -> CityFacts:
        from atlas.central.ontology.facts import load_facts

        facts = load_facts(inventory=self.inventory, services_dir=self.services_dir,
                           profiles_dir=self.profiles_dir, gateway_ids=list(self.gateway_ids()))
        return place_gateways(facts, self.places)

    def _query_of(self, facts: CityFacts) -> CityQuery:
        from atlas.central.ontology.graph import build_graph
        from atlas.central.ontology.query import CityQuery

        if self.query is not None and self.query.version == facts.version:
            return self.query  # the same inputs: the cached answers stay valid
        return CityQuery(build_graph(facts), facts.version)

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.inventory) if self.inventory is not None else None
        except OSError:
            return None
        return (st.st_mtime, st.st_size) if st is not None else None

    # -- what the hub asks ---------------------------------------------------------------------
    def blast_radius(self, action: str, target: str, gateway: str = "") -> BlastRadius | None:
        """The graph's cost of `action` on `target`; None when the graph is not ready or does
        not know the target (the policy then decides without the cost)."""
        query = self.query
        if query is None:
            return None
        from atlas.central.ontology.query import UnknownAsset

        try:
            return query.blast_radius(action, target, gateway)
        except (UnknownAsset, ValueError):
            return None

    def incident_relations(self, first: Any, second: Any) -> list[Relation]:
        query = self.query
        return query.incident_relations(first, second) if query is not None else []

    def status(self) -> dict[str, Any]:
        query = self.query
        return {"state": self.state, "why": self.why, "triples": self.triples,
                "devices": len(query.devices) if query else 0,
                "inventory": str(self.inventory) if self.inventory else "",
                "inventory_version": query.version if query else "",
                "build_seconds": round(self.build_seconds, 3)}


def places_of(places: Mapping[str, Any]) -> dict[str, Place]:
    """gateway id -> Place, from the config's [gateways.<id>] or correlate's GatewayPlace."""
    return {gid: Place(getattr(p, "domain", ""), getattr(p, "district", ""), getattr(p, "subnet", ""),
                       getattr(p, "broker", "")) for gid, p in places.items()}


def place_gateways(facts: CityFacts, places: Mapping[str, Place]) -> CityFacts:
    """The facts with the hub's config placing its gateways: districts decide which service
    instance a device feeds (traffic_control/d01), as at the running hub."""
    facts.gateways = [_placed(g, places.get(g.id)) for g in facts.gateways]
    return facts


def _placed(gateway: Any, place: Place | None) -> Any:
    if place is None:
        return gateway
    from atlas.link.inventory import normal_address

    return replace(gateway, domain=place.domain or gateway.domain, district=place.district or gateway.district,
                   subnet=place.subnet or gateway.subnet,
                   broker=normal_address(place.broker) or gateway.broker if place.broker else gateway.broker)


def risk_words(radius: BlastRadius) -> str:
    """The services a response would hurt, for a decision's reason."""
    if not radius.services:
        return "graph: no critical service at risk"
    return "graph: services at risk: " + ", ".join(
        f"{s.service} {s.status} ({s.criticality.replace('_', ' ')})" for s in radius.services)
