"""The novel attack kinds (mirai_scan, exfiltration, false_data): valid on the wire, ground
truth from the packets, and each looks like what it claims to be."""
from __future__ import annotations

import ipaddress
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/sim/sim_pcap.py (importlib mode)

from sim_pcap import ACK, RST, SYN, checksums_ok, mqtt_messages, read_frames, streams, tshark_fields  # noqa: E402

from atlas.firmware_profiles import load_device_profiles  # noqa: E402
from atlas.sim.attacks import ATTACKS, NOVEL_KINDS, AttackSpec  # noqa: E402
from atlas.sim.attacks.mirai import MIRAI_CREDENTIALS  # noqa: E402
from atlas.sim.capture import generate_capture  # noqa: E402

SUBNET = ipaddress.ip_network("10.20.0.0/16")
COMPROMISED = "10.20.1.7"
ATTACKS_ = [
    AttackSpec("mirai_scan", start=20, duration=25, params={"open": 0.02}),
    AttackSpec("exfiltration", start=50, duration=60, attacker=COMPROMISED, params={"kbytes_per_s": 30.0, "port": 443}),
    AttackSpec("exfiltration", start=115, duration=30, params={"port": 8080, "connections": 2}),
    AttackSpec("false_data", start=60, duration=100, params={"mode": "spoof", "fields": 2}),
    AttackSpec("false_data", start=150, duration=80, params={"mode": "device"}),
]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    out = tmp_path_factory.mktemp("novel")
    gt = generate_capture(out / "n.pcap", devices=30, duration=240.0, attacks=ATTACKS_, seed=11)
    gt.write(out)
    return gt, out / "n.pcap", read_frames(out / "n.pcap")


def _attack_frames(gt, frames, step):
    """The frames the step's attacker sent for the step, told apart from its benign traffic
    by what the generator cannot fake: ports, peers and MQTT client ids on the wire."""
    a = step.attacker
    mine = [f for f in frames if f.src == a]
    if step.kind == "mirai_scan":
        return [f for f in mine if f.dport in (23, 2323)]
    if step.kind == "exfiltration":
        return [f for f in mine if f.dst == step.victims[0]]
    if step.params["mode"] == "spoof":
        return mine
    # device mode: the session whose CONNECT carries "<device id>-..." as its client id
    st = streams(frames)
    ports = set()
    for (src, sport, dst, dport), s in st.items():
        if src == a and dport == 1883:
            msgs, _ = mqtt_messages(bytes(s.data))
            if any(m[0] >> 4 == 1 and f"{step.params['device']}-".encode() in m for m in msgs):
                ports.add(sport)
    assert len(ports) == 1
    return [f for f in mine if f.sport in ports]


def test_the_kinds_are_registered_and_listed(capsys):
    from atlas.sim.cli import main

    assert set(NOVEL_KINDS) <= set(ATTACKS)
    assert main(["attacks"]) == 0
    out = capsys.readouterr().out
    for k in NOVEL_KINDS:
        assert k in out


def test_every_frame_is_valid_for_scapy_and_our_checksums(capture):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    gt, _, frames = capture
    assert sorted(s.kind for s in gt.steps) == sorted(a.kind for a in ATTACKS_)
    assert all(checksums_ok(f) == (True, True) for f in frames)
    assert all(IP in p and TCP in p and p[IP].len == len(f.raw) - 14 for f in frames for p in [Ether(f.raw)])


def test_tshark_dissects_them_without_errors(capture):
    gt, pcap, _ = capture
    rows = tshark_fields(pcap, '_ws.malformed || _ws.expert.severity == "error" || tcp.checksum.status == "Bad" || ip.checksum.status == "Bad"',
                         ["frame.number", "ip.src", "_ws.expert.message"])
    # Sessions opened before the capture do not show a 5.0 client's CONNECT (see test_sim_generate).
    rows = [r for r in rows if "Unknown version" not in r[2]]
    assert rows == []
    # ... and recognises what they are.
    assert tshark_fields(pcap, "telnet", ["frame.number"])
    assert tshark_fields(pcap, "tls.handshake.type == 1", ["frame.number"])
    assert tshark_fields(pcap, 'http.request.method == "POST"', ["frame.number"])


