"""`atlas-sim city` on a small city: the files it writes, the inventory, captures that Scapy and
tshark dissect, ground truth that matches the packets, campaigns across domains, determinism
(whatever the worker count), clear errors."""
from __future__ import annotations

import ipaddress
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/sim/sim_pcap.py (importlib mode)

from sim_pcap import SYN, read_frames, tshark_fields  # noqa: E402

from atlas.sim.attacks import ATTACKS  # noqa: E402
from atlas.sim.city.schedule import TEMPLATES  # noqa: E402
from atlas.sim.cli import main  # noqa: E402

ARGS = ["--devices", "60", "--gateways", "6", "--duration", "120", "--seed", "7",
        "--attacks-per-gateway", "2", "--campaigns", "2", "--lookalike-share", "1"]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("city") / "c"
    assert main(["city", *ARGS, "--out", str(out), "--workers", "2"]) == 0
    meta = json.loads((out / "city.json").read_text())
    steps = [json.loads(line) for line in (out / "ground_truth.jsonl").read_text().splitlines()]
    events = [json.loads(line) for line in (out / "benign_events.jsonl").read_text().splitlines()]
    return out, meta, steps, events


@pytest.fixture(scope="module")
def frames(city):
    out, meta, _, _ = city
    return {g["id"]: read_frames(out / g["pcap"]) for g in meta["gateways"]}


def test_the_city_folder_and_its_summary(city):
    out, meta, steps, _ = city
    assert (out / ".gitignore").read_text() == "*\n"
    assert meta["seed"] == 7 and meta["duration"] == 120 and meta["end"] - meta["start"] == 120
    assert meta["command"].startswith("atlas-sim city --devices 60 --gateways 6")
    assert meta["districts"] == ["d01", "d02"]
    assert [g["id"] for g in meta["gateways"]] == ["gw-d01-tra", "gw-d01-ene", "gw-d01-pub", "gw-d02-tra", "gw-d02-ene", "gw-d02-pub"]
    for g in meta["gateways"]:
        pcap = out / g["pcap"]
        assert pcap.read_bytes()[:4] == b"\x4d\x3c\xb2\xa1"  # nanosecond pcap
        inv = json.loads((pcap.parent / "gateway.json").read_text())
        assert inv["gateway"] == g["id"] and inv["subnet"] == g["subnet"] and len(inv["devices"]) == g["devices"]
        assert inv["packets"] == g["packets"] > 0
    assert {b["domain"] for b in meta["backends"]} == {"transportation", "energy", "public_safety"}


def test_every_device_is_listed_once_behind_a_gateway_whose_subnet_holds_it(city):
    _, meta, _, _ = city
    devs = meta["devices"]
    assert len(devs) == meta["devices_total"] == 60
    assert len({d["id"] for d in devs}) == len({d["ip"] for d in devs}) == 60
    gws = {g["id"]: g for g in meta["gateways"]}
    per_gw = Counter(d["gateway"] for d in devs)
    for d in devs:
        g = gws[d["gateway"]]
        assert ipaddress.IPv4Address(d["ip"]) in ipaddress.IPv4Network(g["subnet"])
        assert d["ip"] != g["broker"]
        assert d["domain"] == g["domain"] and d["district"] == g["district"]
        assert d["client_id"] == d["id"] == d["username"] and f"-{g['district']}-" in d["client_id"]
        assert d["criticality"] in ("life_safety", "essential", "ordinary")
    assert all(per_gw[gid] == g["devices"] for gid, g in gws.items())


def test_every_kind_runs_and_every_step_names_a_gateway_of_the_city(city):
    _, meta, steps, _ = city
    gws = {g["id"] for g in meta["gateways"]}
    assert {s["kind"] for s in steps} == set(ATTACKS)
    assert len({s["id"] for s in steps}) == len(steps)
    assert all(s["gateway"] in gws and s["victims"] for s in steps)
    assert all(s["params"]["attacker_origin"] in ("external", "rogue_host", "compromised_device") for s in steps)
    assert [s["start"] for s in steps] == sorted(s["start"] for s in steps)


