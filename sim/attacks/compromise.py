"""Helpers for attacks run from a compromised device towards the outside world.

Mirai-style scanning and exfiltration start on a device behind the gateway and talk to hosts
on the Internet, which reach the capture point through the gateway's uplink router. These
helpers pick the compromised device, draw public addresses, register outside hosts on the
wire and play scripted request/response exchanges over many connections at once.
"""
from __future__ import annotations

import numpy as np

from atlas.sim.attacks.base import AttackContext
from atlas.sim.traffic.population import UPLINK_ROUTER_MAC, ip_int
from atlas.sim.traffic.vec import Blobs

# Ranges a scanner skips or that are not routable on the Internet (RFC 6890 and Mirai's own
# exclusions): 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.0.0/24, 192.0.2/24,
# 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24, 224/3 (multicast and reserved).
_RESERVED = np.array([
    (0x00000000, 8), (0x0A000000, 8), (0x64400000, 10), (0x7F000000, 8), (0xA9FE0000, 16), (0xAC100000, 12),
    (0xC0000000, 24), (0xC0000200, 24), (0xC0A80000, 16), (0xC6120000, 15), (0xC6336400, 24), (0xCB007100, 24),
    (0xE0000000, 3),
], dtype=np.int64)


def is_public(addr: np.ndarray) -> np.ndarray:
    """True for IPv4 addresses (as integers) outside every reserved range above."""
    addr = np.asarray(addr, dtype=np.int64)
    ok = np.ones(addr.shape, dtype=bool)
    for net, plen in _RESERVED:
        mask = (0xFFFFFFFF << (32 - int(plen))) & 0xFFFFFFFF
        ok &= (addr & mask) != net
    return ok


def public_addresses(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct random public IPv4 addresses (as integers), as an Internet-wide scanner draws."""
    out = np.zeros(0, dtype=np.int64)
    while out.size < n:
        cand = rng.integers(1 << 24, 0xE0000000, 2 * (n - out.size) + 16, dtype=np.int64)
        cand = cand[is_public(cand) & ((cand & 0xFF) != 0) & ((cand & 0xFF) != 0xFF)]
        out = np.unique(np.concatenate([out, cand]))
    return rng.permutation(out)[:n]


def compromised_device(ctx: AttackContext, rng: np.random.Generator) -> tuple[str, int]:
    """The spec's attacker if given, else a device of the gateway picked by the seed (these
    attacks run on an infected device: a rogue host is only used when asked for)."""
    if ctx.spec is not None and ctx.spec.attacker is not None:
        return ctx.attacker_host(rng)
    d = ctx.inv.devices[int(rng.integers(len(ctx.inv.devices)))]
    return d.ip, ctx.host(d.ip)


def twin_host(ctx: AttackContext, host: int, stack: str) -> int:
    """Another wire endpoint with the same address and MAC as `host` but another TCP stack
    (a raw-socket scanner running on the device, next to its own network stack)."""
    w = ctx.wire
    return w.host(int(w.hosts_array("ip")[host]), int(w.hosts_array("mac")[host]), rtt_ns=int(w.hosts_array("rtt")[host]),
                  proc_ns=int(w.hosts_array("proc")[host]), stack=stack)


def outside_hosts(ctx: AttackContext, addrs: np.ndarray, rng: np.random.Generator, *, stack: str = "linux") -> np.ndarray:
    """Wire endpoints for Internet hosts: their frames reach the capture point from the uplink
    router, tens to hundreds of milliseconds away."""
    w = ctx.wire
    rtt = rng.uniform(15.0, 250.0, len(addrs)) * 1e6
    out = np.empty(len(addrs), dtype=np.int64)
    for k, a in enumerate(np.asarray(addrs, dtype=np.int64)):
        out[k] = w.host(int(a), UPLINK_ROUTER_MAC, rtt_ns=int(rtt[k]), proc_ns=200_000, stack=stack, ttl=int(rng.integers(40, 60)))
    return out


def inside_host(ctx: AttackContext, ip: str) -> int:
    """The wire endpoint at an address of the device subnet, registered if nobody uses it."""
    h = ctx.benign.host_of_ip.get(ip)
    if h is None:
        mac = (0x02 << 40) | (0x5CA7 << 24) | (ip_int(ip) & 0xFFFFFF)
        h = ctx.wire.host(ip_int(ip), mac, rtt_ns=2_000_000, proc_ns=300_000, stack="lwip")
        ctx.benign.host_of_ip[ip] = h
    return h


def exchange(ctx: AttackContext, conn: np.ndarray, t: np.ndarray, steps: list[tuple[int, Blobs | bytes]]) -> np.ndarray:
    """Play a scripted conversation on every connection at once: each step is (direction,
    message per connection, or the same bytes for all); a step starts when its sender has
    seen the previous one. Returns the time of the last message's last segment."""
    w = ctx.wire
    n = conn.shape[0]
    for k, (d, msg) in enumerate(steps):
        if k:
            t = t + w.reply_delay(conn, np.full(n, d)).astype(np.int64)
        blobs = msg if isinstance(msg, Blobs) else Blobs.repeat(msg, n)
        t = w.send(conn, t, d, blobs)
    return t
