"""Response policies, by name, turned into the rules they would put in force on the gateways.

    none       detect only: no rule
    static     the paper's static playbook: quarantine whatever is flagged (STATIC_TTL_S)
    playbook   the hub's built-in criticality-aware table (atlas.central.decide.playbook) + shield
    NAME       any other policy the hub registers by name (atlas.central.decide.registry), with
               the hub's default configuration
    PATH       a hub configuration (central.toml): the policy `atlas-central serve` would build
               from it ([decide] policy, its playbook cells, shadow mode and allowlist)

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
    """How the report names the policy: its name, else "hub" (a configuration file)."""
    from atlas.central.decide.registry import POLICIES

    return name if name in BUILTIN or name in POLICIES else HUB


def load_policy(name: str) -> tuple[Policy | None, tuple[str, ...]]:
    """The hub Policy for `name` (None for none and static) and its allowlist entries."""
    if name in ("none", "static"):
        return None, ()
    if name == "playbook":
        return Playbook(), ()
    from atlas.central.config import ConfigError, DecideConfig, HubConfig, load_config
    from atlas.central.decide.registry import POLICIES, build_policy

    if name in POLICIES:  # the hub's defaults; the database is never opened
        return build_policy(HubConfig(None, Path("unused.db"), decide=DecideConfig(policy=name))), ()
    path = Path(name)
    if not path.is_file():
        known = ", ".join(dict.fromkeys([*BUILTIN, *sorted(POLICIES)]))
        raise PolicyError(f"--policy {name!r}: not one of {known} and not a hub configuration file")
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
