"""A network lab for tests: namespaces, veth pairs, a bridge, mosquitto with dynamic security.

Reusable by any test: tests/ has no conftest or __init__, so a test does
`sys.path.insert(0, str(Path(__file__).resolve().parents[1]))` (parents[1] = tests/ for
tests/<area>/test_x.py) and then `import lab`. Everything it creates has a unique name and is
removed by `Lab.close()` (use it as a context manager or in a fixture finalizer). Traffic
stays inside the namespaces it creates.

Topology of `Lab()`:

    netns <id>-gw : bridge `br0` with the gateway address (10.77.0.1/24 and fd77::1/64)
       ├─ veth ── netns <id>-dev1  10.77.0.11  fd77::b
       ├─ veth ── netns <id>-dev2  10.77.0.12  fd77::c
       └─ ...     (add_device)

The file also runs as a script inside a namespace (`ip netns exec NS python tests/lab.py
publish ...`) to play a device that publishes numbered MQTT messages.
"""
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


# ---- prerequisites ---------------------------------------------------------------------

def netns_unavailable_reason() -> str:
    """Why namespace tests cannot run here ('' if they can): for pytest.skip."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command (Debian: iproute2, nftables)"
    probe = f"atlas-probe-{uuid.uuid4().hex[:6]}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "cannot create network namespaces here"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


def mosquitto_unavailable_reason() -> str:
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_ctrl") is None:
        return "needs mosquitto and mosquitto_ctrl (Debian: mosquitto, mosquitto-clients)"
    if dynsec_plugin() is None:
        return "mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) not found"
    return ""


def dynsec_plugin() -> str | None:
    for path in DYNSEC_PLUGIN_PATHS:
        if os.path.exists(path):
            return path
    out = subprocess.run(["dpkg", "-L", "mosquitto"], capture_output=True, text=True).stdout if shutil.which("dpkg") else ""
    return next((ln for ln in out.splitlines() if ln.endswith("mosquitto_dynamic_security.so")), None)


# ---- running code inside a namespace ----------------------------------------------------

@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Switch the *calling thread* into netns `name` for the block (None: stay).

    Sockets created inside keep their namespace after the block, so a client can be
    connected in a lab namespace and then used (and its paho thread run) from anywhere.
    """
    if not name:
        yield
        return
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(there, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(here, CLONE_NEWNET) != 0:  # pragma: no cover - would strand the thread
                err = ctypes.get_errno()
                raise OSError(err, f"setns back: {os.strerror(err)}")
    finally:
        os.close(here)
        os.close(there)


def netns_cmd(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def tcp_connects(netns: str | None, host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a TCP connection from `netns` to host:port completes within `timeout`."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def mqtt_connect_rc(netns: str | None, host: str, port: int, username: str, password: str, timeout: float = 2.0, client_id: str = "") -> int | str:
    """One MQTT 3.1.1 CONNECT from `netns`; the CONNACK return code (0 = accepted, 5 = not
    authorized), or "timeout" / "refused" / "closed" if no CONNACK came."""
    cid = (client_id or f"probe-{uuid.uuid4().hex[:8]}").encode()

    def s(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b

    body = s(b"MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big") + s(cid) + s(username.encode()) + s(password.encode())
    packet = bytes([0x10]) + _varint(len(body)) + body
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(packet)
        ack = b""
        while len(ack) < 4:
            chunk = sock.recv(4 - len(ack))
            if not chunk:
                return "closed"
            ack += chunk
        if ack[0] != 0x20:
            return "closed"
        if ack[3] == 0:
            sock.sendall(b"\xe0\x00")  # DISCONNECT, politely
        return ack[3]
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "closed"
    finally:
        sock.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def wait_for(pred: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    """Poll `pred` until it returns something true (returned) or `timeout` passes (None)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return None


# An MQTT brute force: `python -c BRUTEFORCE HOST PORT SECONDS [CLIENT_ID [STOLEN_PASSWORD]]`
# tries guessN logins every 40 ms until SECONDS pass or 3 connections in a row fail (cut off):
# as admin with a new client id each time, or presenting CLIENT_ID as client id and username (a
# claim of a real device's identity), STOLEN_PASSWORD tried first. Prints, as JSON, the time of
# the first CONNECT and of the last one the broker answered (monotonic), and the count.
BRUTEFORCE = """
import json, socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
claim = sys.argv[4].encode() if len(sys.argv) > 4 else b""
stolen = sys.argv[5].encode() if len(sys.argv) > 5 else b""
def s(b): return len(b).to_bytes(2, "big") + b
start = time.monotonic()
end, tried, failed, answered = start + seconds, 0, 0, None
while time.monotonic() < end and failed < 3:  # stop once the gateway has cut us off
    cid, user = (claim, claim) if claim else (b"bf-%d" % tried, b"admin")
    password = stolen if stolen and tried == 0 else b"guess%d" % tried
    body = s(b"MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big") + s(cid) + s(user) + s(password)
    try:
        with socket.create_connection((host, port), timeout=1.0) as c:
            c.sendall(bytes([0x10, len(body)]) + body)
            if len(c.recv(4)) == 4:
                answered = time.monotonic()
        failed = 0
    except OSError:
        failed += 1
    tried += 1
    time.sleep(0.04)
print(json.dumps({"start": start, "last_answered": answered, "tried": tried}))
"""

def write_agent_toml(path: Path, *, gateway: str, interface: str, hub_port: int, tls: Any, signing_pub: Any,
                     extra: str = "", hub_host: str = "127.0.0.1") -> Path:
    """An agent config connected over mTLS to a hub at `hub_host` (default: the gateway's own
    loopback), with its state and control socket next to `path`; `extra` is appended (more
    sections, e.g. [enforce])."""
    path.write_text(f"""
[agent]
gateway_id = "{gateway}"
interface = "{interface}"
mqtt_ports = [1883]
state_dir = "{path.parent / 'agent-state'}"
control_socket = "{path.parent / 'agent.sock'}"
[hub]
address = "{hub_host}:{hub_port}"
ca = "{tls.ca}"
cert = "{tls.cert}"
key = "{tls.key}"
signing_key = "{signing_pub}"
{extra}""")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- namespaces, veths, bridge ----------------------------------------------------------

def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


@dataclass
class Device:
    name: str
    netns: str
    ip: str
    veth_gw: str  # the gateway-side end (in the gateway namespace, on the bridge)
    veth_dev: str
    ip6: str = ""  # "" when IPv6 is unavailable in this kernel


@dataclass
class Lab:
    """Namespaces for one gateway and its devices; `close()` removes everything."""

    subnet: str = "10.77.0.0/24"
    subnet6: str = "fd77::/64"  # gateway ::1; a device gets its IPv4 low 16 bits (.11 -> ::b)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    bridge: str = "br0"
    devices: dict[str, Device] = field(default_factory=dict)
    _namespaces: list[str] = field(default_factory=list)
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _brokers: list["Broker"] = field(default_factory=list)

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.subnet)
        self.prefixlen = net.prefixlen
        self._hosts = net.hosts()
        self.gw_ip = str(next(self._hosts))  # .1
        self.gw = f"atlas-{self.id}-gw"
        try:
            self._add_netns(self.gw)
            _ip("-n", self.gw, "link", "add", self.bridge, "type", "bridge")
            _ip("-n", self.gw, "addr", "add", f"{self.gw_ip}/{self.prefixlen}", "dev", self.bridge)
            _ip("-n", self.gw, "link", "set", self.bridge, "up")
            self.gw_ip6 = self._add_ip6(self.gw, self.bridge, 1)
        except Exception:
            self.close()
            raise
        for _ in range(9):  # .2-.10 stay free for the caller; devices start at .11
            next(self._hosts)

    def _add_ip6(self, netns: str, dev: str, host: int) -> str:
        """Give `dev` the address <subnet6>::<host> (no duplicate detection: usable at once)."""
        net6 = ipaddress.ip_network(self.subnet6)
        addr = str(net6.network_address + host)
        try:
            _ip("-n", netns, "addr", "add", f"{addr}/{net6.prefixlen}", "dev", dev, "nodad")
        except RuntimeError:  # IPv6 disabled in this kernel: IPv4-only lab
            return ""
        return addr

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_device(self, name: str, ip: str | None = None) -> Device:
        """A namespace `<id>-<name>` wired to the gateway's bridge by a veth pair."""
        index = len(self.devices)
        netns = f"atlas-{self.id}-{name}"
        dev = Device(name, netns, ip or str(next(self._hosts)), f"v{self.id}{index:02d}g", f"v{self.id}{index:02d}d")
        self._add_netns(netns)
        # Both ends are created directly in their namespaces: nothing appears in the host's.
        _ip("link", "add", dev.veth_gw, "netns", self.gw, "type", "veth", "peer", "name", dev.veth_dev, "netns", netns)
        _ip("-n", self.gw, "link", "set", dev.veth_gw, "master", self.bridge)
        _ip("-n", self.gw, "link", "set", dev.veth_gw, "up")
        _ip("-n", netns, "addr", "add", f"{dev.ip}/{self.prefixlen}", "dev", dev.veth_dev)
        _ip("-n", netns, "link", "set", dev.veth_dev, "up")
        if self.gw_ip6:
            dev.ip6 = self._add_ip6(netns, dev.veth_dev, int(ipaddress.ip_address(dev.ip)) & 0xFFFF)
        self.devices[name] = dev
        return dev

    def run(self, netns: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(netns_cmd(netns, argv), **kw)

    def popen(self, netns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """A process in `netns`, killed by close()."""
        proc = subprocess.Popen(netns_cmd(netns, argv), **kw)
        self._procs.append(proc)
        return proc

    def start_publisher(self, device: Device, host: str, port: int, password: str, *, count: int, interval: float, topic: str = "", qos: int = 0) -> subprocess.Popen:
        """A device publishing `count` numbered messages (JSON lines of events on stdout)."""
        argv = [sys.executable, str(Path(__file__).resolve()), "publish", "--host", host, "--port", str(port),
                "--username", device.name, "--password", password, "--topic", topic or f"lab/{device.name}",
                "--count", str(count), "--interval", str(interval), "--qos", str(qos)]
        return self.popen(device.netns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def link_gateway(self, other: "Lab", subnet: str = "10.99.0.0/30") -> tuple[str, str]:
        """A veth pair between this lab's gateway namespace and `other`'s (a WAN link, e.g.
        for a hub in one gateway namespace serving the other's agent); returns (this side's
        address, the other's). Removed with either namespace."""
        net = ipaddress.ip_network(subnet)
        mine, theirs = (str(h) for h in list(net.hosts())[:2])
        here, there = f"v{self.id}w", f"v{other.id}w"
        _ip("link", "add", here, "netns", self.gw, "type", "veth", "peer", "name", there, "netns", other.gw)
        for netns, dev, addr in ((self.gw, here, mine), (other.gw, there, theirs)):
            _ip("-n", netns, "addr", "add", f"{addr}/{net.prefixlen}", "dev", dev)
            _ip("-n", netns, "link", "set", dev, "up")
        return mine, theirs

    def start_mosquitto(self, netns: str | None = None, **kw: Any) -> "Broker":
        """A mosquitto with dynamic security in `netns` (default: the gateway's); see Broker."""
        broker = Broker(netns=self.gw if netns is None else netns, **kw)
        self._brokers.append(broker)
        broker.start()
        return broker

    def close(self) -> None:
        for broker in self._brokers:
            broker.stop()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(Exception):
                proc.communicate(timeout=5)
        for name in reversed(self._namespaces):  # deleting a namespace removes its veth ends
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._namespaces.clear()

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- mosquitto with dynamic security -------------------------------------------------------

@dataclass
class Broker:
    """mosquitto 2 with the dynamic-security plugin, its files in a private temp folder.

    `admin` is a dynsec admin account (created by `mosquitto_ctrl dynsec init`);
    `add_client` makes device accounts allowed to publish and subscribe everywhere.
    """

    netns: str | None = None
    bind: str = "127.0.0.1"  # in a lab namespace use "0.0.0.0"
    port: int = 0  # 0: a free port on 127.0.0.1 (root namespace) or 1883 (lab namespace)
    admin: str = "atlas-admin"
    admin_password: str = field(default_factory=lambda: uuid.uuid4().hex)
    workdir: Path | None = None
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        if not self.port:
            self.port = 1883 if self.netns else free_port(self.bind)
        self._own_dir = self.workdir is None
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="atlas-mosq-"))
        self.dynsec_file = self.workdir / "dynamic-security.json"
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        self.connect_host = "127.0.0.1" if self.bind in ("0.0.0.0", "127.0.0.1") else self.bind

    def start(self) -> None:
        plugin = dynsec_plugin()
        if plugin is None:
            raise RuntimeError("mosquitto_dynamic_security.so not found")
        if not self.dynsec_file.exists():
            proc = subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(self.dynsec_file), self.admin, self.admin_password], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"mosquitto_ctrl dynsec init: {proc.stderr or proc.stdout}")
        self.conf.write_text(
            "user root\n"  # started as root it would drop to `mosquitto`, who cannot write here
            f"listener {self.port} {self.bind}\n"
            "allow_anonymous false\n"
            f"plugin {plugin}\n"
            f"plugin_opt_config_file {self.dynsec_file}\n"
            "persistence false\n"
            f"log_dest file {self.log}\n"
            "log_type all\n"
        )
        self.proc = subprocess.Popen(netns_cmd(self.netns, ["mosquitto", "-c", str(self.conf)]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {self.proc.stderr.read().decode()} {self.log_text()}")
            if tcp_connects(self.netns, self.connect_host, self.port, timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.connect_host}:{self.port}: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def dynsec(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run dynamic-security commands as the admin (from the broker's namespace)."""
        from atlas.agent.enforce.dynsec import DynsecClient

        client = DynsecClient(self.connect_host, self.port, self.admin, self.admin_password, timeout=5)
        try:
            with in_netns(self.netns):
                client.connect()
            return client.run(commands)
        finally:
            client.close()

    def add_client(self, username: str, password: str) -> None:
        """A device account that may publish and subscribe to every topic."""
        responses = self.dynsec([
            {"command": "createRole", "rolename": "lab-device"},
            {"command": "addRoleACL", "rolename": "lab-device", "acltype": "publishClientSend", "topic": "#", "allow": True},
            {"command": "addRoleACL", "rolename": "lab-device", "acltype": "subscribePattern", "topic": "#", "allow": True},
            {"command": "createClient", "username": username, "password": password, "roles": [{"rolename": "lab-device"}]},
        ])
        create = responses[-1]
        if create.get("error"):
            raise RuntimeError(f"createClient {username}: {create['error']}")

    def client_disabled(self, username: str) -> bool:
        resp = self.dynsec([{"command": "getClient", "username": username}])[0]
        return bool(((resp.get("data") or {}).get("client") or {}).get("disabled"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        if self._own_dir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Collector:
    """Subscribes to `topic` (from `netns`) and records (topic, seq, arrival time)."""

    def __init__(self, netns: str | None, host: str, port: int, username: str, password: str, topic: str = "lab/#") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, int, float]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{uuid.uuid4().hex[:6]}")
        self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        with in_netns(netns):
            self.client.connect(host, port, keepalive=30)
        self.client.subscribe(topic, qos=0)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise RuntimeError(f"collector: no SUBACK for {topic}")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            seq = int(json.loads(msg.payload)["seq"])
        except (ValueError, KeyError, TypeError):
            seq = -1
        with self._lock:
            self.messages.append((msg.topic, seq, time.monotonic()))

    def by_topic(self) -> dict[str, list[tuple[int, float]]]:
        out: dict[str, list[tuple[int, float]]] = {}
        with self._lock:
            for topic, seq, t in self.messages:
                out.setdefault(topic, []).append((seq, t))
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---- the device script ---------------------------------------------------------------------

def _publish_main(args: Any) -> int:
    """Publish numbered messages at a fixed pace; print JSON events; bounded in count and time."""
    import paho.mqtt.client as mqtt

    def event(kind: str, **kw: Any) -> None:
        print(json.dumps({"event": kind, "t": time.time(), **kw}), flush=True)

    disconnects = 0  # unexpected ones: not our own DISCONNECT at the end
    finishing = False

    def on_disconnect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        nonlocal disconnects
        if not finishing:
            disconnects += 1
        event("disconnected", reason=str(reason), expected=finishing)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{args.username}-{os.getpid()}")
    client.username_pw_set(args.username, args.password)
    client.on_disconnect = on_disconnect
    client.on_connect = lambda c, u, f, reason, p: event("connected", reason=str(reason))
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    start = time.monotonic()
    for seq in range(args.count):
        client.publish(args.topic, json.dumps({"seq": seq, "device": args.username}), qos=args.qos)
        next_at = start + (seq + 1) * args.interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    time.sleep(0.3)  # let the last messages leave before DISCONNECT
    finishing = True
    client.disconnect()
    client.loop_stop()
    event("done", sent=args.count, disconnects=disconnects, seconds=round(time.monotonic() - start, 3))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="lab device")
    sub = parser.add_subparsers(dest="cmd", required=True)
    pub = sub.add_parser("publish")
    pub.add_argument("--host", required=True)
    pub.add_argument("--port", type=int, required=True)
    pub.add_argument("--username", required=True)
    pub.add_argument("--password", required=True)
    pub.add_argument("--topic", required=True)
    pub.add_argument("--count", type=int, required=True)
    pub.add_argument("--interval", type=float, default=0.02)
    pub.add_argument("--qos", type=int, default=0, choices=(0, 1))
    args = parser.parse_args(argv)
    if not 0 < args.count <= 100000 or not 0.001 <= args.interval <= 10:
        parser.error("count must be in 1..100000 and interval in [0.001, 10] (bounded traffic)")
    return _publish_main(args)


if __name__ == "__main__":
    sys.exit(main())
