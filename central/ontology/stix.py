"""STIX 2.1 out: the hub's incidents, campaigns and responses as a bundle other security tools
(a SIEM, OpenCTI, MISP) read, written with the `stix2` library.

- the hub: an `identity` (system) that created every object; the city: an `identity`
  (organization); each gateway that saw something: an `identity` (system), where sightings are;
- each incident: an `indicator` of its attacker's address that `indicates` its ATT&CK for ICS
  `attack-pattern`s (copied unchanged from the shipped ATT&CK subset), `observed-data` of the
  attacker's address, and a `sighting` of the indicator by the gateways;
- the attacked asset (the incident's target address): an `identity` (system); the attacking
  device, when the inventory names one: an `infrastructure` (control-system) the indicator
  `indicates`;
- each campaign of two or more incidents: a `campaign` that `uses` the patterns, `targets` the
  attacked assets, and that each of its indicators `indicates`;
- each response: a `course-of-action` citing its D3FEND countermeasures, that `mitigates` the
  incident's indicator.

Ids are derived from stable keys, so exporting the same store twice gives the same ids.
TAXII: not served. The maintained server library (medallion) is a Flask app backed by its own
store, made for testing; serving a file that `export stix` writes through it would add a web
server to the hub for no gain over the file. A city's TAXII server can import the bundle.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import Any, Iterable

import stix2

from atlas.central.ontology import threats
from atlas.link.inventory import normal_address

def _id(kind: str, key: str) -> str:
    """A stable id: STIX 2.1 wants UUIDv4 for these objects, so the version-4 layout filled
    from a hash of the key instead of from random bits (the same key, the same id)."""
    digest = hashlib.sha256(f"atlas/{kind}/{key}".encode()).digest()
    return f"{kind}--{uuid.UUID(bytes=digest[:16], version=4)}"


def _time(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


def _address_sco(address: str) -> stix2.v21._Observable | None:
    normal = normal_address(address)
    if normal is None:
        return None
    cls = stix2.IPv4Address if ":" not in normal else stix2.IPv6Address
    return cls(value=normal)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def bundle(incidents: Iterable[Any], decisions: Iterable[Any] = (), campaigns: Iterable[Any] = (),
           *, city: str = "city", devices: dict[str, dict[str, str]] | None = None,
           now: float | None = None) -> stix2.Bundle:
    """The bundle. `incidents`: HubIncident-like (id, kind, src_ip, dst_ip, device, first_seen,
    last_seen, packets, gateways); `decisions`: DecisionRecord-like (id, incident, action,
    target, reason, state, created_at); `campaigns`: correlate.Campaign-like (id, events with
    ids); `devices`: device key -> {"class", "criticality"} for the involved devices' names."""
    now_dt = _time(now) if now is not None else dt.datetime.now(dt.timezone.utc)
    hub = stix2.Identity(id=_id("identity", "atlas-hub"), name="ATLAS hub", identity_class="system",
                         created=now_dt, modified=now_dt, description="ATLAS security hub of the smart city")
    city_id = stix2.Identity(id=_id("identity", f"city/{city}"), name=city, identity_class="organization",
                             created=now_dt, modified=now_dt, created_by_ref=hub.id)
    objects: dict[str, Any] = {hub.id: hub, city_id.id: city_id}
    patterns = {o["id"]: o for o in threats.attack_bundle()["objects"]}
    indicator_of: dict[str, str] = {}
    kinds_of: dict[str, str] = {}
    targets_of: dict[str, list[str]] = {}

    def add(obj: Any) -> Any:
        objects.setdefault(obj["id"], obj)
        return obj

    def relate(source: str, rel: str, target: str, when: dt.datetime) -> None:
        add(stix2.Relationship(id=_id("relationship", f"{source}/{rel}/{target}"), source_ref=source,
                               relationship_type=rel, target_ref=target, created_by_ref=hub.id,
                               created=when, modified=when))

    def pattern(tid: str) -> str:
        for o in (patterns[tid], *(patterns[r] for r in [patterns[tid].get("created_by_ref")] if r in patterns),
                  *(patterns[m] for m in patterns[tid].get("object_marking_refs", []) if m in patterns)):
            objects.setdefault(o["id"], o)  # MITRE's objects as MITRE published them
        return tid

    for inc in incidents:
        iid, kind = str(_get(inc, "id")), str(_get(inc, "kind"))
        first, last = _time(float(_get(inc, "first_seen"))), _time(float(_get(inc, "last_seen")))
        src = str(_get(inc, "src_ip") or "")
        sco = _address_sco(src)
        if sco is None:
            continue  # nothing observable to share
        indicator = add(stix2.Indicator(
            id=_id("indicator", f"incident/{iid}"), name=f"{kind} from {src}", created_by_ref=hub.id,
            description=f"ATLAS incident {iid}: {kind} by {_get(inc, 'device') or src}",
            pattern=f"[{sco['type']}:value = '{_quote(sco['value'])}']", pattern_type="stix",
            valid_from=first, indicator_types=["malicious-activity"], created=first, modified=last,
            labels=[kind], external_references=[{"source_name": "atlas", "external_id": iid}]))
        indicator_of[iid], kinds_of[iid] = indicator.id, kind
        for t in threats.techniques_of(kind):
            relate(indicator.id, "indicates", pattern(t.stix_id), first)
        add(sco)
        observed = add(stix2.ObservedData(
            id=_id("observed-data", f"incident/{iid}"), first_observed=first, last_observed=last,
            number_observed=max(1, int(_get(inc, "packets") or 0)), object_refs=[sco.id],
            created_by_ref=hub.id, created=last, modified=last))
        gateways = [add(stix2.Identity(id=_id("identity", f"gateway/{g}"), name=g, identity_class="system",
                                       created_by_ref=hub.id, created=now_dt, modified=now_dt,
                                       description=f"ATLAS gateway {g} of {city}"))
                    for g in sorted(_get(inc, "gateways") or [])]
        add(stix2.Sighting(id=_id("sighting", f"incident/{iid}"), sighting_of_ref=indicator.id,
                           observed_data_refs=[observed.id], where_sighted_refs=[g.id for g in gateways] or [city_id.id],
                           first_seen=first, last_seen=last, created_by_ref=hub.id, created=last, modified=last))
        targets_of[iid] = []
        dst = str(_get(inc, "dst_ip") or "")
        if dst:  # the attacked asset: an identity a campaign targets
            info = (devices or {}).get(dst, {})
            targets_of[iid].append(add(stix2.Identity(
                id=_id("identity", f"asset/{dst}"), name=dst, identity_class="system", created_by_ref=hub.id,
                created=now_dt, modified=now_dt,
                description=", ".join(f"{k} {v}" for k, v in sorted(info.items())) or f"an asset of {city}")).id)
        attacker = str(_get(inc, "device") or "")
        if attacker and attacker != src:  # a known (compromised) device: attacker infrastructure
            info = (devices or {}).get(attacker, {})
            infra = add(stix2.Infrastructure(
                id=_id("infrastructure", f"asset/{attacker}"), name=attacker, infrastructure_types=["control-system"],
                created_by_ref=hub.id, created=now_dt, modified=now_dt,
                description=", ".join(f"{k} {v}" for k, v in sorted(info.items())) or f"a device of {city}"))
            relate(indicator.id, "indicates", infra.id, first)

    for c in campaigns:
        members = [str(_get(e, "id")) for e in _get(c, "events", [])]
        members = [m for m in members if m in indicator_of]
        if len(members) < 2:
            continue
        times = [float(_get(e, "time")) for e in _get(c, "events", [])]
        start, end = _time(min(times)), _time(max(float(_get(e, "last_seen")) for e in _get(c, "events", [])))
        camp = add(stix2.Campaign(id=_id("campaign", f"campaign/{_get(c, 'id')}"), name=f"ATLAS campaign {_get(c, 'id')}",
                                  first_seen=start, last_seen=end, created_by_ref=hub.id, created=end, modified=end,
                                  description=f"{len(members)} linked incidents: {', '.join(sorted(set(kinds_of[m] for m in members)))}"))
        for m in members:
            relate(indicator_of[m], "indicates", camp.id, start)
            for target in targets_of.get(m, []):
                relate(camp.id, "targets", target, start)
            for t in threats.techniques_of(kinds_of[m]):
                relate(camp.id, "uses", pattern(t.stix_id), start)

    for d in decisions:
        action, iid = str(_get(d, "action")), str(_get(d, "incident"))
        if action not in threats.load_mappings().actions or iid not in indicator_of:
            continue  # "none" decisions and decisions on incidents outside the export
        when = _time(float(_get(d, "created_at")))
        refs = [{"source_name": "d3fend", "external_id": c.d3fend_id, "description": f"{c.label}: {c.url}"}
                for c in threats.countermeasures_of(action)]
        coa = add(stix2.CourseOfAction(
            id=_id("course-of-action", f"decision/{_get(d, 'id')}"), name=f"{action} {_get(d, 'target')}",
            description=f"ATLAS decision {_get(d, 'id')} ({_get(d, 'state')}): {_get(d, 'reason') or action}",
            external_references=refs + [{"source_name": "atlas", "external_id": str(_get(d, "id"))}],
            created_by_ref=hub.id, created=when, modified=when))
        relate(coa.id, "mitigates", indicator_of[iid], when)
    return stix2.Bundle(objects=list(objects.values()), allow_custom=True)


def validate(text: str) -> list[str]:
    """stix2-validator's errors for a serialized bundle ([] when it is valid)."""
    from stix2validator import ValidationOptions, validate_string

    results = validate_string(text, ValidationOptions(version="2.1"))
    results = results if isinstance(results, list) else [results]
    errors = [f"{getattr(r, 'object_id', '') or 'bundle'}: {e}" for r in results for e in (r.errors or [])]
    return errors or ([] if all(r.is_valid for r in results) else ["the bundle is not valid STIX 2.1"])


def serialize(b: stix2.Bundle) -> str:
    return json.dumps(json.loads(b.serialize()), indent=1, sort_keys=True) + "\n"
