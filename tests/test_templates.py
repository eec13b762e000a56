"""The shipped config templates (systemd/agent.toml, systemd/central.toml) document every
section and key the loaders accept, and nothing they do not. The accepted keys come from the
loaders themselves: the agent's config dataclasses, the keys the hub's loader asks for."""
from __future__ import annotations

import re
import sys
from dataclasses import fields
from pathlib import Path

from atlas.agent.config import AgentConfig, parse_config as parse_agent
from atlas.central.config import parse_config as parse_hub
from atlas.central.decide import ATTACKER_CLASSES
from atlas.central.decide.playbook import CELL_KEYS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
# a commented-out key (`# key = value`) or table header (`# [a.b]`): documented, not set
COMMENTED = re.compile(r"#\s?(\[[\w.]+\]\s*(#.*)?|[A-Za-z_]\w*\s*=.*)$")


def uncommented(text: str) -> str:
    """The template with every commented-out key and table switched on."""
    return "\n".join(m.group(1) if (m := COMMENTED.fullmatch(line)) else line for line in text.splitlines()) + "\n"


def agent_accepted() -> set[str]:
    cfg = AgentConfig()
    return {f"{s.name}.{f.name}" for s in fields(cfg) if s.name != "source" for f in fields(getattr(cfg, s.name))}


def agent_documented(text: str) -> set[str]:
    doc = tomllib.loads(uncommented(text))
    return {f"{section}.{key}" for section, table in doc.items() for key in table}


def test_agent_template_documents_every_key_and_no_other():
    text = (SYSTEMD / "agent.toml").read_text()
    documented, accepted = agent_documented(text), agent_accepted()
    assert accepted - documented == set(), "document these in systemd/agent.toml"
    assert documented - accepted == set(), "systemd/agent.toml names keys the agent does not read"
    assert set(tomllib.loads(text)) == {s.name for s in fields(AgentConfig) if s.name != "source"}  # every section shipped
    parse_agent(tomllib.loads(text), "agent.toml")  # the template as shipped is a valid config


def test_the_agent_check_would_catch_a_missing_key():
    text = (SYSTEMD / "agent.toml").read_text().replace("# spool_max_mb", "# spool_size")
    assert agent_accepted() - agent_documented(text) == {"hub.spool_max_mb"}


def _table(doc: dict, where: str) -> dict:
    for part in where.split(".") if where else ():
        doc = doc[part]
    return doc


def test_hub_template_documents_every_key_the_loader_reads():
    text = (SYSTEMD / "central.toml").read_text()
    doc = tomllib.loads(uncommented(text))
    asked: dict[str, set[str]] = {}
    parse_hub(doc, "central.toml", base=SYSTEMD, asked=asked)
    assert {"", "hub", "tls", "incidents", "decide", "correlate"} <= set(asked)  # every table was read
    for where, keys in asked.items():
        missing = keys - set(_table(doc, where))
        assert missing == set(), f"document {sorted(missing)} in [{where}] of systemd/central.toml"
    cells = [cell for row in doc["decide"]["playbook"].values() for cell in row.values()]
    assert set(CELL_KEYS) <= {k for cell in cells for k in cell}, "show every playbook cell key"
    assert set(ATTACKER_CLASSES) <= {cls for row in doc["decide"]["playbook"].values() for cls in row}
    assert all(cls in text for cls in ATTACKER_CLASSES)


def test_hub_template_as_shipped_is_valid_and_says_why_shadow_is_on():
    text = (SYSTEMD / "central.toml").read_text()
    cfg = parse_hub(tomllib.loads(text), "central.toml", base=SYSTEMD)
    assert cfg.decide.shadow is True  # on purpose, while the code's default is off:
    assert parse_hub({"hub": {"database": "x.db"}}).decide.shadow is False
    assert "Without this key the hub enforces" in text
