"""Importing a MUD file (RFC 8520) as a device profile: the result loads with the profile loader,
its protocols and peers are the MUD file's accepting ACEs, what a profile cannot express is
reported, and malformed MUD input is refused with the JSON path of the problem."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from atlas.firmware_profiles import (
    ProfileError,
    load_device_profile,
    load_device_profiles,
)
from atlas.firmware_profiles.mud import (
    MudError,
    import_mud_file,
    load_mud_file,
    profile_from_mud,
    read_mud,
)
from atlas.sim.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mud_smart_pole.json"
ACLS = "ietf-access-control-list:acls"


def _fixture() -> dict:
    return load_mud_file(FIXTURE)


def _write(tmp_path: Path, text: str, cls: str) -> Path:
    path = tmp_path / f"{cls}.toml"
    path.write_text(text)
    return path


def test_fixture_imports_to_a_profile_that_loads_with_what_the_mud_file_says(tmp_path):
    text = profile_from_mud(_fixture(), cls="smart_pole", domain="energy", criticality="essential")
    prof = load_device_profile(_write(tmp_path, text, "smart_pole"))
    assert prof.name == "smart_pole" and prof.domain == "energy" and prof.criticality == "essential"
    assert prof.description == "Example Smart Pole 200 street-light controller"  # systeminfo
    assert prof.mud_url == "https://poles.example.com/mud/smartpole-200.json"
    # NTP to a named host, HTTPS to the manufacturer, SSH from the local networks; each flow is
    # listed twice in the file (from- and to-device ACLs) and once in the profile.
    assert {(p.name, p.transport, p.port, p.direction, p.peer) for p in prof.protocols} == {
        ("ntp", "udp", 123, "outbound", "ntp.citynet.example"),
        ("https", "tcp", 443, "outbound", "manufacturer:poles.example.com"),
        ("ssh", "tcp", 22, "inbound", "local_networks"),
    }
    assert len(prof.protocols) == 3
    # MQTT over TLS to my-controller is the broker, not a protocol entry.
    assert prof.peers == ("broker", "ntp.citynet.example", "manufacturer:poles.example.com", "local_networks")
    assert all(p.port != 8883 for p in prof.protocols)
    assert prof.open_tcp_ports == (22,)
    # Nothing the MUD file does not say is claimed silently: the guesses are marked.
    assert text.count("# PLACEHOLDER") == 3
    assert "quarantine" not in prof.responses.acceptable


def test_what_a_profile_cannot_express_is_dropped_with_a_note():
    pol = read_mud(_fixture())
    notes = "\n".join(pol.notes)
    assert len(pol.notes) == 3
    assert f"{ACLS}.acl[1].aces.ace[4] (syslog-frdev): udp.destination-port range 5140-5149" in notes
    assert f"{ACLS}.acl[1].aces.ace[5] (ping-frdev): IP protocol 1" in notes
    assert f"{ACLS}.acl[0].aces.ace[4] (telnet-todev): action 'drop'" in notes
    assert pol.mqtt == ("tcp/8883 outbound to my_controller",)
    text = profile_from_mud(_fixture(), cls="smart_pole", domain="energy", criticality="essential")
    assert "#   " + pol.notes[0] in text


def _ace(i: int, p, peer_key: str, from_device: bool) -> dict:
    """One ACE of the flow `p` (a ProtocolSpec) as seen in the from- or to-device ACL."""
    l3: dict = {"protocol": 6 if p.transport == "tcp" else 17}
    l3["ietf-acldns:" + ("dst-dnsname" if from_device else "src-dnsname")] = peer_key
    # The serving side's port: the remote's when the device initiates, the device's own otherwise.
    device_serves = p.direction == "inbound"
    port_key = "source-port" if from_device == device_serves else "destination-port"
    l4: dict = {port_key: {"operator": "eq", "port": p.port}}
    if p.transport == "tcp":
        l4["ietf-mud:direction-initiated"] = "to-device" if device_serves else "from-device"
    return {"name": f"ace{i}-{'fr' if from_device else 'to'}", "matches": {"ipv4": l3, p.transport: l4},
            "actions": {"forwarding": "accept"}}


def _mud_of(prof) -> dict:
    """A MUD document allowing exactly the profile's protocols, peers as DNS names."""
    fr = [_ace(i, p, f"{p.peer}.city.example", True) for i, p in enumerate(prof.protocols)]
    to = [_ace(i, p, f"{p.peer}.city.example", False) for i, p in enumerate(prof.protocols)]
    mqtt = {"name": "mqtt-fr", "matches": {"ipv4": {"protocol": 6}, "ietf-mud:mud": {"my-controller": [None]},
                                           "tcp": {"ietf-mud:direction-initiated": "from-device",
                                                   "destination-port": {"operator": "eq", "port": 1883}}},
            "actions": {"forwarding": "accept"}}
    return {
        "ietf-mud:mud": {"mud-version": 1, "mud-url": f"https://mud.example/{prof.name}.json", "systeminfo": prof.description,
                         "from-device-policy": {"access-lists": {"access-list": [{"name": "fr"}]}},
                         "to-device-policy": {"access-lists": {"access-list": [{"name": "to"}]}}},
        ACLS: {"acl": [{"name": "fr", "type": "ipv4-acl-type", "aces": {"ace": [mqtt] + fr}},
                       {"name": "to", "type": "ipv4-acl-type", "aces": {"ace": to}}]},
    }


