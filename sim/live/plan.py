"""What a live run will do, decided before anything starts: the city's gateways and devices (from
the profiles, as the generated city lays them out), each device's messages (times and payloads
from atlas.sim.traffic.payloads), and each attack step's time, attacker and tool parameters.
Everything random derives from the seed.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atlas.firmware_profiles import DOMAINS, DeviceProfile, TopicSpec
from atlas.sim.attacks import ATTACKS, AttackSpec
from atlas.sim.attacks.base import COMMON_PASSWORDS, COMMON_PORTS, COMMON_USERS
from atlas.sim.city.layout import GatewayPlace
from atlas.sim.traffic.population import Population, build_population
from atlas.sim.traffic.payloads import topic_payloads, topic_rng

# Attack kinds the live mode runs, and with what (the ground truth records it).
LIVE_TOOLS = {
    "port_scan": "nmap",
    "mirai_scan": "nmap",
    "exfiltration": "python-sockets",
    "false_data": "paho-mqtt",
    "mqtt_flood": "paho-mqtt",
    "mqtt_bruteforce": "paho-mqtt",
    "malformed": "scapy",
    "slowite": "scapy",
    "topic_scan": "paho-mqtt",
    "connection_dos": "paho-mqtt",
}
MAX_MESSAGES = 200_000  # per gateway and run: bounds the fleet's plan (and its sending loop)
MAX_ATTACK_PACKETS = 100_000  # per step: floods, attempts, connections
MAX_EXFIL_BYTES = 256 * 1024 * 1024  # per step
# "The Internet" of a live run: the RFC 5737 documentation ranges, routed from the device and
# attacker namespaces to the gateway's namespace and no further (it does not forward).
OUTSIDE_NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
DEVICE_KINDS = ("mirai_scan", "exfiltration")  # run on a compromised device unless told otherwise
EXFIL_PORTS = (443, 8443, 8080)


@dataclass
class LiveGateway(GatewayPlace):
    inventory: Population

    @property
    def prefixlen(self) -> int:
        return int(self.subnet.split("/")[1])


@dataclass
class LiveStep:
    """One attack step to run: which tool, from where, when (seconds after the run's start)."""

    spec: AttackSpec
    id: str
    gateway: LiveGateway
    attacker: str
    from_device: bool  # True: a compromised device's address (runs in the device namespace)
    start: float
    duration: float
    params: dict[str, Any]
    victims: list[str] = field(default_factory=list)
    tool: str = ""
    plan: dict[str, Any] = field(default_factory=dict)  # the worker's plan, or nmap's arguments
    forge: Any = None  # false_data: (topic, fields, excess, client id) for the payloads at launch
    extra: list[str] = field(default_factory=list)  # more attacking addresses (connection_dos from several hosts)

    @property
    def attackers(self) -> list[str]:
        return [self.attacker] + self.extra


def gateway_layout(devices: int, gateways: int, seed: int, profiles: dict[str, DeviceProfile]) -> list[LiveGateway]:
    """The generated city's layout (atlas.sim.city.layout: gateway k is `gw-<district>-<domain>`,
    subnet 10.<k+1>.0.0/16, broker .0.1) and its inventories (same seed: same devices and
    credentials as `atlas-sim city`). Fewer than three gateways: the first domains only."""
    from atlas.sim.city.build import gateway_seed
    from atlas.sim.city.layout import plan_layout

    if gateways < 1:
        raise ValueError(f"gateways: need at least 1, got {gateways}")
    domains = [d for d in DOMAINS if any(p.domain == d for p in profiles.values())][:gateways]
    layout = plan_layout({c: p for c, p in profiles.items() if p.domain in domains}, devices, gateways)
    out = []
    for g in layout.gateways:
        inv = build_population(profiles, g.devices, topic_rng(gateway_seed(seed, g.id), "inventory"), subnet=g.subnet, broker=g.broker,
                              district=g.district, gateway=g.id, counts=g.counts)
        out.append(LiveGateway(g.index, g.id, g.district, g.domain, g.subnet, g.broker, inv))
    return out


def _send_times(t: TopicSpec, duration: float, rng: np.random.Generator) -> np.ndarray:
    if t.timing == "periodic":
        phase = rng.uniform(0, t.interval)
        k = np.arange(int(duration / t.interval) + 2)
        ts = phase + k * t.interval + rng.normal(0, t.jitter * t.interval, k.size)
    else:
        n = int(duration / t.interval * 2 + 10)
        ts = np.cumsum(rng.exponential(t.interval, n))
    return np.sort(ts[(ts >= 0) & (ts < duration)])


def fleet_plan(gw: LiveGateway, *, t0: float, warmup: float, duration: float, seed: int, port: int = 1883,
               backends: bool = True) -> dict[str, Any]:
    """The device worker's plan: clients (devices, then domain back-ends) and every message.

    Clients connect within `warmup` seconds of the worker's start (before the capture opens,
    as on a gateway that has run for hours); messages are at offsets in [0, duration) from
    the run's start `t0` (the orchestrator confirms it with a `go` line), at their profile's
    topics and rates, payloads from the profile's fields (timestamps at the planned time)."""
    inv = gw.inventory
    rng = topic_rng(seed, "live", gw.id)
    clients: list[dict[str, Any]] = []
    for d in inv.devices:
        prof = inv.profiles[d.cls]
        subs = [[t.topic.format(district=inv.district, id=d.client_id), t.qos] for t in prof.mqtt.topics if t.direction == "subscribe"]
        clients.append({"cid": d.client_id, "user": d.username, "password": d.password, "ip": d.ip, "version": 5 if d.version == 5 else 4,
                        "keepalive": d.keepalive, "clean": d.clean_session, "subscribe": subs,
                        "connect_at": float(rng.uniform(0, warmup))})
    if backends:
        for b in inv.backends.values():
            clients.append({"cid": b.client_id, "user": b.client_id, "password": backend_password(seed, b.client_id), "ip": b.ip,
                            "version": 5 if b.version == 5 else 4, "keepalive": 60, "clean": True,
                            "subscribe": [[b.filter, 1]], "connect_at": float(rng.uniform(0, warmup * 0.5))})
    msgs: list[list[Any]] = []
    cids = [d.client_id for d in inv.devices]
    for cls, devs in inv.by_class().items():
        prof = inv.profiles[cls]
        for t in (t for t in prof.mqtt.topics if t.direction == "publish"):
            times, owners = [], []
            for d in devs:
                ts = _send_times(t, duration, rng)
                times.append(ts)
                owners.append(np.full(ts.size, d.index))
            ts = np.concatenate(times) if times else np.zeros(0)
            dev = np.concatenate(owners).astype(np.int64) if owners else np.zeros(0, np.int64)
            if not ts.size:
                continue
            blobs = topic_payloads(t, dev, len(inv.devices), ((t0 + ts) * 1e9).astype(np.int64), cids, topic_rng(seed, "live-payload", gw.id, cls, t.name))
            for j in range(ts.size):
                topic = t.topic.format(district=inv.district, id=cids[dev[j]])
                msgs.append([round(float(ts[j]), 6), int(dev[j]), topic, base64.b64encode(blobs.get(j)).decode(), t.qos, t.retain])
    msgs.sort(key=lambda m: m[0])
    if len(msgs) > MAX_MESSAGES:
        raise ValueError(f"gateway {gw.id}: {len(msgs)} messages planned, more than the live mode's {MAX_MESSAGES}: fewer devices or seconds")
    return {"broker": gw.broker, "port": port, "t0": t0, "duration": duration, "warmup": warmup, "clients": clients, "messages": msgs}


def backend_password(seed: int, client_id: str) -> str:
    return topic_rng(seed, "backend-password", client_id).bytes(8).hex()


def accounts(gw: LiveGateway, seed: int, backends: bool = True) -> dict[str, str]:
    """The broker's password file: every device's credentials (and the back-ends')."""
    out = {d.username: d.password for d in gw.inventory.devices}
    if backends:
        out.update({b.client_id: backend_password(seed, b.client_id) for b in gw.inventory.backends.values()})
    return out


def backend_addresses(gw: LiveGateway, backends: bool = True) -> list[str]:
    return [b.ip for b in gw.inventory.backends.values()] if backends else []


# ---- attack steps ---------------------------------------------------------------------------------

def plan_steps(specs: list[tuple[AttackSpec, str | None]], gws: list[LiveGateway], *, duration: float, seed: int) -> list[LiveStep]:
    """Resolve each (spec, gateway id or None) into a step: time, gateway, attacker, tool plan."""
    steps: list[LiveStep] = []
    rogue = {gw.id: 0 for gw in gws}
    by_id = {gw.id: gw for gw in gws}
    for i, (spec, gw_id) in enumerate(specs):
        if spec.kind not in LIVE_TOOLS:
            raise ValueError(f"attack {spec.kind}: the live mode runs {', '.join(sorted(LIVE_TOOLS))} (not {spec.kind} yet)")
        rng = topic_rng(seed, "live-attack", str(i), spec.kind)
        if gw_id is None:
            gw = gws[int(rng.integers(len(gws)))]
        elif gw_id in by_id:
            gw = by_id[gw_id]
        elif gw_id.isdigit() and int(gw_id) < len(gws):
            gw = gws[int(gw_id)]
        else:
            raise ValueError(f"attack {spec.kind}: gateway {gw_id!r} is not in this city ({', '.join(by_id)})")
        a = ATTACKS[spec.kind]
        lo = max(2.0, 0.15 * duration)
        start = spec.start if spec.start is not None else float(rng.uniform(lo, max(lo, 0.6 * duration)))
        if start >= duration - 1.0:
            raise ValueError(f"attack {spec.kind}: starts at {start:g} s, too late for a {duration:g} s run")
        dur = min(spec.duration if spec.duration is not None else a.duration, duration - 1.0 - start)
        params = {**a.defaults, **spec.params}
        devices_by_ip = {d.ip: d for d in gw.inventory.devices}
        if spec.attacker:
            attacker, from_device = spec.attacker, spec.attacker in devices_by_ip
        elif spec.kind in DEVICE_KINDS:
            devs = gw.inventory.devices
            attacker, from_device = devs[int(rng.integers(len(devs)))].ip, True
        else:
            while True:  # a rogue host on an unused address of the gateway's subnet
                attacker = gw.inventory.unused_address(rogue[gw.id])
                rogue[gw.id] += 1
                if attacker not in devices_by_ip:
                    break
            from_device = False
        step = LiveStep(spec, spec.id or f"{gw.id}/{spec.kind}/{i + 1}", gw, attacker, from_device, round(start, 3), round(dur, 3), params,
                        tool=LIVE_TOOLS[spec.kind])
        if spec.kind == "connection_dos":
            for _ in range(min(max(1, int(params["hosts"])), 50) - 1):  # DoS from several rogue hosts
                while True:
                    extra = gw.inventory.unused_address(rogue[gw.id])
                    rogue[gw.id] += 1
                    if extra not in devices_by_ip and extra != attacker:
                        break
                step.extra.append(extra)
        _tool_plan(step, rng, devices_by_ip)
        steps.append(step)
    return steps


def _credentials(step: LiveStep, rng: np.random.Generator, devices_by_ip: dict) -> tuple[str, str, str]:
    """A compromised device uses its own credentials; a rogue host uses ones stolen from a
    device of the gateway (the broker refuses anonymous clients). -> (user, password, whose)."""
    dev = devices_by_ip.get(step.attacker)
    if dev is None:
        devs = step.gateway.inventory.devices
        dev = devs[int(rng.integers(len(devs)))]
    return dev.username, dev.password, dev.client_id


def _version(p: dict, rng: np.random.Generator) -> int:
    return int(p.get("version", 0)) or (5 if rng.random() < 0.3 else 4)


def _tool_plan(step: LiveStep, rng: np.random.Generator, devices_by_ip: dict) -> None:
    p, gw, kind = step.params, step.gateway, step.spec.kind
    base = {"broker": gw.broker, "port": 1883, "bind": step.attacker, "seed": int(rng.integers(1 << 31))}
    step.victims = [gw.broker]
    if kind == "port_scan":
        n_hosts = max(1, int(p["hosts"]))
        others = [d.ip for d in gw.inventory.devices if d.ip != step.attacker]
        picks = list(rng.choice(others, size=min(n_hosts - 1, len(others)), replace=False)) if others and n_hosts > 1 else []
        step.victims = list(step.spec.victims or [gw.broker] + [str(x) for x in picks])
        n_ports = max(1, min(int(p["ports"]), 65535))
        ports = list(COMMON_PORTS[:n_ports])
        if n_ports > len(ports):
            extra = rng.choice(np.setdiff1d(np.arange(1, 65536), ports), size=n_ports - len(ports), replace=False)
            ports += sorted(int(x) for x in extra)
        step.plan = {"targets": step.victims, "ports": sorted(ports), "rate": max(1.0, float(p["rate"]))}
        return
    if kind == "mirai_scan":
        _mirai_plan(step, rng, devices_by_ip)
        return
    if kind == "exfiltration":
        _exfil_plan(step, rng)
        return
    if kind == "false_data":
        _false_data_plan(step, rng, devices_by_ip)
        return
    user, password, whose = _credentials(step, rng, devices_by_ip)
    ver = _version(p, rng)
    if kind == "mqtt_flood":
        rate = max(1.0, float(p["rate"]))
        topic = p["topic"] or f"city/{gw.district}/{rng.choice(['transport', 'energy', 'safety'])}/flood/{rng.bytes(3).hex()}"
        step.plan = base | {"rate": rate, "count": min(MAX_ATTACK_PACKETS, int(rate * step.duration)), "size_min": int(p["size_min"]),
                            "size_max": int(p["size_max"]), "qos": min(int(p["qos"]), 1), "topic": topic, "version": ver,
                            "user": user, "password": password, "cid": f"{whose}-{rng.bytes(4).hex()}" if step.from_device else f"flood-{rng.bytes(4).hex()}"}
        step.params = p | {"credentials_of": whose}
    elif kind == "mqtt_bruteforce":
        rate = max(0.1, float(p["rate"]))
        n = min(MAX_ATTACK_PACKETS, max(1, int(rate * step.duration)))
        users = [d.username for d in gw.inventory.devices]
        guesses = []
        for _ in range(n):
            u = users[int(rng.integers(len(users)))] if users and rng.random() < float(p["known_users"]) else COMMON_USERS[int(rng.integers(len(COMMON_USERS)))]
            pw = COMMON_PASSWORDS[int(rng.integers(len(COMMON_PASSWORDS)))] + ("" if rng.random() < 0.6 else str(int(rng.integers(0, 100))))
            guesses.append([u, pw])
        if bool(p["success"]):
            d = gw.inventory.devices[int(rng.integers(len(gw.inventory.devices)))]
            guesses[-1] = [d.username, d.password]
        cid = "" if rng.random() < 0.5 else f"mqtt-bf-{rng.bytes(4).hex()}"
        step.plan = base | {"rate": rate, "count": n, "guesses": guesses, "cid": cid, "version": ver}
    elif kind == "malformed":
        rate = max(0.1, float(p["rate"]))
        n = min(MAX_ATTACK_PACKETS, max(1, int(p["count"])), max(1, int(rate * step.duration)))
        step.plan = base | {"rate": rate, "count": n, "user": user, "password": password}
        step.params = p | {"credentials_of": whose}
    elif kind == "slowite":
        rate = max(0.1, float(p["rate"]))
        n = min(5000, max(1, int(p["connections"])), max(1, int(rate * step.duration)))
        step.plan = base | {"rate": rate, "count": n, "keepalive": max(1, min(int(p["keepalive"]), 65535)), "user": user, "password": password}
        step.params = p | {"credentials_of": whose}
    elif kind == "connection_dos":
        rate = max(0.1, float(p["rate"]))
        n = min(MAX_ATTACK_PACKETS // max(1, int(p["messages"]) + 2), max(1, int(rate * step.duration)))
        step.plan = base | {"rate": rate, "count": n, "messages": max(0, int(p["messages"])), "interval": max(0.0, float(p["interval_ms"])) / 1000,
                            "size": max(0, int(p["size"])), "qos": min(int(p["qos"]), 1), "version": ver, "user": user, "password": password,
                            "binds": step.attackers, "topic": f"city/{gw.district}/{rng.choice(['transport', 'energy', 'safety'])}/malaria"}
        step.params = p | {"credentials_of": whose, "connections": n}
    elif kind == "topic_scan":
        filters = ["#", "$SYS/#"] + [f"city/{gw.district}/{root}/{rng.bytes(2).hex()}/#" for root in ("transport", "energy", "safety")
                                     for _ in range(max(0, int(p["filters"])) // 3 + 1)][: max(0, int(p["filters"]))]
        step.plan = base | {"rate": max(0.1, float(p["rate"])), "filters": filters, "version": ver, "user": user, "password": password,
                            "cid": f"{whose}-{rng.bytes(4).hex()}" if step.from_device else f"scan-{rng.bytes(4).hex()}"}
        step.params = p | {"credentials_of": whose}
    step.params = step.params | {"version": ver}


def _outside_hosts(rng: np.random.Generator, n: int) -> list[str]:
    pool = [f"{net.rsplit('.', 1)[0]}.{h}" for net in OUTSIDE_NETS for h in range(1, 255)]
    return [pool[i] for i in sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]


def _mirai_plan(step: LiveStep, rng: np.random.Generator, devices_by_ip: dict) -> None:
    """Telnet SYNs (23 and 2323, one source port, as Mirai's scanner) to neighbours first, then
    other addresses of the subnet (`inside` of the targets) and "outside" addresses."""
    import ipaddress

    p, gw = step.params, step.gateway
    rate = max(1.0, float(p["rate"]))
    n_targets = max(1, min(MAX_ATTACK_PACKETS, int(rate * step.duration)) // 2)
    n_in = max(1, int(round(n_targets * float(p["inside"]))))
    neighbours = [ip for ip in devices_by_ip if ip != step.attacker]
    rng.shuffle(neighbours)
    inside = neighbours[:n_in]
    net = ipaddress.IPv4Network(gw.subnet)
    taken = set(inside) | {step.attacker, gw.broker}
    while len(inside) < n_in:
        ip = str(net.network_address + int(rng.integers(256, net.num_addresses - 256)))
        if ip not in taken:
            taken.add(ip)
            inside.append(ip)
    outside = _outside_hosts(rng, n_targets - n_in)
    step.victims = [ip for ip in inside if ip in devices_by_ip]
    step.plan = {"targets": inside + outside, "ports": [23, 2323], "rate": rate, "source_port": int(rng.integers(1024, 65536)), "mirai": True}
    step.params = p | {"inside_targets": len(inside), "outside_targets": len(outside), "logins": 0,
                       "note": "no device of the live city runs telnet: no login is tried"}


def _exfil_plan(step: LiveStep, rng: np.random.Generator) -> None:
    """Sustained upload to an "outside" address (a sink in the gateway's namespace)."""
    import ipaddress

    p = step.params
    port = int(p["port"]) or int(rng.choice(EXFIL_PORTS))
    if not 0 < port < 65536:
        raise ValueError(f"exfiltration: parameter 'port' must be a TCP port, got {p['port']!r}")
    dest = str(p["dest"]) or _outside_hosts(rng, 1)[0]
    try:
        inside = any(ipaddress.IPv4Address(dest) in ipaddress.IPv4Network(n) for n in OUTSIDE_NETS)
    except ValueError:
        raise ValueError(f"exfiltration: parameter 'dest' must be an IPv4 address, got {dest!r}") from None
    if not inside:
        raise ValueError(f"exfiltration: parameter 'dest' {dest}: the live mode keeps traffic in its namespaces; "
                         f"use an address of {', '.join(OUTSIDE_NETS)}")
    rate = max(0.1, float(p["kbytes_per_s"])) * 1024
    step.victims = [dest]
    step.plan = {"bind": step.attacker, "dest": dest, "dport": port, "bytes_per_s": rate, "connections": max(1, int(p["connections"])),
                 "chunk": max(256, int(float(p["chunk_kb"]) * 1024)), "http": port in (80, 8080),
                 "total": min(MAX_EXFIL_BYTES, int(rate * step.duration)), "seed": int(rng.integers(1 << 31))}
    step.params = p | {"port": port, "dest": dest, "protocol": "http" if port in (80, 8080) else "tls"}


def _forgeable(prof: DeviceProfile) -> list[TopicSpec]:
    return [t for t in prof.mqtt.topics if t.direction == "publish" and t.format == "json" and any(f.type in ("int", "float") for f in t.fields)]


def _false_data_plan(step: LiveStep, rng: np.random.Generator, devices_by_ip: dict) -> None:
    """Forged readings on a device's own topic at its rate, `fields` numeric fields physically
    impossible; from the device itself (attacker = its address) or spoofed with its credentials."""
    p, inv = step.params, step.gateway.inventory
    name = str(p["topic"])

    def fits(d) -> bool:
        return any(not name or t.name == name for t in _forgeable(inv.profiles[d.cls]))

    if step.spec.victims:
        dev = devices_by_ip.get(step.spec.victims[0])
        if dev is None or not fits(dev):
            raise ValueError(f"false_data: victim {step.spec.victims[0]} is not a device of {step.gateway.id} with a topic to forge")
    elif step.from_device and fits(devices_by_ip[step.attacker]):
        dev = devices_by_ip[step.attacker]
    else:
        pool = [d for d in inv.devices if fits(d)]
        busy = [d for d in pool if min(t.interval for t in _forgeable(inv.profiles[d.cls])) * 4 <= step.duration]
        pool = busy or pool
        if not pool:
            raise ValueError(f"false_data: no device of {step.gateway.id} has a topic to forge")
        dev = pool[int(rng.integers(len(pool)))]
    mode = "device" if step.attacker == dev.ip else "spoof"
    if p["mode"] and p["mode"] != mode:
        raise ValueError(f"false_data: mode {p['mode']!r} contradicts attacker {step.attacker} (victim {dev.ip})")
    topic = min((t for t in _forgeable(inv.profiles[dev.cls]) if not name or t.name == name), key=lambda t: t.interval)
    numeric = [f for f in topic.fields if f.type in ("int", "float")]
    fields = [numeric[i] for i in sorted(rng.choice(len(numeric), size=min(max(1, int(p["fields"])), len(numeric)), replace=False))]
    offsets = np.arange(0.5, step.duration, topic.interval)[:MAX_ATTACK_PACKETS]
    step.victims = [dev.ip]
    step.plan = {"broker": step.gateway.broker, "port": 1883, "bind": step.attacker, "user": dev.username, "password": dev.password,
                 "cid": f"{dev.client_id}-{rng.bytes(4).hex()}", "version": 5 if dev.version == 5 else 4,
                 "topic": topic.topic.format(district=inv.district, id=dev.client_id), "qos": topic.qos,
                 "offsets": [round(float(o), 6) for o in offsets], "seed": int(rng.integers(1 << 31))}
    step.forge = (topic, fields, float(p["excess"]), dev.client_id)
    step.params = p | {"mode": mode, "device": dev.client_id, "device_ip": dev.ip, "class": dev.cls, "topic": step.plan["topic"],
                       "messages": len(offsets), "fields_forged": [f.name for f in fields]}


def forged_payloads(step: LiveStep, at: float) -> list[str]:
    """The false_data step's payloads (base64), timestamps at their planned send times from `at`."""
    from atlas.sim.attacks.false_data import impossible_values
    from atlas.sim.traffic.payloads import json_payloads

    topic, fields, excess, cid = step.forge
    n = len(step.plan["offsets"])
    rng = topic_rng(int(step.plan["seed"]), "forge")
    forged = {f.name: impossible_values(f, n, excess, rng) for f in fields}
    ts = ((at + np.array(step.plan["offsets"])) * 1e9).astype(np.int64)
    blobs = json_payloads(topic, np.zeros(n, dtype=np.int64), 1, ts, [cid], rng, overrides=forged)
    return [base64.b64encode(blobs.get(j)).decode() for j in range(n)]


__all__ = ["LIVE_TOOLS", "OUTSIDE_NETS", "LiveGateway", "LiveStep", "accounts", "backend_addresses", "fleet_plan", "gateway_layout", "plan_steps"]
