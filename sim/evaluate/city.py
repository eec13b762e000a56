"""A generated city on disk, as `atlas-sim city` writes it (see the simulator contract):

    DIR/city.json                      inventory: gateways, devices, time span, the command
    DIR/gateways/<id>/traffic.pcap     each gateway's capture
    DIR/ground_truth.jsonl             one AttackStep per line, with its gateway
    DIR/benign_events.jsonl            look-alikes (benign), with their gateway

`load_city(DIR)` checks all of it and raises CityError naming the missing file or field.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from atlas.sim.capture import AttackStep
from atlas.sim.traffic.lookalikes import BenignEvent

CITY_FIELDS = ("seed", "start", "end", "duration", "gateways", "devices")
GATEWAY_FIELDS = ("id", "domain", "pcap")


def _required(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)


STEP_FIELDS = _required(AttackStep)  # id, kind, campaign, stage, attacker, victims, gateway, start, end
EVENT_FIELDS = _required(BenignEvent)


class CityError(ValueError):
    """A city folder that cannot be evaluated; the message names the file and what is wrong."""


@dataclass
class City:
    dir: Path
    meta: dict[str, Any]  # city.json as read
    steps: list[AttackStep]
    benign: list[BenignEvent]
    gateway_ids: list[str] = field(default_factory=list)

    seed = property(lambda self: int(self.meta["seed"]), doc="city.json's seed")
    start = property(lambda self: float(self.meta["start"]), doc="epoch seconds of the capture's start")
    end = property(lambda self: float(self.meta["end"]))
    duration = property(lambda self: float(self.meta["duration"]), doc="seconds of traffic per gateway")
    gateways = property(lambda self: self.meta["gateways"], doc="city.json's gateway objects")
    devices = property(lambda self: self.meta["devices"], doc="city.json's device objects")
    command = property(lambda self: str(self.meta.get("command", "")), doc="the atlas-sim command that made it")

    def gateway(self, gw_id: str) -> dict[str, Any]:
        for g in self.gateways:
            if g["id"] == gw_id:
                return g
        raise KeyError(gw_id)

    def pcap(self, gw_id: str) -> Path:
        return self.dir / self.gateway(gw_id)["pcap"]

    def devices_of(self, gw_id: str) -> int:
        """Devices behind a gateway (city.json's count, else the device list's)."""
        g = self.gateway(gw_id)
        if "devices" in g:
            return int(g["devices"])
        return sum(1 for d in self.devices if d.get("gateway") == gw_id)

    def steps_of(self, gw_id: str) -> list[AttackStep]:
        return [s for s in self.steps if s.gateway == gw_id]

    @property
    def device_count(self) -> int:
        return int(self.meta.get("devices_total") or len(self.devices))


def load_city(path: str | Path) -> City:
    """Read and check a city folder."""
    d = Path(path)
    if not d.is_dir():
        raise CityError(f"{d}: no such folder (make one with `atlas-sim city --out {d} ...`)")
    meta = _read_json(d / "city.json")
    missing = [k for k in CITY_FIELDS if k not in meta]
    if missing:
        raise CityError(f"{d / 'city.json'}: missing field {missing[0]!r}")
    if not isinstance(meta["gateways"], list) or not meta["gateways"]:
        raise CityError(f"{d / 'city.json'}: 'gateways' must be a non-empty list")
    ids = []
    for i, g in enumerate(meta["gateways"]):
        miss = [k for k in GATEWAY_FIELDS if k not in g]
        if miss:
            raise CityError(f"{d / 'city.json'}: gateways[{i}] has no {miss[0]!r}")
        if not (d / g["pcap"]).is_file():
            raise CityError(f"{d / g['pcap']}: missing (the capture of gateway {g['id']})")
        ids.append(str(g["id"]))
    if len(set(ids)) != len(ids):
        raise CityError(f"{d / 'city.json'}: gateway ids are not unique")
    # Fields this harness does not know (added by newer generators) are kept in `extra`.
    steps = [_make(AttackStep, obj) for obj in _read_jsonl(d / "ground_truth.jsonl", STEP_FIELDS)]
    known = set(ids)
    for s in steps:
        if s.gateway not in known:
            raise CityError(f"{d / 'ground_truth.jsonl'}: step {s.id!r} names gateway {s.gateway!r}, not in city.json")
        if not s.attackers:
            s.attackers = [s.attacker]
    benign = []
    for obj in _read_jsonl(d / "benign_events.jsonl", EVENT_FIELDS):
        benign.append(_make(BenignEvent, obj))
    return City(d, meta, steps, benign, ids)


def _make(cls, obj: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    item = cls(**{k: v for k, v in obj.items() if k in names})
    item.extra = {k: v for k, v in obj.items() if k not in names and k != "benign"}
    return item


def _read_json(p: Path) -> dict[str, Any]:
    try:
        obj = json.loads(p.read_text())
    except FileNotFoundError:
        raise CityError(f"{p}: missing (not a city folder? `atlas-sim city` writes it)") from None
    except json.JSONDecodeError as e:
        raise CityError(f"{p}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise CityError(f"{p}: must hold a JSON object")
    return obj


def _read_jsonl(p: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    try:
        lines = p.read_text().splitlines()
    except FileNotFoundError:
        raise CityError(f"{p}: missing (`atlas-sim city` writes it, empty when there is nothing to list)") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CityError(f"{p}:{n}: not valid JSON: {e}") from None
        miss = [k for k in required if k not in obj]
        if miss:
            raise CityError(f"{p}:{n}: missing field {miss[0]!r}")
        out.append(obj)
    return out
