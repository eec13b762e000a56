"""Model push over the real loop: `atlas-central serve` and `atlas-agent run` (subprocesses,
mutual TLS) in a network namespace the test creates, a device sending traffic the agent sniffs.

An operator's `atlas-central models push` reaches the agent, which checks, installs and swaps
the bundle while it keeps capturing, and reports the new version (`atlas-agent status`, and at
the hub `atlas-central gateways`). Refused, with the reason recorded at the hub and the running
model untouched: a bundle for another feature schema, one whose signature is not the hub's, and
one whose content was changed after the hub signed it. A gateway that was away gets the desired
model when it reconnects, a restarted agent runs the installed bundle, and pushing a stored
version by name rolls back to it."""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab  # noqa: E402
from lab import wait_for  # noqa: E402

from atlas.agent.detect import packaged_models_dir  # noqa: E402
from atlas.link.bundle import Bundle, pack_bundle, read_bundle_dir  # noqa: E402
from atlas.link.signing import RuleSigner  # noqa: E402
from atlas.central.models import bundle_record  # noqa: E402
from atlas.central.pki import PkiDir, init_pki, issue_gateway  # noqa: E402
from atlas.central.store import open_store  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.slow]

GATEWAY = "lab-gw"
HUB_PORT = 7443  # inside the gateway's namespace, on its own loopback
TRAFFIC = """
import socket, sys, time
host, seconds = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, sent = time.monotonic() + seconds, 0
while time.monotonic() < end and sent < 100000:
    s.sendto(b"x" * 64, (host, 9999)); sent += 1
    time.sleep(0.002)
print(sent)
"""


def cli(tool: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"atlas.{tool}.cli", *args], capture_output=True, text=True, timeout=timeout)


