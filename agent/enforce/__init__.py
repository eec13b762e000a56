"""Enforce: apply the hub's rules on the gateway (nftables, MQTT broker), with TTLs.

`Rule` is the closed vocabulary the hub may ask for. It travels the wire (protos/), is
signed by the hub, verified by the agent, and applied by an enforcement backend. It never
carries shell text: every field is validated before use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# quarantine: drop all traffic from/to the address (except allowlisted peers)
# filter: drop the address's traffic to one destination port/protocol (params: port, proto)
# rate_limit: cap the address's packets per second (params: pps)
# revoke_mqtt: disable an MQTT client/user in the broker's dynamic-security plugin
ACTIONS = ("quarantine", "filter", "rate_limit", "revoke_mqtt")


@dataclass
class Rule:
    id: str
    action: str  # one of ACTIONS
    target: str  # IPv4/IPv6 address, or the MQTT username for revoke_mqtt
    expires_at: float  # epoch seconds; the rule is removed then (its TTL)
    reason: str  # human text for operators, never interpreted
    decision_id: str  # the hub decision that issued it
    shadow: bool = False  # recorded and reported, not enforced
    params: dict[str, Any] = field(default_factory=dict)