@pytest.mark.parametrize("name", sorted(load_device_profiles()))
def test_round_trip_profile_to_mud_to_profile_keeps_every_protocol(tmp_path, name):
    prof = load_device_profiles()[name]
    text = profile_from_mud(_mud_of(prof), cls=name, domain=prof.domain, criticality=prof.criticality)
    back = load_device_profile(_write(tmp_path, text, name))
    assert [(p.transport, p.port, p.direction, p.peer) for p in back.protocols] == [
        (p.transport, p.port, p.direction, f"{p.peer}.city.example") for p in prof.protocols]
    assert back.peers[0] == "broker" and back.description == prof.description
    assert not read_mud(_mud_of(prof)).notes


def test_udp_direction_follows_the_fixed_port_and_controllers_are_named(tmp_path):
    doc = _fixture()
    aces = doc[ACLS]["acl"][0]["aces"]["ace"]  # the to-device ACL
    # An SNMP agent on the device: UDP to its port 161, any source port, no direction-initiated.
    aces.append({"name": "snmp", "matches": {"ipv4": {"protocol": 17}, "ietf-mud:mud": {"controller": "urn:example:nms"},
                                             "udp": {"destination-port": {"operator": "eq", "port": 161}}},
                 "actions": {"forwarding": "ietf-access-control-list:accept"}})
    # DNS to the well-known controller class of RFC 8520.
    aces.append({"name": "dns", "matches": {"ipv4": {"protocol": 17}, "ietf-mud:mud": {"controller": "urn:ietf:params:mud:dns"},
                                            "udp": {"source-port": {"lower-port": 53, "upper-port": 53}}},
                 "actions": {"forwarding": "accept"}})
    prof = load_device_profile(_write(tmp_path, profile_from_mud(doc, cls="pole", domain="energy", criticality="ordinary"), "pole"))
    got = {(p.name, p.transport, p.port, p.direction, p.peer) for p in prof.protocols}
    assert ("snmp", "udp", 161, "inbound", "urn:example:nms") in got
    assert ("dns", "udp", 53, "outbound", "dns") in got


def test_a_dns_name_on_the_device_side_is_not_taken_for_the_peer():
    doc = _fixture()
    ntp = doc[ACLS]["acl"][1]["aces"]["ace"][1]["matches"]["ipv4"]  # ntp-frdev: from the device
    ntp["ietf-acldns:src-dnsname"] = ntp.pop("ietf-acldns:dst-dnsname")
    pol = read_mud(doc)
    assert any("ace[1] (ntp-frdev): ietf-acldns:src-dnsname names the device's own side" in n for n in pol.notes)
    # The to-device half of the same flow still names the NTP server correctly.
    assert ("udp", 123, "outbound", "ntp.citynet.example") in {(p.transport, p.port, p.direction, p.peer) for p in pol.protocols}


