"""Device profiles: the packaged ones are valid and complete; a bad profile is refused with an
error naming its file and key."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from atlas.link.rules import ACTIONS
from atlas.firmware_profiles import DEVICES_DIR, DOMAINS, ProfileError, load_device_profile, load_device_profiles

REQUIRED = {
    "transportation": {"traffic_signal_controller", "vehicle_detector", "cctv_camera", "parking_sensor", "bus_tracker"},
    "energy": {"smart_meter", "substation_rtu", "ev_charger", "street_light_controller", "solar_inverter"},
    "public_safety": {"emergency_call_box", "acoustic_gunshot_sensor", "air_quality_sensor", "flood_level_sensor", "cctv_public_safety"},
}


def test_packaged_profiles_cover_every_domain():
    profiles = load_device_profiles()
    for domain in DOMAINS:
        names = {n for n, p in profiles.items() if p.domain == domain}
        assert REQUIRED[domain] <= names
        assert len(names) >= 5


def test_packaged_profiles_say_what_the_simulator_and_the_hub_need():
    for name, p in load_device_profiles().items():
        assert p.path.endswith(f"{name}.toml")
        assert p.hardware.rtt_ms[0] > 0 and p.mqtt.keepalive > 0
        pubs = [t for t in p.mqtt.topics if t.direction == "publish"]
        assert pubs and all(t.rate > 0 for t in pubs)
        for t in p.mqtt.topics:
            assert t.topic.count("{id}") == 1
            for f in t.fields:
                if f.type in ("int", "float"):
                    assert f.min <= f.typical[0] <= f.typical[1] <= f.max, (name, t.name, f.name)
        # Every action is classified, and only known actions appear.
        assert set(p.responses.acceptable) | set(p.responses.needs_fallback) <= set(ACTIONS)
        if p.criticality == "life_safety":
            assert "quarantine" not in p.responses.acceptable
            assert not p.responses.allows("quarantine")
            assert p.responses.fallback


def test_traffic_signal_is_never_cut_off_without_its_fallback():
    tsc = load_device_profiles()["traffic_signal_controller"]
    assert tsc.criticality == "life_safety"
    assert not tsc.responses.allows("quarantine")
    assert tsc.responses.allows("quarantine", fallback_ready=True)
    assert tsc.responses.allows("rate_limit")
    assert "flash" in tsc.responses.fallback


def test_physical_limits_are_plausible():
    p = load_device_profiles()
    f = {x.name: x for x in p["smart_meter"].mqtt.topics[0].fields}
    assert 207 <= f["voltage_v"].typical[0] and f["voltage_v"].typical[1] <= 253  # 230 V +-10 %
    assert f["frequency_hz"].typical == (49.97, 50.03)
    rtu = {x.name: x for x in p["substation_rtu"].mqtt.topics[0].fields}
    assert rtu["bus_kv"].typical[0] > 10 and rtu["bus_kv"].typical[1] < 12  # an 11 kV bus
    assert p["substation_rtu"].open_tcp_ports == (22, 502, 2404, 20000)


SRC = (DEVICES_DIR / "traffic_signal_controller.toml").read_text()

# (change to the valid profile, key the error must name, words the message must contain)
BAD = [
    (lambda s: 'colour = "red"\n' + s, "colour", "unknown key"),
    (lambda s: s.replace("weight = 4.0", 'weight = "heavy"'), "weight", "must be a number"),
    (lambda s: s.replace('domain = "transportation"', 'domain = "water"'), "domain", "must be one of"),
    (lambda s: s.replace('criticality = "life_safety"', 'criticality = "vital"'), "criticality", "must be one of"),
    (lambda s: s.replace('class = "traffic_signal_controller"', 'class = "tsc"'), "class", "file name"),
    (lambda s: s.replace('domain = "transportation"\n', ""), "domain", "missing required key"),
    (lambda s: s.replace("min = 1, max = 8, sd = 2.5", "min = 9, max = 8, sd = 2.5"), "mqtt.topics[0].fields.phase.max", "must be >= min"),
    (lambda s: s.replace("typical = [10, 45]", "typical = [10, 95]"), "mqtt.topics[1].fields.cabinet_temp_c.typical", "within [min, max]"),
    (lambda s: s.replace("min = 1, max = 8, sd = 2.5", "min = 1, max = 8, sd = 2.5, colour = 1"), "mqtt.topics[0].fields.phase.colour", "unknown key"),
    (lambda s: s.replace('{ type = "int", min = 1, max = 8, sd = 2.5 }', '{ type = "complex" }'), "mqtt.topics[0].fields.phase.type", "must be one of"),
    (lambda s: s.replace("transport/signal/{id}/state", "energy/signal/{id}/state"), "mqtt.topics[0].topic", "must start with"),
    (lambda s: s.replace("transport/signal/{id}/state", "transport/signal/{id}/#"), "mqtt.topics[0].topic", "no wildcards"),
    (lambda s: s.replace("interval = 1.0", "interval = -1.0"), "mqtt.topics[0].interval", "must be >="),
    (lambda s: s.replace("qos = 0\nfields.ts", "qos = 2\nfields.ts", 1), "mqtt.topics[0].qos", "must be <= 1"),
    (lambda s: s.replace('timing = "periodic"', 'timing = "sometimes"', 1), "mqtt.topics[0].timing", "must be one of"),
    (lambda s: s.replace('{ "3.1.1" = 0.7, "5.0" = 0.3 }', '{ "3.1.1" = 0.7, "5.0" = 0.2 }'), "mqtt.versions", "sum to 1"),
    (lambda s: s.replace('{ "3.1.1" = 0.7, "5.0" = 0.3 }', '{ "3.1.1" = 0.7, "6.0" = 0.3 }'), "mqtt.versions.6.0", "unknown MQTT version"),
    (lambda s: s.replace("keepalive = 30", "keepalive = 70000"), "mqtt.keepalive", "must be <= 65535"),
    (lambda s: s.replace('acceptable = ["rate_limit", "filter"]', 'acceptable = ["rate_limit", "filter", "quarantine"]\nneeds_fallback_x = 1'),
     "responses.needs_fallback_x", "unknown key"),
    (lambda s: s.replace('acceptable = ["rate_limit", "filter"]', 'acceptable = ["rate_limit", "quarantine"]').replace(
        'needs_fallback = ["quarantine", "revoke_mqtt"]', 'needs_fallback = ["revoke_mqtt"]'), "responses.acceptable", "life_safety"),
    (lambda s: s.replace('acceptable = ["rate_limit", "filter"]', 'acceptable = ["rate_limit", "nuke"]'), "responses.acceptable", "'nuke' is not one of"),
    (lambda s: re.sub(r'fallback = "the controller.*"\n', "", s), "responses.fallback", "required when needs_fallback"),
    (lambda s: s.replace('peer = "tmc"', 'peer = "mars"'), "protocols[0].peer", "not listed in peers"),
    (lambda s: s.replace("port = 161", "port = 70000"), "protocols[0].port", "must be <= 65535"),
    (lambda s: s.replace('transport = "udp"', 'transport = "sctp"', 1), "protocols[0].transport", "must be one of"),
    (lambda s: s.replace('peers = ["broker", ', 'peers = ['), "peers", "must include 'broker'"),
    (lambda s: s.replace("[hardware]", "[hardware\n"), "", "not valid TOML"),
    (lambda s: s.replace('link = "fiber"', 'link = "carrier pigeon"'), "hardware.link", "must be one of"),
    (lambda s: s.replace("rtt_ms = [0.3, 2.0]", "rtt_ms = [3.0, 2.0]"), "hardware.rtt_ms", "low must be <= high"),
]


@pytest.mark.parametrize("change,key,words", BAD, ids=[f"{k or 'toml'}-{w[:20]}" for _, k, w in BAD])
def test_bad_profile_error_names_file_and_key(tmp_path, change, key, words):
    bad = change(SRC)
    assert bad != SRC, "the mutation did not apply"
    path = tmp_path / "traffic_signal_controller.toml"
    path.write_text(bad)
    with pytest.raises(ProfileError) as err:
        load_device_profiles(tmp_path)
    msg = str(err.value)
    assert msg.startswith("traffic_signal_controller.toml: "), msg
    if key:
        assert f": {key}: " in msg, msg
    assert words in msg, msg


def test_loading_a_folder_reports_the_bad_file_among_good_ones(tmp_path):
    for p in DEVICES_DIR.glob("*.toml"):
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "smart_meter.toml").write_text((DEVICES_DIR / "smart_meter.toml").read_text().replace("interval = 30.0", "interval = 0"))
    with pytest.raises(ProfileError, match=r"^smart_meter\.toml: mqtt\.topics\[0\]\.interval: must be >= 0\.01"):
        load_device_profiles(tmp_path)


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ProfileError, match="no \\*.toml device profiles"):
        load_device_profiles(tmp_path)
    with pytest.raises(ProfileError, match="not a directory"):
        load_device_profiles(tmp_path / "nope")
    with pytest.raises(ProfileError, match="cannot read"):
        load_device_profile(Path(tmp_path / "nope.toml"))


def test_client_ids_map_back_to_their_profile(tmp_path):
    from atlas.firmware_profiles import profile_of_client_id

    profiles = load_device_profiles()
    assert profile_of_client_id(profiles, "tsc-d01-0042").name == "traffic_signal_controller"
    assert profile_of_client_id(profiles, "pscam-d07-0001").name == "cctv_public_safety"
    assert profile_of_client_id(profiles, "mqtt-explorer-12ab") is None
    for name in ("smart_meter", "parking_sensor"):
        (tmp_path / f"{name}.toml").write_text((DEVICES_DIR / f"{name}.toml").read_text().replace('client_prefix = "pk"', 'client_prefix = "sm"'))
    with pytest.raises(ProfileError, match=r"^smart_meter\.toml: mqtt\.client_prefix: 'sm' is already used by parking_sensor\.toml"):
        load_device_profiles(tmp_path)
