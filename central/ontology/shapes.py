"""SHACL validation of the city graph (data/shapes.ttl, with pyshacl): each problem comes back as
one line naming the device or service, the inventory or declaration field, and what is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from rdflib import BNode, Graph, URIRef
from rdflib.namespace import RDF, SH

from atlas.central.ontology.facts import CityFacts
from atlas.central.ontology.graph import device_facts_by_key
from atlas.central.ontology.vocab import ATLAS, CITY

SHAPES = Path(__file__).resolve().parent / "data" / "shapes.ttl"


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning"
    subject: str  # "device tsc-d01-0001", "service traffic_control/d01", "address 10.1.1.5 behind gw-1"
    field: str  # the inventory or declaration key
    message: str
    where: str = ""  # the file and entry it was read from, when known

    def __str__(self) -> str:
        at = f" ({self.where})" if self.where else ""
        return f"{self.severity}: {self.subject}{at}: {self.field}: {self.message}"


def shapes_graph() -> Graph:
    g = Graph()
    g.parse(SHAPES, format="turtle")
    return g


def check(graph: Graph, facts: CityFacts | None = None) -> list[Finding]:
    """Validate; errors first, then warnings, each sorted by subject."""
    from pyshacl import validate

    shapes = shapes_graph()
    _conforms, report, _text = validate(graph, shacl_graph=shapes, inference="none", advanced=False,
                                        allow_warnings=True)
    where = {k: d.where for k, d in device_facts_by_key(facts).items()} if facts is not None else {}
    findings = {_finding(graph, shapes, report, r, where) for r in report.subjects(RDF.type, SH.ValidationResult)}
    return sorted(findings, key=lambda f: (f.severity != "error", f.subject, f.field, f.message))


def _finding(graph: Graph, shapes: Graph, report: Graph, result, where: dict[str, str]) -> Finding:
    focus = report.value(result, SH.focusNode)
    value = report.value(result, SH.value)
    source = report.value(result, SH.sourceShape)
    severity = "warning" if report.value(result, SH.resultSeverity) == SH.Warning else "error"
    field = str(shapes.value(source, ATLAS.field) or _parent_field(shapes, source) or "")
    message = str(shapes.value(source, SH.message) or report.value(result, SH.resultMessage) or "invalid")
    subject, at = _subject(graph, focus, where)
    if isinstance(value, URIRef) and value != focus and (value, RDF.type, ATLAS.Device) not in graph:
        message += f": {_name(value)}"
    users = _users(graph, focus)
    if users:
        message += f" ({', '.join(users)})"
    return Finding(severity, subject, field, message, at)


def _parent_field(shapes: Graph, source) -> str:
    for parent in shapes.subjects(SH.property, source):
        f = shapes.value(parent, ATLAS.field)
        if f:
            return str(f)
    return ""


def _name(node) -> str:
    """The asset's own name: the last part of its IRI (device key, gateway id, ...)."""
    text = str(node)
    if text.startswith(str(CITY)):
        return unquote(text[len(str(CITY)):].split("/", 1)[1]).replace("/", " / ") if "/" in text[len(str(CITY)):] else text
    return text


def _kind(node) -> str:
    text = str(node)
    return text[len(str(CITY)):].split("/", 1)[0] if text.startswith(str(CITY)) else ""


def _subject(graph: Graph, focus, where: dict[str, str]) -> tuple[str, str]:
    if isinstance(focus, BNode):  # a service's class requirement
        service = graph.value(None, ATLAS.requires, focus)
        cls = graph.value(focus, ATLAS.deviceClass)
        return f"service {_key(service)} needs {_key(cls)}", ""
    kind = _kind(focus)
    if kind == "device":
        key = _key(focus)
        return f"device {key}", where.get(key, "")
    if kind == "address":
        gw, addr = (unquote(p) for p in str(focus).rsplit("/", 2)[-2:])
        return f"address {addr} behind {gw}", ""
    if kind == "service":
        return f"service {_key(focus)}", ""
    return f"{kind} {_key(focus)}", ""


def _key(node) -> str:
    text = str(node)
    if not text.startswith(str(CITY)):
        return text
    parts = text[len(str(CITY)):].split("/")[1:]
    return "/".join(unquote(p) for p in parts)


def _users(graph: Graph, focus) -> list[str]:
    """For an address or a credential: the devices that have it (the finding names them)."""
    kind = _kind(focus)
    if kind == "address":
        return sorted(_key(d) for d in graph.subjects(ATLAS.hasAddress, focus))
    if kind == "credential":
        return sorted(_key(d) for d in graph.subjects(ATLAS.usesCredential, focus))
    return []
