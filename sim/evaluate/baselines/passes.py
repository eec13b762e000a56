"""One pass over the city's captures for every baseline that reads traffic.

Decoding is the expensive part (the agent's decoder, about 170k packets/s on one core here),
and the signature rules, the flow exporter and the response replay all read the same decoded
packets. `city_pass` decodes each gateway's capture once, runs the three on it, keeps only
their (small) results and drops the packets before the next gateway. The result is kept for
the latest (city, agent run, report folder), so the baselines registered separately share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.sim.evaluate.baselines.centralized import EXPORT_INTERVALS, run_centralized
from atlas.sim.evaluate.baselines.decoded import decode_capture
from atlas.sim.evaluate.baselines.per_domain import agent_incidents
from atlas.sim.evaluate.baselines.playbook import (
    Response,
    gateway_outcome,
    policy_responses,
)
from atlas.sim.evaluate.baselines.signature import run_rules


@dataclass
class GatewayResults:
    signature: list[dict[str, Any]]  # run_rules
    flows: dict[float, tuple[list[dict[str, Any]], dict[str, int]]]  # export interval -> run_centralized
    playbook: dict[str, dict[str, float]] | None  # gateway_outcome (None: no rule on this gateway)
    packets: int = 0


@dataclass
class CityPass:
    gateways: dict[str, GatewayResults] = field(default_factory=dict)
    policies: dict[str, list[Response]] = field(default_factory=dict)  # playbook.policy_responses


_LATEST: list[tuple[tuple[str, str], Any, CityPass]] = []  # ((city, report folder), agent run, result)


def city_pass(city: Any, agent: Any, report_dir: str | Path) -> CityPass:
    """Every gateway decoded once: signature detections, flow detections and bandwidth per
    export interval, the response policies' outcome (and the closed loop's, when the agent run
    carries one)."""
    loop = getattr(agent, "closed_loop", None)  # atlas.sim.evaluate.availability.ClosedLoop, set by the evaluation
    key = (str(city.dir), str(report_dir))  # without a run, the incidents come from the report folder
    if _LATEST and _LATEST[0][0] == key and _LATEST[0][1] is agent:
        return _LATEST[0][2]
    out = CityPass(policies=policy_responses(city, agent_incidents(agent, Path(report_dir))))
    for gw in city.gateway_ids:
        info = city.gateway(gw)
        home, servers = [info.get("subnet", "")], [info.get("broker", "")]
        cap = decode_capture(city.pcap(gw), gw)
        out.gateways[gw] = GatewayResults(
            signature=run_rules(cap, home, servers=servers),
            flows={iv: run_centralized(cap, home, iv, city.start, servers=servers) for iv in EXPORT_INTERVALS},
            playbook=gateway_outcome(city, gw, cap, out.policies),
            packets=len(cap.packets))
        if loop is not None:  # the response policies' closed loop reads the same decoded rows
            loop.add(gw, cap)
        del cap
    _LATEST[:] = [(key, agent, out)]
    return out
