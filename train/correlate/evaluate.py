"""The correlators compared on the report templates and seeds (never seen in training or
tuning): pairwise link precision and recall, full-chain rate, next-stage domain top-2, as mean
and 95 % interval over the report seeds (one episode per seed).

Engines: `attention` (the learned one, through LiteRT exactly as the hub runs it), `rules`
(the rule-based engine city-wide, at its default one-hour window and at the attention engine's
window), and `per_domain` (the rules restricted to links within one domain: the baseline).
"""
from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

import numpy as np

from atlas.central.correlate import features as F
from atlas.central.correlate.attention import AttentionEngine, AttentionModel
from atlas.central.correlate.rules import DEFAULT_WINDOW_S, Campaign, Topology, correlate
from atlas.train.correlate.data import ECHO_KINDS, SPLIT, TEMPLATES, Episode, episodes
from atlas.train.correlate.model import HORIZON_S

# Report templates the rules cannot express: a dormant gap beyond their window, an address
# handoff linked only by the target (an identity handoff is their same_identity rule).
BEYOND_RULES = tuple(t for t in SPLIT["report"]
                     if TEMPLATES[t].dormant_after or TEMPLATES[t].handoff == "target")
T_95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}


def engines(model: AttentionModel) -> dict[str, Callable[[Episode], list[Campaign]]]:
    att = AttentionEngine(HORIZON_S, model)
    return {
        "attention": lambda ep: att.campaigns(ep.events, ep.topology),
        "rules": lambda ep: correlate(ep.events, ep.topology, scope="city",
                                      window_s=DEFAULT_WINDOW_S),
        "rules_6h": lambda ep: correlate(ep.events, ep.topology, scope="city",
                                         window_s=HORIZON_S),
        "per_domain": lambda ep: correlate(ep.events, ep.topology, scope="domain",
                                           window_s=DEFAULT_WINDOW_S),
    }


def score(ep: Episode, found: list[Campaign]) -> dict[str, Any]:
    pred = {e.id: c.id for c in found for e in c.events}
    tp = fp = fn = 0
    for a, b in combinations(sorted(ep.truth), 2):
        same_true, same_pred = ep.truth[a] == ep.truth[b], pred[a] == pred[b]
        tp += same_true and same_pred
        fp += same_pred and not same_true
        fn += same_true and not same_pred
    chains: dict[str, bool] = {}
    for cid, template in ep.templates.items():
        stages = {e for e, c in ep.truth.items() if c == cid}
        chains[cid] = any(stages <= {e.id for e in c.events} for c in found)
    return {"precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0,
            "full_chain": sum(chains.values()) / len(chains),
            "chains": {cid: (ep.templates[cid], ok) for cid, ok in chains.items()}}


