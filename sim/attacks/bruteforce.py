"""mqtt_bruteforce: guessing MQTT credentials, one TCP connection per attempt.

Each attempt: handshake, CONNECT with a username from the list (the gateway's real device
usernames mixed with common ones) and a password from a wordlist; the broker refuses with
CONNACK 4/5 (3.1.1) or 0x86/0x87 (5.0) and closes the connection; the tool reconnects.
With `success`, the last attempt uses the right password and gets CONNACK 0.
"""
from __future__ import annotations

import numpy as np

from atlas.sim.attacks import attack
from atlas.sim.attacks.base import COMMON_PASSWORDS, COMMON_USERS, NS, AttackContext, PlannedStep, client_id, disconnect_and_close
from atlas.sim.traffic import mqtt


@attack("mqtt_bruteforce", {"rate": 8.0, "version": 0, "success": False, "known_users": 0.5}, duration=60.0)
def mqtt_bruteforce(ctx: AttackContext, spec, rng: np.random.Generator) -> PlannedStep:
    """`rate` attempts/s; `version` 4 or 5 (0: chosen by the seed); `known_users`: share of
    attempts against usernames that exist on this gateway."""
    p = ctx.params
    ip, me = ctx.attacker_host(rng)
    ver = int(p["version"]) or (5 if rng.random() < 0.3 else 4)
    n = max(1, int(float(p["rate"]) * ctx.dur / NS))
    t = ctx.start + np.sort(rng.uniform(0, ctx.dur, n)).astype(np.int64)
    t = t[t < ctx.t1]
    n = t.size
    known = [d for d in ctx.inv.devices]
    users, pwds, connects, connacks = [], [], [], []
    # Tools either send an empty client id (the broker assigns one; MQTTset's does) or a random one.
    cid = "" if rng.random() < 0.5 else client_id(rng, "mqtt-bf-")
    for i in range(n):
        if known and rng.random() < float(p["known_users"]):
            u = known[int(rng.integers(len(known)))].username
        else:
            u = COMMON_USERS[int(rng.integers(len(COMMON_USERS)))]
        pw = COMMON_PASSWORDS[int(rng.integers(len(COMMON_PASSWORDS)))] + ("" if rng.random() < 0.6 else str(int(rng.integers(0, 100))))
        win = bool(p["success"]) and i == n - 1 and known
        if win:
            d = known[int(rng.integers(len(known)))]
            u, pw = d.username, d.password
        code = 0 if win else (mqtt.CONNACK_NOT_AUTHORIZED[ver] if rng.random() < 0.7 else mqtt.CONNACK_BAD_CREDENTIALS[ver])
        users.append(u)
        pwds.append(pw)
        connects.append(mqtt.connect(cid, version=ver, keepalive=60, username=u, password=pw))
        connacks.append(mqtt.connack(code, version=ver))
    conn, ready, t_ca = ctx.mqtt_sessions(me, t, connects, connacks, rng)
    # The broker closes refused connections right after its CONNACK.
    refused = np.ones(n, dtype=bool)
    if bool(p["success"]) and n:
        refused[-1] = False
    w = ctx.wire
    r = np.flatnonzero(refused)
    t_close = t_ca[r] + (rng.uniform(20, 200, r.size) * 1000).astype(np.int64)
    w.close(conn[r], t_close, 1)
    if not refused.all():
        k = np.flatnonzero(~refused)
        disconnect_and_close(ctx, conn[k], ready[k] + NS, np.full(k.size, ver))
    return PlannedStep([ip], [ctx.broker_ip], {"attempts": int(n), "version": ver, "usernames": sorted(set(users))[:20],
                                                "succeeded": bool(p["success"]) and n > 0})
