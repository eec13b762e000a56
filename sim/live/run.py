"""A small city run for real: namespaces, a mosquitto per gateway, paho devices, real attack
tools, tcpdump on each gateway's bridge, optionally the real agent; then the same outputs as a
generated city (city.json, ground_truth.jsonl, gateways/<id>/traffic.pcap).

Per gateway k (subnet 10.<k+1>.0.0/16):

    netns <prefix>-g<k> : bridge br0 10.<k+1>.0.1, mosquitto :1883, tcpdump, atlas-agent
       ├─ veth ── netns <prefix>-d<k> : every device's address (+ the domain back-ends'),
       │                                one worker process driving all their MQTT clients
       └─ veth ── netns <prefix>-a<k> : the rogue attackers' addresses (nmap, paho, Scapy)

Ground truth is measured: each step's tool is timed when it starts and exits, and its
start/end are the first/last packet the attacker sent inside that span, read back from the
capture (`params.tool_started`/`tool_ended` keep the tool's own times).
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from atlas.firmware_profiles import load_device_profiles
from atlas.sim.attacks import AttackSpec
from atlas.sim.live.broker import mosquitto_unavailable_reason, start_broker
from atlas.sim.live.netns import Netns, reap_stale, unavailable_reason
from atlas.sim.live.pcapscan import index_pcap
from atlas.sim.live.plan import (OUTSIDE_NETS, LiveGateway, LiveStep, accounts, backend_addresses, fleet_plan, forged_payloads, gateway_layout,
                                 plan_steps)
from atlas.sim.capture import AttackStep, write_gateway_files, write_ground_truth

BRIDGE = "br0"
BACKEND_NET = "172.16.0.0/16"  # the domain back-ends (inventory.BACKENDS) sit here
AGENT_START_S = 6.0  # a live agent answers on its control socket within this, usually (loads its models)
TOOL_LEAD_S = 5.0  # a Python tool is started this early (imports take seconds on a busy machine), ready at its step's start
TOOL_GRACE_S = 5.0  # a tool still running this long after its step's end is stopped
WINDOW_BEFORE_S = 0.05  # attacker packets count from slightly before the tool's start time...
WINDOW_AFTER_S = 2.0  # ...to this long after it exited (its last FIN/RST, retransmissions)


@dataclass
class LiveOptions:
    out: Path
    devices: int = 30
    gateways: int = 1
    duration: float = 60.0
    seed: int = 3
    attacks: list[tuple[AttackSpec, str | None]] = field(default_factory=list)  # (spec, gateway id/index or None)
    agent: bool = False
    backends: bool = True
    profiles_dir: Path | None = None
    warmup: float = 2.0  # seconds over which the devices connect, before the capture opens
    command: str = ""
    log: Callable[[str], None] | None = None


@dataclass
class LiveResult:
    out: Path
    run_id: str
    namespaces: list[str]  # every namespace it made (all removed when run_live returns)
    pids: list[int]  # every process it started (all ended when run_live returns)
    start: float
    end: float
    gateways: list[dict[str, Any]]
    steps: list[AttackStep]
    incidents: dict[str, list[dict]]  # the live agent's, per gateway (empty without --agent)
    fleet: dict[str, dict]  # the device worker's summary per gateway
    tools: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)  # steps not run, with the reason
    cpu_seconds: float = 0.0  # CPU of the run's processes (devices, tools, tcpdump, agent) until the capture stopped


def prerequisites(need_nmap: bool = False, agent: bool = False) -> str:
    """Why a live run cannot happen here ('' if it can)."""
    reason = unavailable_reason() or mosquitto_unavailable_reason()
    if reason:
        return reason
    if shutil.which("tcpdump") is None:
        return "needs tcpdump (Debian: tcpdump)"
    if need_nmap and shutil.which("nmap") is None:
        return "needs nmap for port_scan (Debian: nmap)"
    return ""


def run_live(opts: LiveOptions) -> LiveResult:
    """Run the city live for `opts.duration` seconds and write its outputs to `opts.out`."""
    say = opts.log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if opts.duration <= 0 or opts.duration > 3600:
        raise ValueError(f"duration: must be in (0, 3600] seconds, got {opts.duration:g}")
    if opts.devices > 2000:
        raise ValueError(f"devices: the live mode runs at most 2000, got {opts.devices}")
    profiles = load_device_profiles(opts.profiles_dir)
    gws = gateway_layout(opts.devices, opts.gateways, opts.seed, profiles)
    warmup = max(0.0, float(opts.warmup))
    steps = plan_steps(list(opts.attacks), gws, duration=opts.duration, seed=opts.seed)
    reason = prerequisites(False, opts.agent)
    if reason:
        raise RuntimeError(f"live mode: {reason}")
    skipped = []
    if shutil.which("nmap") is None:  # the scan needs the real tool: say so and run the rest
        skipped = [{"step": s.id, "kind": s.spec.kind, "reason": "nmap is not installed (Debian: nmap)"} for s in steps if s.tool == "nmap"]
        steps = [s for s in steps if s.tool != "nmap"]
        for sk in skipped:
            say(f"live: {sk['kind']} {sk['step']} skipped: {sk['reason']}")
    reaped = reap_stale()
    if reaped:
        say(f"live: removed {len(reaped)} namespace(s) left by a run that was killed: {', '.join(reaped)}")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="atlsim-"))
    restore = _sigterm_as_interrupt()
    ns = Netns()
    try:
        result = _run(opts, ns, gws, steps, warmup, out, work, say, skipped)
    finally:
        _uninterrupted(ns.close)  # a second Ctrl-C must not strand namespaces half-removed
        restore()
        shutil.rmtree(work, ignore_errors=True)
    return result


def _uninterrupted(fn: Callable[[], None]) -> None:
    """Run `fn` with SIGINT and SIGTERM held back (delivered once it returns)."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        fn()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _sigterm_as_interrupt() -> Callable[[], None]:
    """SIGTERM unwinds like Ctrl-C (so the namespaces are removed); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, raise_interrupt)
    return lambda: signal.signal(signal.SIGTERM, old)


@dataclass
class _Gateway:
    gw: LiveGateway
    netns: str
    dev_netns: str
    atk_netns: str
    pcap: Path
    tcpdump: subprocess.Popen | None = None
    agent: subprocess.Popen | None = None
    agent_socket: Path | None = None
    fleet: subprocess.Popen | None = None
    fleet_out: Path | None = None
    broker: subprocess.Popen | None = None


def _run(opts: LiveOptions, ns: Netns, gws: list[LiveGateway], steps: list[LiveStep], warmup: float, out: Path, work: Path,
         say: Callable[[str], None], skipped: list[dict]) -> LiveResult:
    cpu0 = _children_cpu()
    nodes = [_build_gateway(ns, gw, steps, out, work, opts) for gw in gws]
    say(f"live {ns.prefix}: {len(gws)} gateway(s), {sum(len(g.inventory.devices) for g in gws)} devices, namespaces ready")
    # The devices connect first, before the capture opens (as on a gateway that has run for
    # hours); the agent and tcpdump start next; then `go` fixes the run's start t0.
    t0 = time.time() + 0.5 + warmup + 1.0 + (AGENT_START_S * len(nodes) if opts.agent else 0.0)
    for node in nodes:
        _start_fleet(ns, node, work, fleet_plan(node.gw, t0=t0, warmup=warmup, duration=opts.duration, seed=opts.seed, backends=opts.backends))
    for node in nodes:
        _wait_connected(node, warmup + 15.0)
    for node in nodes:
        if opts.agent:
            node.agent, node.agent_socket = _start_agent(ns, node, work)
        node.tcpdump = _start_tcpdump(ns, node)
    t0 = max(t0, time.time() + 0.3)
    for node in nodes:
        node.fleet.stdin.write(f"go {t0:.6f}\n".encode())
        node.fleet.stdin.flush()
    say(f"live {ns.prefix}: devices started, {opts.duration:g} s from {time.strftime('%H:%M:%S', time.gmtime(t0))} UTC"
        + "".join(f"; {s.spec.kind} at +{s.start:g} s for {s.duration:g} s from {s.attacker}" for s in steps))
    tools = _run_steps(ns, nodes, steps, t0, opts.duration, work, say)
    fleet: dict[str, dict] = {}
    for node in nodes:
        try:
            node.fleet.wait(timeout=20)
        except subprocess.TimeoutExpired:
            ns.stop(node.fleet)
        fleet[node.gw.id] = _last_event(node.fleet_out)
    time.sleep(0.5)  # the last packets reach the capture
    incidents: dict[str, list[dict]] = {}
    for node in nodes:
        if node.agent is not None:
            incidents[node.gw.id] = _agent_incidents(ns, node)
    for node in nodes:
        ns.stop(node.tcpdump, signal.SIGTERM, timeout=10)
        ns.stop(node.broker, signal.SIGTERM, timeout=10)
    pids = [p.pid for p in ns.procs]
    namespaces = list(ns.namespaces)
    end = t0 + opts.duration
    gateways, truth = _measure(nodes, steps, tools, t0, end, opts)
    cpu = _children_cpu() - cpu0  # every process of the run has ended and been waited for by now
    _write(out, opts, nodes, gateways, truth, incidents, fleet, tools, t0, end, ns.prefix, skipped, cpu)
    return LiveResult(out, ns.id, namespaces, pids, t0, end, gateways, truth, incidents, fleet, tools, skipped, cpu)


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's ended children: the run's cost."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---- building the namespaces ----------------------------------------------------------------------

def _quiet_ipv6(ns: Netns, netns: str) -> None:
    """No IPv6 chatter (router solicitations, DAD, MLD) on the bridge: the capture holds the city's traffic."""
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1"], capture_output=True)


