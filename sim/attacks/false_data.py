"""false_data: false data injection, well-formed MQTT with physically impossible values.

A device's readings are forged on its own topic, at its profile's normal rate, with `fields`
numeric fields set outside the profile's physical range [min, max] (a meter reporting 60 kW
on a 100 A line, a flood sensor at -4 m, a frequency of 71 Hz). Every message is valid MQTT
and valid JSON with the same fields as the genuine ones: only the values give it away.

Two ways in (`mode`): `spoof`, a host on the network connects with the device's stolen
credentials and publishes next to the genuine device; `device`, the compromised device itself
opens a second session with its own credentials. A spec's `attacker` decides: the victim's own
address means `device`, any other address `spoof`.
"""
from __future__ import annotations

import numpy as np

from atlas.firmware_profiles import FieldSpec, TopicSpec
from atlas.sim.attacks import attack
from atlas.sim.attacks.base import NS, AttackContext, PlannedStep, client_id, disconnect_and_close
from atlas.sim.traffic import mqtt
from atlas.sim.traffic.population import Device
from atlas.sim.traffic.payloads import json_payloads
from atlas.sim.traffic.schedule import periodic, poisson
from atlas.sim.traffic.session import packet_ids, publish
from atlas.sim.traffic.vec import Blobs

MODES = ("spoof", "device")


@attack("false_data", {"fields": 1, "mode": "", "topic": "", "excess": 1.0}, duration=300.0)
def false_data(ctx: AttackContext, spec, rng: np.random.Generator) -> PlannedStep:
    """Forged readings on the victim's `topic` (a profile topic name; default: its most
    frequent one with numeric fields), `fields` of them out of range by `excess` times the
    field's physical span (at least); `mode` spoof or device (default: from the attacker,
    else the seed)."""
    p = ctx.params
    if p["mode"] not in ("",) + MODES:
        raise ValueError(f"false_data: parameter 'mode' must be one of {', '.join(MODES)} (or empty), got {p['mode']!r}")
    if int(p["fields"]) < 1:
        raise ValueError("false_data: parameter 'fields' must be at least 1")
    if float(p["excess"]) <= 0:
        raise ValueError("false_data: parameter 'excess' must be > 0")
    dev = _victim(ctx, spec, rng, str(p["topic"]))
    prof = ctx.inv.profiles[dev.cls]
    topics = [t for t in _eligible_topics(prof.mqtt.topics) if not p["topic"] or t.name == p["topic"]]
    topic = min(topics, key=lambda t: t.interval)  # the device's busiest reading: forged values keep coming
    mode = _mode(spec, dev, str(p["mode"]), rng)
    if mode == "device":
        ip, me = dev.ip, ctx.host(dev.ip)
    else:
        if spec.attacker == dev.ip:
            raise ValueError("false_data: mode 'spoof' needs an attacker other than the victim device")
        ip, me = ctx.attacker_host(rng)

    stop = min(ctx.end, ctx.t1)
    # The forger publishes at the topic's own rate, starting right after it has connected.
    w = ctx.wire
    ver = dev.version
    cid = client_id(rng, f"{dev.client_id}-")  # reusing the device's id would kick it off the broker
    keepalive = int(min(65535, max(60, 2 * topic.interval)))
    conn, ready, _ = ctx.mqtt_sessions(me, np.array([ctx.start]), [mqtt.connect(cid, version=ver, keepalive=keepalive,
                                                                                 username=dev.username, password=dev.password)],
                                       [mqtt.connack(0, version=ver)], rng)
    t_first = int(ready[0]) + 1_000_000
    if topic.timing == "periodic":
        _, ts = periodic(1, topic.interval, topic.jitter, t_first, stop, rng)
    else:
        _, ts = poisson(1, topic.interval, t_first, stop, rng)
    ts = np.sort(ts)
    if ts.size == 0 or ts[0] > t_first + int(topic.interval * NS):
        ts = np.concatenate([[t_first], ts]).astype(np.int64)  # one forged reading at least
    n = ts.size
    fields = _pick_fields(topic, int(p["fields"]), rng)
    forged = {f.name: impossible_values(f, n, float(p["excess"]), rng) for f in fields}
    payloads = json_payloads(topic, np.zeros(n, dtype=np.int64), 1, ts, [dev.client_id], rng, overrides=forged)
    name = topic.topic.replace("{district}", ctx.inv.district).replace("{id}", dev.client_id)
    topics_b = Blobs.repeat(name.encode(), n)
    qos = np.full(n, topic.qos)
    c = np.full(n, conn[0])
    pid = packet_ids(c, ts, qos > 0)
    _, t_done = publish(w, c, ts, 0, topics_b, payloads, qos, np.full(n, ver), pid)
    if stop == ctx.end:
        disconnect_and_close(ctx, conn, np.array([int(t_done.max()) + 5_000_000]), np.array([ver]))
    return PlannedStep([ip], [dev.ip], {
        "mode": mode, "device": dev.client_id, "device_ip": dev.ip, "class": dev.cls, "topic": name, "messages": int(n),
        "forged": {f.name: {"min": f.min, "max": f.max, "values": [round(float(v), max(f.decimals, 0)) for v in forged[f.name][:5]]}
                   for f in fields},
    })


