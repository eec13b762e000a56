"""Run `atlas-sim city` once and measure it: wall time, packets, packets/s, disk size, peak
memory (the sum over the process and its workers, sampled every 0.2 s, and the largest single
process).

    .venv/bin/python bench/city_run.py --devices 5000 --gateways 50 --duration 3600 --seed 7 --out /work/city-5000

Every argument goes to `atlas-sim city` as is. Prints one JSON line with the figures.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil


def tree_rss(p: psutil.Process) -> tuple[int, int]:
    """(sum, max) resident bytes of p and its descendants."""
    rss = []
    for q in [p] + p.children(recursive=True):
        try:
            rss.append(q.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return sum(rss), max(rss, default=0)


def main(argv: list[str]) -> int:
    out = Path(argv[argv.index("--out") + 1])
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "atlas.sim.cli", "city", *argv], stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak_sum = peak_one = 0
    while proc.poll() is None:
        try:
            s, m = tree_rss(ps)
        except psutil.NoSuchProcess:
            break
        peak_sum, peak_one = max(peak_sum, s), max(peak_one, m)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    summary = proc.stdout.read().strip()
    if proc.returncode != 0:
        print(summary)
        return proc.returncode
    meta = json.loads((out / "city.json").read_text())
    packets = sum(g["packets"] for g in meta["gateways"])
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    steps = sum(1 for _ in open(out / "ground_truth.jsonl"))
    print(summary)
    print(json.dumps({"command": "atlas-sim city " + " ".join(argv), "wall_s": round(wall, 1), "packets": packets,
                      "packets_per_s": round(packets / wall), "disk_bytes": size, "peak_rss_sum_mb": round(peak_sum / 2**20),
                      "peak_rss_process_mb": round(peak_one / 2**20), "gateways": len(meta["gateways"]),
                      "devices": meta["devices_total"], "attack_steps": steps, "campaigns": len(meta["campaigns"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