def test_arguments_replace_the_placeholders(tmp_path):
    mqtt = {"client_prefix": "pole", "keepalive": 120, "clean_session": False, "versions": {"3.1.1": 0.5, "5.0": 0.5},
            "topics": [{"name": "state", "topic": "city/{district}/energy/pole/{id}/state", "direction": "publish",
                        "timing": "periodic", "interval": 30.0,
                        "fields": {"ts": {"type": "timestamp", "unit": "s"}, "lux": {"type": "float", "min": 0, "max": 1e5}}}]}
    text = profile_from_mud(_fixture(), cls="smart_pole", domain="energy", criticality="life_safety", weight=2.5,
                            hardware={"class": "mcu", "link": "lte", "rtt_ms": [20.0, 80.0]}, mqtt=mqtt,
                            responses={"acceptable": ["rate_limit"], "needs_fallback": ["quarantine"], "fallback": "photocell mode"},
                            description="pole with a \"quoted\" name\nand a newline")
    prof = load_device_profile(_write(tmp_path, text, "smart_pole"))
    assert "PLACEHOLDER" not in text
    assert prof.mqtt.client_prefix == "pole" and prof.mqtt.versions == {"3.1.1": 0.5, "5.0": 0.5}
    assert [f.name for f in prof.mqtt.topics[0].fields] == ["ts", "lux"] and prof.mqtt.topics[0].fields[1].max == 1e5
    assert prof.hardware.link == "lte" and prof.weight == 2.5
    assert prof.responses.allows("quarantine", fallback_ready=True) and not prof.responses.allows("quarantine")
    assert prof.description == "pole with a \"quoted\" name\nand a newline"


def test_text_from_the_mud_file_cannot_break_the_toml(tmp_path):
    doc = _fixture()
    ace = doc[ACLS]["acl"][1]["aces"]["ace"][5]  # the dropped ICMP ACE: its name goes into a comment
    ace["name"] = "ping\nclass = \"evil\""
    doc["ietf-mud:mud"]["systeminfo"] = "line one\n[hardware]"
    prof = load_device_profile(_write(tmp_path, profile_from_mud(doc, cls="smart_pole", domain="energy", criticality="ordinary"), "smart_pole"))
    assert prof.name == "smart_pole" and prof.description == "line one\n[hardware]"


def _mutate(path: list, value) -> dict:
    doc = _fixture()
    node = doc
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


ACE0 = [ACLS, "acl", 1, "aces", "ace", 0]  # mqtt-frdev


@pytest.mark.parametrize("path,value,message", [
    (ACE0 + ["matches", "tcp", "destination-port", "operator"], "range",
     f"{ACLS}.acl[1].aces.ace[0].matches.tcp.destination-port.operator: 'range' is not one of eq, lte, gte, neq"),
    (ACE0 + ["matches", "tcp", "destination-port", "port"], 70000,
     f"{ACLS}.acl[1].aces.ace[0].matches.tcp.destination-port.port: must be 0..65535, got 70000"),
    (ACE0 + ["matches", "tcp", "destination-port"], {"lower-port": 9, "upper-port": 2},
     f"{ACLS}.acl[1].aces.ace[0].matches.tcp.destination-port: lower-port 9 > upper-port 2"),
    (ACE0 + ["matches", "tcp", "ietf-mud:direction-initiated"], "sideways",
     f"{ACLS}.acl[1].aces.ace[0].matches.tcp.ietf-mud:direction-initiated: must be from-device or to-device"),
    (ACE0 + ["matches", "ipv4", "protocol"], 17, f"{ACLS}.acl[1].aces.ace[0].matches.ipv4.protocol: 17 contradicts the tcp match"),
    (ACE0 + ["actions", "forwarding"], "allow", f"{ACLS}.acl[1].aces.ace[0].actions.forwarding: 'allow' is not accept, drop or reject"),
    (ACE0 + ["actions"], KeyError, f"{ACLS}.acl[1].aces.ace[0].actions: missing"),
    (ACE0 + ["matches", "ietf-mud:mud"], {"my-controler": [None]}, f"{ACLS}.acl[1].aces.ace[0].matches.ietf-mud:mud.my-controler: unknown MUD match"),
    (ACE0 + ["matches", "tpc"], {}, f"{ACLS}.acl[1].aces.ace[0].matches.tpc: unknown match"),
    ([ACLS, "acl", 0, "aces", "ace", 1, "matches", "udp", "ietf-mud:direction-initiated"], "from-device",
     f"{ACLS}.acl[0].aces.ace[1].matches.udp.ietf-mud:direction-initiated: only defined for tcp"),
    (["ietf-mud:mud", "to-device-policy", "access-lists", "access-list", 0, "name"], "nope",
     f"ietf-mud:mud.to-device-policy.access-lists.access-list[0].name: no ACL named 'nope' in {ACLS}"),
    (["ietf-mud:mud", "mud-url"], "http://poles.example.com/x.json", "ietf-mud:mud.mud-url: must be an https:// URL"),
    (["ietf-mud:mud", "mud-url"], KeyError, "ietf-mud:mud.mud-url: missing"),
    ([ACLS, "acl"], {"name": "x"}, f"{ACLS}.acl: must be list"),
    ([ACLS], KeyError, f"{ACLS}: missing"),
])
def test_bad_mud_input_names_the_json_path(path, value, message):
    with pytest.raises(MudError) as e:
        profile_from_mud(_mutate(path, value), cls="smart_pole", domain="energy", criticality="essential")
    assert str(e.value).startswith(message), str(e.value)


