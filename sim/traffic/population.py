"""The devices behind one gateway: class, address, MAC, MQTT identity and link, from the profiles.

Addresses come from the gateway's device subnet (default 10.20.0.0/16: devices from 10.20.1.1,
skipping .0 and .255 of each /24); the broker runs on the gateway. Each domain present gets a
back-end client in the city's data centre (reached through the gateway's uplink) that
subscribes to the domain's topics and sends the devices their commands.
"""
from __future__ import annotations

import ipaddress
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from atlas.firmware_profiles import DOMAIN_TOPIC_ROOT, MQTT_VERSIONS, DeviceProfile

MS = 1_000_000  # ns

# Back-ends per domain: (client id, address, MQTT protocol level).
BACKENDS = {
    "transportation": ("tmc-backend-01", "172.16.10.10", 4),
    "energy": ("scada-backend-01", "172.16.20.10", 5),
    "public_safety": ("psap-backend-01", "172.16.30.10", 5),
}
OTA_SERVER = ("ota-server-01", "172.16.40.10", 4)
UPLINK_ROUTER_MAC = 0x02_00_5E_AA_00_01  # back-ends' frames arrive through the uplink router
GATEWAY_MAC = 0x02_00_5E_AA_00_FE


def ip_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def ip_str(ip: int) -> str:
    return str(ipaddress.IPv4Address(int(ip)))


@dataclass
class Device:
    index: int
    cls: str
    domain: str
    ip: str
    mac: int
    client_id: str
    username: str
    password: str
    keepalive: int
    version: int  # MQTT protocol level: 3, 4 or 5
    rtt_ns: int
    clean_session: bool

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mac"] = ":".join(f"{(self.mac >> (8 * k)) & 0xFF:02x}" for k in range(5, -1, -1))
        return d


@dataclass
class Backend:
    domain: str
    client_id: str
    ip: str
    version: int
    filter: str  # the topic filter it subscribes to


@dataclass
class Population:
    district: str
    broker: str
    subnet: str
    gateway: str
    devices: list[Device]
    profiles: dict[str, DeviceProfile]
    backends: dict[str, Backend] = field(default_factory=dict)

    def by_class(self) -> dict[str, list[Device]]:
        out: dict[str, list[Device]] = {}
        for d in self.devices:
            out.setdefault(d.cls, []).append(d)
        return out

    def unused_address(self, k: int = 0) -> str:
        """An address in the device subnet that no device uses (rogue hosts, attackers)."""
        net = ipaddress.IPv4Network(self.subnet)
        base = int(net.network_address)
        # Counting down from the top of the subnet keeps clear of the devices counting up.
        return ip_str(base + net.num_addresses - 2 - 7 * k)

    def to_dict(self) -> dict:
        return {
            "district": self.district,
            "gateway": self.gateway,
            "broker": self.broker,
            "subnet": self.subnet,
            "devices": [d.to_dict() for d in self.devices],
            "backends": [asdict(b) for b in self.backends.values()],
        }


def class_counts(profiles: dict[str, DeviceProfile], n: int) -> dict[str, int]:
    """Split n devices among classes by profile weight (largest remainder, deterministic)."""
    names = sorted(profiles)
    w = np.array([profiles[c].weight for c in names], dtype=np.float64)
    if w.sum() <= 0:
        raise ValueError("device profiles: every weight is 0")
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    rest = n - int(counts.sum())
    order = np.lexsort((np.arange(len(names)), -(exact - counts)))
    counts[order[:rest]] += 1
    return {c: int(k) for c, k in zip(names, counts) if k}


def device_address(subnet: str, i: int) -> str:
    net = ipaddress.IPv4Network(subnet)
    base = int(net.network_address)
    addr = base + (1 + i // 254) * 256 + 1 + i % 254
    if addr >= base + net.num_addresses - 256:
        raise ValueError(f"subnet {subnet} too small for {i + 1} devices")
    return ip_str(addr)


def build_population(
    profiles: dict[str, DeviceProfile],
    n_devices: int,
    rng: np.random.Generator,
    *,
    subnet: str = "10.20.0.0/16",
    broker: str = "10.20.0.1",
    district: str = "d01",
    gateway: str = "gw-d01",
    classes: list[str] | None = None,
    counts: dict[str, int] | None = None,
) -> Population:
    """`counts` (devices per class, e.g. a city's share for this gateway) overrides the split
    of `n_devices` by profile weight; its classes must exist and add up to `n_devices`."""
    if n_devices < 1:
        raise ValueError("devices: need at least 1")
    if counts is not None:
        unknown = sorted(set(counts) - set(profiles))
        if unknown:
            raise ValueError(f"counts: no device profile {unknown[0]!r}")
        if sum(counts.values()) != n_devices or min(counts.values(), default=0) < 0:
            raise ValueError(f"counts: {sum(counts.values())} devices by class, not {n_devices}")
        use = {c: profiles[c] for c in sorted(counts) if counts[c] > 0}
        counts = {c: int(counts[c]) for c in use}
    else:
        use = {c: profiles[c] for c in (classes or profiles)}
        counts = class_counts(use, n_devices)
    devices: list[Device] = []
    for cls, k in counts.items():
        prof = use[cls]
        vers = list(prof.mqtt.versions)
        shares = np.array([prof.mqtt.versions[v] for v in vers])
        picks = rng.choice(len(vers), size=k, p=shares / shares.sum())
        rtt = rng.uniform(*prof.hardware.rtt_ms, size=k)
        vendor = zlib.crc32(cls.encode()) & 0xFFFF
        for j in range(k):
            i = len(devices)
            ip = device_address(subnet, i)
            cid = f"{prof.mqtt.client_prefix}-{district}-{j + 1:04d}"
            devices.append(Device(
                index=i, cls=cls, domain=prof.domain, ip=ip,
                mac=(0x02 << 40) | (vendor << 24) | (ip_int(ip) & 0xFFFFFF),
                client_id=cid, username=cid, password=rng.bytes(8).hex(),
                keepalive=prof.mqtt.keepalive, version=MQTT_VERSIONS[vers[picks[j]]],
                rtt_ns=int(rtt[j] * MS), clean_session=prof.mqtt.clean_session,
            ))
    inv = Population(district, broker, subnet, gateway, devices, use)
    for dom in sorted({d.domain for d in devices}):
        cid, ip, ver = BACKENDS[dom]
        inv.backends[dom] = Backend(dom, cid, ip, ver, f"city/{district}/{DOMAIN_TOPIC_ROOT[dom]}/#")
    return inv
