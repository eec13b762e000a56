"""The house's layers hold: import-linter's contract (setup.cfg) and no import cycle between the
sibling packages of any part (agent stages, hub stages, simulator stages, the contract)."""
from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp", reason="import-linter (the dev extra) is not installed")

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("atlas.link", "atlas.agent", "atlas.central", "atlas.sim", "atlas.train")


def test_the_layers_contract_is_kept():
    # as `lint-imports --no-cache` in the repository, without depending on where its script is
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("part", PARTS)
def test_no_cycle_between_sibling_packages(part):
    graph = grimp.build_graph(part)
    depth = part.count(".") + 1
    children = sorted(m for m in graph.modules if m.count(".") == depth)
    cycles = [(a, b) for a, b in itertools.combinations(children, 2)
              if graph.chain_exists(a, b, as_packages=True) and graph.chain_exists(b, a, as_packages=True)]
    assert cycles == []


def test_the_hub_and_the_simulator_never_import_the_agent_but_through_the_contract():
    out = subprocess.run(["git", "grep", "-nE", r"(from|import) atlas\.agent", "--", "central", "link", "firmware_profiles"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.stdout == ""
