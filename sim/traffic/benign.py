"""Benign traffic of the devices behind one gateway, from their profiles.

Each device keeps an MQTT session with the gateway's broker: it connects (TCP handshake,
CONNECT with its client id and credentials, CONNACK, SUBSCRIBE to its command topics),
publishes each profile topic at the profile's rate (jittered periodic or Poisson), answers
commands from its domain's back-end, pings when idle for its keepalive, and now and then
reconnects. Each domain's back-end (in the data centre) subscribes to the domain's topics, so
the broker forwards every device message to it.

Sessions normally start before the capture (as on a gateway that has run for hours: the
capture opens mid-stream); `preroll=False` makes every device boot inside the capture.
Look-alikes (lookalikes.py) bend this plan: power cuts, firmware updates, rush hours.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from atlas.sim.traffic import mqtt
from atlas.sim.traffic.population import GATEWAY_MAC, OTA_SERVER, UPLINK_ROUTER_MAC, Population, ip_int
from atlas.sim.traffic.lookalikes import BenignEvent, LookalikeSpec
from atlas.sim.traffic.payloads import random_payloads, topic_payloads, topic_rng
from atlas.sim.traffic.schedule import NS, Peak, periodic, ping_times, poisson
from atlas.sim.traffic.session import BROKER_PORT, app_delay, open_sessions, packet_ids, publish
from atlas.sim.traffic.vec import Blobs, last_at_or_before
from atlas.sim.traffic.wire import Wire

OPEN, CLEAN, DEAD = 0, 1, 2  # how a session ends
_OTA_PID0 = 50001  # OTA transfers number their packets apart from the regular counter


@dataclass
class BenignOptions:
    preroll: bool = True  # sessions established before the capture starts
    backends: bool = True  # domain back-ends subscribed to their domain's topics
    reconnect_interval: float = 6 * 3600.0  # mean seconds between a device's spontaneous reconnects


@dataclass
class Sessions:
    """One row per MQTT session (devices, back-ends, the OTA server)."""

    client: np.ndarray  # device index, or -1 - k for the k-th infrastructure client
    host: np.ndarray
    conn: np.ndarray
    start: np.ndarray  # ns, SYN time
    ready: np.ndarray  # ns, the client may publish from here
    end: np.ndarray  # ns, last moment the client sends (capture end when OPEN)
    end_kind: np.ndarray
    version: np.ndarray
    keepalive: np.ndarray  # ns


@dataclass
class PublishLog:
    """Device PUBLISH messages as the broker received them (for attacks that harvest them)."""

    ts: np.ndarray  # ns, last segment
    dev: np.ndarray
    qos: np.ndarray
    topics: Blobs
    payloads: Blobs


@dataclass
class BenignTraffic:
    broker_host: int
    dev_hosts: np.ndarray
    sessions: Sessions
    publog: PublishLog
    events: list[tuple[BenignEvent, int]] = field(default_factory=list)  # (event, owner tag)
    host_of_ip: dict[str, int] = field(default_factory=dict)


@dataclass
class _Break:
    t: int  # the session ends here
    resume: int  # the next session's SYN
    kind: int  # CLEAN or DEAD
    owner: int  # owner tag of the next session's setup
    fw: tuple | None = None  # firmware download planned in the session this break ends


def generate_benign(wire: Wire, inv: Population, t0: int, t1: int, seed: int, *,
                    lookalikes: list[tuple[LookalikeSpec, int]] = (), options: BenignOptions | None = None) -> BenignTraffic:
    """Add the benign traffic of `inv` in [t0, t1) to `wire`. `lookalikes` pairs each
    look-alike with the owner tag its packets get."""
    opt = options or BenignOptions()
    rng = topic_rng(seed, "benign", "sessions")
    wire.owner = 0
    broker_host = wire.host(ip_int(inv.broker), GATEWAY_MAC, rtt_ns=0, proc_ns=40_000, stack="linux")
    host_of_ip = {inv.broker: broker_host}
    dev_hosts = np.empty(len(inv.devices), dtype=np.int64)
    for d in inv.devices:
        hw = inv.profiles[d.cls].hardware
        stack = "lwip" if hw.cls == "mcu" else "linux"
        mss = 1400 if hw.link in ("lte", "nbiot") else 1460
        proc = 400_000 if hw.cls == "mcu" else 150_000
        dev_hosts[d.index] = wire.host(ip_int(d.ip), d.mac, rtt_ns=d.rtt_ns, proc_ns=proc, stack=stack, mss=mss)
        host_of_ip[d.ip] = int(dev_hosts[d.index])

    peaks, cuts, updates, events = [], [], [], []
    for spec, owner in lookalikes:
        start = t0 + int((spec.start if spec.start is not None else rng.uniform(0.1, 0.6) * (t1 - t0) / NS) * NS)
        if start >= t1:
            raise ValueError(f"look-alike {spec.kind}: starts at {(start - t0) / NS:g} s, after the capture ends ({(t1 - t0) / NS:g} s)")
        dur = int((spec.duration if spec.duration is not None else spec.param("duration")) * NS)
        if spec.kind == "rush_hour":
            peaks.append((Peak(start, start + dur, int(spec.param("ramp") * NS), float(spec.param("factor"))), spec, owner))
        elif spec.kind == "power_cut":
            cuts.append((start, dur, spec, owner))
        else:
            updates.append((start, dur, spec, owner))

    plan = _plan_breaks(inv, t0, t1, opt, rng, cuts, updates)
    sessions, setup_owner = _plan_sessions(inv, dev_hosts, t0, t1, opt, rng, plan)

    # Infrastructure clients: back-ends and the OTA server, connected since before t0.
    infra = []
    if opt.backends:
        for _, b in sorted(inv.backends.items()):
            infra.append((b.client_id, b.ip, b.version, [(b.filter, 1)]))
    if updates:
        infra.append((OTA_SERVER[0], OTA_SERVER[1], OTA_SERVER[2], [(f"city/{inv.district}/ota/+/request", 1)]))
    infra_hosts = []
    for _, ip, _, _ in infra:
        h = wire.host(ip_int(ip), UPLINK_ROUTER_MAC, rtt_ns=int(rng.uniform(0.8, 3.0) * 1e6), proc_ns=80_000, stack="linux", ttl=62)
        infra_hosts.append(h)
        host_of_ip[ip] = h
    sessions = _add_infra_sessions(sessions, infra, infra_hosts, t0, t1, rng)

    # Connections and their opening exchanges, owner by owner (power-cut storms are tagged).
    sessions.conn[:] = wire.connections(sessions.host, broker_host, _client_ports(sessions, rng), BROKER_PORT)
    _open_all(wire, inv, sessions, setup_owner, infra, rng)
    wire.owner = 0

    publog = _device_publishes(wire, inv, sessions, t0, t1, seed, [p[0] for p in peaks], opt)
    if opt.backends:
        _forward_to_backends(wire, inv, sessions, publog, infra, rng)
        _commands(wire, inv, sessions, infra, t0, t1, seed)
    for start, dur, spec, owner in updates:
        wire.owner = owner
        ev = _firmware_updates(wire, inv, sessions, plan, spec, owner, start, infra, rng)
        events.append((ev, owner))
    wire.owner = 0
    _pings(wire, sessions, t0, t1, publog, rng)
    _close_all(wire, sessions, t1, rng)

    for start, dur, spec, owner in cuts:
        hit = [inv.devices[i].ip for i, brks in plan.items() if any(b.owner == owner for b in brks)]
        events.append((BenignEvent(spec.id or f"power_cut-{owner}", "power_cut", inv.gateway, hit, start / NS, (start + dur) / NS,
                                   params={**spec.params, "duration": dur / NS}), owner))
    for pk, spec, owner in peaks:
        classes = sorted({d.cls for d in inv.devices if any(t.peak_factor > 1 for t in inv.profiles[d.cls].mqtt.topics)})
        hit = [d.ip for d in inv.devices if d.cls in classes]
        events.append((BenignEvent(spec.id or f"rush_hour-{owner}", "rush_hour", inv.gateway, hit, pk.start / NS, pk.end / NS,
                                   params={**spec.params, "classes": classes}), owner))
    return BenignTraffic(broker_host, dev_hosts, sessions, publog, events, host_of_ip)


# -- planning -------------------------------------------------------------------------------
def _plan_breaks(inv, t0, t1, opt, rng, cuts, updates) -> dict[int, list[_Break]]:
    """Per device, the moments its session ends and when the next one starts."""
    plan: dict[int, list[_Break]] = {d.index: [] for d in inv.devices}
    if opt.reconnect_interval > 0:
        for d in inv.devices:
            n = rng.poisson((t1 - t0) / NS / opt.reconnect_interval)
            for t in np.sort(rng.uniform(t0, t1, n)).astype(np.int64):
                plan[d.index].append(_Break(int(t), int(t + rng.uniform(1, 10) * NS), CLEAN, 0))
    for start, dur, spec, owner in cuts:
        hit = rng.random(len(inv.devices)) < float(spec.param("fraction"))
        boot = rng.uniform(float(spec.param("boot_min")), float(spec.param("boot_max")), len(inv.devices))
        for d in inv.devices:
            if hit[d.index]:
                plan[d.index].append(_Break(start, int(start + dur + boot[d.index] * NS), DEAD, owner))
    for start, dur, spec, owner in updates:
        cls = spec.param("cls") or max(inv.by_class().items(), key=lambda kv: (len(kv[1]), kv[0]))[0]
        if cls not in inv.profiles:
            raise ValueError(f"firmware_update: no device of class {cls!r} behind this gateway")
        targets = [d for d in inv.devices if d.cls == cls][: int(spec.param("devices"))]
        n_chunks = -(-int(spec.param("image_kb")) * 1024 // int(spec.param("chunk_bytes")))
        download = n_chunks / float(spec.param("rate"))
        for k, d in enumerate(targets):
            ts = start + int(k * float(spec.param("stagger")) * NS)
            reboot = ts + int((download + 1.5 + rng.uniform(5, 15)) * NS)
            plan[d.index].append(_Break(reboot, int(reboot + rng.uniform(20, 40) * NS), CLEAN, owner, fw=(ts, n_chunks, spec, owner)))
    for i, brks in plan.items():
        brks.sort(key=lambda b: b.t)
        kept, busy_until = [], -1
        for b in brks:
            if b.t > busy_until and (b.fw is None or b.fw[0] > busy_until):
                kept.append(b)
                busy_until = b.resume
        plan[i] = kept
    return plan


def _plan_sessions(inv, dev_hosts, t0, t1, opt, rng, plan) -> tuple[Sessions, np.ndarray]:
    rows = []
    for d in inv.devices:
        start = t0 - int(rng.uniform(1, 3600) * NS) if opt.preroll else t0 + int(rng.uniform(0, 30) * NS)
        owner = 0
        for b in plan[d.index]:
            rows.append((d.index, start, b.t, b.kind, owner))
            start, owner = b.resume, b.owner
        if start < t1:
            rows.append((d.index, start, t1, OPEN, owner))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 5)
    dev = arr[:, 0]
    ver = np.array([inv.devices[i].version for i in dev], dtype=np.int64)
    ka = np.array([inv.devices[i].keepalive for i in dev], dtype=np.int64) * NS
    s = Sessions(dev, dev_hosts[dev], np.zeros(len(dev), np.int64), arr[:, 1], arr[:, 1].copy(), arr[:, 2], arr[:, 3], ver, ka)
    return s, arr[:, 4]


def _add_infra_sessions(s: Sessions, infra, hosts, t0, t1, rng) -> Sessions:
    k = len(infra)
    if not k:
        return s
    start = t0 - (rng.uniform(10, 3600, k) * NS).astype(np.int64)
    cat = lambda a, b: np.concatenate([a, np.asarray(b, dtype=np.int64)])
    return Sessions(
        cat(s.client, -1 - np.arange(k)), cat(s.host, hosts), cat(s.conn, np.zeros(k)), cat(s.start, start), cat(s.ready, start),
        cat(s.end, np.full(k, t1)), cat(s.end_kind, np.full(k, OPEN)), cat(s.version, [v for _, _, v, _ in infra]),
        cat(s.keepalive, np.full(k, 60 * NS)),
    )


def _client_ports(s: Sessions, rng) -> np.ndarray:
    ports = rng.integers(32768, 61000, len(s.client))
    # Never reuse the previous session's port on the same client.
    for i in range(1, len(ports)):
        if s.client[i] == s.client[i - 1] and ports[i] == ports[i - 1]:
            ports[i] = 32768 + (ports[i] - 32768 + 1) % (61000 - 32768)
    return ports


# -- traffic --------------------------------------------------------------------------------
def _open_all(wire: Wire, inv: Population, s: Sessions, setup_owner: np.ndarray, infra, rng) -> None:
    connects, connacks, subs, subacks = [], [], [], []
    first_seen: set[int] = set()
    for i in range(len(s.client)):
        c = int(s.client[i])
        if c >= 0:
            d = inv.devices[c]
            prof = inv.profiles[d.cls]
            cid, ver, ka, clean = d.client_id, d.version, d.keepalive, d.clean_session
            user, pw = d.username, d.password
            filters = [(t.topic.format(district=inv.district, id=cid), t.qos) for t in prof.mqtt.topics if t.direction == "subscribe"]
        else:
            cid, _, ver, filters = infra[-1 - c]
            ka, clean, user, pw = 60, False, cid, f"{cid}-secret"
        present = (not clean) and c in first_seen
        first_seen.add(c)
        connects.append(mqtt.connect(cid, version=ver, keepalive=ka, username=user, password=pw, clean=clean,
                                     session_expiry=None if clean else 3600))
        connacks.append(mqtt.connack(0, version=ver, session_present=present))
        subs.append(mqtt.subscribe(1, filters, version=ver) if filters else b"")
        subacks.append(mqtt.suback(1, [q for _, q in filters], version=ver) if filters else b"")
    owners = np.zeros(len(s.client), dtype=np.int64)
    owners[: len(setup_owner)] = setup_owner  # infrastructure sessions are plain benign
    for owner in np.unique(owners):
        rows = np.flatnonzero(owners == owner)
        wire.owner = int(owner)
        take = lambda lst: Blobs.from_list([lst[i] for i in rows])
        s.ready[rows] = open_sessions(wire, s.conn[rows], s.start[rows], take(connects), take(connacks), take(subs), take(subacks))


def _session_of(s: Sessions, client: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Row of the session of `client` that is up (ready <= ts < end) at ts, or -1."""
    o = np.lexsort((s.ready, s.client))
    j = last_at_or_before(s.client[o], s.ready[o], client, ts)
    row = np.where(j >= 0, o[np.maximum(j, 0)], -1)
    ok = row >= 0
    ok[ok] &= ts[ok] < s.end[row[ok]]
    return np.where(ok, row, -1)