def models_dir(tmp: Path, version: str, **meta_changes) -> Path:
    """The packaged models under another version, as an operator's folder."""
    folder = tmp / f"models-{version}"
    shutil.copytree(packaged_models_dir(), folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["version"] = version
    meta["anomaly"]["version"] = f"{version}-ae"
    meta.update(meta_changes)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


class Loop:
    def __init__(self, the_lab: lab.Lab, tmp: Path):
        self.lab, self.tmp = the_lab, tmp
        self.central = ["--config", str(tmp / "central.toml")]
        self.socket = str(tmp / "agent.sock")
        self.agent: subprocess.Popen | None = None

    def start_agent(self) -> None:
        self.agent = self.lab.popen(self.lab.gw, [sys.executable, "-m", "atlas.agent.cli", "run", "--config", str(self.tmp / "agent.toml")],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop_agent(self) -> None:
        self.agent.send_signal(signal.SIGTERM)
        self.agent.wait(timeout=30)

    def status(self) -> dict | None:
        if self.agent.poll() is not None:
            raise AssertionError(f"the agent exited:\n{self.agent.stdout.read()}")
        r = cli("agent", "status", "--json", "--socket", self.socket)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def running(self) -> str | None:
        s = self.status()
        return s["models"]["bundle"] if s and s["hub"]["state"] == "connected" else None

    def gateway(self) -> dict:
        return next(g for g in json.loads(cli("central", "gateways", "--json", *self.central).stdout) if g["id"] == GATEWAY)

    def push(self, folder: Path) -> subprocess.CompletedProcess:
        return cli("central", "models", "push", str(folder), "--gateway", GATEWAY, "--json", *self.central)

    def rollout(self, version: str) -> dict | None:
        listing = json.loads(cli("central", "models", "list", "--json", *self.central).stdout)
        return next((s for s in listing["gateways"] if s["gateway"] == GATEWAY and s["version"] == version), None)


@pytest.fixture
def loop(tmp_path):
    reason = lab.netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with lab.Lab(subnet="10.83.0.0/24", subnet6="fd83::/64") as the_lab:
        device = the_lab.add_device("sensor")
        pki = init_pki(tmp_path / "pki")
        tls = issue_gateway(pki.root, GATEWAY)
        (tmp_path / "central.toml").write_text(f"""
[hub]
listen = "127.0.0.1:{HUB_PORT}"
database = "central.db"
pki = "pki"
operator_poll = 0.1
""")
        lab.write_agent_toml(tmp_path / "agent.toml", gateway=GATEWAY, interface=the_lab.bridge, hub_port=HUB_PORT, tls=tls,
                             signing_pub=PkiDir(pki.root).signing_pub)
        hub = the_lab.popen(the_lab.gw, [sys.executable, "-m", "atlas.central.cli", "serve", "--config", str(tmp_path / "central.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        the_loop = Loop(the_lab, tmp_path)
        the_loop.start_agent()
        try:
            assert wait_for(the_loop.running, 60), "the agent did not connect to the hub"
        except AssertionError:
            if hub.poll() is not None:
                raise AssertionError(f"the hub exited:\n{hub.stdout.read()}") from None
            raise
        yield the_loop, device, pki


def test_push_swap_refusals_and_reconnect(loop):
    the_loop, device, pki = loop
    tmp = the_loop.tmp
    shipped = read_bundle_dir(packaged_models_dir()).version
    assert the_loop.running() == shipped
    assert wait_for(lambda: the_loop.gateway()["model_versions"].get("bundle") == shipped, 10)

    # 1. a good bundle, pushed while a device sends traffic the agent is capturing
    traffic = the_loop.lab.popen(device.netns, [sys.executable, "-c", TRAFFIC, the_loop.lab.gw_ip, "6"], stdout=subprocess.PIPE, text=True)
    assert wait_for(lambda: (the_loop.status() or {}).get("pipeline", {}).get("frames", 0) > 200, 20)
    before = the_loop.status()
    t0 = time.monotonic()
    r = the_loop.push(models_dir(tmp, "e2e-2"))
    assert r.returncode == 0, r.stderr
    assert "sent now to 1 connected gateway" in json.loads(r.stdout)["result"]
    assert wait_for(lambda: the_loop.running() == "e2e-2", 20), "the agent did not swap to the pushed model"
    swap_s = time.monotonic() - t0
    after = the_loop.status()
    assert after["models"]["anomaly"] == "e2e-2-ae"
    assert after["pipeline"]["frames"] > before["pipeline"]["frames"]  # capture never stopped
    assert after["model_updates"][-1]["applied"] is True
    assert "last push e2e-2 installed" in cli("agent", "status", "--socket", the_loop.socket).stdout
    traffic.wait(timeout=30)
    assert wait_for(lambda: the_loop.gateway()["model_versions"].get("bundle") == "e2e-2", 10)
    assert the_loop.gateway()["model_push"]["state"] == "applied"
    assert "e2e-2" in cli("central", "gateways", *the_loop.central).stdout  # the MODEL column
    final = the_loop.status()
    assert final["kernel_drops"] == 0 and final["pipeline"]["frames"] >= after["pipeline"]["frames"]
    print(f"push -> new model running at the agent: {swap_s:.2f} s")

    # 2. a bundle for another feature schema: refused by the agent, the reason at the hub
    r = the_loop.push(models_dir(tmp, "e2e-schema", schema_version=99))
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: (the_loop.rollout("e2e-schema") or {}).get("state") == "refused", 20)
    assert the_loop.rollout("e2e-schema")["error"].startswith("schema_version:")
    assert the_loop.running() == "e2e-2"

    # 3. tampered: (a) a bundle whose stored signature is not the hub's, (b) content changed
    # after the hub signed it. Written straight into the hub's database, as an attacker with
    # write access to it would; the push then only sends what is stored.
    store = open_store(tmp / "central.db", migrate=False)
    forged = bundle_record(read_bundle_dir(models_dir(tmp, "e2e-forged")), "mallory", time.time())
    forged.signature = RuleSigner(Ed25519PrivateKey.generate()).sign_model("bundle", "e2e-forged", forged.content).signature
    genuine = read_bundle_dir(models_dir(tmp, "e2e-changed"))
    hub_signer = RuleSigner.from_pem_file(PkiDir(pki.root).signing_key)
    signature = hub_signer.sign_model("bundle", "e2e-changed", pack_bundle(genuine)).signature
    changed = Bundle("e2e-changed", dict(genuine.files))
    changed.files["classifier.tflite"] = changed.files["classifier.tflite"][:-1] + b"\x01"
    altered = bundle_record(changed, "mallory", time.time())
    altered.signature = signature
    with store.transaction():
        store.put_model_bundle(forged)
        store.put_model_bundle(altered)
    store.close()
    for version in ("e2e-forged", "e2e-changed"):
        r = the_loop.push(tmp / f"models-{version}") if version == "e2e-forged" else \
            cli("central", "models", "push", str(_bundle_file(tmp, changed)), "--gateway", GATEWAY, "--json", *the_loop.central)
        assert r.returncode == 0, r.stderr
        assert wait_for(lambda v=version: (the_loop.rollout(v) or {}).get("state") == "refused", 20), version
        assert the_loop.rollout(version)["error"].startswith("signature:"), the_loop.rollout(version)
    assert the_loop.running() == "e2e-2"
    assert the_loop.status()["hub"]["counters"]["models_refused"] >= 3
    audit = cli("central", "audit", "verify", "--json", *the_loop.central)
    assert audit.returncode == 0, audit.stdout + audit.stderr

    # 4. a gateway that was away converges when it reconnects; a restart keeps what was installed
    the_loop.stop_agent()
    r = the_loop.push(models_dir(tmp, "e2e-3"))
    assert r.returncode == 0 and "sent now to 0 connected" in json.loads(r.stdout)["result"]
    the_loop.start_agent()
    assert wait_for(lambda: the_loop.running() == "e2e-3", 60), "the reconnected agent did not get the desired model"
    assert wait_for(lambda: the_loop.gateway()["model_versions"].get("bundle") == "e2e-3", 10)
    the_loop.stop_agent()
    the_loop.start_agent()
    assert wait_for(the_loop.running, 60) == "e2e-3"  # from <state_dir>/models/current, nothing re-sent
    assert the_loop.status()["model_updates"] == []

    # 5. roll back: the operator pushes the stored previous version by name
    r = cli("central", "models", "push", "e2e-2", "--gateway", GATEWAY, "--json", *the_loop.central)
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: the_loop.running() == "e2e-2", 20), "the agent did not roll back"
    state = tmp / "agent-state" / "models"
    assert (state / "current").resolve().name == "e2e-2" and (state / "previous").resolve().name == "e2e-3"


def _bundle_file(tmp: Path, bundle: Bundle) -> Path:
    path = tmp / f"{bundle.version}.bundle"
    path.write_bytes(pack_bundle(bundle))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == bundle.sha256
    return path