def impossible_values(f: FieldSpec, n: int, excess: float, rng: np.random.Generator) -> np.ndarray:
    """n values outside [f.min, f.max] by at least `excess` x the span, still outside once
    printed with the field's decimals; below the minimum or above the maximum at random."""
    span = max(f.max - f.min, 1.0)
    gap = span * excess * rng.uniform(1.0, 3.0, n)
    below = rng.random(n) < 0.5
    v = np.where(below, f.min - gap, f.max + gap)
    v = np.round(v, f.decimals if f.type == "float" else 0)
    return v


def _eligible_topics(topics) -> list[TopicSpec]:
    return [t for t in topics if t.direction == "publish" and t.format == "json" and any(f.type in ("int", "float") for f in t.fields)]


def _victim(ctx: AttackContext, spec, rng, topic_name: str) -> Device:
    def fits(d: Device) -> bool:
        ts = _eligible_topics(ctx.inv.profiles[d.cls].mqtt.topics)
        return any(not topic_name or t.name == topic_name for t in ts)

    if spec.victims:
        d = ctx.device_credentials(spec.victims[0])
        if d is None:
            raise ValueError(f"false_data: victim {spec.victims[0]} is not a device of gateway {ctx.gateway}")
        if not fits(d):
            raise ValueError(f"false_data: device {d.client_id} ({d.cls}) has no JSON topic with numeric fields"
                             + (f" named {topic_name!r}" if topic_name else ""))
        return d
    if spec.attacker is not None and ctx.device_credentials(spec.attacker) is not None and fits(ctx.device_credentials(spec.attacker)):
        return ctx.device_credentials(spec.attacker)  # a compromised device forges its own readings
    pool = [d for d in ctx.inv.devices if fits(d)]
    # Prefer devices that publish several times within the step (a forged value every hour
    # would make a step of a few minutes hold one message).
    busy = [d for d in pool if min(t.interval for t in _eligible_topics(ctx.inv.profiles[d.cls].mqtt.topics)) * 4 <= ctx.dur / NS]
    pool = busy or pool
    if not pool:
        raise ValueError(f"false_data: no device on gateway {ctx.gateway} has a topic to forge"
                         + (f" named {topic_name!r}" if topic_name else ""))
    return pool[int(rng.integers(len(pool)))]


def _mode(spec, dev: Device, mode: str, rng) -> str:
    if spec.attacker is not None:
        want = "device" if spec.attacker == dev.ip else "spoof"
        if mode and mode != want:
            raise ValueError(f"false_data: mode {mode!r} contradicts attacker {spec.attacker} (victim {dev.ip})")
        return want
    return mode or ("spoof" if rng.random() < 0.5 else "device")


def _pick_fields(topic: TopicSpec, k: int, rng) -> list[FieldSpec]:
    numeric = [f for f in topic.fields if f.type in ("int", "float")]
    idx = rng.permutation(len(numeric))[: min(k, len(numeric))]
    return [numeric[i] for i in sorted(idx)]
