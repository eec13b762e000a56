"""Critical-service declarations (firmware_profiles/services): the shipped ones load; each
mistake is one error naming the file and the key."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from atlas.firmware_profiles import load_device_profiles
from atlas.firmware_profiles.services import SERVICES_DIR, ServiceError, load_services

PROFILES = load_device_profiles()
GOOD = """service = "{name}"
domain = "transportation"
criticality = "life_safety"
scope = "district"
deadline_s = 2
[[depends_on]]
class = "traffic_signal_controller"
min_up = 1.0
"""


def test_shipped_services_load_and_cover_every_life_safety_profile():
    services = load_services()
    assert {"traffic_control", "emergency_response"} <= set(services)
    fed = {d.name for s in services.values() for d in s.of_kind("class")}
    life_safety = {n for n, p in PROFILES.items() if p.criticality == "life_safety"}
    assert life_safety <= fed, f"life-safety classes that feed no service: {life_safety - fed}"
    er = services["emergency_response"]
    assert [d.name for d in er.of_kind("service")] == ["traffic_control"]


def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text)
    return tmp_path


@pytest.mark.parametrize("text, expected", [
    (GOOD.replace('scope = "district"', 'scope = "street"'), "x.toml: scope: must be one of district, city"),
    (GOOD.replace("min_up = 1.0", "min_up = 0"), "x.toml: depends_on[0].min_up: must be > 0"),
    (GOOD.replace("traffic_signal_controller", "toaster"), "x.toml: depends_on[0].class: 'toaster' is not a device profile"),
    (GOOD + '[[depends_on]]\nservice = "nowhere"\n', "x.toml: depends_on[1].service: 'nowhere' is not a declared service"),
    (GOOD + '[[depends_on]]\ngateway = "gw-1"\nbroker = "10.0.0.1"\n', "x.toml: depends_on[1]: needs exactly one of"),
    (GOOD + '[[depends_on]]\ndevice = "tsc-1"\nmin_up = 0.5\n', "x.toml: depends_on[2].min_up: only for a class dependency".replace("[2]", "[1]")),
    (GOOD.replace("deadline_s = 2", "deadline_s = -1"), "x.toml: deadline_s: must be > 0"),
    (GOOD.replace("deadline_s = 2\n", ""), "x.toml: deadline_s: missing required key"),
    ("colour = 'red'\n" + GOOD, "x.toml: colour: unknown key"),
    (GOOD + "colour = 'red'\n", "x.toml: depends_on[0].colour: unknown key"),
    (GOOD.replace('service = "{name}"', 'service = "y"'), "x.toml: service: must equal the file name"),
    ("service = ", "x.toml: not valid TOML"),
])
def test_each_mistake_names_file_and_key(tmp_path, text, expected):
    folder = _folder(tmp_path, {"x": text.replace("{name}", "x")})
    with pytest.raises(ServiceError) as err:
        load_services(folder, PROFILES)
    assert expected in str(err.value)


def test_a_dependency_cycle_is_refused(tmp_path):
    a = GOOD.replace("{name}", "a") + '[[depends_on]]\nservice = "b"\n'
    b = GOOD.replace("{name}", "b") + '[[depends_on]]\nservice = "a"\n'
    with pytest.raises(ServiceError, match=r"a.toml: depends_on: cycle a -> b -> a"):
        load_services(_folder(tmp_path, {"a": a, "b": b}), PROFILES)


def test_shipped_folder_copy_loads(tmp_path):
    shutil.copytree(SERVICES_DIR, tmp_path / "s")
    assert set(load_services(tmp_path / "s", PROFILES)) == set(load_services())
