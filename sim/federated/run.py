"""The simulation: prepare every gateway's rows once, then run the same rounds under each
strategy and score the shared model after every round on held-out traffic."""
from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from atlas.link.incidents import KNOWN_KINDS

COMPARED = ("fedavg", "median", "trimmed_mean", "krum")  # every run scores these on the same gateways
DAY_S = 86400.0


@dataclass
class FederatedOptions:
    out: Path
    gateways: int = 10
    rounds: int = 5
    malicious: int = 2
    attack: str = "backdoor"
    seed: int = 1
    strategy: str = "krum"  # the configured one: Multi-Krum, the one rule that held every attack here (bench/RESULTS.md)
    target: str = "mqtt_flood"  # the kind a backdoor blinds (and whose detection is reported for every attack)
    devices: int = 20  # per gateway
    duration: float = 600.0  # seconds of traffic per gateway and capture (training, and held out)
    clip: float | None = None  # the hub's norm bound on updates (None: none)
    epochs: int = 5
    dp_noise: float | None = None  # Gaussian DP on the configured strategy: noise multiplier (needs clip)
    work: Path | None = None  # where gateways' rows are kept for later runs (default OUT/work)
    command: str = ""


@dataclass
class Gateway:
    name: str
    classes: list[str]
    malicious: bool
    benign: np.ndarray  # the rows its buffer holds (honest) or its poisoned training set's benign part
    attack_rows: dict[str, np.ndarray]
    row_upload_bytes: int  # its round's feature rows, float32 and deflated: what uploading them would cost
    held_out: object = None  # GatewayRows of its held-out capture
    leaked_attack_rows: int = 0  # attack rows the buffer's filter would let in (the detector missed them, too)
    attack_row_count: int = 0


@dataclass
class StrategyRun:
    name: str
    rounds: list[dict] = field(default_factory=list)
    excluded: list[list[str]] = field(default_factory=list)
    update_bytes: list[int] = field(default_factory=list)
    epsilon: float | None = None


def validate(opts: FederatedOptions) -> None:
    from atlas.central.federated import STRATEGIES
    from atlas.sim.federated.poison import ATTACKS

    if opts.gateways < 3:
        raise ValueError(f"--gateways: need at least 3, got {opts.gateways}")
    if not 0 <= opts.malicious < opts.gateways / 2:
        raise ValueError(f"--malicious: must be >= 0 and fewer than half of {opts.gateways} gateways, got {opts.malicious}")
    if opts.rounds < 1:
        raise ValueError(f"--rounds: need at least 1, got {opts.rounds}")
    if opts.attack not in ATTACKS:
        raise ValueError(f"--attack: {opts.attack!r} is not one of {', '.join(ATTACKS)}")
    if opts.strategy not in STRATEGIES:
        raise ValueError(f"--strategy: {opts.strategy!r} is not one of {', '.join(sorted(STRATEGIES))}")
    if opts.target not in KNOWN_KINDS:
        raise ValueError(f"--target: {opts.target!r} is not a known kind ({', '.join(KNOWN_KINDS)})")
    if opts.dp_noise is not None and opts.clip is None:
        raise ValueError("--dp-noise: needs --clip (the noise is scaled to the clipping bound)")
    if opts.devices < 1 or opts.duration < 120:
        raise ValueError("--devices must be >= 1 and --duration >= 120 s (one attack of each kind fits)")


def make_strategy(name: str, opts: FederatedOptions, dp: bool = False):
    from atlas.central.federated import GaussianDP
    from atlas.central.federated import make_strategy as make

    f = opts.malicious
    extra: dict[str, float] = {"clip": opts.clip, "epochs": opts.epochs}
    if name == "trimmed_mean":  # trims at least the poisoned share from each end
        extra["beta"] = max(0.1, min(0.49, f / opts.gateways))
    if name == "krum":  # Multi-Krum: the n - f most central updates
        extra.update(f=f, m=opts.gateways - f)
    strategy = make(name, **extra)
    if dp:
        return GaussianDP(strategy, clip=opts.clip, noise_multiplier=opts.dp_noise, seed=opts.seed)
    return strategy