def _topic_table(inv: Population, devs: list, template: str) -> list[bytes]:
    return [template.format(district=inv.district, id=d.client_id).encode() for d in devs]


def _device_publishes(wire, inv, s: Sessions, t0, t1, seed, peaks, opt) -> PublishLog:
    parts = []  # (dev global, ts, qos, topics Blobs, payloads Blobs)
    for cls, devs in sorted(inv.by_class().items()):
        prof = inv.profiles[cls]
        gidx = np.array([d.index for d in devs], dtype=np.int64)
        cids = [d.client_id for d in devs]
        for topic in prof.mqtt.topics:
            if topic.direction != "publish":
                continue
            r = topic_rng(seed, "publish", cls, topic.name)
            if topic.timing == "periodic":
                dl, ts = periodic(len(devs), topic.interval, topic.jitter, t0, t1, r)
            else:
                dl, ts = poisson(len(devs), topic.interval, t0, t1, r, peaks, topic.peak_factor)
            if dl.size == 0:
                continue
            table = _topic_table(inv, devs, topic.topic)
            topics = Blobs.from_list(table).take(dl)
            payloads = topic_payloads(topic, dl, len(devs), ts, cids, r)
            parts.append((gidx[dl], ts, np.full(dl.size, topic.qos), topics, payloads))
    if not parts:
        return PublishLog(*(np.zeros(0, np.int64),) * 3, Blobs.empty(), Blobs.empty())
    dev = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    qos = np.concatenate([p[2] for p in parts])
    topics = Blobs.concat([p[3] for p in parts])
    payloads = Blobs.concat([p[4] for p in parts])
    row = _session_of(s, dev, ts)
    ok = np.flatnonzero(row >= 0)
    dev, ts, qos, row = dev[ok], ts[ok], qos[ok], row[ok]
    topics, payloads = topics.take(ok), payloads.take(ok)
    conn = s.conn[row]
    pid = packet_ids(conn, ts, qos > 0, first=2, span=_OTA_PID0 - 2)
    t_last, _ = publish(wire, conn, ts, 0, topics, payloads, qos, s.version[row], pid)
    return PublishLog(t_last, dev, qos, topics, payloads)


