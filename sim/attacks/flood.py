"""mqtt_flood: one client publishing at a very high rate and/or with large payloads.

The client connects (stolen or anonymous credentials), then writes PUBLISH messages as fast as
`rate`; the TCP stack batches consecutive writes into full segments (as MQTTset's flood shows,
up to 64 kB with segmentation offload), the broker acknowledges (PUBACK for QoS 1).
"""
from __future__ import annotations

import numpy as np

from atlas.sim.attacks import attack
from atlas.sim.attacks.base import NS, AttackContext, PlannedStep, client_id, disconnect_and_close
from atlas.sim.traffic import mqtt
from atlas.sim.traffic.payloads import random_payloads
from atlas.sim.traffic.session import packet_ids, pubacks
from atlas.sim.traffic.vec import Blobs


@attack("mqtt_flood", {"rate": 1500.0, "size_min": 64, "size_max": 1024, "qos": 0, "version": 0, "topic": "", "batch_ms": 1.0,
                       "offload_kb": 0}, duration=30.0)
def mqtt_flood(ctx: AttackContext, spec, rng: np.random.Generator) -> PlannedStep:
    """`rate` PUBLISH/s with payloads of `size_min`..`size_max` bytes at `qos`; writes closer
    than `batch_ms` leave in the same segments. `offload_kb` > 0: the capture shows segments of
    up to that size (segmentation offload, as in MQTTset's flood capture: 32 kB segments)."""
    p = ctx.params
    ip, me = ctx.attacker_host(rng)
    ver = int(p["version"]) or (5 if rng.random() < 0.3 else 4)
    dev = ctx.device_credentials(ip)
    # A compromised device attacks with its own credentials but its own client id (reusing the
    # device's id would make the broker drop the device's session: a different attack).
    cid = client_id(rng, f"{dev.client_id}-" if dev else "flood-")
    user, pw = (dev.username, dev.password) if dev else ("mqtt", "mqtt")
    conn, ready, _ = ctx.mqtt_sessions(me, np.array([ctx.start]), [mqtt.connect(cid, version=ver, keepalive=60, username=user, password=pw)],
                                    [mqtt.connack(0, version=ver)], rng)
    t_first = int(ready[0])
    stop = min(ctx.end, ctx.t1)
    n = max(1, int(float(p["rate"]) * (stop - t_first) / NS))
    t = t_first + np.sort(rng.uniform(0, max(stop - t_first, 1), n)).astype(np.int64)
    topic = p["topic"] or (f"city/{ctx.inv.district}/{rng.choice(['transport', 'energy', 'safety'])}/flood/{rng.bytes(3).hex()}")
    topics = Blobs.from_list([topic.encode()]).take(np.zeros(n, np.int64))
    lo, hi = int(p["size_min"]), max(int(p["size_min"]), int(p["size_max"]))
    payloads = random_payloads(n, lo, hi, rng)
    qos = np.full(n, min(int(p["qos"]), 1))
    c = np.full(n, conn[0])
    pid = packet_ids(c, t, qos > 0)
    msgs = mqtt.publish_batch(topics, payloads, qos, pid, np.full(n, ver))
    w = ctx.wire
    t_last = w.send(c, t, 0, msgs, coalesce_ns=int(float(p["batch_ms"]) * 1e6), segment_bytes=int(float(p["offload_kb"]) * 1024))
    if qos[0] > 0:
        w.send(c, t_last + w.reply_delay(c, 1).astype(np.int64), 1, pubacks(pid))
    if stop == ctx.end:
        disconnect_and_close(ctx, conn, np.array([int(t_last.max()) + 1_000_000]), np.array([ver]))
    return PlannedStep([ip], [ctx.broker_ip], {"messages": int(n), "version": ver, "topic": topic, "bytes": int(payloads.lens.sum())})
