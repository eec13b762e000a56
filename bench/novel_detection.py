"""What the agent catches of the novel attack kinds, with and without profile conformance.

    .venv/bin/python bench/novel_detection.py [--seeds 101 102 103 104 105] [--devices 60] [--duration 900]

For each seed: `atlas-sim generate` writes one gateway's capture with a mirai_scan, an
exfiltration and a false_data step (each from a device picked by the seed, in its own time
slot) and the three benign look-alikes; `atlas-agent replay --json` runs on it twice, with
the packaged models only (the zero-day figure: these kinds were never in training) and with
`[detect] inventory` (the profile-conformance check). A step counts as detected when an
incident from one of its attacking addresses starts between the step's first packet and 30 s
after its last; time-to-detection runs from the step's first packet to the incident's.
Incidents from addresses that attack nothing are false positives (per device-day).
Prints a table and writes `--out`/novel_detection.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

BIN = Path(sys.executable).parent
KINDS = ("mirai_scan", "exfiltration", "false_data")
GRACE_S = 30.0


def generate(out: Path, seed: int, devices: int, duration: float) -> None:
    slot = (duration - 120) / 3
    attacks = [f"{k}@{120 + i * slot:.0f}:{0.6 * slot:.0f}" for i, k in enumerate(KINDS)]
    cmd = [str(BIN / "atlas-sim"), "generate", "--devices", str(devices), "--duration", str(duration), "--seed", str(seed),
           "--out", str(out), "--all-lookalikes"] + sum((["--attack", a] for a in attacks), [])
    subprocess.run(cmd, check=True, capture_output=True)


def replay(pcap: Path, config: Path | None) -> list[dict]:
    cmd = [str(BIN / "atlas-agent"), "replay", "--json", str(pcap)] + (["--config", str(config)] if config else [])
    r = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def score(steps: list[dict], incidents: list[dict]) -> dict:
    out = {}
    attackers = {a for s in steps for a in s["attackers"]}
    for s in steps:
        hits = [i for i in incidents if i["src_ip"] in s["attackers"] and s["start"] - 1e-3 <= i["time"] <= s["end"] + GRACE_S]
        first = min(hits, key=lambda i: i["time"]) if hits else None
        out[s["id"]] = {"kind": s["kind"], "attacker": s["attacker"], "detected": bool(hits),
                        "ttd_s": round(max(0.0, first["time"] - s["start"]), 2) if first else None,
                        "kinds": sorted({i["kind"] for i in hits}), "first_kind": first["kind"] if first else None}
    fp = [i for i in incidents if i["src_ip"] not in attackers]
    return {"steps": out, "false_positives": len(fp), "false_positive_kinds": sorted({i["kind"] for i in fp})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    p.add_argument("--devices", type=int, default=60)
    p.add_argument("--duration", type=float, default=900.0)
    p.add_argument("--out", type=Path, default=None, help="folder for the captures and the JSON (default: a temp folder)")
    args = p.parse_args(argv)

    root = args.out or Path(tempfile.mkdtemp(prefix="atlas-novel-"))
    results = []
    for seed in args.seeds:
        d = root / f"s{seed}"
        generate(d, seed, args.devices, args.duration)
        pcap = next(d.glob("*.pcap"))
        inv = json.loads((d / "gateway.json").read_text())
        (d / "agent.toml").write_text(f'[agent]\ngateway_id = "{inv["gateway"]}"\n[detect]\ninventory = "inventory.json"\n'
                                      f'peers = {{ broker = ["{inv["broker"]}"] }}\n')
        steps = [json.loads(line) for line in (d / "ground_truth.jsonl").read_text().splitlines() if line.strip()]
        res = {"seed": seed, "devices": args.devices, "duration": args.duration}
        for mode, cfg in (("models", None), ("models+conformance", d / "agent.toml")):
            res[mode] = score(steps, replay(pcap, cfg))
        results.append(res)
    summary = _summary(results, args)
    (root / "novel_detection.json").write_text(json.dumps({"runs": results, "summary": summary}, indent=1) + "\n")
    print(_table(summary, args))
    print(f"\n(details: {root / 'novel_detection.json'})")
    return 0


def _summary(results: list[dict], args) -> dict:
    out: dict = {}
    device_days = len(results) * args.devices * args.duration / 86400
    for mode in ("models", "models+conformance"):
        per = defaultdict(list)
        fp = 0
        for r in results:
            for st in r[mode]["steps"].values():
                per[st["kind"]].append(st)
            fp += r[mode]["false_positives"]
        out[mode] = {k: {"steps": len(v), "detected": sum(s["detected"] for s in v),
                         "median_ttd_s": statistics.median([s["ttd_s"] for s in v if s["detected"]]) if any(s["detected"] for s in v) else None,
                         "first_kinds": sorted({s["first_kind"] for s in v if s["first_kind"]})} for k, v in per.items()}
        out[mode]["false_positives_per_device_day"] = round(fp / device_days, 2)
    return out


def _table(summary: dict, args) -> str:
    lines = [f"novel kinds, {len(args.seeds)} seeds x {args.devices} devices x {args.duration:.0f} s (seeds {args.seeds})",
             f"{'kind':<14}{'mode':<22}{'detected':>10}{'median TTD':>12}  first incident kinds"]
    for kind in KINDS:
        for mode in ("models", "models+conformance"):
            s = summary[mode].get(kind)
            if not s:
                continue
            ttd = f"{s['median_ttd_s']:.1f} s" if s["median_ttd_s"] is not None else "-"
            lines.append(f"{kind:<14}{mode:<22}{s['detected']:>4}/{s['steps']:<5}{ttd:>12}  {', '.join(s['first_kinds'])}")
    for mode in ("models", "models+conformance"):
        lines.append(f"false positives per device-day ({mode}): {summary[mode]['false_positives_per_device_day']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
