"""`atlas-sim respond-eval`: every scripted defender on the same seeded episodes of the report
templates, mean and 95 % interval per metric, as JSON and a Markdown table."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from atlas.sim.respond.defenders import DEFENDERS
from atlas.sim.respond.env import ENV_VERSION, SPLITS, City, RespondEnv, build_city

METRICS = ("availability", "containment", "shield_violations", "suppressed", "reward")


def run_episodes(name: str, episodes: int, seed: int, split: str = "report",
                 city: City | None = None) -> list[dict[str, float]]:
    env = RespondEnv(split=split, city=city)
    out = []
    for k in range(episodes):
        defender = DEFENDERS[name]()
        env.reset(seed=seed + k)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(defender(env))
            done = term or trunc
        out.append(env.episode_scores())
    return out


def summary(values: list[float]) -> dict[str, float]:
    """Mean and a 95 % interval (normal approximation over episodes)."""
    a = np.asarray(values, dtype=float)
    half = 1.96 * a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else 0.0
    return {"mean": float(a.mean()), "low": float(a.mean() - half), "high": float(a.mean() + half)}


def evaluate(episodes: int, seed: int, split: str = "report") -> dict[str, Any]:
    city = build_city()
    table = {}
    for name in DEFENDERS:
        runs = run_episodes(name, episodes, seed, split, city)
        table[name] = {m: summary([r[m] for r in runs]) for m in METRICS}
    return {"env": ENV_VERSION, "split": split, "templates": list(SPLITS[split]),
            "blast_radius": "ontology" if city.graph is not None else "services",
            "episodes": episodes, "seed": seed, "defenders": table}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['env']}, {result['split']} templates {', '.join(result['templates'])}, "
             f"{result['episodes']} episodes from seed {result['seed']} (mean [95 % interval])", "",
             "| defender | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, row in result["defenders"].items():
        cells = [f"{row[m]['mean']:.3f} [{row[m]['low']:.3f}, {row[m]['high']:.3f}]" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "respond_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "respond_eval.md").write_text(markdown(result))
    return out