def test_bad_arguments_and_files_are_named(tmp_path):
    with pytest.raises(MudError, match=r"^class: 'Smart Pole' must be"):
        profile_from_mud(_fixture(), cls="Smart Pole", domain="energy", criticality="essential")
    with pytest.raises(MudError, match=r"^domain: must be one of"):
        profile_from_mud(_fixture(), cls="pole", domain="water", criticality="essential")
    with pytest.raises(ProfileError, match=r"pole\.toml: criticality: must be one of"):  # the loader's own check
        import_mud_file(FIXTURE, tmp_path, cls="pole", domain="energy", criticality="vital")
    assert not (tmp_path / "pole.toml").exists()  # nothing invalid is written
    bad = tmp_path / "bad.json"
    bad.write_text("{\"ietf-mud:mud\": ")
    with pytest.raises(MudError, match=r"^bad\.json: not valid JSON"):
        load_mud_file(bad)
    bad.write_text(json.dumps(_mutate([ACLS], KeyError)))
    with pytest.raises(MudError, match=rf"^bad\.json: {ACLS}: missing"):
        import_mud_file(bad, tmp_path, cls="pole", domain="energy", criticality="essential")


def test_loader_reads_mud_url_and_checks_its_type(tmp_path):
    text = profile_from_mud(_fixture(), cls="smart_pole", domain="energy", criticality="essential")
    assert load_device_profile(_write(tmp_path, text, "smart_pole")).mud_url.startswith("https://poles.example.com/")
    broken = text.replace('mud_url = "https://poles.example.com/mud/smartpole-200.json"', "mud_url = 3")
    assert broken != text
    with pytest.raises(ProfileError, match=r"smart_pole\.toml: mud_url: must be a string"):
        load_device_profile(_write(tmp_path, broken, "smart_pole"))
    assert all(p.mud_url == "" for p in load_device_profiles().values())  # optional for hand-written profiles


def test_cli_import_mud_writes_a_loadable_profile(tmp_path, capsys):
    out = tmp_path / "profiles"
    args = ["profiles", "import-mud", str(FIXTURE), "--class", "smart_pole", "--domain", "energy",
            "--criticality", "essential", "--out", str(out), "--client-prefix", "pole"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'smart_pole.toml'}: 3 protocols" in printed and printed.count("dropped:") == 3
    prof = load_device_profiles(out)["smart_pole"]
    assert prof.mqtt.client_prefix == "pole" and len(prof.protocols) == 3
    assert main(["profiles", "--dir", str(out)]) == 0 and "1 profiles valid" in capsys.readouterr().out
    before = (out / "smart_pole.toml").read_text()
    assert main(args) == 2  # an existing profile is not overwritten without --force
    assert "already exists" in capsys.readouterr().err and (out / "smart_pole.toml").read_text() == before
    assert main(args[:-2] + ["--force"]) == 0
    assert load_device_profile(out / "smart_pole.toml").mqtt.client_prefix == "smart_pole"
    # A class whose default client prefix is already taken in that folder is refused, nothing written.
    (out / "pole_b.toml").write_text((out / "smart_pole.toml").read_text().replace('class = "smart_pole"', 'class = "pole_b"'))
    assert main(args[:-4] + ["--out", str(out), "--class", "pole_c", "--client-prefix", "smart_pole"]) == 2
    assert "mqtt.client_prefix: 'smart_pole' is already used by " in capsys.readouterr().err
    assert not (out / "pole_c.toml").exists()
    assert main(["profiles", "import-mud", str(tmp_path / "missing.json"), "--class", "x", "--domain", "energy",
                 "--criticality", "ordinary"]) == 2
    assert "missing.json: cannot read" in capsys.readouterr().err
    assert main(["profiles"]) == 0 and f"{len(load_device_profiles())} profiles valid" in capsys.readouterr().out


