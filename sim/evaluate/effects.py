"""What attacks (and the responses to them) do to one gateway's devices, slot by slot.

From a gateway's decoded capture, the ground truth of its attack steps and the delivered share
of every packet and MQTT message under a policy's rules (atlas.sim.evaluate.baselines.playbook
`Delivery`), this module says, per device and per time slot, whether the device fed its
services: its messages reached the back-end within the service's deadline, and they were its
own readings. No traffic is regenerated; the effects are computed on the decoded rows:

- the broker is a queue with a fixed capacity (BrokerModel): every message that reaches it
  (the rules' drops removed first, so a blocked flood stops loading it) costs one unit, a
  CONNECT more; a publish or connection flood builds a backlog that delays everybody's
  messages and, past the queue limit, drops them;
- the broker has a fixed number of connection slots: connections opened and not closed (a
  SlowITe attacker's silent sessions) hold them; a device that reconnects while they are all
  taken is refused and its messages are lost until a slot frees;
- false data: while a forger's messages reach the broker, the victim device's readings are
  not intact;
- a quarantined or revoked device's messages are lost while the rule lasts, a rate-limited
  one loses what exceeds the limit (both come in through the delivered shares).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from atlas.agent.decode import CONNECT, PUBLISH
from atlas.sim.evaluate.baselines.decoded import DecodedCapture
from atlas.sim.evaluate.baselines.playbook import address_key, conn_key


@dataclass(frozen=True)
class BrokerModel:
    """Every parameter of the effect model, with why it has its value.

    capacity_mps: messages per second a gateway-class broker forwards to the back-end. An
        assumption, not a measurement: mosquitto on a Raspberry-Pi-class gateway with
        persistence and a bridge is commonly run at about a thousand messages per second; the
        benign city uses about 1 % of it (tens of messages per second per gateway), the
        simulator's publish flood (1,500 messages per second) exceeds it.
    connect_cost: what a CONNECT costs in messages: TCP and MQTT session setup plus the
        password check (a deliberately slow hash), so connection churn (connection_dos: 60
        connections/s) loads the broker more than its few messages.
    max_queue_s: backlog the broker holds, in seconds of capacity, before it drops what
        arrives (bounded socket buffers and in-flight queues); past it messages are lost.
    max_connections: connection slots per broker (mosquitto `max_connections`). An assumption:
        a gateway sized with headroom over its devices (at most a few hundred per gateway in
        the simulator's cities), below what a SlowITe run opens (800).
    slot_s: the availability slot: a service meets its function in a slot or not.
    device_up_share: a device feeds its services in a slot when at least this share of the
        messages it sent in the slot arrived on time (a device that sent nothing keeps the
        state of its last message: a meter reporting every 15 minutes is not down between).
    forged_min: expected forged messages delivered in a slot that make its readings not intact.
    """

    capacity_mps: float = 1000.0
    connect_cost: float = 20.0
    max_queue_s: float = 5.0
    max_connections: int = 500
    slot_s: float = 10.0
    device_up_share: float = 0.5
    forged_min: float = 0.5


DEFAULT_MODEL = BrokerModel()
CLOSE_GRACE = 1.5  # an MQTT broker drops a silent session after 1.5 keepalives (MQTT 3.1.1, 3.1.2.10)


@dataclass
class BrokerLoad:
    """The broker's queue, per second of the capture."""

    origin: float
    delay: np.ndarray  # mean waiting time of a message arriving in that second
    drop: np.ndarray  # share of that second's arrivals dropped (queue full)
    arrivals: np.ndarray  # message units that reached the broker


def broker_load(cap: DecodedCapture, mqtt_share: np.ndarray, origin: float, duration: float,
                model: BrokerModel = DEFAULT_MODEL) -> BrokerLoad:
    """A fluid FIFO queue at `capacity_mps`, fed by every MQTT message to the broker that the
    rules let through (its delivered share), CONNECTs weighted by `connect_cost`."""
    m = cap.mqtt
    n = max(1, math.ceil(duration))
    to_b = m["to_broker"] == 1
    cost = np.where(m["mtype"] == CONNECT, model.connect_cost, 1.0) * mqtt_share
    sec = np.clip(np.floor(m["ts"] - origin).astype(np.int64), 0, n - 1)
    arrivals = np.bincount(sec[to_b], weights=cost[to_b], minlength=n).astype(float)
    cap_s, limit = model.capacity_mps, model.capacity_mps * model.max_queue_s
    delay, drop = np.zeros(n), np.zeros(n)
    backlog = 0.0
    for i, a in enumerate(arrivals):  # a few thousand seconds per gateway: a loop is clear and cheap
        before = backlog
        backlog = max(0.0, backlog + a - cap_s)
        if backlog > limit:
            drop[i] = (backlog - limit) / a
            backlog = limit
        delay[i] = (before + backlog) / 2 / cap_s
    return BrokerLoad(origin, delay, drop, arrivals)


def refused_until(cap: DecodedCapture, packet_share: np.ndarray, mqtt_share: np.ndarray, devices: Mapping[int, str],
                  end: float, model: BrokerModel = DEFAULT_MODEL) -> dict[int, list[tuple[float, float]]]:
    """Per device key: the (from, to) spans its messages are lost because its reconnect found
    no free slot. Devices hold one session each (opened before the capture); every other
    connection holds a slot from its CONNECT to its last packet, or, when the rules dropped
    that last packet (no FIN reached the broker), to 1.5 keepalives after the last one that
    got through."""
    m, p = cap.mqtt, cap.packets
    connect = (m["mtype"] == CONNECT) & (m["to_broker"] == 1) & (mqtt_share >= 0.5)
    if not connect.any():
        return {}
    dev_keys = np.array(sorted(devices), dtype=np.uint64)
    others = connect & ~np.isin(m["client"], dev_keys)
    opened = m["ts"][others]
    conn = conn_key(m["client"][others], m["client_port"][others])
    closed = _closing_times(p, packet_share, conn, opened, m["keepalive"][others].astype(float), end)
    # open extra sessions over time: +1 at each open, -1 at each close
    times = np.concatenate([opened, closed])
    delta = np.concatenate([np.ones(len(opened)), -np.ones(len(closed))])
    order = np.argsort(times, kind="stable")
    times, held = times[order], np.cumsum(delta[order]) + len(devices)
    out: dict[int, list[tuple[float, float]]] = {}
    mine = connect & np.isin(m["client"], dev_keys)
    for ts, key in zip(m["ts"][mine], m["client"][mine]):
        i = np.searchsorted(times, ts, side="right") - 1
        if i < 0 or held[i] < model.max_connections:
            continue
        free = np.flatnonzero((times > ts) & (held < model.max_connections))
        out.setdefault(int(key), []).append((float(ts), float(times[free[0]]) if len(free) else end))
    return out


def _closing_times(p: np.ndarray, packet_share: np.ndarray, conn: np.ndarray, opened: np.ndarray,
                   keepalive: np.ndarray, end: float) -> np.ndarray:
    key = conn_key(p["src"], p["sport"])
    mine = np.isin(key, conn)
    k, ts, ok = key[mine], p["ts"][mine], packet_share[mine] >= 0.5
    last = _max_by(conn, k, ts, opened)
    last_ok = _max_by(conn, k[ok], ts[ok], opened)
    dropped_fin = last > last_ok
    closed = np.where(dropped_fin, last_ok + CLOSE_GRACE * np.maximum(keepalive, 1.0), last)
    return np.minimum(closed, end)


def _max_by(conn: np.ndarray, keys: np.ndarray, ts: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Per connection of `conn`: the latest ts of its packets (at least `floor`)."""
    out = floor.astype(float).copy()
    if not len(keys):
        return out
    uniq, inv = np.unique(conn, return_inverse=True)
    best = np.full(len(uniq), -np.inf)
    pos = np.searchsorted(uniq, keys)
    hit = (pos < len(uniq)) & (uniq[np.minimum(pos, len(uniq) - 1)] == keys)
    np.maximum.at(best, pos[hit], ts[hit])
    return np.maximum(out, best[inv.ravel()])


def forged_slots(cap: DecodedCapture, mqtt_share: np.ndarray, steps: Iterable[Any], origin: float, slots: int,
                 model: BrokerModel = DEFAULT_MODEL) -> dict[str, np.ndarray]:
    """Per victim address of a false_data step: the slots whose readings are not intact (the
    forger's PUBLISH messages that reached the broker, as expected counts, >= forged_min)."""
    m = cap.mqtt
    out: dict[str, np.ndarray] = {}
    pub = (m["mtype"] == PUBLISH) & (m["to_broker"] == 1)
    for s in steps:
        if s.kind != "false_data":
            continue
        keys = [k for k in (address_key(cap, a) for a in s.attackers or [s.attacker]) if k is not None]
        rows = pub & np.isin(m["client"], np.array(keys, dtype=np.uint64)) & (m["ts"] >= s.start) & (m["ts"] <= s.end)
        slot = np.clip(((m["ts"][rows] - origin) // model.slot_s).astype(np.int64), 0, slots - 1)
        forged = np.bincount(slot, weights=mqtt_share[rows], minlength=slots) >= model.forged_min
        for victim in s.victims:
            out[victim] = out.get(victim, np.zeros(slots, dtype=bool)) | forged
    return out



@dataclass
class GatewayEffects:
    devices: dict[float, dict[str, np.ndarray]]  # deadline -> device address -> fed its services, per slot
    broker: dict[float, np.ndarray]  # deadline -> the broker delivered on time, per slot
    load: BrokerLoad


def device_states(cap: DecodedCapture, packet_share: np.ndarray, mqtt_share: np.ndarray, devices: Sequence[str],
                  steps: Sequence[Any], deadlines: Iterable[float], origin: float, duration: float,
                  model: BrokerModel = DEFAULT_MODEL) -> GatewayEffects:
    """Per deadline, per device address: a bool per slot, True when the device fed its
    services in that slot (see BrokerModel.device_up_share); and the broker's own state."""
    slots = max(1, math.ceil(duration / model.slot_s))
    load = broker_load(cap, mqtt_share, origin, duration, model)
    keys = {k: a for k, a in ((address_key(cap, a), a) for a in devices) if k is not None}
    refused = refused_until(cap, packet_share, mqtt_share, keys, origin + duration, model)
    forged = forged_slots(cap, mqtt_share, steps, origin, slots, model)
    m = cap.mqtt
    order = np.array(sorted(keys), dtype=np.uint64)  # device row = position of its key
    rows = (m["mtype"] == PUBLISH) & (m["to_broker"] == 1) & np.isin(m["client"], order)
    ts, client, share = m["ts"][rows], m["client"][rows], mqtt_share[rows].astype(float).copy()
    for key, spans in refused.items():
        for a, b in spans:
            share[(client == key) & (ts >= a) & (ts < b)] = 0.0
    sec = np.clip(np.floor(ts - origin).astype(np.int64), 0, len(load.delay) - 1)
    reach = share * (1.0 - load.drop[sec])
    cell = np.searchsorted(order, client) * slots + np.clip(((ts - origin) // model.slot_s).astype(np.int64), 0, slots - 1)
    sent = np.bincount(cell, minlength=len(order) * slots).reshape(len(order), slots)
    addr = [keys[int(k)] for k in order]
    intact = {a: ~forged[a] if a in forged else np.ones(slots, dtype=bool) for a in devices}
    out: dict[float, dict[str, np.ndarray]] = {}
    for deadline in sorted(set(deadlines)):
        ok = np.bincount(cell, weights=reach * (load.delay[sec] <= deadline), minlength=len(order) * slots)
        up = _carried(sent, ok.reshape(len(order), slots) >= model.device_up_share * sent)
        out[deadline] = {a: up[i] & intact[a] for i, a in enumerate(addr)}
        for a in devices:  # never seen on this capture: nothing lost, only forged readings count
            out[deadline].setdefault(a, intact[a].copy())
    return GatewayEffects(out, {d: _broker_ok(load, d, slots, model) for d in out}, load)


def _broker_ok(load: BrokerLoad, deadline: float, slots: int, model: BrokerModel) -> np.ndarray:
    """Per slot: every second of it delivered on time and dropped less than half."""
    good = (load.delay <= deadline) & (load.drop < 0.5)
    slot = np.minimum((np.arange(len(good)) // model.slot_s).astype(np.int64), slots - 1)
    bad = np.bincount(slot, weights=~good, minlength=slots)
    return bad == 0


def _carried(sent: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Devices x slots: the verdict of the last slot in which the device sent something (up
    before its first message)."""
    slots = sent.shape[1]
    last = np.maximum.accumulate(np.where(sent > 0, np.arange(slots), -1), axis=1)
    picked = np.take_along_axis(good, np.maximum(last, 0), axis=1)
    return np.where(last >= 0, picked, True)


__all__ = ["DEFAULT_MODEL", "BrokerLoad", "BrokerModel", "GatewayEffects", "broker_load", "device_states", "forged_slots", "refused_until"]
