"""The namespaces of the city graph (ATLAS's own terms are defined in data/atlas.ttl)."""
from __future__ import annotations

from rdflib import Namespace

ATLAS = Namespace("https://w3id.org/atlas-iot/ns#")
CITY = Namespace("https://w3id.org/atlas-iot/city/")
SAREF = Namespace("https://saref.etsi.org/core/")
S4CITY = Namespace("https://saref.etsi.org/saref4city/")
D3F = Namespace("http://d3fend.mitre.org/ontologies/d3fend.owl#")
