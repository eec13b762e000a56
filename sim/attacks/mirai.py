"""mirai_scan: Mirai-style telnet scanning from a compromised device.

The bot's scanner sends raw SYNs (one source port for the whole scan, as Mirai's does) to
TCP 23, and to 2323 one time in ten, of random addresses: a share inside the gateway's own
subnet (its neighbours first, then anywhere in the subnet), the rest anywhere on the Internet
outside reserved ranges. Most probes go unanswered,
some are refused (RST-ACK); the few hosts with telnet open answer SYN-ACK, the scanner's
kernel resets that half-open connection, and the bot comes back over a real TCP connection to
try the classic factory credentials at the login prompt (telnet option negotiation, `login:`,
`Password:`, `Login incorrect`). A login that works is followed by Mirai's busybox probe.
"""
from __future__ import annotations

import numpy as np

from atlas.sim.attacks import attack
from atlas.sim.attacks.base import NS, AttackContext, PlannedStep
from atlas.sim.attacks.compromise import compromised_device, exchange, inside_host, outside_hosts, public_addresses, twin_host
from atlas.sim.traffic.population import ip_int, ip_str
from atlas.sim.traffic.vec import Blobs
from atlas.sim.traffic.wire import ACK, RST, SYN

TELNET_PORTS = (23, 2323)
# Factory credentials from Mirai's published scanner table (user, password), most tried first.
MIRAI_CREDENTIALS = (
    ("root", "xc3511"), ("root", "vizxv"), ("admin", "admin"), ("root", "admin"), ("root", "888888"),
    ("root", "xmhdipc"), ("root", "default"), ("root", "juantech"), ("root", "123456"), ("root", "54321"),
    ("support", "support"), ("root", ""), ("admin", "password"), ("root", "root"), ("root", "12345"),
    ("user", "user"), ("admin", ""), ("root", "pass"), ("admin", "admin1234"), ("root", "1111"),
    ("admin", "smcadmin"), ("admin", "1111"), ("root", "666666"), ("root", "password"), ("root", "1234"),
    ("root", "klv123"), ("Administrator", "admin"), ("service", "service"), ("supervisor", "supervisor"),
    ("guest", "guest"), ("guest", "12345"), ("admin1", "password"), ("administrator", "1234"), ("ubnt", "ubnt"),
    ("root", "Zte521"), ("root", "hi3518"), ("root", "jvbzd"), ("root", "anko"), ("root", "7ujMko0vizxv"),
    ("root", "dreambox"), ("root", "realtek"), ("root", "00000000"), ("admin", "1234"), ("admin", "12345"),
)
# Telnet server greeting: IAC DO TERMINAL-TYPE, DO TERMINAL-SPEED, DO X-DISPLAY, DO NEW-ENVIRON;
# the bot refuses them all (IAC WONT ...).
_IAC_DO = bytes([255, 253, 24, 255, 253, 32, 255, 253, 35, 255, 253, 39])
_IAC_WONT = bytes([255, 252, 24, 255, 252, 32, 255, 252, 35, 255, 252, 39])


@attack("mirai_scan", {"rate": 120.0, "inside": 0.25, "open": 0.01, "closed": 0.15, "logins": 2, "success": 0.2},
        duration=60.0)