def prepare(opts: FederatedOptions, detector, progress: Callable[[str], None]) -> list[Gateway]:
    from atlas.agent.detect.local_training import BenignBuffer
    from atlas.firmware_profiles import load_device_profiles
    from atlas.sim.federated.rows import BENIGN, device_mix, gateway_rows

    classes = sorted(load_device_profiles(None))
    rng = np.random.default_rng([opts.seed, 16])
    poisoned = set(rng.choice(opts.gateways, size=opts.malicious, replace=False).tolist())
    work = opts.work or opts.out / "work"
    out = []
    for i in range(opts.gateways):
        mix = device_mix(rng, classes)
        name = f"gw-{i:02d}"
        train = gateway_rows(work / name / "train", classes=mix, devices=opts.devices, duration=opts.duration, seed=opts.seed * 1000 + 2 * i, attacks=True)
        held = gateway_rows(work / name / "held_out", classes=mix, devices=opts.devices, duration=opts.duration, seed=opts.seed * 1000 + 2 * i + 1, attacks=True)
        s = detector.score(train.X)
        buf = BenignBuffer(train.X.shape[1])
        buf.offer(train.X, s.kind, s.anomaly)  # what the agent keeps while it runs
        kept = buf.view().copy()
        attack = train.y != BENIGN  # offered alone: how many of them the buffer's filter would let in
        leaked = BenignBuffer(train.X.shape[1]).offer(train.X[attack], s.kind[attack], s.anomaly[attack])
        out.append(Gateway(
            name, mix, i in poisoned, kept,
            {k: train.of(k) for k in KNOWN_KINDS}, len(zlib.compress(train.X.astype("<f4").tobytes(), 6)), held, leaked, int(attack.sum()),
        ))
        progress(f"{name}: {', '.join(mix)}; {len(train.y)} rows, {len(kept)} in its buffer{' (poisoned)' if i in poisoned else ''}")
    return out


def score(model, detector, gateways: list[Gateway]) -> dict:
    """Detection per kind (the anomaly model alone: the classifier is not trained federatedly)
    pooled over the gateways' held-out traffic, and benign rows flagged per device-day."""
    from atlas.agent.detect.local_training import standardize

    caught = {k: [0, 0] for k in KNOWN_KINDS}
    flagged, device_days = 0, 0.0
    for g in gateways:
        if g.malicious:  # the city cares for its honest gateways' traffic
            continue
        h = g.held_out
        anomalous = model.errors(standardize(h.X, detector.mean, detector.std, detector.clip)) >= detector.threshold
        for k in KNOWN_KINDS:
            m = h.y == k
            caught[k][0] += int(anomalous[m].sum())
            caught[k][1] += int(m.sum())
        flagged += int(anomalous[h.y == "benign"].sum())
        device_days += h.devices * h.duration / DAY_S
    detection = {k: (c / n if n else None) for k, (c, n) in caught.items()}
    return {"detection": detection, "false_flags_per_device_day": flagged / device_days if device_days else 0.0}


def run_strategy(name: str, opts: FederatedOptions, start, detector, gateways: list[Gateway], dp: bool = False) -> StrategyRun:
    from atlas.agent.detect.local_training import BenignBuffer, local_round
    from atlas.central.federated import Update
    from atlas.link.federated import decode_update, encode_update
    from atlas.sim.federated.poison import poisoned_delta

    strategy = make_strategy(name, opts, dp)
    run = StrategyRun(name)
    weights = start.flat()
    run.rounds.append({"round": 0, **score(start, detector, gateways)})
    for r in range(1, opts.rounds + 1):
        cfg = strategy.configure_round(r)
        model = start.with_flat(weights)
        updates = []
        for i, g in enumerate(gateways):
            seed = opts.seed * 100_000 + r * 100 + i
            if g.malicious:
                delta = poisoned_delta(opts.attack, model, g.benign, g.attack_rows, opts.target, detector.meta, cfg,
                                       opts.gateways, opts.malicious, seed)
                rows = len(g.benign)
            else:
                buf = BenignBuffer(g.benign.shape[1], capacity=max(len(g.benign), 1))
                buf.offer(g.benign, np.full(len(g.benign), "", dtype=object), np.zeros(len(g.benign)))
                up = local_round(model, buf, detector.meta, cfg, seed)
                delta, rows = up.delta, up.rows
            blob = encode_update(delta)  # what travels; the hub aggregates what it decodes
            if not g.malicious:
                run.update_bytes.append(len(blob))
            updates.append(Update(g.name, decode_update(blob, start.size), rows))
        norms = {g.malicious: [] for g in gateways}
        for g, u in zip(gateways, updates):
            norms[g.malicious].append(float(np.linalg.norm(u.delta)))
        agg = strategy.aggregate(updates)
        weights = weights + agg.delta
        run.excluded.append(agg.excluded_gateways)
        scores = strategy.evaluate(weights, lambda w: score(start.with_flat(w), detector, gateways))
        run.rounds.append({"round": r, **scores,
                           "excluded": agg.excluded_gateways,
                           "honest_update_norm": float(np.median(norms[False])),  # what a hub clip bound is chosen against
                           "poisoned_update_norm": float(np.median(norms[True])) if norms.get(True) else None,
                           **({"epsilon": agg.info["epsilon"], "dp_delta": agg.info["delta"]} if "epsilon" in agg.info else {}),
                           "excluded_poisoned": sum(1 for n in agg.excluded_gateways if next(g for g in gateways if g.name == n).malicious)})
    return run


