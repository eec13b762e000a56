"""What an attack generator works with: the wire, the gateway's devices, its broker, time."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atlas.sim.traffic import mqtt
from atlas.sim.traffic.benign import BenignTraffic
from atlas.sim.traffic.population import Population, ip_int
from atlas.sim.traffic.session import BROKER_PORT, open_sessions
from atlas.sim.traffic.vec import Blobs
from atlas.sim.traffic.wire import Wire

NS = 1_000_000_000
# Ports a scanner tries first (nmap's most common TCP ports plus the city's ICS/IoT ones).
COMMON_PORTS = (
    21, 22, 23, 25, 53, 80, 81, 110, 111, 135, 139, 143, 161, 179, 389, 443, 445, 465, 502, 554, 587, 631, 993, 995,
    1080, 1433, 1723, 1883, 1900, 2000, 2323, 2404, 3000, 3306, 3389, 4840, 5000, 5060, 5432, 5683, 5900, 6379, 7547,
    8000, 8008, 8080, 8081, 8443, 8883, 8888, 9000, 9100, 10000, 20000, 44818, 47808,
)
GATEWAY_OPEN_PORTS = (22, 1883)
COMMON_USERS = ("admin", "root", "mqtt", "user", "test", "guest", "iot", "device", "sensor", "operator")
COMMON_PASSWORDS = (
    "123456", "password", "admin", "12345678", "qwerty", "123456789", "mqtt", "root", "1234", "changeme", "letmein",
    "default", "iot", "guest", "admin123", "pass", "toor", "raspberry", "secret", "welcome", "public", "private",
)


@dataclass
class PlannedStep:
    """What an attack generator reports; times come later from the written packets."""

    attackers: list[str]
    victims: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    kind: str = ""
    campaign: str = ""
    stage: int = 1


class AttackContext:
    def __init__(self, wire: Wire, inv: Population, benign: BenignTraffic, t0: int, t1: int, gateway: str):
        self.wire, self.inv, self.benign, self.t0, self.t1, self.gateway = wire, inv, benign, t0, t1, gateway
        self.start = t0
        self.dur = 0
        self.params: dict[str, Any] = {}
        self.spec = None
        self._rogue = 0

    def begin(self, start_offset_ns: int, dur_ns: int, spec, params: dict[str, Any]) -> None:
        self.start = self.t0 + start_offset_ns
        self.dur = dur_ns
        self.spec = spec
        self.params = params

    @property
    def end(self) -> int:
        return self.start + self.dur

    @property
    def broker_host(self) -> int:
        return self.benign.broker_host

    @property
    def broker_ip(self) -> str:
        return self.inv.broker

    def host(self, ip: str) -> int:
        return self.benign.host_of_ip[ip]

    def attacker_host(self, rng: np.random.Generator, *, stack: str = "linux", extra: bool = False) -> tuple[str, int]:
        """The spec's attacker if given (a device's address = that device, compromised), else
        a rogue host on an unused address of the device subnet. `extra`: one more attacking
        host besides the spec's (DoS from several hosts)."""
        ip = self.spec.attacker if self.spec is not None and not extra else None
        if ip is not None and ip in self.benign.host_of_ip:
            return ip, self.benign.host_of_ip[ip]
        if ip is None:
            while True:
                ip = self.inv.unused_address(self._rogue)
                self._rogue += 1
                if ip not in self.benign.host_of_ip:
                    break
        mac = (0x02 << 40) | (0xBADA << 24) | (ip_int(ip) & 0xFFFFFF)
        h = self.wire.host(ip_int(ip), mac, rtt_ns=int(rng.uniform(0.3, 2.0) * 1e6), proc_ns=60_000, stack=stack)
        self.benign.host_of_ip[ip] = h
        return ip, h

    def device_credentials(self, ip: str):
        for d in self.inv.devices:
            if d.ip == ip:
                return d
        return None

    def ports(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n ephemeral client ports counting up from a random base, as a busy client's are."""
        base = int(rng.integers(32768, 60000))
        return 32768 + (base - 32768 + np.arange(n)) % (61000 - 32768)

    def mqtt_sessions(self, host: int, t_syn: np.ndarray, connects: list[bytes], connacks: list[bytes], rng,
                      *, ports: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open MQTT connections from `host` to the broker; returns (conn ids, ready times,
        CONNACK times)."""
        ports = self.ports(rng, len(connects)) if ports is None else ports
        conn = self.wire.connections(np.full(len(connects), host), self.broker_host, ports, BROKER_PORT)
        ready, t_ca = open_sessions(self.wire, conn, np.asarray(t_syn, dtype=np.int64), Blobs.from_list(connects),
                                    Blobs.from_list(connacks), connack_times=True)
        return conn, ready, t_ca


def client_id(rng: np.random.Generator, prefix: str) -> str:
    return f"{prefix}{rng.bytes(4).hex()}"


def disconnect_and_close(ctx: AttackContext, conn: np.ndarray, t: np.ndarray, version: np.ndarray) -> np.ndarray:
    msgs = Blobs.from_list([mqtt.disconnect(version=int(v)) for v in np.broadcast_to(version, conn.shape)])
    t = ctx.wire.send(conn, t, 0, msgs)
    return ctx.wire.close(conn, t + (ctx.wire.rng.uniform(50, 400, conn.shape[0]) * 1000).astype(np.int64), 0)
