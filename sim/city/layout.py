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
from atlas.sim.traffic.inventory import class_counts

DOMAIN_ABBREV = {"transportation": "tra", "energy": "ene", "public_safety": "pub"}
MAX_GATEWAYS = 255  # 10.<k+1>.0.0/16 for k < 255


@dataclass
class GatewaySpec:
    index: int
    id: str
    district: str
    domain: str
    subnet: str
    broker: str
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
    per_class = class_counts(profiles, devices)
    for domain in domains:
        gws = layout.of_domain(domain)
        classes = sorted(c for c in per_class if profiles[c].domain == domain)
        total = sum(per_class[c] for c in classes)
        if total < len(gws):
            raise ValueError(f"devices: {devices} devices give {domain} {total} devices (profile weights) for its "
                             f"{len(gws)} gateways; use more devices or fewer gateways")
        _deal(classes, per_class, gws)
    return layout


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