def test_ground_truth_matches_the_packets(capture):
    gt, _, frames = capture
    for s in gt.steps:
        sent = _attack_frames(gt, frames, s)
        assert len(sent) == s.attacker_packets > 0, s.id
        assert math.isclose(sent[0].ts, s.start, abs_tol=2e-6), s.id
        assert math.isclose(sent[-1].ts, s.end, abs_tol=2e-6), s.id
        assert gt.start + s.params["start_offset"] - 1e-6 <= s.start <= s.end <= gt.end
        if s.kind == "false_data":  # the victim is the device whose readings are forged, at the broker
            assert s.victims == [s.params["device_ip"]] and {f.dst for f in sent} == {gt.inventory.broker}
        else:
            assert set(s.victims) <= {f.dst for f in sent}, s.id


def test_mirai_scan_probes_telnet_inside_and_outside_and_tries_default_logins(capture):
    gt, _, frames = capture
    step = next(s for s in gt.steps if s.kind == "mirai_scan")
    assert step.attacker in {d.ip for d in gt.inventory.devices}  # a compromised device by default
    all_syns = [f for f in frames if f.src == step.attacker and f.flags == SYN and f.dport in (23, 2323)]
    # The raw-socket scanner's SYNs (window 1024, MSS only) vs the bot's real logins later.
    syns = [f for f in all_syns if f.raw[48:50] == b"\x04\x00"]
    logins = [f for f in all_syns if f.raw[48:50] != b"\x04\x00"]
    assert len(syns) >= 0.9 * 120 * 25
    assert len({f.sport for f in syns}) == 1  # Mirai's scanner keeps one source port
    dsts = {f.dst for f in syns}
    inside = {d for d in dsts if ipaddress.ip_address(d) in SUBNET}
    assert len(dsts) == len(syns) and 0.15 * len(dsts) < len(inside) < 0.35 * len(dsts)
    assert all(ipaddress.ip_address(d).is_global for d in dsts - inside)
    assert sum(f.dport == 2323 for f in syns) > 0.03 * len(syns)
    answered = {f.src for f in frames if f.dst == step.attacker and f.flags == SYN | ACK and f.sport in (23, 2323)}
    assert set(step.victims) == answered and len(answered) >= 5
    refused = [f for f in frames if f.dst == step.attacker and f.flags == RST | ACK and f.sport in (23, 2323)]
    assert {f.src for f in refused} & inside  # devices of the subnet refuse telnet
    creds = {f"{u}\r\n".encode() for u, _ in MIRAI_CREDENTIALS}
    typed = [bytes(s.data) for (src, sp, dst, dp), s in streams(frames).items() if src == step.attacker and dp in (23, 2323) and s.data]
    assert typed and all(any(c in t for c in creds) for t in typed)
    assert step.params["login_attempts"] == 2 * len(typed) == 2 * len(logins)
    assert {f.dst for f in logins} <= answered


