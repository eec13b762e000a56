"""`evaluate_seeds`: N cities of one split (atlas.sim.evaluate.splits) built, evaluated, and their
headline metrics summarised as mean and 95 % t-interval over cities.

    OUT/cities/seed-S/       each city (atlas-sim city)
    OUT/reports/seed-S/      its report (atlas-sim evaluate)
    OUT/summary.json         per metric: mean, 95 % interval, n, the per-city values; the seeds,
                             templates, commit and model version
    OUT/summary.md           the same as a table

The interval is mean +- t(0.975, n-1) * s / sqrt(n) over the cities where the metric is not
null (s: sample standard deviation): the cities are the independent samples, so the interval
says how much the figure moves from one city of the split to the next. One city gives no
interval.
"""
from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any, Callable, Sequence

from atlas.sim.evaluate.figures import KEYS
from atlas.sim.evaluate.splits import SEED_RANGES, check_split, seeds_of, templates_of

SUMMARY_JSON, SUMMARY_MD = "summary.json", "summary.md"
PER_POLICY = ("availability_critical", "containment", "bandwidth_bytes_per_device_hour")
META_KEYS = ("seeds", "commit", "model_version")
# t(0.975, df) for df = 1..30; beyond, the Cornish-Fisher expansion (error < 1e-3).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5th percentile of Student's t with df degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom: must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % t-interval of the values (low/high None for fewer than two)."""
    n = len(values)
    if not n:
        return {"mean": None, "low": None, "high": None, "half_width": None, "n": 0}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "half_width": None, "n": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "n": n}


def headline_values(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The numeric headline figures of one report's `metrics`, per-policy objects flattened as
    `key.policy`."""
    out: dict[str, float | None] = {}
    for k in KEYS:
        if k in META_KEYS:
            continue
        v = metrics.get(k)
        if k in PER_POLICY:
            for policy, x in sorted((v or {}).items()):
                out[f"{k}.{policy}"] = x
            continue
        out[k] = v
    return out


def summarize(per_city: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per headline figure: the interval over the cities that have it, and every city's value."""
    names: list[str] = []
    for c in per_city:
        names += [k for k in headline_values(c["metrics"]) if k not in names]
    out = {}
    for name in names:
        values = [headline_values(c["metrics"]).get(name) for c in per_city]
        out[name] = interval([float(v) for v in values if v is not None]) | {"values": values}
    return out


def evaluate_seeds(out: str | Path, *, split: str, seeds: int, devices: int, gateways: int, duration: float,
                   first: int = 0, workers: int | None = None, models_dir: str | Path | None = None,
                   policy: str = "playbook", baselines: bool = False, command: str = "",
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build and evaluate the split's cities; write summary.json and summary.md into `out`."""
    from atlas.sim.city import ScheduleOptions
    from atlas.sim.city.build import build_city
    from atlas.sim.evaluate.run import evaluate

    say = progress or (lambda msg: None)
    check_split(split)
    chosen = seeds_of(split, seeds, first)
    templates = templates_of(split)
    out = Path(out)
    per_city = []
    for seed in chosen:
        city_dir, report_dir = out / "cities" / f"seed-{seed}", out / "reports" / f"seed-{seed}"
        say(f"city seed {seed} ({split}): {devices} devices, {gateways} gateways, {duration:g} s")
        build_city(city_dir, devices=devices, gateways=gateways, duration=duration, seed=seed, workers=workers,
                   schedule=ScheduleOptions(templates=templates),
                   command=["atlas-sim", "city", "--devices", str(devices), "--gateways", str(gateways), "--duration",
                            f"{duration:g}", "--seed", str(seed), "--out", str(city_dir)])
        evaluate(city_dir, report_dir, workers=workers, models_dir=models_dir, baselines=baselines, plots=False,
                 policy=policy, progress=say)
        metrics = json.loads((report_dir / "report.json").read_text())["metrics"]
        per_city.append({"seed": seed, "city": str(city_dir), "report": str(report_dir), "metrics": metrics})
    summary = {
        "split": split, "seed_range": list(SEED_RANGES[split]), "seeds": chosen, "templates": list(templates),
        "cities": {"devices": devices, "gateways": gateways, "duration_s": duration},
        "policy": policy, "commit": _one(c["metrics"]["commit"] for c in per_city),
        "model_version": _one(c["metrics"]["model_version"] for c in per_city),
        "command": command or _command(out, split, seeds, devices, gateways, duration, first, policy),
        "interval": "mean +- t(0.975, n-1) * s / sqrt(n) over the cities where the figure is not null",
        "metrics": summarize(per_city),
        "per_city": [{"seed": c["seed"], "report": c["report"]} for c in per_city],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=1) + "\n")
    (out / SUMMARY_MD).write_text(summary_md(summary))
    return summary


def _one(values) -> str | None:
    """The one value every city reported ("mixed: a, b" when they differ: a changed checkout)."""
    seen = list(dict.fromkeys(v for v in values))
    return seen[0] if len(seen) == 1 else "mixed: " + ", ".join(map(str, seen))


def _command(out: Path, split: str, seeds: int, devices: int, gateways: int, duration: float, first: int,
             policy: str) -> str:
    return (f"atlas-sim evaluate-seeds --split {split} --seeds {seeds} --devices {devices} --gateways {gateways} "
            f"--duration {duration:g} --out {shlex.quote(str(out))}" + (f" --first {first}" if first else "")
            + ("" if policy == "playbook" else f" --policy {shlex.quote(policy)}"))


def _fmt(v: float | None, name: str) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3g}" if name.startswith(("false_incidents", "ttd", "bandwidth")) else f"{100 * v:.1f} %"


def summary_md(s: dict[str, Any]) -> str:
    """summary.json as a readable page."""
    c = s["cities"]
    lines = [f"# ATLAS on {len(s['seeds'])} {s['split']} cities", "",
             f"{c['devices']} devices, {c['gateways']} gateways, {c['duration_s']:g} s each; seeds "
             f"{', '.join(map(str, s['seeds']))}; campaign templates {', '.join(s['templates'])}.", "",
             f"Commit `{s['commit']}`, models `{s['model_version']}`, hub policy `{s['policy']}`.", "",
             f"`{s['command']}`", "", f"Interval: {s['interval']}.", "",
             "| figure | mean | 95 % interval | cities | per city |", "|---|---|---|---|---|"]
    for name, m in s["metrics"].items():
        ci = f"{_fmt(m['low'], name)} .. {_fmt(m['high'], name)}" if m["low"] is not None else "n/a"
        lines.append(f"| {name} | {_fmt(m['mean'], name)} | {ci} | {m['n']}/{len(m['values'])} | "
                     + ", ".join(_fmt(v, name) for v in m["values"]) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["evaluate_seeds", "headline_values", "interval", "summarize", "summary_md", "t975"]