def _infra_row(s: Sessions, k: int) -> int:
    return int(np.flatnonzero(s.client == -1 - k)[0])


def _forward_to_backends(wire, inv, s: Sessions, log: PublishLog, infra, rng) -> None:
    if len(log.ts) == 0:
        return
    doms = sorted(inv.backends)
    dom_of_dev = np.array([doms.index(d.domain) for d in inv.devices], dtype=np.int64)
    brow = np.array([_infra_row(s, k) for k in range(len(doms))], dtype=np.int64)
    row = brow[dom_of_dev[log.dev]]
    conn = s.conn[row]
    ts = log.ts + wire.reply_delay(conn, 1).astype(np.int64)
    pid = packet_ids(conn, ts, log.qos > 0)
    publish(wire, conn, ts, 1, log.topics, log.payloads, log.qos, s.version[row], pid)


def _commands(wire, inv, s: Sessions, infra, t0, t1, seed) -> None:
    """Back-ends send devices commands; the broker relays them (QoS 1 on both legs)."""
    doms = sorted(inv.backends)
    parts = []
    for cls, devs in sorted(inv.by_class().items()):
        prof = inv.profiles[cls]
        gidx = np.array([d.index for d in devs], dtype=np.int64)
        for topic in prof.mqtt.topics:
            if topic.direction != "subscribe":
                continue
            r = topic_rng(seed, "command", cls, topic.name)
            dl, ts = poisson(len(devs), topic.interval, t0, t1, r)
            if dl.size == 0:
                continue
            parts.append((gidx[dl], ts, Blobs.from_list(_topic_table(inv, devs, topic.topic)).take(dl),
                          topic_payloads(topic, dl, len(devs), ts, [d.client_id for d in devs], r), prof.domain))
    if not parts:
        return
    dev = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    topics = Blobs.concat([p[2] for p in parts])
    payloads = Blobs.concat([p[3] for p in parts])
    brow_of_dom = {dom: _infra_row(s, k) for k, dom in enumerate(doms)}
    brow = np.array([brow_of_dom[inv.devices[i].domain] for i in dev], dtype=np.int64)
    drow = _session_of(s, dev, ts + 50_000_000)  # the device must be up when the command arrives
    ok = np.flatnonzero(drow >= 0)
    dev, ts, brow, drow = dev[ok], ts[ok], brow[ok], drow[ok]
    topics, payloads = topics.take(ok), payloads.take(ok)
    one = np.ones(dev.size, dtype=np.int64)
    bconn = s.conn[brow]
    pid_b = packet_ids(bconn, ts, one > 0)
    t_in, _ = publish(wire, bconn, ts, 0, topics, payloads, one, s.version[brow], pid_b)
    dconn = s.conn[drow]
    t_out = t_in + wire.reply_delay(dconn, 1).astype(np.int64)
    pid_d = packet_ids(dconn, t_out, one > 0, first=1, span=_OTA_PID0 - 1)
    publish(wire, dconn, t_out, 1, topics, payloads, one, s.version[drow], pid_d)