def mirai_scan(ctx: AttackContext, spec, rng: np.random.Generator) -> PlannedStep:
    """`rate` SYN probes/s to 23/2323 of random addresses, a share `inside` of them in the
    gateway's subnet; outside, a share `open` of the probed hosts run telnet and get `logins`
    credential attempts (the last one succeeds with probability `success`), a share `closed`
    refuse with RST-ACK, the rest stay silent."""
    p = ctx.params
    for k in ("inside", "open", "closed", "success"):
        if not 0 <= float(p[k]) <= 1:
            raise ValueError(f"mirai_scan: parameter {k!r} must be a share in [0, 1], got {p[k]!r}")
    if float(p["open"]) + float(p["closed"]) > 1:
        raise ValueError("mirai_scan: parameters 'open' + 'closed' must not exceed 1")
    if float(p["rate"]) <= 0:
        raise ValueError("mirai_scan: parameter 'rate' must be > 0 probes/s")
    ip, me = compromised_device(ctx, rng)
    scanner = twin_host(ctx, me, "scanner")
    stop = min(ctx.end, ctx.t1)
    n = max(1, int(float(p["rate"]) * (stop - ctx.start) / NS))
    t = ctx.start + (np.arange(n) * NS / float(p["rate"])).astype(np.int64) + rng.integers(0, 2_000_000, n)
    t = t[t < stop]
    n = t.size
    dport = np.where(rng.random(n) < 0.9, 23, 2323)
    inside = rng.random(n) < float(p["inside"])
    n_in = int(inside.sum())

    # Inside: the neighbours the bot sees in its ARP cache (the gateway, other devices) first,
    # then random addresses of the subnet, most of them empty.
    net_lo = ip_int(ctx.inv.subnet.split("/")[0])
    size = 1 << (32 - int(ctx.inv.subnet.split("/")[1]))
    me_int = ip_int(ip)
    known_in = rng.permutation(np.array([ip_int(a) for a in [ctx.inv.broker] + [d.ip for d in ctx.inv.devices]], dtype=np.int64))
    cand = net_lo + 1 + rng.choice(size - 2, size=min(size - 2, 2 * n_in + 8), replace=False)
    cand = np.concatenate([known_in, cand[~np.isin(cand, known_in)]])
    in_addr = cand[cand != me_int][:n_in]
    in_ips = [ip_str(a) for a in in_addr]
    known = np.array([a in ctx.benign.host_of_ip for a in in_ips], dtype=bool)
    in_hosts = np.array([inside_host(ctx, a) for a in in_ips], dtype=np.int64)
    # A device answers RST-ACK unless its profile has telnet open; empty addresses stay silent.
    in_open = np.array([dport_open(ctx, a, int(q)) for a, q in zip(in_ips, dport[inside])], dtype=bool)

    out_addr = public_addresses(rng, n - n_in)
    u = rng.random(n - n_in)
    out_open = u < float(p["open"])
    out_closed = ~out_open & (u < float(p["open"]) + float(p["closed"]))
    out_hosts = outside_hosts(ctx, out_addr, rng)

    target = np.empty(n, dtype=np.int64)
    target[inside], target[~inside] = in_hosts, out_hosts
    is_open = np.zeros(n, dtype=bool)
    is_open[inside], is_open[~inside] = in_open, out_open
    refused = np.zeros(n, dtype=bool)
    refused[inside], refused[~inside] = known & ~in_open, out_closed
    addr = np.empty(n, dtype=np.int64)
    addr[inside], addr[~inside] = in_addr, out_addr

    w = ctx.wire
    sport = int(rng.integers(1024, 65536))
    conn = w.connections(np.full(n, scanner), target, np.full(n, sport), dport, server_isn_zero=~is_open)
    w.segments(conn, t, 0, SYN)
    t_ans = t + w.reply_delay(conn, 1).astype(np.int64)
    op = np.flatnonzero(is_open)
    w.segments(conn[op], t_ans[op], 1, SYN | ACK)
    w.segments(conn[op], t_ans[op] + w.reply_delay(conn[op], 0).astype(np.int64), 0, RST)
    cl = np.flatnonzero(refused)
    w.segments(conn[cl], t_ans[cl], 1, RST | ACK)

    logins = _telnet_logins(ctx, rng, me, target[op], dport[op], t_ans[op], stop, int(p["logins"]), float(p["success"]))
    victims = [ip_str(a) for a in addr[op]]
    return PlannedStep([ip], victims, {
        "probes": int(n), "inside_probes": n_in, "outside_probes": int(n - n_in), "source_port": sport,
        "telnet_open": len(victims), "login_attempts": logins["attempts"], "logins_succeeded": logins["succeeded"],
    })


def dport_open(ctx: AttackContext, ip: str, port: int) -> bool:
    d = ctx.device_credentials(ip)
    return bool(d) and port in ctx.inv.profiles[d.cls].open_tcp_ports


def _telnet_logins(ctx: AttackContext, rng, me: int, hosts: np.ndarray, ports: np.ndarray, t_found: np.ndarray,
                   stop: int, logins: int, success: float) -> dict:
    """The bot's real connections to the hosts that answered, with `logins` guesses each."""
    m = hosts.shape[0]
    if m == 0 or logins < 1:
        return {"attempts": 0, "succeeded": 0}
    w = ctx.wire
    # The bot reports a find and its brute-forcer connects within a few seconds.
    t_syn = t_found + (rng.uniform(0.2, 3.0, m) * NS).astype(np.int64)
    keep = t_syn < stop
    hosts, ports, t_syn = hosts[keep], ports[keep], t_syn[keep]
    m = hosts.shape[0]
    if m == 0:
        return {"attempts": 0, "succeeded": 0}
    conn = w.connections(np.full(m, me), hosts, ctx.ports(rng, m), ports)
    t = w.handshake(conn, t_syn)
    won = rng.random(m) < success
    steps: list[tuple[int, Blobs | bytes]] = [(1, _IAC_DO), (0, _IAC_WONT), (1, b"\r\nlogin: ")]
    for k in range(logins):
        picks = rng.integers(0, len(MIRAI_CREDENTIALS), m)
        steps.append((0, Blobs.from_list([MIRAI_CREDENTIALS[i][0].encode() + b"\r\n" for i in picks])))
        steps.append((1, b"Password: "))
        steps.append((0, Blobs.from_list([MIRAI_CREDENTIALS[i][1].encode() + b"\r\n" for i in picks])))
        last = k == logins - 1
        fail = b"\r\nLogin incorrect\r\n" + (b"login: " if not last else b"")
        steps.append((1, Blobs.from_list([b"\r\n\r\nBusyBox v1.19.4 built-in shell (ash)\r\n# " if last and won[i] else fail
                                          for i in range(m)])))
    t = exchange(ctx, conn, t + (rng.uniform(50, 400, m) * 1e6).astype(np.int64), steps)
    # After a login: the busybox probe Mirai uses to confirm a shell.
    wi = np.flatnonzero(won)
    if wi.size:
        t_w = t[wi] + w.reply_delay(conn[wi], np.zeros(wi.size)).astype(np.int64)
        t[wi] = exchange(ctx, conn[wi], t_w, [(0, b"enable\r\nsystem\r\nshell\r\nsh\r\n/bin/busybox MIRAI\r\n"),
                                               (1, b"MIRAI: applet not found\r\n# ")])
    # The bot hangs up (the server closes a connection after its last failed login itself).
    w.close(conn, t + w.reply_delay(conn, np.zeros(m)).astype(np.int64), 0)
    return {"attempts": int(m * logins), "succeeded": int(won.sum())}
