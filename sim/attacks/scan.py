"""port_scan: a TCP SYN scan (nmap -sS style) of the gateway and some devices.

The scanner sends one SYN per (host, port) from a fixed source port, in random order at a
steady rate. Open ports answer SYN-ACK and the scanner's kernel resets them (RST); closed
ports answer RST-ACK; a share of probes can go unanswered (filtered).
"""
from __future__ import annotations

import numpy as np

from atlas.sim.attacks import attack
from atlas.sim.attacks.base import COMMON_PORTS, GATEWAY_OPEN_PORTS, NS, AttackContext, PlannedStep
from atlas.sim.traffic.wire import ACK, RST, SYN


@attack("port_scan", {"hosts": 4, "ports": 300, "rate": 400.0, "filtered": 0.0}, duration=30.0)
def port_scan(ctx: AttackContext, spec, rng: np.random.Generator) -> PlannedStep:
    """SYN scan of `hosts` hosts (the gateway first) x `ports` ports at `rate` probes/s."""
    p = ctx.params
    ip, me = ctx.attacker_host(rng, stack="scanner")
    targets = list(spec.victims) if spec.victims else _pick_targets(ctx, rng, int(p["hosts"]), ip)
    n_ports = max(1, min(int(p["ports"]), 65535))
    ports = _port_list(rng, n_ports)
    hosts, open_sets = [], []
    for t in targets:
        hosts.append(ctx.host(t))
        open_sets.append(set(GATEWAY_OPEN_PORTS) if t == ctx.broker_ip else set(_device_ports(ctx, t)))
    h_idx = np.repeat(np.arange(len(targets)), n_ports)
    dport = np.tile(ports, len(targets))
    order = rng.permutation(h_idx.size)
    h_idx, dport = h_idx[order], dport[order]
    n = h_idx.size
    # The scan stops at the end of its duration (or of the capture) even if ports remain.
    t = ctx.start + (np.arange(n) * NS / float(p["rate"])).astype(np.int64) + rng.integers(0, 200_000, n)
    keep = t < min(ctx.end, ctx.t1)
    h_idx, dport, t = h_idx[keep], dport[keep], t[keep]
    n = t.size
    is_open = np.array([dport[i] in open_sets[h_idx[i]] for i in range(n)], dtype=bool)
    answered = rng.random(n) >= float(p["filtered"])
    answered |= is_open
    sport = int(rng.integers(33000, 65000))
    vh = np.array(hosts, dtype=np.int64)[h_idx]
    w = ctx.wire
    conn = w.connections(np.full(n, me), vh, np.full(n, sport), dport, server_isn_zero=~is_open)
    w.segments(conn, t, 0, SYN)
    t_ans = t + w.reply_delay(conn, 1).astype(np.int64)
    op = np.flatnonzero(is_open)
    w.segments(conn[op], t_ans[op], 1, SYN | ACK)
    w.segments(conn[op], t_ans[op] + w.reply_delay(conn[op], 0).astype(np.int64), 0, RST)
    cl = np.flatnonzero(~is_open & answered)
    w.segments(conn[cl], t_ans[cl], 1, RST | ACK)
    found = sorted({(targets[h_idx[i]], int(dport[i])) for i in op})
    return PlannedStep([ip], targets, {"probes": int(n), "open_found": [f"{h}:{q}" for h, q in found], "source_port": sport})


def _pick_targets(ctx: AttackContext, rng, k: int, me: str) -> list[str]:
    devs = [d.ip for d in ctx.inv.devices if d.ip != me]
    with_ports = [ip for ip in devs if _device_ports(ctx, ip)]
    rest = [ip for ip in devs if ip not in with_ports]
    rng.shuffle(with_ports)
    rng.shuffle(rest)
    return ([ctx.broker_ip] + with_ports + rest)[: max(1, k)]


def _device_ports(ctx: AttackContext, ip: str) -> tuple[int, ...]:
    d = ctx.device_credentials(ip)
    return ctx.inv.profiles[d.cls].open_tcp_ports if d else ()


def _port_list(rng, n: int) -> np.ndarray:
    common = list(COMMON_PORTS)[:n]
    rest = n - len(common)
    if rest > 0:
        pool = np.setdiff1d(np.arange(1, 65536), np.array(common))
        common += list(rng.choice(pool, rest, replace=False))
    return np.array(common, dtype=np.int64)
