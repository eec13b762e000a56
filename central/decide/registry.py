"""Response policies by name, chosen in central.toml (`[decide] policy = "playbook"`).

A new policy (a learned responder) plugs in by adding a factory here: it receives the hub's
validated configuration and returns a `Policy`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from atlas.central.decide import Policy

if TYPE_CHECKING:
    from atlas.central.config import HubConfig


def _playbook(config: "HubConfig") -> Policy:
    from atlas.central.decide.playbook import Playbook

    return Playbook(config.decide.playbook, shadow=config.decide.shadow)


POLICIES: dict[str, Callable[["HubConfig"], Policy]] = {"playbook": _playbook}
DEFAULT_POLICY = "playbook"


def build_policy(config: "HubConfig") -> Policy:
    """The policy `[decide] policy` names (the config loader has checked the name)."""
    return POLICIES[config.decide.policy](config)