def _build_gateway(ns: Netns, gw: LiveGateway, steps: list[LiveStep], out: Path, work: Path, opts: LiveOptions) -> _Gateway:
    k = gw.index
    g, d, a = ns.add(f"g{k}"), ns.add(f"d{k}"), ns.add(f"a{k}")
    for name in (g, d, a):
        _quiet_ipv6(ns, name)
    ns.bridge(g, BRIDGE, f"{gw.broker}/{gw.prefixlen}")
    dev_if = ns.plug(d, g, BRIDGE)
    backends = backend_addresses(gw, opts.backends)
    ns.address(d, dev_if, [f"{dv.ip}/{gw.prefixlen}" for dv in gw.inventory.devices] + [f"{b}/32" for b in backends])
    if backends:  # the broker answers the back-ends over the bridge (they stand for the uplink side)
        ns.route(g, BACKEND_NET, BRIDGE)
    atk_if = ns.plug(a, g, BRIDGE)
    rogue = sorted({ip for s in steps if s.gateway is gw and not s.from_device for ip in s.attackers})
    ns.address(a, atk_if, [f"{ip}/{gw.prefixlen}" for ip in rogue])
    # "The Internet": documentation ranges routed to the gateway's namespace, which does not
    # forward; an exfiltration step's destination is an address there with a sink behind it.
    subprocess.run(["ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv4.ip_forward=0"], capture_output=True)
    for name, dev in ((d, dev_if), (a, atk_if)) if rogue else ((d, dev_if),):
        for net in OUTSIDE_NETS:
            ns.route_via(name, net, gw.broker, dev)
    sinks = sorted({s.plan["dest"] for s in steps if s.gateway is gw and s.spec.kind == "exfiltration"})
    ns.address(g, "lo", [f"{ip}/32" for ip in sinks])
    for s in steps:
        if s.gateway is gw:
            s.plan["iface"] = dev_if if s.from_device else atk_if
    broker = start_broker(ns, g, gw.broker, work / f"broker-{k}", accounts(gw, opts.seed, opts.backends))
    gdir = out / "gateways" / gw.id
    gdir.mkdir(parents=True, exist_ok=True)
    return _Gateway(gw, g, d, a, gdir / "traffic.pcap", broker=broker)


