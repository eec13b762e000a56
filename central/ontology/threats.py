"""Threats and countermeasures: each incident kind's MITRE ATT&CK for ICS techniques and each
response action's MITRE D3FEND countermeasures (data/mappings.toml), with the names and ids
from the shipped subsets (data/attack_ics_subset.json, data/d3fend_subset.ttl, cut by
data/make_subsets.py). Reads JSON and TOML only (d3fend_subset.json): the STIX export and the tests use it too.
"""
from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Technique:
    attack_id: str  # "T0814"
    name: str
    stix_id: str  # attack-pattern--...
    url: str


@dataclass(frozen=True)
class Countermeasure:
    name: str  # the D3FEND class, "NetworkIsolation"
    label: str
    d3fend_id: str  # "D3-NI"
    definition: str

    @property
    def url(self) -> str:
        return f"https://d3fend.mitre.org/technique/d3f:{self.name}/"


@dataclass(frozen=True)
class KindMapping:
    techniques: tuple[Technique, ...]
    why: str


@dataclass(frozen=True)
class ActionMapping:
    countermeasures: tuple[Countermeasure, ...]
    why: str


@dataclass(frozen=True)
class Mappings:
    kinds: dict[str, KindMapping]
    actions: dict[str, ActionMapping]


@functools.lru_cache(maxsize=1)
def attack_bundle() -> dict:
    return json.loads((DATA / "attack_ics_subset.json").read_text())


@functools.lru_cache(maxsize=1)
def load_mappings() -> Mappings:
    raw = tomllib.loads((DATA / "mappings.toml").read_text())
    techniques = _techniques()
    countermeasures = _countermeasures()

    def technique(kind: str, tid: str) -> Technique:
        if tid not in techniques:
            raise ValueError(f"mappings.toml: kinds.{kind}.techniques: {tid} is not in attack_ics_subset.json "
                             "(run data/make_subsets.py)")
        return techniques[tid]

    def countermeasure(action: str, name: str) -> Countermeasure:
        if name not in countermeasures:
            raise ValueError(f"mappings.toml: actions.{action}.countermeasures: {name} is not in d3fend_subset.ttl "
                             "(run data/make_subsets.py)")
        return countermeasures[name]

    kinds = {k: KindMapping(tuple(technique(k, t) for t in v["techniques"]), v.get("why", ""))
             for k, v in raw.get("kinds", {}).items()}
    actions = {a: ActionMapping(tuple(countermeasure(a, c) for c in v["countermeasures"]), v.get("why", ""))
               for a, v in raw.get("actions", {}).items()}
    return Mappings(kinds, actions)


def techniques_of(kind: str) -> tuple[Technique, ...]:
    m = load_mappings().kinds.get(kind)
    return m.techniques if m else ()


def countermeasures_of(action: str) -> tuple[Countermeasure, ...]:
    m = load_mappings().actions.get(action)
    return m.countermeasures if m else ()


def _techniques() -> dict[str, Technique]:
    out = {}
    for o in attack_bundle()["objects"]:
        if o["type"] != "attack-pattern":
            continue
        ref = next(r for r in o["external_references"] if r.get("source_name") == "mitre-attack")
        out[ref["external_id"]] = Technique(ref["external_id"], o["name"], o["id"], ref.get("url", ""))
    return out


def _countermeasures() -> dict[str, Countermeasure]:
    table = json.loads((DATA / "d3fend_subset.json").read_text())
    return {name: Countermeasure(name, v["label"], v["d3fend_id"], v["definition"]) for name, v in table.items()}
