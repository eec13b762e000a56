"""The committed atlas.v1 code is exactly what protos/generate.sh makes from the .proto files."""
from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "protos" / "atlas" / "v1"


def test_generated_code_matches_protos(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the `dev` extra) regenerates the code")
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", str(ROOT / "protos" / "generate.sh"), str(tmp_path)], check=True, env=env)
    fresh = sorted(p.name for p in (tmp_path / "atlas" / "v1").iterdir())
    committed = sorted(p.name for p in V1.iterdir() if p.suffix in (".py", ".pyi") and p.name != "__init__.py")
    assert fresh == committed, "generated files differ from the committed ones: run protos/generate.sh"
    stale = [name for name in fresh if not filecmp.cmp(tmp_path / "atlas" / "v1" / name, V1 / name, shallow=False)]
    assert not stale, f"{stale} do not match the .proto files: run protos/generate.sh and commit"


def test_package_is_atlas_v1_and_every_field_documented():
    from atlas.v1 import link_pb2, rules_pb2, telemetry_pb2

    assert link_pb2.DESCRIPTOR.package == "atlas.v1"
    assert link_pb2.DESCRIPTOR.services_by_name["GatewayLink"].methods_by_name["Connect"].client_streaming
    # Every message is preceded by a comment in its .proto (a cheap guard for "documented").
    for module in (link_pb2, rules_pb2, telemetry_pb2):
        source = (ROOT / "protos" / module.DESCRIPTOR.name).read_text().splitlines()
        for name in module.DESCRIPTOR.message_types_by_name:
            line = next(i for i, text in enumerate(source) if text.startswith(f"message {name} "))
            assert source[line - 1].startswith("//") or name in ("HubMessage", "AgentMessage", "Rule", "SignedRule", "RuleChange", "RuleAcks"), name
