"""The classifier's domain: a kind is named only for traffic like what the classifier learned.

The classifier always picks one of its kinds, even for traffic it has never seen (a camera's
HTTPS session, DHCP chatter). A kind it names is kept only when
- the kind is an MQTT kind and the source speaks MQTT: a connection of it was recognised by its
  handshake (a well-formed CONNECT or CONNACK) and carried messages within `horizon_s`;
- for `slowite`: the source opened several MQTT connections recently (SlowITe holds many idle
  connections; one long session with keepalives is how IoT devices normally talk);
- the classifier's probability of that kind is at least `min_confidence` (chosen on
  validation captures, bench/calibration.py; stored in the models' meta.json).
Otherwise the row is `anomaly` (the classifier's kinds become hints in the evidence); for a
single long MQTT session only if the anomaly model flags it too.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from atlas.agent.decode import CONNACK, CONNECT, MQTT_OK

MQTT_KINDS = frozenset({"slowite", "topic_scan", "mqtt_flood", "mqtt_bruteforce", "malformed"})
ANOMALY = "anomaly"
HORIZON_S = 120.0  # about four of the long feature window's half-lives (30 s)
SLOWITE_MIN_CONNECTIONS = 3  # MQTT connections opened by one source within the horizon
HINTS = 2  # nearest kinds given as evidence
_KEEP_CONNECTS = 4 * SLOWITE_MIN_CONNECTIONS  # CONNECT times remembered per client


class MqttSpeakers:
    """Which hosts spoke MQTT lately, on connections recognised by their handshake.

    Fed the MQTT_DTYPE rows the stream decoder produces. Bounded: at most `max_entries`
    connections, hosts and connecting clients are remembered (least recently seen dropped
    first), and the latest few CONNECT times per client."""

    def __init__(self, horizon_s: float = HORIZON_S, max_entries: int = 65536) -> None:
        self.horizon_s = horizon_s
        self.max_entries = max_entries
        # Recognised connections: client host << 16 | client port -> broker host.
        self._conns: OrderedDict[int, int] = OrderedDict()
        self._last: OrderedDict[int, float] = OrderedDict()  # host -> last message on a recognised connection
        self._opened: OrderedDict[int, list[float]] = OrderedDict()  # client -> times of its recent CONNECTs

    def observe(self, mq: np.ndarray) -> None:
        if not len(mq):
            return
        ok = mq["error"] == MQTT_OK
        hello = ok & (((mq["mtype"] == CONNECT) & (mq["to_broker"] == 1)) | ((mq["mtype"] == CONNACK) & (mq["to_broker"] == 0)))
        ckey = (mq["client"].astype(np.uint64) << np.uint64(16)) | mq["client_port"].astype(np.uint64)
        for i in np.flatnonzero(hello).tolist():
            k, client = int(ckey[i]), int(mq["client"][i])
            self._conns[k] = int(mq["broker"][i])
            self._conns.move_to_end(k)
            if mq["mtype"][i] == CONNECT:
                times = self._opened.setdefault(client, [])
                self._opened.move_to_end(client)
                times.append(float(mq["ts"][i]))
                if len(times) > _KEEP_CONNECTS:  # only "several" matters: the latest few are enough
                    del times[:-_KEEP_CONNECTS]
        while len(self._conns) > self.max_entries:
            self._conns.popitem(last=False)
        while len(self._opened) > self.max_entries:
            self._opened.popitem(last=False)
        if not self._conns:
            return
        # Per connection of the batch (far fewer than its messages): its last message's time
        # (rows come in packet order).
        conns, rev = np.unique(ckey[::-1], return_index=True)
        last = mq["ts"][len(mq) - 1 - rev]
        for k, t in zip(conns.tolist(), last.tolist()):
            broker = self._conns.get(k)
            if broker is not None:
                for host in (k >> 16, broker):
                    self._last[host] = t
                    self._last.move_to_end(host)
        while len(self._last) > self.max_entries:
            self._last.popitem(last=False)

    def speaks_mqtt(self, host: int, now: float) -> bool:
        t = self._last.get(int(host))
        return t is not None and now - t <= self.horizon_s

    def connections_opened(self, host: int, now: float) -> int:
        times = self._opened.get(int(host))
        if not times:
            return 0
        recent = [t for t in times if now - t <= self.horizon_s]
        if recent:
            self._opened[int(host)] = recent
        else:
            del self._opened[int(host)]
        return len(recent)

    def forget_before(self, now: float) -> None:
        """Drop hosts silent for longer than the horizon (called now and then)."""
        while self._last:
            host, t = next(iter(self._last.items()))
            if now - t <= self.horizon_s:
                break
            self._last.popitem(last=False)
        for host in [h for h, ts in self._opened.items() if now - ts[-1] > self.horizon_s]:
            del self._opened[host]


@dataclass
class Verdict:
    kind: str  # the kind to report: the classifier's, "anomaly", or "" (normal)
    hints: dict[str, float]  # the classifier's nearest kinds and their probabilities, when refused


def nearest_kinds(probs: np.ndarray, classes: list[str], k: int = HINTS) -> dict[str, float]:
    """The classifier's k most likely attack kinds of one row, with their probabilities."""
    pairs = [(classes[j], round(float(probs[j]), 3)) for j in np.argsort(-probs) if classes[j] != "benign"]
    return dict(pairs[:k])


def judge(kind: str, confidence: float, anomalous: bool, speaks_mqtt: bool, opened: int,
          min_confidence: float) -> str:
    """The kind to report for one row the classifier named `kind` (see the module's rules)."""
    if kind in MQTT_KINDS and not speaks_mqtt:
        return ANOMALY
    if kind == "slowite" and opened < SLOWITE_MIN_CONNECTIONS:
        return ANOMALY if anomalous else ""
    if confidence < min_confidence:
        return ANOMALY
    return kind
