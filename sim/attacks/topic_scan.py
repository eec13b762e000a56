"""topic_scan: harvesting topics with wildcard subscriptions.

The client subscribes to `#` and `$SYS/#`, then to many distinct filters guessed from common
IoT layouts and from the city's own topic roots. With `acl = "open"` the broker grants them
and forwards every device message published meanwhile (the harvest) plus its $SYS statistics
every 10 s; with `acl = "deny"` it answers SUBACK failure (0x80, 5.0: 0x87).
"""
from __future__ import annotations

import numpy as np

from atlas.firmware_profiles import DOMAIN_TOPIC_ROOT
from atlas.sim.attacks import attack
from atlas.sim.attacks.base import NS, AttackContext, PlannedStep, client_id, disconnect_and_close
from atlas.sim.traffic import mqtt
from atlas.sim.traffic.session import publish
from atlas.sim.traffic.vec import Blobs

GENERIC_FILTERS = (
    "+/#", "city/#", "home/#", "sensors/#", "devices/+/telemetry", "devices/+/status", "+/+/+/status", "tele/+/STATE",
    "stat/+/#", "cmnd/#", "zigbee2mqtt/#", "homeassistant/#", "owntracks/#", "shellies/#", "tasmota/#", "iot/#",
    "$SYS/broker/clients/#", "$SYS/broker/version", "$aws/things/+/shadow/#", "v1/devices/me/telemetry", "meter/#",
    "scada/#", "plc/#", "camera/#", "gps/#", "+/+/+/+/cmd", "+/+/+/+/control", "city/+/+/+/+/state", "test/#", "debug/#",
)
SYS_TOPICS = (
    "version", "uptime", "clients/total", "clients/connected", "clients/maximum", "clients/disconnected", "messages/received",
    "messages/sent", "messages/stored", "bytes/received", "bytes/sent", "load/messages/received/1min",
    "load/messages/sent/1min", "load/bytes/received/1min", "load/bytes/sent/1min", "load/connections/1min",
    "subscriptions/count", "retained messages/count", "heap/current", "heap/maximum",
)


@attack("topic_scan", {"filters": 40, "rate": 3.0, "acl": "open", "version": 0, "harvest": True}, duration=60.0)
def topic_scan(ctx: AttackContext, spec, rng: np.random.Generator) -> PlannedStep:
    """`#`, `$SYS/#`, then `filters` distinct filters at `rate` SUBSCRIBE/s."""
    p = ctx.params
    if p["acl"] not in ("open", "deny"):
        raise ValueError(f"topic_scan: acl must be 'open' or 'deny', got {p['acl']!r}")
    ip, me = ctx.attacker_host(rng)
    ver = int(p["version"]) or (5 if rng.random() < 0.3 else 4)
    dev = ctx.device_credentials(ip)
    cid = client_id(rng, f"{dev.client_id}-" if dev else "mqtt-explorer-")  # not the device's own id (see flood)
    user, pw = (dev.username, dev.password) if dev else ("guest", "guest")
    conn, ready, _ = ctx.mqtt_sessions(me, np.array([ctx.start]), [mqtt.connect(cid, version=ver, keepalive=60, username=user, password=pw)],
                                       [mqtt.connack(0, version=ver)], rng)
    filters = ["#", "$SYS/#"] + _guesses(ctx, rng, max(0, int(p["filters"])))
    n = len(filters)
    stop = min(ctx.end, ctx.t1)
    t = int(ready[0]) + (np.arange(n) * NS / float(p["rate"])).astype(np.int64) + rng.integers(0, 100_000_000, n)
    t[0] = int(ready[0])
    t = t[t < stop]
    filters = filters[: t.size]
    w = ctx.wire
    c = np.full(t.size, conn[0])
    open_acl = p["acl"] == "open"
    granted = 0 if open_acl else mqtt.SUBACK_FAILURE[ver]
    t_sub = w.send(c, t, 0, Blobs.from_list([mqtt.subscribe(i + 1, [(f, 0)], version=ver) for i, f in enumerate(filters)]))
    t_ack = t_sub + w.reply_delay(c, 1).astype(np.int64)
    w.send(c, t_ack, 1, Blobs.from_list([mqtt.suback(i + 1, [granted], version=ver) for i in range(len(filters))]))
    harvested = 0
    last = int(t_ack.max()) if t_ack.size else int(ready[0])
    if open_acl and bool(p["harvest"]) and t_ack.size:
        harvested, last = _harvest(ctx, conn[0], ver, int(t_ack[0]), int(t_ack[1]) if t_ack.size > 1 else None, stop, rng, last)
    if stop == ctx.end:
        disconnect_and_close(ctx, conn, np.array([max(last, int(t_ack.max())) + int(rng.uniform(0.2, 1.0) * NS)]), np.array([ver]))
    return PlannedStep([ip], [ctx.broker_ip], {"filters": len(filters), "acl": p["acl"], "harvested": harvested, "version": ver})


def _guesses(ctx: AttackContext, rng, k: int) -> list[str]:
    own = [f"city/{ctx.inv.district}/{root}/#" for root in DOMAIN_TOPIC_ROOT.values()]
    own += [f"city/+/{root}/+/+/+" for root in DOMAIN_TOPIC_ROOT.values()]
    pool = list(dict.fromkeys(own + list(GENERIC_FILTERS)))
    rng.shuffle(pool)
    extra = [f"{rng.choice(['dev', 'node', 'gw', 'site'])}{int(rng.integers(0, 100))}/#" for _ in range(max(0, k - len(pool)))]
    return (pool + extra)[:k]


def _harvest(ctx, conn: int, ver: int, t_hash: int, t_sys: int | None, stop: int, rng, last: int) -> tuple[int, int]:
    """The broker forwards what devices publish after `#` is granted, and $SYS every 10 s."""
    w = ctx.wire
    log = ctx.benign.publog
    sel = np.flatnonzero((log.ts > t_hash) & (log.ts < stop))
    count = 0
    if sel.size:
        c = np.full(sel.size, conn)
        t = log.ts[sel] + w.reply_delay(c, 1).astype(np.int64)
        publish(w, c, t, 1, log.topics.take(sel), log.payloads.take(sel), np.zeros(sel.size, np.int64), np.full(sel.size, ver),
                np.zeros(sel.size, np.int64))
        count += sel.size
        last = max(last, int(t.max()))
    if t_sys is not None:
        bursts = np.arange(t_sys + 1_000_000, stop, 10 * NS)
        k = len(SYS_TOPICS)
        if bursts.size:
            rep = np.repeat(bursts, k) + np.tile(np.arange(k) * 30_000, bursts.size)
            topics = Blobs.from_list([f"$SYS/broker/{s}".encode() for s in SYS_TOPICS]).take(np.tile(np.arange(k), bursts.size))
            vals = Blobs.from_list([(b"mosquitto version 2.0.11" if s == "version" else str(int(rng.integers(0, 100000))).encode())
                                    for s in np.tile(np.array(SYS_TOPICS), bursts.size)])
            c = np.full(rep.size, conn)
            publish(w, c, rep, 1, topics, vals, np.zeros(rep.size, np.int64), np.full(rep.size, ver), np.zeros(rep.size, np.int64))
            count += rep.size
            last = max(last, int(rep.max()))
    return int(count), last
