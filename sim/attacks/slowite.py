"""slowite: the SlowITe attack (Vaccari et al., 2020): open as many MQTT connections as the
broker accepts, each with a CONNECT asking for a very long keepalive, then stay silent.

Each connection costs the attacker nothing and holds one of the broker's slots for up to 1.5
keepalives (65535 s: 27 hours). When keepalive is shorter than the attack, the tool sends the
PINGREQ needed to keep the slot. With `broker_max` set, connections beyond the broker's limit
are closed by the broker right after their CONNECT.
"""
from __future__ import annotations

import numpy as np

from atlas.sim.attacks import attack
from atlas.sim.attacks.base import NS, AttackContext, PlannedStep, client_id
from atlas.sim.traffic import mqtt
from atlas.sim.traffic.session import app_delay
from atlas.sim.traffic.vec import Blobs


@attack("slowite", {"connections": 800, "rate": 200.0, "keepalive": 65535, "broker_max": 0, "version": 0}, duration=120.0)
def slowite(ctx: AttackContext, spec, rng: np.random.Generator) -> PlannedStep:
    """`connections` connections opened at `rate`/s with CONNECT keepalive `keepalive` s."""
    p = ctx.params
    ip, me = ctx.attacker_host(rng)
    ver = int(p["version"]) or (5 if rng.random() < 0.3 else 4)
    n = max(1, int(p["connections"]))
    t = ctx.start + (np.arange(n) * NS / float(p["rate"])).astype(np.int64) + rng.integers(0, 1_000_000, n)
    t = t[t < min(ctx.end, ctx.t1)]
    n = t.size
    ka = max(1, min(int(p["keepalive"]), 65535))
    limit = int(p["broker_max"])
    accepted = np.ones(n, dtype=bool) if limit <= 0 else np.arange(n) < limit
    w = ctx.wire
    connects = [mqtt.connect(client_id(rng, "slowite-"), version=ver, keepalive=ka) for _ in range(n)]
    acc = np.flatnonzero(accepted)
    conns = np.zeros(n, np.int64)
    ready = np.zeros(n, np.int64)
    if acc.size:
        c, r, _ = ctx.mqtt_sessions(me, t[acc], [connects[i] for i in acc], [mqtt.connack(0, version=ver)] * acc.size, rng)
        conns[acc], ready[acc] = c, r
    rej = np.flatnonzero(~accepted)
    if rej.size:
        c = w.connections(np.full(rej.size, me), ctx.broker_host, ctx.ports(rng, rej.size), 1883)
        t_ack = w.handshake(c, t[rej])
        t_c = w.send(c, t_ack + app_delay(rng, rej.size), 0, Blobs.from_list([connects[i] for i in rej]))
        w.close(c, t_c + w.reply_delay(c, 1).astype(np.int64), 1)
    # Keep the slots: a PINGREQ every keepalive while the attack lasts.
    stop = min(ctx.end, ctx.t1)
    if acc.size and ka * NS < stop - ctx.start:
        k = np.maximum(0, (stop - ready[acc]) // (ka * NS))
        rep = np.repeat(acc, k)
        j = np.arange(rep.size) - np.repeat(np.concatenate([[0], np.cumsum(k)[:-1]]), k) + 1
        tp = ready[rep] + j * ka * NS - rng.integers(0, 1_000_000_000, rep.size) // max(1, 10 // min(ka, 10))
        c = conns[rep]
        w.send(c, tp, 0, Blobs.repeat(mqtt.pingreq(), rep.size))
        w.send(c, tp + w.reply_delay(c, 1).astype(np.int64), 1, Blobs.repeat(mqtt.pingresp(), rep.size))
    if acc.size and ctx.end < ctx.t1:
        # The tool stops: its sockets close.
        w.close(conns[acc], ctx.end + rng.integers(0, 50_000_000, acc.size), 0)
    return PlannedStep([ip], [ctx.broker_ip], {"connections_opened": int(n), "accepted": int(acc.size), "keepalive_s": ka, "version": ver})
