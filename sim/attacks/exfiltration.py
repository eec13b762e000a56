"""exfiltration: a compromised device uploads data to a host that is none of its peers.

The device opens `connections` TCP connections one after the other to an outside address
(default: a random public one) and streams `kbytes_per_s` of data through them for the whole
step: TLS (a TLS 1.3 handshake, then application-data records) on 443/8443 and other ports,
HTTP POSTs of octet-stream bodies on 8080/80 (each answered 200 OK). A smart meter that
normally sends a few hundred bytes every 30 s suddenly sends tens of kilobytes per second, out
of the city's network, on a port its profile never uses.
"""
from __future__ import annotations

import struct

import numpy as np

from atlas.sim.attacks import attack
from atlas.sim.attacks.base import NS, AttackContext, PlannedStep
from atlas.sim.attacks.compromise import compromised_device, exchange, outside_hosts, public_addresses
from atlas.sim.traffic.population import ip_int, ip_str
from atlas.sim.traffic.payloads import random_payloads
from atlas.sim.traffic.vec import Blobs, rowcat

HTTP_PORTS = (80, 8080)
DEFAULT_PORTS = (443, 8443, 8080)
TLS_MAX_RECORD = 16384 + 256  # TLS 1.3 ciphertext limit


@attack("exfiltration", {"kbytes_per_s": 40.0, "port": 0, "dest": "", "connections": 3, "chunk_kb": 16.0}, duration=300.0)
def exfiltration(ctx: AttackContext, spec, rng: np.random.Generator) -> PlannedStep:
    """`kbytes_per_s` kB/s uploaded for the whole step over `connections` successive TCP
    connections to `dest`:`port` (defaults: a random public address; 443, 8443 or 8080), in
    writes of `chunk_kb` kB."""
    p = ctx.params
    port = int(p["port"]) or int(rng.choice(DEFAULT_PORTS))
    if not 0 < port < 65536:
        raise ValueError(f"exfiltration: parameter 'port' must be a TCP port, got {p['port']!r}")
    if float(p["kbytes_per_s"]) <= 0 or float(p["chunk_kb"]) <= 0:
        raise ValueError("exfiltration: parameters 'kbytes_per_s' and 'chunk_kb' must be > 0")
    n_conn = max(1, int(p["connections"]))
    http = port in HTTP_PORTS
    chunk = int(float(p["chunk_kb"]) * 1024)
    if not http:
        chunk = min(chunk, TLS_MAX_RECORD - 5)
    ip, me = compromised_device(ctx, rng)
    dest = str(p["dest"]) or ip_str(int(public_addresses(rng, 1)[0]))
    try:
        dest_int = ip_int(dest)
    except ValueError:
        raise ValueError(f"exfiltration: parameter 'dest' must be an IPv4 address, got {dest!r}") from None
    if dest in ctx.benign.host_of_ip:
        raise ValueError(f"exfiltration: parameter 'dest' {dest} is a host of the gateway's own network (data leaves it)")
    srv = int(outside_hosts(ctx, np.array([dest_int]), rng)[0])
    ctx.benign.host_of_ip[dest] = srv

    w = ctx.wire
    stop = min(ctx.end, ctx.t1)
    slot = (stop - ctx.start) // n_conn
    t_syn = ctx.start + np.arange(n_conn, dtype=np.int64) * slot + rng.integers(0, max(1, slot // 50), n_conn)
    conn = w.connections(np.full(n_conn, me), srv, ctx.ports(rng, n_conn), port)
    t = w.handshake(conn, t_syn)
    if not http:
        t = exchange(ctx, conn, t + 200_000, [
            (0, Blobs.from_list([_client_hello(rng, _sni(rng)) for _ in range(n_conn)])),
            (1, Blobs.from_list([_server_flight(rng) for _ in range(n_conn)])),
            (0, Blobs.from_list([bytes.fromhex("140303000101") + _record(0x17, rng.bytes(53)) for _ in range(n_conn)])),
        ])
    # Writes every chunk / rate seconds through each connection's slot, until the slot ends.
    every = int(chunk / (float(p["kbytes_per_s"]) * 1024) * NS)
    slot_end = np.minimum(ctx.start + (np.arange(n_conn) + 1) * slot, stop) - NS // 2
    counts = np.maximum(1, (slot_end - t) // max(every, 1))
    c_idx = np.repeat(np.arange(n_conn), counts)
    k = np.arange(c_idx.size) - np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    tw = t[c_idx] + 1_000_000 + k * every + rng.integers(0, max(1, every // 10), c_idx.size)
    body = random_payloads(c_idx.size, int(chunk * 0.8), chunk, rng)
    if http:
        heads = Blobs.from_list([
            f"POST /api/v2/upload?part={j} HTTP/1.1\r\nHost: {dest}:{port}\r\nUser-Agent: Mozilla/5.0\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n".encode()
            for j, n in zip(k.tolist(), body.lens.tolist())])
        msgs = rowcat([heads, body])
    else:
        msgs = rowcat([Blobs.from_list([b"\x17\x03\x03" + struct.pack(">H", int(n)) for n in body.lens]), body])
    t_last = w.send(conn[c_idx], tw, 0, msgs)
    t_end = np.zeros(n_conn, dtype=np.int64)
    np.maximum.at(t_end, c_idx, t_last)
    if http:
        t_ok = t_last + w.reply_delay(conn[c_idx], np.ones(c_idx.size)).astype(np.int64)
        w.send(conn[c_idx], t_ok, 1, Blobs.repeat(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", c_idx.size))
        np.maximum.at(t_end, c_idx, t_ok)
    w.close(conn, t_end + w.reply_delay(conn, np.zeros(n_conn)).astype(np.int64) + 5_000_000, 0)
    sent = int(msgs.lens.sum())
    return PlannedStep([ip], [dest], {"port": port, "protocol": "http" if http else "tls", "dest": dest,
                                      "bytes_out": sent, "writes": int(c_idx.size), "connections_made": n_conn})


def _sni(rng: np.random.Generator) -> str:
    return f"cdn-{rng.bytes(4).hex()}.{rng.choice(['net', 'io', 'com', 'xyz'])}"


def _record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack(">BHH", ctype, version, len(body)) + body


def _ext(etype: int, body: bytes) -> bytes:
    return struct.pack(">HH", etype, len(body)) + body


def _client_hello(rng: np.random.Generator, sni: str) -> bytes:
    """A TLS 1.3 ClientHello (what curl or a Go client sends, trimmed to its essentials)."""
    name = sni.encode()
    exts = b"".join([
        _ext(0x0000, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name),  # server_name
        _ext(0x000A, bytes.fromhex("0004001d0017")),  # supported_groups: x25519, secp256r1
        _ext(0x000B, bytes.fromhex("0100")),  # ec_point_formats: uncompressed
        _ext(0x000D, bytes.fromhex("00080403080404010501")),  # signature_algorithms (4)
        _ext(0x002B, bytes.fromhex("0403040303")),  # supported_versions: 1.3, 1.2
        _ext(0x0033, struct.pack(">HHH", 36, 0x001D, 32) + rng.bytes(32)),  # key_share: x25519
    ])
    suites = bytes.fromhex("130113021303c02fc030")
    body = (b"\x03\x03" + rng.bytes(32) + b"\x20" + rng.bytes(32) + struct.pack(">H", len(suites)) + suites
            + b"\x01\x00" + struct.pack(">H", len(exts)) + exts)
    return _record(0x16, b"\x01" + len(body).to_bytes(3, "big") + body, 0x0301)


def _server_flight(rng: np.random.Generator) -> bytes:
    """ServerHello, ChangeCipherSpec, then the encrypted rest of the handshake (one record)."""
    exts = _ext(0x002B, b"\x03\x04") + _ext(0x0033, struct.pack(">HH", 0x001D, 32) + rng.bytes(32))
    body = b"\x03\x03" + rng.bytes(32) + b"\x20" + rng.bytes(32) + b"\x13\x01\x00" + struct.pack(">H", len(exts)) + exts
    hello = _record(0x16, b"\x02" + len(body).to_bytes(3, "big") + body)
    return hello + bytes.fromhex("140303000101") + _record(0x17, rng.bytes(int(rng.integers(2200, 4200))))