def test_exfiltration_sends_sustained_volume_out_of_the_network(capture):
    gt, _, frames = capture
    tls, http = [s for s in gt.steps if s.kind == "exfiltration"]
    assert tls.attacker == COMPROMISED and tls.params["protocol"] == "tls"
    for s in (tls, http):
        dest = s.victims[0]
        assert ipaddress.ip_address(dest).is_global
        out = [f for f in frames if f.src == s.attacker and f.dst == dest]
        sent = sum(len(f.payload) for f in out)
        assert sent >= 0.8 * s.params["kbytes_per_s"] * 1024 * s.params["duration"], s.id
        # sustained: every 10 s of the step carries data
        t0 = s.start
        busy = {int((f.ts - t0) // 10) for f in out if f.payload}
        assert busy >= set(range(int(s.params["duration"] // 10) - 1)), s.id
        conns = {f.sport for f in out if f.flags == SYN}
        assert len(conns) == s.params["connections"], s.id
    assert http.params["port"] == 8080 and http.params["protocol"] == "http"
    replies = [f for f in frames if f.src == http.victims[0] and f.payload.startswith(b"HTTP/1.1 200 OK")]
    assert len(replies) == http.params["writes"]


def test_false_data_is_well_formed_mqtt_with_impossible_values(capture):
    gt, _, frames = capture
    profiles = load_device_profiles()
    by_ip = {d.ip: d for d in gt.inventory.devices}
    for s in (x for x in gt.steps if x.kind == "false_data"):
        dev = by_ip[s.victims[0]]
        topic = next(t for t in profiles[dev.cls].mqtt.topics if t.topic.replace("{district}", "d01").replace("{id}", dev.client_id) == s.params["topic"])
        limits = {f.name: f for f in topic.fields}
        forged = set(s.params["forged"])
        assert len(forged) == s.params["fields"]
        sent = {f.sport for f in _attack_frames(gt, frames, s)}
        msgs = []
        for (src, sport, dst, dport), st in streams(frames).items():
            if src == s.attacker and sport in sent and dport == 1883:
                m, rest = mqtt_messages(bytes(st.data))
                assert rest == b""
                msgs += [x for x in m if x[0] >> 4 == 3]
        assert len(msgs) == s.params["messages"] >= 0.6 * s.params["duration"] / topic.interval
        for m in msgs:
            tl = int.from_bytes(m[2:4], "big") if m[1] < 128 else int.from_bytes(m[3:5], "big")
            hl = 2 if m[1] < 128 else 3
            assert m[hl + 2 : hl + 2 + tl].decode() == s.params["topic"]
            body = m[hl + 2 + tl + (2 if (m[0] >> 1) & 3 else 0):]
            if dev.version == 5:
                assert body[0] == 0  # empty property block
                body = body[1:]
            doc = json.loads(body)
            assert list(doc) == [f.name for f in topic.fields]  # same shape as the genuine readings
            for name, v in doc.items():
                f = limits[name]
                if f.type not in ("int", "float"):
                    continue
                outside = not (f.min <= v <= f.max)
                assert outside == (name in forged), (name, v, f.min, f.max)
                if f.type == "int":
                    assert isinstance(v, int)


def test_params_are_validated_with_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter 'speed'"):
        AttackSpec("mirai_scan", params={"speed": 3})
    with pytest.raises(ValueError, match="'rate' must be a number"):
        AttackSpec("mirai_scan", params={"rate": "fast"})
    cases = [
        (AttackSpec("mirai_scan", start=1, params={"open": 0.7, "closed": 0.5}), "'open' \\+ 'closed'"),
        (AttackSpec("mirai_scan", start=1, params={"inside": 2.0}), "'inside' must be a share"),
        (AttackSpec("exfiltration", start=1, params={"dest": "not-an-ip"}), "'dest' must be an IPv4 address"),
        (AttackSpec("exfiltration", start=1, params={"dest": "10.20.0.1"}), "own network"),
        (AttackSpec("exfiltration", start=1, params={"port": 70000}), "'port' must be a TCP port"),
        (AttackSpec("false_data", start=1, params={"mode": "sneaky"}), "'mode' must be one of spoof, device"),
        (AttackSpec("false_data", start=1, victims=["10.99.0.1"]), "not a device of gateway"),
        (AttackSpec("false_data", start=1, params={"topic": "no_such_topic"}), "no device .* named 'no_such_topic'"),
        (AttackSpec("false_data", start=1, attacker="10.20.1.1", victims=["10.20.1.1"], params={"mode": "spoof"}), "contradicts"),
    ]
    for spec, words in cases:
        with pytest.raises(ValueError, match=words):
            generate_capture(tmp_path / "x.pcap", devices=5, duration=30.0, seed=1, attacks=[spec])


def test_same_seed_same_bytes(tmp_path):
    specs = [AttackSpec(k, start=5, duration=10) for k in NOVEL_KINDS]
    a = generate_capture(tmp_path / "a.pcap", devices=8, duration=30.0, seed=2, attacks=specs)
    b = generate_capture(tmp_path / "b.pcap", devices=8, duration=30.0, seed=2, attacks=specs)
    assert (tmp_path / "a.pcap").read_bytes() == (tmp_path / "b.pcap").read_bytes()
    assert [s.to_dict() for s in a.steps] == [s.to_dict() for s in b.steps]
    grouped = defaultdict(int)
    for s in a.steps:
        grouped[s.kind] += s.attacker_packets
    assert all(grouped[k] > 0 for k in NOVEL_KINDS)
