"""The distribution: every package is listed, the gateway extra stays lean, the CLIs start."""
import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup():
    cp = configparser.ConfigParser()
    cp.read(ROOT / "setup.cfg")
    return cp


def _mapping():
    dirs = {}
    for line in _setup()["options"]["package_dir"].strip().splitlines():
        name, _, folder = (x.strip() for x in line.partition("="))
        dirs[name] = folder
    return dirs


def test_every_python_package_folder_is_listed():
    listed = set(_setup()["options"]["packages"].split())
    found = set()
    for name, folder in _mapping().items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    # data folders (models, profiles) are listed as packages too and carry their package_data
    data = {name for name in _setup()["options.package_data"]}
    assert found - listed == set(), "add these to [options] packages in setup.cfg"
    assert listed - found - data == set(), "listed in setup.cfg but missing"


def test_wheel_builds_without_warnings_and_carries_models_and_profiles(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    log = r.stdout + r.stderr
    assert "would be ignored" not in log and "absent from the `packages`" not in log
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    assert {"atlas/agent/detect/models/anomaly.tflite", "atlas/agent/detect/models/meta.json",
            "atlas/firmware_profiles/devices/smart_meter.toml", "atlas/firmware_profiles/gateways/raspberry_pi_4.toml",
            "atlas/systemd/agent.toml"} <= set(names)


def test_gateway_extra_has_no_tensorflow_and_no_hub_dependencies():
    agent = _setup()["options.extras_require"]["agent"].lower()
    for heavy in ("tensorflow", "keras", "matplotlib", "torch"):
        assert heavy not in agent


def test_agent_package_does_not_import_the_hub_or_tensorflow():
    code = (
        "import sys, atlas.agent.cli, atlas.agent.pipeline, atlas.agent.detect;"
        "bad = [m for m in sys.modules if m.startswith(('atlas.central', 'atlas.sim', 'tensorflow', 'keras'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_version_and_help():
    r = subprocess.run([sys.executable, "-m", "atlas.agent.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("atlas-agent ")


def test_test_files_have_unique_basenames():
    # pytest's default import mode puts each test folder on sys.path: equal basenames collide.
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
