"""The report's PNG plots (matplotlib, Agg backend: no display needed).

- detection_time.png: time to detection of every detected step, known kinds vs novel ones
  (and the baselines' where they were scored), with the missed steps counted in the legend.
- roc.png: ROC of each detector over the scored rows, with the shipped thresholds marked.
- cpu.png: the agent's CPU per gateway over the traffic, as a share of one core.
- bandwidth.png: bytes per device-hour to the hub per gateway (and the centralized baseline's).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atlas.sim.evaluate import metrics as M


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_plots(out: Path, data: dict[str, Any], roc: dict[str, Any], agent) -> list[str]:
    """Write every plot into `out`; returns their file names (relative to `out`)."""
    plt = _plt()
    files = []
    for name, fn in (("detection_time.png", _ttd), ("roc.png", _roc), ("cpu.png", _cpu), ("bandwidth.png", _bandwidth)):
        fig = fn(plt, data, roc, agent)
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append(name)
    return files


def _ttd(plt, data, roc, agent):
    fig, ax = plt.subplots(figsize=(7, 4))
    series = [("ATLAS", data["atlas"]["steps"])]
    for name, b in data["baselines"].items():
        if b.get("scored_steps"):
            series.append((name, b["scored_steps"]))
    y = 0
    labels = []
    for name, steps in series:
        for novel, marker in ((False, "o"), (True, "^")):
            rows = [s for s in steps if s["novel"] == novel]
            t = [s["ttd_s"] for s in rows if s["detected"]]
            missed = sum(not s["detected"] for s in rows)
            if not rows:
                continue
            jitter = np.random.default_rng(y).uniform(-0.15, 0.15, len(t))
            ax.scatter(t, np.full(len(t), y) + jitter, marker=marker, alpha=0.7)
            med = f"median {np.median(t):.1f} s" if t else "none detected"
            labels.append(f"{name}, {'novel' if novel else 'known'} kinds\n{len(t)} detected, {missed} missed, {med}")
            y += 1
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("time to detection (s, first attack packet to the first incident naming the attacker)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_title("Detection time per attack step")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _roc(plt, data, roc, agent):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, r in roc.items():
        pos, neg, edges = r.get("_pos"), r.get("_neg"), r.get("_edges")
        if pos is None or not pos.sum() or not neg.sum():
            continue
        fpr, tpr, _ = M.roc_curve(pos, neg, edges)
        line, = ax.plot(fpr, tpr, label=f"{name} (AUC {M.auc(fpr, tpr):.3f})")
        op = r["operating_point"]
        if op["fpr"] is not None:
            ax.plot([op["fpr"]], [op["tpr"]], "o", color=line.get_color())
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (feature rows of benign devices)")
    ax.set_ylabel("true positive rate (rows of attackers during their steps)")
    ax.set_title("ROC per detector (dot: the shipped threshold)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _cpu(plt, data, roc, agent):
    """Each gateway's cumulative agent CPU resampled on a common 30 s grid: the city's mean,
    the busiest gateway and the spread between gateways (10th..90th percentile)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = data["gateways"]
    duration = data["city"]["duration_s"]
    step = max(30.0, duration / 200)
    grid = np.arange(0.0, duration + step / 2, step)
    shares = []
    for g in rows:
        tl = np.asarray(g["cpu_timeline"], dtype=float)
        if len(tl) < 1:
            continue
        cum = np.interp(grid, np.r_[0.0, tl[:, 0]], np.r_[0.0, tl[:, 1]])
        shares.append(100 * np.diff(cum) / step)
    if shares:
        S = np.asarray(shares)
        busiest = int(np.argmax(S.sum(axis=1)))
        if len(S) > 2:
            ax.fill_between(grid[1:], np.percentile(S, 10, axis=0), np.percentile(S, 90, axis=0), step="pre", alpha=0.3,
                            label="10th..90th percentile of gateways")
        ax.stairs(S.mean(axis=0), grid, label=f"mean of {len(S)} gateways", linewidth=2)
        ax.stairs(S[busiest], grid, label=f"busiest gateway ({rows[busiest]['gateway']})", alpha=0.8)
    ax.set_xlabel("seconds of traffic")
    ax.set_ylabel("agent CPU, % of one core (this machine)")
    ax.set_ylim(bottom=0)
    ax.set_title("Agent CPU over time (the agent's budget: 7.3 % of a whole gateway)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _bandwidth(plt, data, roc, agent):
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = data["gateways"]
    hours = data["city"]["duration_s"] / 3600.0
    per = [g["telemetry_bytes"] / max(g["devices"] * hours, 1e-9) for g in rows]
    ax.bar(range(len(rows)), per, label="ATLAS agent telemetry")
    central = data["baselines"].get("centralized", {}).get("metrics", {}).get("bandwidth_bytes_per_device_hour")
    if central:
        ax.axhline(central, color="red", ls="--", label="centralized monitoring (flow records), city mean")
    mean = data["atlas"]["bandwidth"]["bytes_per_device_hour"]
    if mean:
        ax.axhline(mean, color="black", ls=":", label="ATLAS, city mean")
    ax.set_xticks(range(len(rows)), [g["gateway"] for g in rows], rotation=90, fontsize=6)
    ax.set_ylabel("bytes per device-hour to the hub")
    ax.set_title("Bandwidth to the hub per gateway")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig
