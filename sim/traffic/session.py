"""MQTT conversations over `Wire`, vectorized over many connections: open a session, publish
with the right acknowledgements, number packet identifiers."""
from __future__ import annotations

import numpy as np

from atlas.sim.traffic import mqtt
from atlas.sim.traffic.vec import Blobs, join, u16be_column
from atlas.sim.traffic.wire import Wire

BROKER_PORT = 1883


def app_delay(rng: np.random.Generator, n: int, lo_us: float = 20, hi_us: float = 400) -> np.ndarray:
    """A client writing right after an event it caused (same host, no round trip)."""
    return (rng.uniform(lo_us, hi_us, n) * 1000).astype(np.int64)


def open_sessions(wire: Wire, conn: np.ndarray, t_syn: np.ndarray, connects: Blobs, connacks: Blobs,
                  subscribes: Blobs | None = None, subacks: Blobs | None = None, *, connack_times: bool = False):
    """Handshake, CONNECT, CONNACK (and SUBSCRIBE, SUBACK where given: rows with an empty
    SUBSCRIBE skip it). Returns when each client can send its next packet (and, with
    `connack_times`, when each CONNACK left the broker)."""
    rng = wire.rng
    n = conn.shape[0]
    t = wire.handshake(conn, t_syn)
    t = wire.send(conn, t + app_delay(rng, n), 0, connects)
    t = t + wire.reply_delay(conn, 1).astype(np.int64)
    t_connack = wire.send(conn, t, 1, connacks)
    t = t_connack + wire.reply_delay(conn, 0).astype(np.int64)
    if subscribes is not None:
        has = subscribes.lens > 0
        if has.any():
            c = conn[has]
            ts = wire.send(c, t[has], 0, subscribes.take(np.flatnonzero(has)))
            ts = ts + wire.reply_delay(c, 1).astype(np.int64)
            ts = wire.send(c, ts, 1, subacks.take(np.flatnonzero(has)))
            t[has] = ts + wire.reply_delay(c, 0).astype(np.int64)
    return (t, t_connack) if connack_times else t


def packet_ids(conn: np.ndarray, ts: np.ndarray, needs_id: np.ndarray, *, first: int = 1, span: int = 65535) -> np.ndarray:
    """Packet identifiers counting up per connection (in time order) for rows that need one;
    they cycle through [first, first + span)."""
    pid = np.zeros(conn.shape[0], dtype=np.int64)
    rows = np.flatnonzero(needs_id)
    if rows.size == 0:
        return pid
    o = rows[np.lexsort((ts[rows], conn[rows]))]
    c = conn[o]
    start = np.concatenate([[True], c[1:] != c[:-1]])
    grp = np.maximum.accumulate(np.where(start, np.arange(o.size), 0))
    pid[o] = first + (np.arange(o.size) - grp) % span
    return pid


def pubacks(pid: np.ndarray) -> Blobs:
    return join([bytes([mqtt.PUBACK << 4, 2]), u16be_column(pid)], pid.shape[0])


def publish(wire: Wire, conn: np.ndarray, ts: np.ndarray, dir: int | np.ndarray, topics: Blobs, payloads: Blobs,
            qos: np.ndarray, version: np.ndarray, pid: np.ndarray, *, retain: np.ndarray | None = None,
            ack: bool = True, noack_receiver=False) -> tuple[np.ndarray, np.ndarray]:
    """PUBLISH on each connection at ts; QoS 1 ones are answered with PUBACK by the receiver.
    Returns (time of the PUBLISH's last segment, time of its PUBACK or of the PUBLISH)."""
    msgs = mqtt.publish_batch(topics, payloads, qos, pid, version, retain)
    t_last = wire.send(conn, ts, dir, msgs, noack=noack_receiver)
    t_done = t_last.copy()
    q1 = np.flatnonzero(np.asarray(qos) > 0)
    if ack and q1.size:
        rdir = 1 - np.broadcast_to(np.asarray(dir), conn.shape)[q1]
        t_ack = t_last[q1] + wire.reply_delay(conn[q1], rdir).astype(np.int64)
        wire.send(conn[q1], t_ack, rdir, pubacks(pid[q1]))
        t_done[q1] = t_ack
    return t_last, t_done