def _start_fleet(ns: Netns, node: _Gateway, work: Path, plan: dict[str, Any]) -> None:
    """The device worker in the device namespace; it connects its clients, then waits for `go`."""
    path = work / f"fleet-{node.gw.index}.json"
    path.write_text(json.dumps(plan))
    node.fleet_out = work / f"fleet-{node.gw.index}.out"
    with open(node.fleet_out, "w") as f:
        node.fleet = ns.popen(node.dev_netns, [sys.executable, "-m", "atlas.sim.live.worker", "devices", str(path)],
                              stdin=subprocess.PIPE, stdout=f, stderr=subprocess.STDOUT)


def _wait_connected(node: _Gateway, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [e for e in _events(node.fleet_out) if e.get("event") == "connected"]
        if got:
            if got[0]["connected"] < got[0]["clients"]:
                raise RuntimeError(f"{node.gw.id}: only {got[0]['connected']} of {got[0]['clients']} clients connected "
                                   f"to the broker (refused: {got[0]['refused']})")
            return got[0]
        if node.fleet.poll() is not None:
            raise RuntimeError(f"{node.gw.id}: the device worker exited with {node.fleet.returncode}: {node.fleet_out.read_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{node.gw.id}: the devices did not connect within {timeout:g} s")


def _start_tcpdump(ns: Netns, node: _Gateway) -> subprocess.Popen:
    """tcpdump on the bridge (promiscuous: it sees device-to-device frames too), packet-buffered."""
    proc = ns.popen(node.netns, ["tcpdump", "-i", BRIDGE, "-n", "-s", "0", "-U", "-Z", "root", "-w", str(node.pcap)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = _readline(proc, 10.0)
    if "listening on" not in line:
        ns.stop(proc)
        raise RuntimeError(f"tcpdump on {node.netns}/{BRIDGE} did not start: {line.strip() or proc.stderr.read().decode(errors='replace')}")
    return proc


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(proc.stderr.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return got[0].decode(errors="replace") if got else ""


def _start_agent(ns: Netns, node: _Gateway, work: Path) -> tuple[subprocess.Popen, Path]:
    from atlas.link.control import ControlError, query
    from atlas.agent.detect.conformance import write_device_inventory

    sock = work / f"agent-{node.gw.index}.sock"
    cfg = work / f"agent-{node.gw.index}.toml"
    # The gateway's device inventory turns on the agent's profile-conformance check (false
    # data, traffic a profile does not allow), as a deployed gateway would have it.
    inventory = work / f"inventory-{node.gw.index}.json"
    write_device_inventory(inventory, [d.to_dict() for d in node.gw.inventory.devices], gateway=node.gw.id)
    cfg.write_text(
        f'[agent]\ngateway_id = "{node.gw.id}"\ninterface = "{BRIDGE}"\nstate_dir = "{work / f"agent-state-{node.gw.index}"}"\n'
        f'control_socket = "{sock}"\n[detect]\ninventory = "{inventory}"\n[metrics]\nport = 0\n[enforce]\nnftables = "off"\n'
    )
    with open(node.pcap.parent / "agent.log", "w") as log:
        proc = ns.popen(node.netns, [sys.executable, "-m", "atlas.agent.cli", "run", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"atlas-agent run exited with {proc.returncode}: see {node.pcap.parent / 'agent.log'}")
        try:
            query(sock, "ping", timeout=1)
            return proc, sock
        except (ControlError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"atlas-agent run on {node.netns}/{BRIDGE} did not answer on {sock} within 30 s")


def _agent_incidents(ns: Netns, node: _Gateway) -> list[dict]:
    """Every incident the live agent raised (open and closed), then stop it."""
    from atlas.link.control import ControlError, query

    time.sleep(1.5)  # its last capture block and tick
    try:
        incidents = list(query(node.agent_socket, "incidents", timeout=10))
    except (ControlError, OSError) as exc:
        incidents = []
        print(f"live: the agent of {node.gw.id} did not answer: {exc}", file=sys.stderr)
    ns.stop(node.agent, signal.SIGTERM, timeout=15)
    return incidents


# ---- attack steps ---------------------------------------------------------------------------------

ROLE = {"mqtt_flood": "flood", "mqtt_bruteforce": "bruteforce", "malformed": "malformed", "slowite": "slowite", "topic_scan": "topic_scan",
        "false_data": "publisher", "exfiltration": "exfil", "connection_dos": "dos"}


def _launch(ns: Netns, node: _Gateway, step: LiveStep, t0: float, work: Path) -> tuple[subprocess.Popen, Path]:
    netns = node.dev_netns if step.from_device else node.atk_netns
    out = work / f"step-{step.id.replace('/', '_')}.out"
    step_end = t0 + step.start + step.duration
    if step.tool == "nmap":
        p = step.plan
        # A SYN scan from the attacker's address; rate-capped; bounded by --host-timeout and our stop.
        argv = ["nmap", "-sS", "-Pn", "-n", "--max-retries", "1", "--max-rate", f"{p['rate']:g}", "--min-rate", f"{min(p['rate'], 50):g}",
                "--host-timeout", f"{max(1, int(step.duration))}s", "-S", step.attacker, "-e", p["iface"],
                "-p", ",".join(map(str, p["ports"]))]
        if p.get("mirai"):  # a bot's scanner: one source port, no patience for hosts that never answer
            argv += ["-g", str(p["source_port"]), "--max-retries", "0", "--max-rtt-timeout", "200ms"]
        argv += ["-oN", "-", *p["targets"]]
    else:
        plan = step.plan | {"at": t0 + step.start, "end": step_end}
        if step.spec.kind == "slowite":
            plan["hold_until"] = step_end
        if step.spec.kind == "false_data":
            plan["payloads"] = forged_payloads(step, t0 + step.start)
        if step.spec.kind == "exfiltration":
            plan["sink_netns"] = node.netns
        path = work / f"step-{step.id.replace('/', '_')}.json"
        path.write_text(json.dumps({k: v for k, v in plan.items() if k != "iface"}))
        argv = [sys.executable, "-m", "atlas.sim.live.worker", ROLE[step.spec.kind], str(path)]
    with open(out, "w") as f:
        proc = ns.popen(netns, argv, stdout=f, stderr=subprocess.STDOUT)
    return proc, out


def _run_steps(ns: Netns, nodes: list[_Gateway], steps: list[LiveStep], t0: float, duration: float, work: Path,
               say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Launch each step at its time, stop any tool that overruns, until the run's end."""
    node_of = {n.gw.id: n for n in nodes}
    pending = sorted(steps, key=_launch_at)
    running: list[tuple[LiveStep, subprocess.Popen, Path, dict]] = []
    tools: list[dict[str, Any]] = []
    end = t0 + duration
    while pending or running or time.time() < end:
        now = time.time()
        while pending and t0 + _launch_at(pending[0]) <= now:
            step = pending.pop(0)
            rec = {"step": step.id, "kind": step.spec.kind, "tool": step.tool, "attacker": step.attacker, "launched": time.time(),
                   "at": t0 + step.start}
            proc, out = _launch(ns, node_of[step.gateway.id], step, t0, work)
            running.append((step, proc, out, rec))
        for item in list(running):
            step, proc, out, rec = item
            overdue = time.time() > t0 + step.start + step.duration + TOOL_GRACE_S
            if proc.poll() is None and overdue:
                ns.stop(proc)
                rec["stopped"] = True
            if proc.poll() is not None:
                rec["exited"] = time.time()
                rec["returncode"] = proc.returncode
                rec["events"] = _events(out)
                rec["output"] = out.read_text()[-2000:] if step.tool == "nmap" or proc.returncode else ""
                running.remove(item)
                tools.append(rec)
                say(f"  {step.spec.kind:16s} {step.attacker:15s} ran {rec['exited'] - rec['launched']:.1f} s, exit {proc.returncode}"
                    + (f", {rec['events'][-1]}" if rec["events"] else ""))
        time.sleep(0.05)
    return tools


def _launch_at(step: LiveStep) -> float:
    """Seconds after t0 to start the step's tool: Python tools early (they wait, ready), nmap on time."""
    return max(0.0, step.start - (0.0 if step.tool == "nmap" else TOOL_LEAD_S))


def _events(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _last_event(path: Path | None) -> dict:
    events = _events(path) if path and path.exists() else []
    ends = [e for e in events if e.get("event") == "end"]
    return ends[-1] if ends else {"event": "none", "output": path.read_text()[-2000:] if path and path.exists() else ""}


# ---- measuring and writing ------------------------------------------------------------------------

def _measure(nodes: list[_Gateway], steps: list[LiveStep], tools: list[dict], t0: float, end: float,
             opts: LiveOptions) -> tuple[list[dict], list[AttackStep]]:
    rec_of = {r["step"]: r for r in tools}
    gateways, truth = [], []
    for node in nodes:
        idx = index_pcap(node.pcap)
        gw = node.gw
        gateways.append({"id": gw.id, "district": gw.district, "domain": gw.domain, "subnet": gw.subnet, "broker": gw.broker,
                         "pcap": f"gateways/{gw.id}/traffic.pcap", "devices": len(gw.inventory.devices), "packets": len(idx)})
        for step in (s for s in steps if s.gateway is gw):
            rec = rec_of[step.id]
            started = _event_time(rec, "start") or rec["launched"]
            ended = _event_time(rec, "end") or rec["exited"]
            lo, hi = max(rec["launched"], rec["at"]) - WINDOW_BEFORE_S, rec["exited"] + WINDOW_AFTER_S
            sent = idx.window(step.attackers, lo, hi)
            first = float(idx.ts[sent[0]]) if sent.size else started
            last = float(idx.ts[sent[-1]]) if sent.size else started
            params = step.params | {
                "start_offset": step.start, "duration": step.duration, "tool": step.tool, "live": True,
                "tool_started": round(started, 6), "tool_ended": round(ended, 6), "returncode": rec["returncode"],
                "tool_report": next((e for e in reversed(rec["events"]) if e.get("event") == "end"), {}),
                # the capture agrees with the tool: its packets fall inside the tool's run
                "pcap_within_tool_run": bool(sent.size) and first >= lo and last <= hi,
            }
            params.pop("iface", None)
            truth.append(AttackStep(
                id=step.id, kind=step.spec.kind, campaign=step.spec.campaign, stage=step.spec.stage, attacker=step.attacker,
                victims=list(step.victims), gateway=gw.id, start=first, end=last, packets=idx.involving(step.attackers, lo, hi),
                attacker_packets=int(sent.size), attackers=step.attackers, params=params,
            ))
    truth.sort(key=lambda s: s.start)
    return gateways, truth


def _event_time(rec: dict, name: str) -> float | None:
    return next((float(e["t"]) for e in rec.get("events", []) if e.get("event") == name), None)


def _write(out: Path, opts: LiveOptions, nodes: list[_Gateway], gateways: list[dict], truth: list[AttackStep],
           incidents: dict[str, list[dict]], fleet: dict[str, dict], tools: list[dict], t0: float, end: float, prefix: str,
           skipped: list[dict], cpu: float) -> None:
    devices, backends = [], []
    for node in nodes:
        gw = node.gw
        inv = gw.inventory
        for d in inv.devices:
            devices.append({"id": d.client_id, "ip": d.ip, "class": d.cls, "domain": d.domain, "criticality": inv.profiles[d.cls].criticality,
                            "gateway": gw.id, "district": gw.district, "client_id": d.client_id, "username": d.username})
        if opts.backends:
            backends += [{"domain": b.domain, "client_id": b.client_id, "ip": b.ip, "filter": b.filter, "gateway": gw.id} for b in inv.backends.values()]
        packets = next(g["packets"] for g in gateways if g["id"] == gw.id)
        write_gateway_files(node.pcap.parent, inv, {"seed": opts.seed, "start": t0, "end": end, "packets": packets, "live": True})
        if gw.id in incidents:
            with open(node.pcap.parent / "agent_incidents.jsonl", "w") as f:
                for inc in incidents[gw.id]:
                    f.write(json.dumps(inc, sort_keys=True) + "\n")
    city = {"seed": opts.seed, "start": t0, "end": end, "duration": opts.duration, "devices_total": len(devices),
            "command": opts.command or f"atlas-sim live --devices {opts.devices} --gateways {opts.gateways} --duration {opts.duration:g} --seed {opts.seed}",
            "districts": sorted({n.gw.district for n in nodes}), "gateways": gateways, "devices": devices, "backends": backends,
            "live": True}
    (out / "city.json").write_text(json.dumps(city, indent=1) + "\n")
    write_ground_truth(truth, out / "ground_truth.jsonl")
    (out / "benign_events.jsonl").write_text("")
    (out / "live.json").write_text(json.dumps({"namespace_prefix": prefix, "fleet": fleet, "tools": tools, "skipped": skipped,
                                               "agent": bool(opts.agent), "children_cpu_seconds": round(cpu, 3)},
                                              indent=1, default=str) + "\n")


__all__ = ["LiveOptions", "LiveResult", "prerequisites", "run_live"]