def next_domain_top2(model: AttentionModel, eps: list[Episode]) -> tuple[float, float, int]:
    """(model's top-2 accuracy, the 'a campaign domain not yet visited' heuristic's, cases):
    for each true continuation, given the campaign's stages so far."""
    hits = heur = n = 0
    for ep in eps:
        so_far: dict[str, list] = {}
        for b in ep.events:
            c = ep.truth[b.id]
            echo = b.id.rsplit("-", 1)[-1] in ECHO_KINDS  # the same stage again
            if c in ep.templates and c in so_far and not echo:
                state = F.new_state(so_far[c], ep.topology)
                scores = model(*F.pair_tensors([state], b, ep.topology))
                top2 = {F.DOMAINS[i] for i in np.argsort(-scores.next_domain[0])[:2]}
                hits += b.domain in top2
                seen = {e.domain for e in so_far[c]}
                guess = [d for d in F.DOMAINS[:3] if d not in seen] + [so_far[c][-1].domain] * 2
                heur += b.domain in set(guess[:2])
                n += 1
            so_far.setdefault(c, []).append(b)
    return hits / max(n, 1), heur / max(n, 1), n


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % interval (Student t)."""
    m = float(np.mean(values))
    if len(values) < 2:
        return m, float("nan")
    t = T_95.get(len(values), 1.96)
    return m, t * float(np.std(values, ddof=1)) / math.sqrt(len(values))


def report(model: AttentionModel, seeds=None) -> dict[str, Any]:
    eps = episodes("report", seeds)
    out: dict[str, Any] = {"seeds": [int(s) for s in (seeds or [])] or None,
                           "episodes": len(eps), "engines": {}}
    for name, run in engines(model).items():
        per = [score(ep, run(ep)) for ep in eps]
        by_template: dict[str, list[bool]] = {}
        for p in per:
            for template, ok in p["chains"].values():
                by_template.setdefault(template, []).append(ok)
        out["engines"][name] = {
            k: interval([p[k] for p in per]) for k in ("precision", "recall", "full_chain")
        } | {"by_template": {t: sum(v) / len(v) for t, v in sorted(by_template.items())}}
    acc, heur, n = next_domain_top2(model, eps)
    out["next_domain_top2"] = {"model": acc, "unvisited_domain_heuristic": heur, "cases": n}
    return out


def agent_cities(model: AttentionModel, pairs: list[tuple[Path, Path]]) -> dict[str, Any]:
    """The engines on incidents the real agent produced: (city folder, `atlas-sim evaluate`
    report folder) pairs, scored by the evaluation's own campaign scoring
    (atlas.sim.evaluate.campaigns): full-chain rate and false campaigns per city."""
    from atlas.sim.evaluate.campaigns import city_events, score_campaigns
    from atlas.sim.evaluate.city import load_city

    per: dict[str, list[dict[str, Any]]] = {}
    for city_dir, report_dir in pairs:
        city = load_city(city_dir)
        incidents = {f.stem: [json.loads(line) for line in f.read_text().splitlines() if line]
                     for f in sorted((report_dir / "incidents").glob("*.jsonl"))}
        topo = Topology.from_city(city.meta)
        events = city_events(city, incidents, topo)
        for name, run in engines(model).items():
            found = run(Episode(topo, events, {}))
            per.setdefault(name, []).append(score_campaigns(found, events, city.steps))
    return {"cities": [str(c) for c, _ in pairs],
            "engines": {name: {"full_chain": interval([s["share_full_chain"] for s in scores]),
                               "false_campaigns": sum(s["false_campaigns"] for s in scores),
                               "campaigns": sum(s["campaigns"] for s in scores)}
                        for name, scores in per.items()}}


def markdown(r: dict[str, Any]) -> str:
    def f(x: tuple[float, float]) -> str:
        return f"{x[0]:.3f} ± {x[1]:.3f}"

    lines = ["| engine | link precision | link recall | full chain |",
             "|---|---|---|---|"]
    for name, e in r["engines"].items():
        lines.append(f"| {name} | {f(e['precision'])} | {f(e['recall'])} | {f(e['full_chain'])} |")
    templates = list(next(iter(r["engines"].values()))["by_template"])
    lines += ["", "Full-chain rate by report template (* = beyond the rules' reach):", "",
              "| template | " + " | ".join(r["engines"]) + " |",
              "|---|" + "---|" * len(r["engines"])]
    for t in templates:
        mark = " *" if t in BEYOND_RULES else ""
        lines.append(f"| {t}{mark} | " + " | ".join(f"{e['by_template'][t]:.2f}"
                                                    for e in r["engines"].values()) + " |")
    if "agent_cities" in r:
        a = r["agent_cities"]
        lines += ["", f"On the real agent's incidents ({len(a['cities'])} cities made by "
                  "`atlas-sim city`, incidents by `atlas-sim evaluate`):", "",
                  "| engine | full chain | false campaigns |", "|---|---|---|"]
        for name, e in a["engines"].items():
            lines.append(f"| {name} | {f(e['full_chain'])} | {e['false_campaigns']} "
                         f"(of {e['campaigns']} true campaigns) |")
    nd = r["next_domain_top2"]
    lines += ["", f"Next-stage domain in the top 2: model {nd['model']:.3f}, the 'campaign domain "
              f"not yet visited' heuristic {nd['unvisited_domain_heuristic']:.3f} "
              f"({nd['cases']} continuations)."]
    return "\n".join(lines)
