"""Response policies by name, chosen in central.toml (`[decide] policy = "playbook"`).

A new policy (a learned responder) plugs in by adding a factory here: it receives the hub's
validated configuration and returns a `Policy`."""
from __future__ import annotations

from typing import Any, Callable

from atlas.central.decide import Policy

# A factory gets the hub's validated HubConfig (atlas.central.config, which imports this
# registry to check names: typed Any here so the two do not import each other).
PolicyFactory = Callable[[Any], Policy]


def _playbook(config: Any) -> Policy:
    from atlas.central.decide.playbook import Playbook

    return Playbook(config.decide.playbook, shadow=config.decide.shadow)


POLICIES: dict[str, PolicyFactory] = {"playbook": _playbook}
DEFAULT_POLICY = "playbook"


def build_policy(config: Any) -> Policy:
    """The policy `[decide] policy` names (the config loader has checked the name)."""
    return POLICIES[config.decide.policy](config)