def test_the_agent_checks_traffic_against_an_imported_profile(tmp_path):
    """End to end: the imported profile drives the agent's conformance check (pcap only, no sending)."""
    from atlas.agent.capture.pcapfile import read_capture
    from atlas.agent.decode.packets import AddressBook, decode_packets
    from atlas.agent.detect.conformance import (
        ConformanceCheck,
        load_device_inventory,
        parse_peers,
    )
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    profiles = {"smart_pole": load_device_profile(_write(tmp_path, profile_from_mud(
        _fixture(), cls="smart_pole", domain="energy", criticality="essential"), "smart_pole"))}
    inv_path = tmp_path / "devices.json"
    inv_path.write_text(json.dumps({"device": [{"address": "10.20.1.7", "client_id": "smart_pole-d01-0001", "profile": "smart_pole"}]}))
    inv = load_device_inventory(inv_path, profiles)
    dev = "10.20.1.7"
    pkts = {
        "mqtts": Ether() / IP(src=dev, dst="10.20.0.1") / TCP(sport=40000, dport=8883, flags="S"),
        "ntp": Ether() / IP(src=dev, dst="10.20.0.5") / UDP(sport=40001, dport=123),
        "https": Ether() / IP(src=dev, dst="10.30.0.9") / TCP(sport=40002, dport=443, flags="S"),
        "ssh_answer": Ether() / IP(src=dev, dst="10.20.9.9") / TCP(sport=22, dport=50000, flags="SA"),
        "telnet_out": Ether() / IP(src=dev, dst="10.30.0.9") / TCP(sport=40003, dport=23, flags="S"),  # a drop ACE
        "syslog": Ether() / IP(src=dev, dst="10.20.0.1") / UDP(sport=40004, dport=5141),  # the dropped range
    }

    def flagged(which, peers=None):
        wrpcap(str(tmp_path / "t.pcap"), [pkts[k] for k in which])
        chk = ConformanceCheck(inv, profiles, peers=parse_peers(peers or {}))
        return [(f.evidence["proto"], f.evidence["port"]) for b in read_capture(tmp_path / "t.pcap")
                for f in chk.check(b, decode_packets(b, AddressBook()))]

    assert flagged(["mqtts", "ntp", "https", "ssh_answer"]) == []
    assert flagged(["telnet_out"]) == [("tcp", 23)]
    assert flagged(["syslog"]) == [("udp", 5141)]
    # The MUD file's DNS name is the peer's name in [detect] peers: NTP to another host is flagged.
    assert flagged(["ntp"], {"ntp.citynet.example": ["10.20.0.5"]}) == []
    assert flagged(["ntp"], {"ntp.citynet.example": ["10.20.0.6"]}) == [("udp", 123)]


def test_the_simulator_generates_devices_of_an_imported_profile(tmp_path):
    from atlas.sim.capture import generate_capture

    import_mud_file(FIXTURE, tmp_path / "p", cls="smart_pole", domain="energy", criticality="essential")
    gt = generate_capture(tmp_path / "t.pcap", devices=3, duration=130.0, seed=1, profiles_dir=tmp_path / "p")
    assert {d.cls for d in gt.inventory.devices} == {"smart_pole"} and len(gt.inventory.devices) == 3
    raw = (tmp_path / "t.pcap").read_bytes()
    for d in gt.inventory.devices:  # the placeholder status topic, published by each device
        assert f"city/d01/energy/smart_pole/{d.client_id}/status".encode() in raw