def _firmware_updates(wire, inv, s: Sessions, plan, spec: LookalikeSpec, owner: int, start: int, infra, rng) -> BenignEvent:
    ota_k = len(infra) - 1
    orow = _infra_row(s, ota_k)
    oconn = s.conn[orow]
    chunk = int(spec.param("chunk_bytes"))
    rate = float(spec.param("rate"))
    hit, first, last = [], None, None
    sent = 0  # the OTA server numbers its QoS 1 chunks with one counter across all downloads
    fw_version = f"{rng.integers(2, 5)}.{rng.integers(0, 10)}.{rng.integers(0, 20)}"
    for i, brks in plan.items():
        for b in brks:
            if b.fw is None or b.owner != owner:
                continue
            ts, n_chunks, _, _ = b.fw
            d = inv.devices[i]
            row = int(_session_of(s, np.array([i]), np.array([ts]))[0])
            if row < 0 or s.end[row] != b.t:
                continue
            hit.append(d.ip)
            conn = s.conn[row:row + 1]
            ver = s.version[row:row + 1]
            base = f"city/{inv.district}/ota/{d.client_id}"
            req = json.dumps({"fw": "current", "want": fw_version, "hw": inv.profiles[d.cls].hardware.cls}).encode()
            t_req, t_ack = publish(wire, conn, np.array([ts]), 0, Blobs.from_list([f"{base}/request".encode()]),
                                   Blobs.from_list([req]), np.array([1]), ver, np.array([_OTA_PID0]))
            t_sub = t_ack + wire.reply_delay(conn, 0).astype(np.int64)
            t_sub = wire.send(conn, t_sub, 0, Blobs.from_list([mqtt.subscribe(_OTA_PID0 + 1, [(f"{base}/chunk", 1)], version=int(ver[0]))]))
            wire.send(conn, t_sub + wire.reply_delay(conn, 1).astype(np.int64), 1, Blobs.from_list([mqtt.suback(_OTA_PID0 + 1, [1], version=int(ver[0]))]))
            # The broker relays the request to the OTA server, which starts streaming chunks.
            oc = np.array([oconn])
            t_fwd = t_req + wire.reply_delay(oc, 1).astype(np.int64)
            publish(wire, oc, t_fwd, 1, Blobs.from_list([f"{base}/request".encode()]), Blobs.from_list([req]), np.array([1]),
                    s.version[orow:orow + 1], np.array([_OTA_PID0 + (len(hit) % 10000)]))
            t_start = int(max(t_fwd[0], t_sub[0]) + wire.reply_delay(oc, 0)[0] + rng.uniform(0.05, 0.2) * NS)
            k = np.arange(n_chunks)
            t_chunks = t_start + (k * NS / rate).astype(np.int64) + rng.integers(0, 2_000_000, n_chunks)
            payloads = random_payloads(n_chunks, chunk, chunk, rng)
            topics = Blobs.from_list([f"{base}/chunk".encode()]).take(np.zeros(n_chunks, np.int64))
            ones = np.ones(n_chunks, np.int64)
            pid_o = 1 + (sent + k) % 65535
            sent += n_chunks
            t_in, _ = publish(wire, np.full(n_chunks, oconn), t_chunks, 0, topics, payloads, ones, np.full(n_chunks, s.version[orow]), pid_o)
            t_out = t_in + wire.reply_delay(np.full(n_chunks, conn[0]), 1).astype(np.int64)
            pid_d = _OTA_PID0 + 2 + (k % 5000)
            _, t_done = publish(wire, np.full(n_chunks, conn[0]), t_out, 1, topics, payloads, ones, np.full(n_chunks, ver[0]), pid_d)
            status = json.dumps({"state": "installing", "fw": fw_version}).encode()
            t_status = np.array([t_done[-1] + int(rng.uniform(0.5, 1.5) * NS)])
            if t_status[0] < b.t:
                publish(wire, conn, t_status, 0, Blobs.from_list([f"{base}/status".encode()]), Blobs.from_list([status]),
                        np.array([1]), ver, np.array([_OTA_PID0 + 1]))
            first = ts if first is None else min(first, ts)
            last = b.t if last is None else max(last, b.t)
    return BenignEvent(spec.id or f"firmware_update-{owner}", "firmware_update", inv.gateway, hit,
                       (first or start) / NS, (last or start) / NS, params=dict(spec.params))


