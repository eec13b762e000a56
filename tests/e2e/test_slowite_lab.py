"""SlowITe for real against a real mosquitto, beside a device holding one long MQTT session.

SlowITe (Vaccari et al., 2020) is one client opening many connections with the largest keepalive
(65535 s) and holding them idle, so the broker keeps their slots. A device with one long-lived
connection and keepalives is how IoT normally talks. Traffic on the lab gateway's bridge is
captured with tcpdump and replayed through the agent's pipeline with the shipped models.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab  # noqa: E402

from atlas.agent.config import AgentConfig  # noqa: E402
from atlas.agent.detect import Detector  # noqa: E402
from atlas.agent.pipeline import replay  # noqa: E402

REASON = lab.netns_unavailable_reason() or lab.mosquitto_unavailable_reason()
pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.skipif(bool(REASON), reason=REASON or "ok")]

CONNECTIONS = 150  # bounded: a test, not a denial of service
HOLD_S = 8.0

# A SlowITe client: CONNECTs with keepalive 65535 at `rate`/s, each connection then held idle.
SLOWITE = r"""
import socket, sys, time
host, port, user, pw, n, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
def s(b): return len(b).to_bytes(2, "big") + b
def varint(n):
    out = bytearray()
    while True:
        n, d = divmod(n, 128)
        out.append(d | (0x80 if n else 0))
        if not n: return bytes(out)
held = []
deadline = time.monotonic() + 20
for i in range(n):
    if time.monotonic() > deadline: break
    body = s(b"MQTT") + bytes([4, 0xC2]) + (65535).to_bytes(2, "big") + s(b"slow-%05d" % i) + s(user.encode()) + s(pw.encode())
    c = socket.create_connection((host, port), timeout=2)
    c.sendall(bytes([0x10]) + varint(len(body)) + body)
    c.recv(4)
    held.append(c)
    time.sleep(0.01)
time.sleep(hold)
print(len(held))
"""

# A device's one session: CONNECT with keepalive 2 s, a reading now and then, PINGREQs between.
DEVICE = r"""
import socket, sys, time
host, port, user, pw, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
def s(b): return len(b).to_bytes(2, "big") + b
body = s(b"MQTT") + bytes([4, 0xC2]) + (2).to_bytes(2, "big") + s(b"meter-1") + s(user.encode()) + s(pw.encode())
c = socket.create_connection((host, port), timeout=5)
c.sendall(bytes([0x10, len(body)]) + body)
c.recv(4)
end = time.monotonic() + secs
i = 0
while time.monotonic() < end:
    i += 1
    if i % 3 == 0:
        topic, payload = b"city/meter/1", b'{"kwh": %d}' % i
        msg = s(topic) + payload
        c.sendall(bytes([0x30, len(msg)]) + msg)
    else:
        c.sendall(b"\xc0\x00")
        c.recv(2)
    time.sleep(1.0)
c.sendall(b"\xe0\x00")
"""


def test_real_slowite_is_named_and_one_long_session_is_not(tmp_path):
    with lab.Lab(subnet="10.79.0.0/24", subnet6="fd79::/64") as L:
        slow, meter = L.add_device("slowite"), L.add_device("meter")
        broker = L.start_mosquitto(bind="0.0.0.0")
        for name in ("slowite", "meter"):
            broker.add_client(name, f"pw-{name}")
        pcap = tmp_path / "bridge.pcap"
        dump = L.popen(L.gw, ["tcpdump", "-i", L.bridge, "-w", str(pcap), "-U", "tcp port 1883"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        dev = L.popen(meter.netns, [sys.executable, "-c", DEVICE, L.gw_ip, str(broker.port), "meter", "pw-meter", str(HOLD_S + 8)],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3.0)
        att = L.run(slow.netns, [sys.executable, "-c", SLOWITE, L.gw_ip, str(broker.port), "slowite", "pw-slowite",
                                 str(CONNECTIONS), str(HOLD_S)], timeout=60)
        assert att.returncode == 0, att.stderr
        assert int(att.stdout.strip()) >= CONNECTIONS // 2
        out, err = dev.communicate(timeout=30)
        assert dev.returncode == 0, err
        time.sleep(0.5)
        dump.terminate()
        dump.communicate(timeout=10)
        incidents = list(replay([pcap], AgentConfig(), Detector()))
    by_src = {}
    for inc in incidents:
        by_src.setdefault(inc.src_ip, set()).add(inc.kind)
    assert by_src.get(slow.ip), f"SlowITe not reported: {incidents}"
    assert "slowite" in by_src[slow.ip] and by_src[slow.ip] <= {"slowite", "anomaly"}, by_src
    assert not by_src.get(meter.ip), f"one long session reported: {by_src}"