def run_federated(opts: FederatedOptions, progress: Callable[[str], None] = lambda m: None) -> dict:
    from atlas.agent.detect import Detector, packaged_models_dir
    from atlas.agent.detect.local_training import load_tflite_autoencoder
    from atlas.sim.federated.plots import write_plots

    validate(opts)
    t0 = time.perf_counter()
    opts.out.mkdir(parents=True, exist_ok=True)
    detector = Detector()
    start = load_tflite_autoencoder(packaged_models_dir() / detector.meta["anomaly"]["file"])
    gateways = prepare(opts, detector, progress)
    names = list(dict.fromkeys(COMPARED + (opts.strategy,)))
    runs = {}
    for name in names:
        runs[name] = run_strategy(name, opts, start, detector, gateways)
    if opts.dp_noise is not None:  # the configured strategy once more, with Gaussian noise
        runs["configured_dp"] = run_strategy(opts.strategy, opts, start, detector, gateways, dp=True)
        fin = runs[name].rounds[-1]["detection"][opts.target]
        progress(f"{name}: {opts.target} detection {runs[name].rounds[0]['detection'][opts.target]:.3f} -> {fin:.3f}")
    report = build_report(opts, gateways, runs, time.perf_counter() - t0)
    report["plots"] = write_plots(opts.out, report)
    (opts.out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return report


def _min_detection(detection: dict) -> float:
    return min(v for v in detection.values() if v is not None)


def build_report(opts: FederatedOptions, gateways: list[Gateway], runs: dict[str, StrategyRun], seconds: float) -> dict:
    conf = runs[opts.strategy]
    central, federated = conf.rounds[0], conf.rounds[-1]
    honest = [g for g in gateways if not g.malicious]
    update_bytes = float(np.mean(conf.update_bytes))
    row_bytes = float(np.mean([g.row_upload_bytes for g in honest]))
    targeted = {n: r.rounds[-1]["detection"][opts.target] for n, r in runs.items()}
    targeted["configured"] = targeted[opts.strategy]
    dp = runs.get("configured_dp")
    return {
        "command": opts.command,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "command"},
        "seconds": round(seconds, 1),
        "metrics": {
            "targeted_kind_detection": targeted,
            "kind_detection": {"central": _min_detection(central["detection"]), "federated": _min_detection(federated["detection"])},
            # flagged benign rows: every one counted as an incident (an upper bound: the agent
            # merges a device's consecutive flagged rows into one incident)
            "false_incidents_per_device_day": {"central": central["false_flags_per_device_day"], "federated": federated["false_flags_per_device_day"]},
            "bytes_per_round_per_gateway": update_bytes,
            "row_upload_bytes_per_gateway": row_bytes,
            "update_share_of_row_upload": update_bytes / row_bytes if row_bytes else None,
            # every strategy after the last round: a scaling attack shows in false flags, not in detection
            "false_incidents_per_device_day_by_strategy": {n: r.rounds[-1]["false_flags_per_device_day"] for n, r in runs.items()},
            "kind_detection_by_strategy": {n: _min_detection(r.rounds[-1]["detection"]) for n, r in runs.items()},
            "poisoned_updates_excluded": {n: sum(x.get("excluded_poisoned", 0) for x in r.rounds) for n, r in runs.items()},
            **({"dp_epsilon": dp.rounds[-1]["epsilon"], "dp_delta": dp.rounds[-1]["dp_delta"]} if dp else {}),
            "attack_rows_in_honest_buffers": sum(g.leaked_attack_rows for g in honest),
            "attack_rows_in_honest_traffic": sum(g.attack_row_count for g in honest),
        },
        "gateways": [{"name": g.name, "classes": g.classes, "poisoned": g.malicious, "buffer_rows": len(g.benign), "leaked_attack_rows": g.leaked_attack_rows,
                      "row_upload_bytes": g.row_upload_bytes} for g in gateways],
        "strategies": {n: {"rounds": r.rounds} for n, r in runs.items()},
    }