def test_each_steps_attacker_packets_are_in_its_gateways_capture_between_start_and_end(city, frames):
    _, _, steps, _ = city
    for s in steps:
        sent = [f.ts for f in frames[s["gateway"]] if f.src == s["attacker"]]
        inside = [t for t in sent if s["start"] - 1e-6 <= t <= s["end"] + 1e-6]
        assert s["attacker_packets"] > 0, s["id"]
        assert len(inside) >= s["attacker_packets"], s["id"]
        assert abs(min(inside) - s["start"]) < 1e-6 and abs(max(inside) - s["end"]) < 1e-6, s["id"]


def test_campaigns_follow_their_template_in_time_order_and_keep_their_attacker(city, frames):
    _, meta, steps, _ = city
    domain = {g["id"]: g["domain"] for g in meta["gateways"]}
    subnet = {g["id"]: ipaddress.IPv4Network(g["subnet"]) for g in meta["gateways"]}
    device_ips = {d["ip"]: d for d in meta["devices"]}
    assert [c["id"] for c in meta["campaigns"]] == ["c1", "c2"]
    assert len({c["template"] for c in meta["campaigns"]}) == 2
    for c in meta["campaigns"]:
        shape = TEMPLATES[c["template"]]
        st = sorted((s for s in steps if s["campaign"] == c["id"]), key=lambda s: s["stage"])
        assert [s["stage"] for s in st] == list(range(1, len(shape) + 1)) and [s["id"] for s in st] == c["stages"]
        assert len({domain[s["gateway"]] for s in st}) == len({d for _, d, _ in shape}) >= 2  # crosses domains
        assert all(a["end"] <= b["start"] for a, b in zip(st, st[1:]))
        assert all(s["params"]["campaign_template"] == c["template"] for s in st)
        later = [s for (role, _, _), s in zip(shape, st) if role in ("credential", "tamper")]
        assert later and all(s["attacker"] == c["attacker"] for s in later)
        for (role, _, _), s in zip(shape, st):
            if role == "exfiltration":  # a device of its own gateway, handed over by the stage before
                assert device_ips[s["attacker"]]["gateway"] == s["gateway"]
                assert s["params"]["attacker_origin"] == "compromised_device"
                assert s["params"]["compromised_in"] == st[s["stage"] - 2]["id"]
        if c["mode"] == "external":
            assert st[0]["attacker"] == c["attacker"] and later[-1]["params"]["attacker_origin"] == "external"
        else:  # a device behind the recon's gateway, seen on the other gateways' wires
            dev = device_ips[c["attacker"]]
            assert dev["gateway"] == st[0]["gateway"]
            assert st[1]["params"]["attacker_origin"] == "compromised_device"
            assert any(f.src == c["attacker"] for f in frames[st[1]["gateway"]])
            assert ipaddress.IPv4Address(c["attacker"]) not in subnet[st[1]["gateway"]]
        if c["mode"] == "pivot":
            assert st[1]["params"]["compromised_in"] == st[0]["id"]
            assert any(f.src == st[0]["attacker"] and f.dst == c["attacker"] and f.flags & SYN for f in frames[st[0]["gateway"]])


def test_decoys_are_real_attacks_of_no_campaign_on_the_wire(city, frames):
    _, meta, steps, _ = city
    domain = {g["id"]: g["domain"] for g in meta["gateways"]}
    by_id = {s["id"]: s for s in steps}
    decoys = [s for s in steps if "decoy_of" in s["params"]]
    assert 1 <= len(decoys) <= len(meta["campaigns"])  # a decoy with no free slot in its domain is left out (a full city)
    for d in decoys:
        shadowed = by_id[d["params"]["shadows"]]
        assert not d["campaign"] and shadowed["campaign"] == d["params"]["decoy_of"]
        assert d["kind"] == shadowed["kind"] and domain[d["gateway"]] == domain[shadowed["gateway"]]
        assert d["attacker"] != shadowed["attacker"] and d["params"]["attacker_origin"] == "external"
        assert d["attacker_packets"] > 0 and any(f.src == d["attacker"] for f in frames[d["gateway"]])


