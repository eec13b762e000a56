"""connection_dos: many short MQTT connections from one or a few hosts (MQTT-malaria style).

Each simulated client connects with a malaria-style id (`beem.loadr-<host>-<pid>-<n>`),
publishes `messages` messages to `mqtt-malaria/<client>/data/<k>/<messages>` (QoS 1 by
default, as the tool and MQTTset's capture do), disconnects, and a new one takes its place: the
broker spends its time on handshakes and session setup. New connections arrive as a Poisson
stream at `rate` per second. With `topic` set, every client publishes to that one topic instead
(a home-made load script, or the live mode's paho attacker): the DoS is the connection churn,
not the topics, and a detector must not learn it from malaria's topic names.
"""
from __future__ import annotations

import numpy as np

from atlas.sim.attacks import attack
from atlas.sim.attacks.base import NS, AttackContext, PlannedStep, disconnect_and_close
from atlas.sim.traffic import mqtt
from atlas.sim.traffic.payloads import random_payloads
from atlas.sim.traffic.session import packet_ids, publish
from atlas.sim.traffic.vec import Blobs


@attack("connection_dos", {"hosts": 1, "rate": 60.0, "messages": 10, "interval_ms": 20.0, "size": 100, "qos": 1, "version": 0,
                           "topic": ""},
        duration=60.0)
def connection_dos(ctx: AttackContext, spec, rng: np.random.Generator) -> PlannedStep:
    """`rate` new connections/s spread over `hosts` hosts, each sending `messages` PUBLISH of
    `size` bytes `interval_ms` apart before it disconnects."""
    p = ctx.params
    n_hosts = max(1, int(p["hosts"]))
    ips, hosts = [], []
    for k in range(n_hosts):
        ip, h = ctx.attacker_host(rng, extra=k > 0)
        ips.append(ip)
        hosts.append(h)
    n = max(1, rng.poisson(float(p["rate"]) * ctx.dur / NS))
    t = ctx.start + np.sort(rng.uniform(0, ctx.dur, n)).astype(np.int64)
    t = t[t < ctx.t1]
    n = t.size
    host_of = rng.integers(0, n_hosts, n)
    ver = int(p["version"]) or (5 if rng.random() < 0.3 else 4)
    pid_base = int(rng.integers(1000, 30000))
    conns, readies = np.zeros(n, np.int64), np.zeros(n, np.int64)
    host_tag = f"{rng.choice(['lab', 'node', 'srv', 'MBP'])}-{int(rng.integers(1, 99))}.lan"
    cids = [f"beem.loadr-{host_tag}-{pid_base}-{i}" for i in range(n)]
    for k in range(n_hosts):
        rows = np.flatnonzero(host_of == k)
        if rows.size == 0:
            continue
        c, ready, _ = ctx.mqtt_sessions(hosts[k], t[rows], [mqtt.connect(cids[i], version=ver, keepalive=60) for i in rows],
                                        [mqtt.connack(0, version=ver)] * rows.size, rng)
        conns[rows], readies[rows] = c, ready
    m = max(1, int(p["messages"]))
    rep = np.repeat(np.arange(n), m)
    k = np.tile(np.arange(m), n)
    ts = readies[rep] + (k * float(p["interval_ms"]) * 1e6).astype(np.int64) + rng.integers(0, 500_000, rep.size)
    fixed = str(p["topic"]).encode()
    topics = Blobs.from_list([fixed or f"mqtt-malaria/{cids[i]}/data/{j + 1}/{m}".encode() for i, j in zip(rep.tolist(), k.tolist())])
    qos = np.full(rep.size, min(int(p["qos"]), 1))
    pid = packet_ids(conns[rep], ts, qos > 0)
    size = max(1, int(p["size"]))
    _, t_done = publish(ctx.wire, conns[rep], ts, 0, topics, random_payloads(rep.size, max(1, size // 2), size * 3 // 2, rng),
                        qos, np.full(rep.size, ver), pid)
    last = np.zeros(n, np.int64)
    np.maximum.at(last, rep, t_done)
    disconnect_and_close(ctx, conns, last + (rng.uniform(0.2, 2.0, n) * 1e6).astype(np.int64), np.full(n, ver))
    return PlannedStep(ips, [ctx.broker_ip], {"connections": int(n), "messages_each": m, "version": ver})

