"""SHACL over the city graph: one row per seeded inventory or declaration error; each finding
names the device (or service) and the field, and a clean city has none."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("pyshacl", reason="the ontology extra (make test installs it)")

from atlas.central.ontology.facts import load_facts  # noqa: E402
from atlas.central.ontology.graph import build_graph  # noqa: E402
from atlas.central.ontology.shapes import check  # noqa: E402

CITY = {"gateways": [{"id": "gw-a", "district": "d01", "domain": "transportation", "subnet": "10.1.0.0/16",
                      "broker": "10.1.0.1"},
                     {"id": "gw-b", "district": "d01", "domain": "public_safety", "subnet": "10.2.0.0/16",
                      "broker": "10.2.0.1"}]}
DEVICES = [
    ("10.1.1.1", "tsc-1", "gw-a", "traffic_signal_controller", ""),
    ("10.1.1.2", "vd-1", "gw-a", "vehicle_detector", ""),
    ("10.1.1.3", "vd-2", "gw-a", "vehicle_detector", ""),
    ("10.2.1.1", "aq-1", "gw-b", "air_quality_sensor", ""),
]
SERVICE = """service = "{name}"
domain = "transportation"
criticality = "life_safety"
scope = "district"
deadline_s = 2
[[depends_on]]
class = "traffic_signal_controller"
[[depends_on]]
class = "vehicle_detector"
min_up = 0.5
"""


def inventory_text(devices) -> str:
    out = []
    for address, client, gw, profile, crit in devices:
        out.append("[[device]]\n" + f'address = "{address}"\nclient_id = "{client}"\ngateway = "{gw}"\nprofile = "{profile}"\n'
                   + (f'criticality = "{crit}"\n' if crit else ""))
    return "\n".join(out)


def findings(tmp_path, devices=DEVICES, extra_dependency: str = ""):
    (tmp_path / "inventory.toml").write_text(inventory_text(devices))
    (tmp_path / "city.json").write_text(json.dumps(CITY))
    services = tmp_path / "services"
    services.mkdir(exist_ok=True)
    (services / "signals.toml").write_text(SERVICE.replace("{name}", "signals") + extra_dependency)
    facts = load_facts(inventory=tmp_path / "inventory.toml", city=tmp_path / "city.json", services_dir=services)
    return [str(f) for f in check(build_graph(facts), facts)]


def test_a_clean_city_has_no_findings(tmp_path):
    assert findings(tmp_path) == []


def replace(devices, index, **changes):
    out = list(devices)
    address, client, gw, profile, crit = out[index]
    row = dict(address=address, client=client, gw=gw, profile=profile, crit=crit) | changes
    out[index] = (row["address"], row["client"], row["gw"], row["profile"], row["crit"])
    return out


@pytest.mark.parametrize("devices, dependency, expected", [
    pytest.param(replace(DEVICES, 3, crit="life_safety"), "",
                 "error: device aq-1 (%s: device[3]): criticality: a life-safety device needs a fallback",
                 id="life-safety device without a fallback"),
    pytest.param(DEVICES, '[[depends_on]]\ndevice = "ghost-7"\n',
                 "error: service signals/d01: depends_on.device: depends on a device that is not in the inventory: ghost-7",
                 id="service depends on an unknown device"),
    pytest.param(replace(DEVICES, 2, address="10.1.1.2"), "",
                 "error: address 10.1.1.2 behind gw-a: address: two devices have one address behind one gateway (vd-1, vd-2)",
                 id="two devices with one address"),
    pytest.param(replace(DEVICES, 1, crit="vital"), "",
                 "error: device vd-1 (%s: device[1]): criticality: must be one of life_safety, essential, ordinary",
                 id="criticality outside the scale"),
    pytest.param(DEVICES, '[[depends_on]]\ngateway = "gw-nowhere"\n',
                 "error: service signals/d01: depends_on.gateway: depends on a gateway the city does not have: gw-nowhere",
                 id="service depends on an unknown gateway"),
    pytest.param(DEVICES, '[[depends_on]]\nbroker = "10.9.0.1"\n',
                 "error: service signals/d01: depends_on.broker: depends on a broker no gateway uses: 10.9.0.1",
                 id="service depends on an unknown broker"),
    pytest.param(replace(DEVICES, 2, client="vd-1"), "",
                 "warning: credential vd-1: client_id: two devices log in with one MQTT credential: revoking it cuts off both (vd-1, vd-1~2)",
                 id="one credential for two devices"),
    pytest.param(replace(DEVICES, 3, profile="toaster", crit="ordinary"), "",
                 "warning: device aq-1 (%s: device[3]): profile: not a known device profile",
                 id="unknown profile"),
])
def test_each_seeded_error_is_found_naming_device_and_field(tmp_path, devices, dependency, expected):
    found = findings(tmp_path, devices, dependency)
    expected = expected.replace("%s", str(tmp_path / "inventory.toml"))
    assert len(found) == 1 and found[0].startswith(expected), found
