"""Response policies, by name, turned into the rules they would put in force on the gateways.

    none       detect only: no rule
    static     the paper's static playbook: quarantine whatever is flagged (STATIC_TTL_S)
    playbook   the hub's built-in criticality-aware table (atlas.central.decide.playbook) + shield
    PATH       a hub configuration (central.toml): the policy `atlas-central serve` would build
               from it (its [decide] playbook cells, shadow mode and allowlist)

Every policy answers the same incidents (ATLAS's), starting at the incident's raise plus the
dispatch delay, on the incident's gateway, for the rule's TTL (baselines.playbook).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from atlas.central.decide import Allowlist, Policy
from atlas.central.decide.playbook import Playbook
from atlas.sim.evaluate.baselines.playbook import (
    DISPATCH_S,
    STATIC_TTL_S,
    Response,
    atlas_responses,
    city_inventory,
    static_responses,
)

BUILTIN = ("none", "static", "playbook")
HUB = "hub"  # the key of a policy loaded from a hub configuration


class PolicyError(ValueError):
    """A policy name that is neither built in nor a readable hub configuration."""


def policy_key(name: str) -> str:
    """How the report names the policy: a built-in's name, else "hub" (a configuration file)."""
    return name if name in BUILTIN else HUB


def load_policy(name: str) -> tuple[Policy | None, tuple[str, ...]]:
    """The hub Policy for `name` (None for none and static) and its allowlist entries."""
    if name in ("none", "static"):
        return None, ()
    if name == "playbook":
        return Playbook(), ()
    path = Path(name)
    if not path.is_file():
        raise PolicyError(f"--policy {name!r}: not one of {', '.join(BUILTIN)} and not a hub configuration file")
    from atlas.central.config import ConfigError, load_config
    from atlas.central.pipeline import build_policy

    try:
        config = load_config(path)
    except ConfigError as err:
        raise PolicyError(f"--policy {name}: {err}") from None
    return build_policy(config), config.decide.allowlist


def responses(name: str, city: Any, incidents: Mapping[str, Iterable[Any]], *,
              dispatch_s: float = DISPATCH_S) -> list[Response]:
    """The rules policy `name` puts in force for these incidents (per gateway, ATLAS's)."""
    incidents = {gw: list(v) for gw, v in incidents.items()}
    policy, allow = load_policy(name)
    if name == "none":
        return []
    if name == "static":
        return static_responses(incidents, ttl=STATIC_TTL_S, dispatch_s=dispatch_s)
    allowlist = Allowlist.parse([str(g.get("broker")) for g in city.gateways if g.get("broker")] + list(allow))
    out = atlas_responses(incidents, city_inventory(city), policy=policy, allowlist=allowlist, dispatch_s=dispatch_s)
    return [_named(r, policy_key(name)) for r in out]


def _named(r: Response, name: str) -> Response:
    return replace(r, policy=name)


__all__ = ["BUILTIN", "HUB", "PolicyError", "load_policy", "policy_key", "responses"]
