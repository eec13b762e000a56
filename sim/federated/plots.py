"""The federated report's plots (matplotlib, Agg): per strategy and round, the targeted kind's
detection, the weakest kind's detection, and the honest gateways' benign rows flagged."""
from __future__ import annotations

from pathlib import Path

from atlas.sim.evaluate.plots import _plt


def write_plots(out: Path, report: dict) -> list[str]:
    plt = _plt()
    target = report["options"]["target"]
    panels = (
        ("convergence.png", f"{target} detection (targeted kind)", lambda r: r["detection"][target]),
        ("kinds.png", "minimum detection over the known kinds", lambda r: min(v for v in r["detection"].values() if v is not None)),
        ("false_flags.png", "benign rows flagged per device-day (honest gateways)", lambda r: r["false_flags_per_device_day"]),
    )
    files = []
    for name, title, value in panels:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for strategy, run in report["strategies"].items():
            rounds = run["rounds"]
            ax.plot([r["round"] for r in rounds], [value(r) for r in rounds], marker="o", label=strategy)
        ax.set_xlabel("round")
        ax.set_title(f"{title}\n{report['options']['malicious']} of {report['options']['gateways']} gateways poisoned ({report['options']['attack']})", fontsize=9)
        ax.legend(fontsize=8)
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append(name)
    return files