def test_lookalikes_are_benign_and_a_power_cut_takes_the_whole_district(city):
    _, meta, _, events = city
    assert events and all(e["benign"] is True for e in events)
    assert {e["kind"] for e in events} == {"power_cut", "firmware_update", "rush_hour"}
    cuts = [e for e in events if e["kind"] == "power_cut"]
    for d in {e["params"]["district"] for e in cuts}:
        mine = [e for e in cuts if e["params"]["district"] == d]
        assert {e["gateway"] for e in mine} == {g["id"] for g in meta["gateways"] if g["district"] == d}
        assert len({e["start"] for e in mine}) == 1
        assert all(e["hosts"] for e in mine)


def test_scapy_dissects_a_sample_of_every_gateways_frames(city, frames):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    for gid, fr in frames.items():
        pick = list(range(0, len(fr), max(1, len(fr) // 400)))
        for i in pick:
            p = Ether(fr[i].raw)
            assert IP in p and TCP in p and p[IP].len == len(fr[i].raw) - 14, (gid, i)
            q = Ether(bytes(p))
            del q[IP].chksum, q[TCP].chksum
            q = Ether(bytes(q))
            assert (q[IP].chksum, q[TCP].chksum) == (p[IP].chksum, p[TCP].chksum), (gid, i)


def test_tshark_finds_no_bad_checksum_and_no_malformed_packet_but_the_malformed_attacks(city):
    """As in test_sim_generate: sessions older than the capture show no CONNECT, so tshark
    cannot tell a 5.0 client ("Unknown version"); those frames are excused, bad checksums never."""
    out, meta, steps, _ = city
    for g in meta["gateways"]:
        pcap = out / g["pcap"]
        inv = json.loads((pcap.parent / "gateway.json").read_text())
        v5 = {d["ip"] for d in inv["devices"] if d["version"] == 5} | {b["ip"] for b in inv["backends"] if b["version"] == 5}
        bad_ok = {s["attacker"] for s in steps if s["gateway"] == g["id"] and s["kind"] == "malformed"}
        rows = tshark_fields(pcap, '_ws.malformed || _ws.expert.severity == "error" || tcp.checksum.status == "Bad" '
                                   '|| ip.checksum.status == "Bad"',
                             ["frame.number", "ip.src", "ip.dst", "_ws.expert.message", "tcp.checksum.status", "ip.checksum.status"])
        assert not [r for r in rows if "0" in (r[4], r[5])], g["id"]  # 0: Bad, 1: Good
        blamed = Counter(r[1] for r in rows if not ("Unknown version" in r[3] and {r[1], r[2]} & v5))
        assert set(blamed) <= bad_ok, (g["id"], blamed)
    # The checks are live: checksums were verified, and the malformed attack is flagged.
    busiest = max(meta["gateways"], key=lambda g: g["packets"])
    assert len(tshark_fields(out / busiest["pcap"], 'tcp.checksum.status == "Good"', ["frame.number"])) > 5_000
    s = next(s for s in steps if s["kind"] == "malformed")
    assert tshark_fields(out / f"gateways/{s['gateway']}/traffic.pcap", f'_ws.malformed && ip.src == {s["attacker"]}', ["frame.number"])


def test_same_seed_same_bytes_whatever_the_workers(city, tmp_path):
    out, meta, _, _ = city
    again = tmp_path / "again"
    assert main(["city", *ARGS, "--out", str(again), "--workers", "1"]) == 0
    for name in ["ground_truth.jsonl", "benign_events.jsonl"] + [g["pcap"] for g in meta["gateways"]] + \
            [g["pcap"].replace("traffic.pcap", name) for g in meta["gateways"] for name in ("gateway.json", "inventory.json", "agent.toml")]:
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    other = json.loads((again / "city.json").read_text())
    assert other.pop("command") != meta["command"]  # --out and --workers differ, nothing else
    assert other == {k: v for k, v in meta.items() if k != "command"}


def test_another_seed_another_city(city, tmp_path):
    out, meta, _, _ = city
    other = tmp_path / "s8"
    assert main(["city", "--devices", "60", "--gateways", "6", "--duration", "30", "--seed", "8", "--out", str(other),
                 "--no-attacks", "--workers", "1"]) == 0
    assert (other / "ground_truth.jsonl").read_text() == "" and (other / "benign_events.jsonl").read_text() == ""
    assert json.loads((other / "city.json").read_text())["campaigns"] == []
    nb = tmp_path / "nb"
    assert main(["city", "--devices", "30", "--gateways", "3", "--duration", "20", "--seed", "8", "--out", str(nb),
                 "--no-attacks", "--no-backends", "--start-time", "1767300000", "--workers", "1"]) == 0
    meta_nb = json.loads((nb / "city.json").read_text())
    assert meta_nb["backends"] == [] and meta_nb["start"] == 1767300000
    assert not any(f.src.startswith("172.16.") for f in read_frames(nb / "gateways/gw-d01-ene/traffic.pcap"))
    assert (other / "gateways/gw-d01-tra/traffic.pcap").read_bytes() != (out / "gateways/gw-d01-tra/traffic.pcap").read_bytes()


@pytest.mark.parametrize("extra,words", [
    (["--devices", "5", "--gateways", "6"], "devices: 5 devices cannot fill 6 gateways"),
    (["--devices", "60", "--gateways", "2"], "at least one gateway per domain"),
    (["--devices", "60", "--gateways", "300"], "gateways: at most 255"),
    (["--devices", "60", "--gateways", "6", "--duration", "0"], "duration: must be > 0"),
    (["--devices", "60", "--gateways", "6", "--seed", "-1"], "seed: must be >= 0"),
    (["--devices", "60", "--gateways", "6", "--workers", "0"], "workers: need at least 1"),
    (["--devices", "60", "--gateways", "6", "--attacks-per-gateway", "-1"], "attacks-per-gateway: must be >= 0"),
    (["--devices", "60", "--gateways", "6", "--lookalike-share", "2"], "lookalike-share: must be between 0 and 1"),
])
def test_bad_arguments_give_clear_errors(tmp_path, capsys, extra, words):
    base = {"--duration": "60", "--seed": "1"}
    args = ["city", "--out", str(tmp_path / "x")] + extra
    for k, v in base.items():
        if k not in extra:
            args += [k, v]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("atlas-sim city: ") and words in err, err
    assert not (tmp_path / "x").exists()  # nothing written before the arguments are checked


def test_a_folder_that_is_not_a_city_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["city", "--devices", "6", "--gateways", "3", "--duration", "10", "--seed", "1", "--out", str(tmp_path)]) == 2
    assert "is not empty and holds no city.json" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_gateways_failure_names_the_gateway(tmp_path):
    """A worker's error comes back naming its gateway (here an attack after the capture's end,
    which the schedule never makes, handed straight to the worker)."""
    from atlas.firmware_profiles import load_device_profiles
    from atlas.sim.attacks import AttackSpec
    from atlas.sim.city import plan_layout
    from atlas.sim.city.build import _gateway, _Job

    g = plan_layout(load_device_profiles(), 6, 3).gateways[1]
    job = _Job(g, 1, [AttackSpec("port_scan", start=50)], [], {}, tmp_path, 10.0, 1767254400.0, None, None)
    with pytest.raises(ValueError, match=r"^gateway gw-d01-ene: attack port_scan: starts at 50 s, after the capture ends"):
        _gateway(job)