def _pings(wire, s: Sessions, t0, t1, log: PublishLog, rng) -> None:
    # What each session's client sent (its publishes); the broker's traffic to it does not
    # reset the client's own keepalive timer.
    row_of_pub = _session_of(s, log.dev, log.ts) if len(log.ts) else np.zeros(0, np.int64)
    ok = row_of_pub >= 0
    last_before = s.ready.copy()
    pre = s.ready < t0
    last_before[pre] = t0 - (rng.random(int(pre.sum())) * s.keepalive[pre]).astype(np.int64)
    end = np.where(s.end_kind == OPEN, t1, s.end)
    # Back-ends and the OTA server ping like any client.
    conn_idx, t = ping_times(row_of_pub[ok], log.ts[ok], last_before, end, s.keepalive, rng)
    if conn_idx.size == 0:
        return
    conns = s.conn[conn_idx]
    wire.send(conns, t, 0, Blobs.repeat(mqtt.pingreq(), conn_idx.size))
    wire.send(conns, t + wire.reply_delay(conns, 1).astype(np.int64), 1, Blobs.repeat(mqtt.pingresp(), conn_idx.size))


def _close_all(wire, s: Sessions, t1, rng) -> None:
    clean = np.flatnonzero(s.end_kind == CLEAN)
    if clean.size:
        c = s.conn[clean]
        v = s.version[clean]
        msgs = Blobs.from_list([mqtt.disconnect(version=int(x)) for x in v])
        t = wire.send(c, s.end[clean], 0, msgs)
        wire.close(c, t + app_delay(rng, clean.size, 50, 500), 0)
    dead = np.flatnonzero(s.end_kind == DEAD)
    if dead.size:
        # The broker gives up 1.5 keepalives after the client's last packet (about at the
        # cut), the rebooted device has no such socket and answers RST.
        c = s.conn[dead]
        t_fin = s.end[dead] + (1.5 * s.keepalive[dead]).astype(np.int64) - (rng.random(dead.size) * 0.5 * s.keepalive[dead]).astype(np.int64)
        wire.segments(c, t_fin, 1, 0x11)  # FIN|ACK
        resume = _next_start(s, dead)
        t_rst = np.maximum(t_fin + wire.reply_delay(c, 0).astype(np.int64), resume)
        wire.segments(c, t_rst, 0, 0x04)  # RST


def _next_start(s: Sessions, rows: np.ndarray) -> np.ndarray:
    out = np.empty(rows.size, dtype=np.int64)
    for k, r in enumerate(rows):
        later = np.flatnonzero((s.client == s.client[r]) & (s.start > s.start[r]))
        out[k] = s.start[later].min() if later.size else s.end[r]
    return out
