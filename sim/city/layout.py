"""The city's shape: districts, one gateway per (district, domain), and the devices of each.

Gateway k (0-based, district by district, domains in DOMAINS order) is `gw-<district>-<abbrev>`
with subnet 10.<k+1>.0.0/16 and its broker on 10.<k+1>.0.1 (the simulator contract). A city
whose gateway count is not a multiple of three has a last district with only the first one or
two domains (50 gateways: 16 full districts and d17 with transportation and energy).

Devices: the city's total is split among classes by profile weight (as one gateway's would
be), so each domain gets its classes' share; a class's devices are then dealt out evenly over
its domain's gateways. Everything here is deterministic (no random draw).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from atlas.firmware_profiles import DOMAINS, DeviceProfile
from atlas.sim.traffic.population import class_counts

DOMAIN_ABBREV = {"transportation": "tra", "energy": "ene", "public_safety": "pub"}
MAX_GATEWAYS = 255  # 10.<k+1>.0.0/16 for k < 255


@dataclass
class GatewayPlace:
    """Where a gateway sits in the city (the live run's gateways extend it too)."""

    index: int
    id: str
    district: str
    domain: str
    subnet: str
    broker: str


@dataclass
class GatewaySpec(GatewayPlace):
    counts: dict[str, int] = field(default_factory=dict)  # devices per class

    @property
    def devices(self) -> int:
        return sum(self.counts.values())


@dataclass
class CityLayout:
    districts: list[str]
    gateways: list[GatewaySpec]

    def of_domain(self, domain: str) -> list[GatewaySpec]:
        return [g for g in self.gateways if g.domain == domain]

    def of_district(self, district: str) -> list[GatewaySpec]:
        return [g for g in self.gateways if g.district == district]

    @property
    def devices(self) -> int:
        return sum(g.devices for g in self.gateways)


def plan_layout(profiles: dict[str, DeviceProfile], devices: int, gateways: int) -> CityLayout:
    """Districts, gateways and the devices per class behind each gateway."""
    domains = [d for d in DOMAINS if any(p.domain == d for p in profiles.values())]
    if gateways < len(domains):
        raise ValueError(f"gateways: {gateways} is too few; the city needs at least one gateway per domain "
                         f"({len(domains)}: {', '.join(domains)})")
    if gateways > MAX_GATEWAYS:
        raise ValueError(f"gateways: at most {MAX_GATEWAYS} (gateway k gets subnet 10.<k+1>.0.0/16), got {gateways}")
    if devices < gateways:
        raise ValueError(f"devices: {devices} devices cannot fill {gateways} gateways (need at least one device per gateway)")
    n_districts = -(-gateways // len(domains))
    width = max(2, len(str(n_districts)))
    districts = [f"d{j + 1:0{width}d}" for j in range(n_districts)]
    specs = []
    for k in range(gateways):
        district, domain = districts[k // len(domains)], domains[k % len(domains)]
        specs.append(GatewaySpec(k, f"gw-{district}-{DOMAIN_ABBREV.get(domain, domain[:3])}", district, domain,
                                 f"10.{k + 1}.0.0/16", f"10.{k + 1}.0.1"))
    layout = CityLayout(districts, specs)
    per_class = _at_least_one_per_gateway(profiles, class_counts(profiles, devices),
                                          {d: len(layout.of_domain(d)) for d in domains})
    for domain in domains:
        classes = sorted(c for c in per_class if per_class[c] and profiles[c].domain == domain)
        _deal(classes, per_class, layout.of_domain(domain))
    return layout


def _at_least_one_per_gateway(profiles, per_class: dict[str, int], need: dict[str, int]) -> dict[str, int]:
    """A small city can leave a light domain with fewer devices than gateways: move devices
    over, one at a time, from the biggest class of the domain with the most to spare to the
    heaviest class of the short domain (a deviation from the weights only in tiny cities)."""
    counts = dict(per_class)

    def total(dom: str) -> int:
        return sum(k for c, k in counts.items() if profiles[c].domain == dom)

    for dom in need:
        while total(dom) < need[dom]:
            donor = max(need, key=lambda d: (total(d) - need[d], d))
            if total(donor) - need[donor] <= 0:  # unreachable while devices >= gateways
                raise ValueError(f"devices: too few for {sum(need.values())} gateways")
            src = max((c for c in counts if profiles[c].domain == donor), key=lambda c: (counts[c], c))
            dst = max((c for c in profiles if profiles[c].domain == dom), key=lambda c: (profiles[c].weight, c))
            counts[src] -= 1
            counts[dst] = counts.get(dst, 0) + 1
    return counts


def _deal(classes: list[str], per_class: dict[str, int], gws: list[GatewaySpec]) -> None:
    """Each class's devices evenly over the gateways; remainders rotate so that gateway totals
    differ by at most one."""
    turn = 0
    for cls in classes:
        n = per_class[cls]
        base, rest = divmod(n, len(gws))
        for i, g in enumerate(gws):
            k = base + (1 if (i - turn) % len(gws) < rest else 0)
            if k:
                g.counts[cls] = k
        turn = (turn + rest) % len(gws)


def describe_city(layout: CityLayout, profiles: dict[str, DeviceProfile]) -> dict:
    """The city's gateways and devices in city.json's shape, without generating any traffic
    (device addresses and MQTT ids as atlas.sim.traffic.population assigns them): what the
    hub's city graph needs, made in milliseconds for a city of any size."""
    from atlas.sim.traffic.population import device_address

    gateways, devices = [], []
    for g in layout.gateways:
        gateways.append({"id": g.id, "district": g.district, "domain": g.domain, "subnet": g.subnet,
                         "broker": g.broker, "devices": g.devices})
        i = 0
        for cls in sorted(g.counts):
            prof = profiles[cls]
            for j in range(g.counts[cls]):
                cid = f"{prof.mqtt.client_prefix}-{g.district}-{j + 1:04d}"
                devices.append({"id": cid, "ip": device_address(g.subnet, i), "class": cls, "domain": prof.domain,
                                "criticality": prof.criticality, "gateway": g.id, "district": g.district,
                                "client_id": cid, "username": cid})
                i += 1
    return {"districts": layout.districts, "gateways": gateways, "devices": devices}
