"""What every training run shares: where MQTTset is, seed ranges, cached feature rows, logging."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from atlas.train.dataset import FIELDS, LabeledCapture, Rows, capture_rows

# ../shared/data/mqttset beside the repository (a user's fresh clone does not have it)
DEFAULT_MQTTSET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mqttset"


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def cached_rows(cap: LabeledCapture, work: Path) -> Rows:
    from atlas.agent.features.schema import SCHEMA_VERSION
    from atlas.train.dataset import LABELLING

    # Keyed by the capture's folder (the attack plan), the feature schema and the labelling rules.
    cache = work / "rows" / f"{cap.source.replace('/', '_')}.{cap.path.parent.name}.v{SCHEMA_VERSION}.{LABELLING}.npz"
    stamp = cap.path.stat().st_mtime
    if cache.exists():
        z = np.load(cache, allow_pickle=True)
        if float(z["stamp"]) == stamp and all(f in z for f in FIELDS):
            return Rows(*(z[f] for f in FIELDS))
    rows = capture_rows(cap)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, stamp=stamp, **{f: getattr(rows, f) for f in FIELDS})
    return rows


def with_scan_aftermath(rows: Rows, seed: int) -> Rows:
    """The rows and benign rows of devices after a scan (train/aftermath.py)."""
    from atlas.train import aftermath

    return Rows.concat([rows, aftermath.scan_aftermath_rows(rows, aftermath.ROWS, seed=seed)])


def log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)
