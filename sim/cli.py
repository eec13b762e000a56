"""`atlas-sim`: generate traffic with attacks and ground truth.

    atlas-sim generate --devices 200 --duration 600 --seed 1 --out out/g1 \\
        --attack mqtt_flood@120:30,rate=3000 --attack port_scan --lookalike power_cut@300
    atlas-sim generate --devices 60 --duration 900 --seed 7 --out out/s7 --all-attacks --all-lookalikes
    atlas-sim profiles            # validate the device profiles and list them
    atlas-sim profiles import-mud pole.json --class smart_pole --domain energy --criticality essential --out DIR
    atlas-sim attacks             # attack and look-alike kinds with their parameters
    atlas-sim city --devices 5000 --gateways 50 --duration 3600 --seed 7 --out DIR   # the whole city
    atlas-sim evaluate DIR --out REPORT_DIR   # run ATLAS and the baselines on a city, score, report
    atlas-sim evaluate-seeds --split report --seeds 5 --devices 100 --gateways 6 --duration 120 --out DIR  # mean, 95 % interval
    atlas-sim federated --gateways 10 --rounds 5 --malicious 2 --attack backdoor --seed 1 --out DIR   # federated rounds, poisoned gateways
    atlas-sim live --devices 30 --duration 60 --seed 3 --out DIR --attack mqtt_flood@20:10 --agent   # for real, in namespaces (root)

An attack or look-alike is KIND[@START[:DURATION]][,key=value...]: START and DURATION in
seconds after the capture starts (omitted: chosen by the seed), key=value override the kind's
parameters (numbers, true/false, or text).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any


def parse_event(text: str) -> tuple[str, float | None, float | None, dict[str, Any]]:
    """'kind@start:duration,key=value,...' -> (kind, start, duration, params)."""
    head, *pairs = text.split(",")
    kind, _, when = head.partition("@")
    start = duration = None
    if when:
        s, _, d = when.partition(":")
        try:
            start = float(s) if s else None
            duration = float(d) if d else None
        except ValueError:
            raise ValueError(f"{text!r}: START and DURATION must be seconds, like {kind}@60:30") from None
    params: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"{text!r}: parameter {pair!r} must be key=value")
        params[key.strip()] = _value(value.strip())
    return kind.strip(), start, duration, params


def _value(v: str) -> Any:
    if v in ("true", "false"):
        return v == "true"
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def _finite(text: str) -> float:
    """A number argument: NaN and infinity are not a duration, a time or a share."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `generate` and (later) `city`."""
    p.add_argument("--devices", type=int, required=True, help="devices behind the gateway (city: in the whole city)")
    p.add_argument("--duration", type=_finite, required=True, help="seconds of traffic")
    p.add_argument("--seed", type=int, required=True, help="same seed and arguments: byte-identical output")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--start-time", type=_finite, default=None, help="epoch seconds of the first packet's window (default 2026-01-01 08:00 UTC)")
    p.add_argument("--profiles", type=Path, default=None, help="folder of device profiles (default: the packaged ones)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atlas-sim", description="ATLAS simulator: traffic, attacks, ground truth")
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("generate", help="one gateway's capture with attacks and ground truth: OUT/traffic.pcap, "
                       "ground_truth.jsonl, benign_events.jsonl, gateway.json, inventory.json, agent.toml")
    _common(g)
    g.add_argument("--attack", action="append", default=[], metavar="KIND[@START[:DURATION]][,k=v]",
                   help="an attack step (repeatable); kinds: see `atlas-sim attacks`")
    g.add_argument("--lookalike", action="append", default=[], metavar="KIND[@START[:DURATION]][,k=v]",
                   help="a benign look-alike (repeatable): firmware_update, rush_hour, power_cut")
    g.add_argument("--all-attacks", action="store_true", help="add one attack of every known kind, each in its own time slot")
    g.add_argument("--all-lookalikes", action="store_true", help="add each benign look-alike once, at a time chosen by the seed")
    g.add_argument("--broker", default="10.20.0.1", help="the gateway's broker address")
    g.add_argument("--subnet", default="10.20.0.0/16", help="the gateway's device subnet")
    g.add_argument("--gateway", default="gw-d01", help="gateway name in the ground truth")
    g.add_argument("--district", default="d01", help="district name in topics and client ids")
    g.add_argument("--boot", action="store_true", help="devices connect inside the capture instead of before it")
    g.add_argument("--no-backends", action="store_true", help="no domain back-ends (halves the packets)")

    c = sub.add_parser("city", help="the whole city: every gateway's capture, campaigns, merged ground truth")
    _common(c)
    c.add_argument("--gateways", type=int, default=50, help="one per (district, domain): 3 per district, the last may have fewer")
    c.add_argument("--attacks-per-gateway", type=_finite, default=1.0,
                   help="single attacks per gateway on average (every kind at least once; default 1)")
    c.add_argument("--campaigns", type=int, default=None,
                   help="multi-stage cross-domain campaigns (default: one per ten gateways, at least one)")
    c.add_argument("--lookalike-share", type=_finite, default=0.2, help="share of gateways with a benign look-alike (default 0.2)")
    c.add_argument("--decoys", type=int, default=None,
                   help="independent attacks shadowing campaign stages, ground truth without campaign (default: one per campaign)")
    c.add_argument("--no-attacks", action="store_true", help="benign traffic only: no attacks, campaigns or look-alikes")
    c.add_argument("--workers", type=int, default=None, help="gateways generated in parallel (default: the machine's cores)")
    c.add_argument("--no-backends", action="store_true", help="no domain back-ends (halves the packets)")

    e = sub.add_parser("evaluate", help="run the agent and the baselines on a city's captures, score against ground truth, write the report")
    e.add_argument("dir", type=Path, help="a city folder (atlas-sim city --out DIR)")
    e.add_argument("--out", type=Path, required=True, help="report folder: report.md, report.json, PNG plots, incidents/")
    e.add_argument("--workers", type=int, default=None, help="gateways replayed in parallel (default: the machine's cores)")
    e.add_argument("--models", type=Path, default=None, help="the agent's model folder (default: the shipped models)")
    e.add_argument("--no-baselines", action="store_true", help="score ATLAS only")
    e.add_argument("--policy", default="playbook", metavar="NAME",
                   help="the hub policy scored as ATLAS's responder: none, static, playbook (default), a policy the hub "
                        "registers by name, or a central.toml; "
                        "none, static and playbook are always scored beside it")
    e.add_argument("--no-conformance", action="store_true",
                   help="the agent without its gateway's device inventory: models only, no profile-conformance check")

    es = sub.add_parser("evaluate-seeds", help="build and evaluate N cities of one split; mean and 95 %% interval of the "
                        "headline metrics into OUT/summary.json and summary.md")
    es.add_argument("--split", required=True, help="training, validation or report (atlas.sim.evaluate.splits)")
    es.add_argument("--seeds", type=int, required=True, help="cities (the split's first N seeds)")
    es.add_argument("--first", type=int, default=0, help="skip the split's first seeds (default 0)")
    es.add_argument("--devices", type=int, required=True, help="devices per city")
    es.add_argument("--gateways", type=int, default=50, help="gateways per city (default 50)")
    es.add_argument("--duration", type=_finite, required=True, help="seconds of traffic per city")
    es.add_argument("--out", type=Path, required=True, help="folder: cities/, reports/, summary.json, summary.md")
    es.add_argument("--workers", type=int, default=None, help="gateways generated and replayed in parallel (default: the cores)")
    es.add_argument("--models", type=Path, default=None, help="the agent's model folder (default: the shipped models)")
    es.add_argument("--policy", default="playbook", metavar="NAME", help="the hub policy scored as ATLAS (as in evaluate)")
    es.add_argument("--baselines", action="store_true", help="also run the baselines in each city (slower; not in the summary)")

    lv = sub.add_parser("live", help="a small city run for real in network namespaces (root): mosquitto, paho devices, real attack tools, tcpdump")
    lv.add_argument("--devices", type=int, default=30, help="devices in the whole city (default 30)")
    lv.add_argument("--gateways", type=int, default=1, help="gateways, one per (district, domain) as in `city` (default 1)")
    lv.add_argument("--duration", type=_finite, default=60.0, help="seconds of traffic (default 60)")
    lv.add_argument("--seed", type=int, default=3, help="devices, credentials, payloads and attack plans derive from it")
    lv.add_argument("--out", type=Path, required=True, help="output folder: city.json, ground_truth.jsonl, gateways/<id>/traffic.pcap")
    lv.add_argument("--attack", action="append", default=[], metavar="KIND[@START[:DURATION]][,k=v]",
                    help="an attack step (repeatable); kinds: port_scan and mirai_scan (nmap), mqtt_flood, mqtt_bruteforce, topic_scan, "
                         "false_data (paho), malformed, slowite (Scapy), exfiltration (sockets); extra keys: gateway=<id or index>, "
                         "attacker=<address; a device's: that device, compromised>, victim=<address>, campaign=<name>, stage=<n>")
    lv.add_argument("--agent", action="store_true", help="also run `atlas-agent run` on each gateway's bridge and save its incidents")
    lv.add_argument("--no-backends", action="store_true", help="no domain back-end subscribers")
    lv.add_argument("--profiles", type=Path, default=None, help="folder of device profiles (default: the packaged ones)")

    pr = sub.add_parser("profiles", help="validate the device profiles and list them")
    pr.add_argument("--dir", type=Path, default=None)
    pr.add_argument("--json", action="store_true")
    prs = pr.add_subparsers(dest="profiles_cmd")  # optional: plain `profiles` still lists
    im = prs.add_parser("import-mud", help="write a device profile from a MUD file (RFC 8520 JSON); "
                        "MQTT topics, hardware and responses are marked placeholders to edit")
    im.add_argument("file", type=Path, help="the MUD file (JSON)")
    im.add_argument("--class", dest="cls", required=True, help="the device class: the profile's name and file stem")
    im.add_argument("--domain", required=True, choices=("transportation", "energy", "public_safety"))
    im.add_argument("--criticality", required=True, choices=("life_safety", "essential", "ordinary"))
    im.add_argument("--out", type=Path, default=Path("."), help="folder to write <class>.toml into (default: .)")
    im.add_argument("--client-prefix", default=None, help="MQTT client id prefix (default: the class)")
    im.add_argument("--force", action="store_true", help="overwrite an existing <class>.toml")

    sub.add_parser("attacks", help="attack and look-alike kinds with their default parameters")

    fl = sub.add_parser("federated", help="federated rounds over simulated gateways with the agent's local training and the hub's "
                        "strategies; poisoned gateways; OUT/report.json")
    fl.add_argument("--gateways", type=int, required=True, help="gateways, each with its own device mix")
    fl.add_argument("--rounds", type=int, required=True, help="federated rounds")
    fl.add_argument("--malicious", type=int, default=0, help="poisoned gateways among them (fewer than half)")
    fl.add_argument("--attack", choices=("scaling", "label-flip", "backdoor"), default="backdoor", help="what the poisoned gateways send")
    fl.add_argument("--seed", type=int, required=True, help="same seed and arguments: the same run")
    fl.add_argument("--out", type=Path, required=True, help="output folder: report.json")
    fl.add_argument("--strategy", default="krum", help="the configured strategy (fedavg, median, trimmed_mean, krum (Multi-Krum, f = --malicious); all four are scored; default krum)")
    fl.add_argument("--target", default="mqtt_flood", help="the attack kind a backdoor blinds (default mqtt_flood)")
    fl.add_argument("--devices", type=int, default=20, help="devices per gateway (default 20)")
    fl.add_argument("--duration", type=_finite, default=600.0, help="seconds of traffic per gateway, for training and held out (default 600)")
    fl.add_argument("--clip", type=_finite, default=None, help="L2 bound on every update at the hub (default: none)")
    fl.add_argument("--epochs", type=int, default=5, help="local epochs per round (default 5)")
    fl.add_argument("--dp-noise", type=_finite, default=None, help="also run the configured strategy with Gaussian DP at this noise "
                    "multiplier (needs --clip); the report gives its epsilon")
    fl.add_argument("--work", type=Path, default=None, help="folder of the gateways' feature rows, reused by runs with the same "
                    "gateways (default OUT/work)")
    re_ = sub.add_parser("respond-eval", help="the scripted defenders (none, static, playbook, greedy) on the same seeded "
                         "episodes of the responder's environment: OUT/respond_eval.json and .md (needs the respond extra)")
    re_.add_argument("--episodes", type=int, required=True, help="episodes per defender (at least 2, for an interval)")
    re_.add_argument("--seed", type=int, required=True, help="first episode's seed; episode k uses seed + k")
    re_.add_argument("--out", type=Path, required=True, help="output folder")
    re_.add_argument("--split", choices=("train", "validation", "report"), default="report",
                     help="which campaign templates (default report: never trained on)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # recorded in a city's city.json
    try:
        return {"generate": _generate, "city": _city, "evaluate": _evaluate, "evaluate-seeds": _evaluate_seeds,
                "profiles": _profiles, "attacks": _attacks, "live": _live, "federated": _federated,
                "respond-eval": _respond_eval}[args.cmd](args)
    except (ValueError, OSError) as e:
        print(f"atlas-sim {args.cmd}: {e}", file=sys.stderr)
        return 2


def _respond_eval(args) -> int:
    if args.episodes < 2:
        raise ValueError(f"--episodes: at least 2 (an interval needs them), got {args.episodes}")
    try:
        from atlas.sim.respond.score import evaluate, markdown, write
    except ImportError as e:
        raise ValueError(f"needs the respond extra (pip install -e '.[respond]'): {e}") from None
    result = evaluate(args.episodes, args.seed, args.split)
    out = write(result, args.out)
    print(markdown(result), end="")
    print(f"wrote {out / 'respond_eval.json'} and {out / 'respond_eval.md'}")
    return 0


def _generate(args) -> int:
    from atlas.sim.attacks import AttackSpec
    from atlas.sim.traffic import BenignOptions, LookalikeSpec
    from atlas.sim.capture import DEFAULT_START, PCAP_FILE, generate_capture

    attacks = []
    for text in args.attack:
        kind, start, dur, params = parse_event(text)
        attacks.append(AttackSpec(kind, start=start, duration=dur, params=params))
    looks = []
    for text in args.lookalike:
        kind, start, dur, params = parse_event(text)
        looks.append(LookalikeSpec(kind, start=start, duration=dur, params=params))
    if args.all_attacks or args.all_lookalikes:
        import numpy as np

        from atlas.sim.attacks import one_of_each
        from atlas.sim.traffic import LOOKALIKE_KINDS

        rng = np.random.default_rng([args.seed, 0x5EED])
        if args.all_attacks:
            attacks += one_of_each(rng, args.duration)
        if args.all_lookalikes:
            looks += [LookalikeSpec(k, start=float(rng.uniform(0.1, 0.8) * args.duration)) for k in LOOKALIKE_KINDS]
    args.out.mkdir(parents=True, exist_ok=True)
    pcap = args.out / PCAP_FILE
    t = time.perf_counter()
    gt = generate_capture(
        pcap, devices=args.devices, duration=args.duration, attacks=attacks, seed=args.seed,
        start_time=DEFAULT_START if args.start_time is None else args.start_time, broker=args.broker, subnet=args.subnet,
        gateway=args.gateway, district=args.district, lookalikes=looks, profiles_dir=args.profiles,
        options=BenignOptions(preroll=not args.boot, backends=not args.no_backends),
    )
    gt.write(args.out)
    dt = time.perf_counter() - t
    print(f"{pcap}: {gt.packets} packets, {args.devices} devices, {args.duration:g} s, {len(gt.steps)} attack steps, "
          f"{len(gt.benign_events)} look-alikes ({dt:.1f} s, {gt.packets / max(dt, 1e-9):,.0f} packets/s)")
    for s in gt.steps:
        print(f"  {s.kind:16s} {s.attacker:15s} {s.start - gt.start:8.1f} .. {s.end - gt.start:8.1f} s  {s.attacker_packets} packets sent")
    for e in gt.benign_events:
        print(f"  (benign) {e.kind:16s} {e.start - gt.start:8.1f} .. {e.end - gt.start:8.1f} s  {len(e.hosts)} hosts")
    return 0


def _city(args) -> int:
    from atlas.sim.city import ScheduleOptions, build_city
    from atlas.sim.traffic import BenignOptions
    from atlas.sim.capture import DEFAULT_START

    if args.no_attacks:
        sched = ScheduleOptions.none()
    else:
        sched = ScheduleOptions(attacks_per_gateway=args.attacks_per_gateway, campaigns=args.campaigns,
                                lookalike_share=args.lookalike_share, decoys=args.decoys)
    r = build_city(args.out, devices=args.devices, gateways=args.gateways, duration=args.duration, seed=args.seed,
                   start_time=DEFAULT_START if args.start_time is None else args.start_time, schedule=sched,
                   workers=args.workers, profiles_dir=args.profiles, options=BenignOptions(backends=not args.no_backends),
                   command=["atlas-sim"] + args.argv)
    print(r.summary())
    return 0


def _evaluate(args) -> int:
    from atlas.sim.evaluate.run import evaluate

    report = evaluate(args.dir, args.out, workers=args.workers, models_dir=args.models, baselines=not args.no_baselines,
                      conformance=not args.no_conformance, policy=args.policy, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(report.table_text())
    print(f"\n{args.out / 'report.md'}, report.json, {len(report.plots)} plots, incidents/ per gateway")
    return 0


def _evaluate_seeds(args) -> int:
    from atlas.sim.evaluate.seeds import SUMMARY_MD, evaluate_seeds

    evaluate_seeds(args.out, split=args.split, seeds=args.seeds, first=args.first, devices=args.devices,
                   gateways=args.gateways, duration=args.duration, workers=args.workers, models_dir=args.models,
                   policy=args.policy, baselines=args.baselines, command="atlas-sim " + shlex.join(args.argv),
                   progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print((args.out / SUMMARY_MD).read_text())
    return 0


def _live(args) -> int:
    from atlas.sim.attacks import AttackSpec
    from atlas.sim.live import LiveOptions, run_live

    attacks = []
    for text in args.attack:
        kind, start, dur, params = parse_event(text)
        gateway = params.pop("gateway", None)
        attacker = params.pop("attacker", None)
        victim = params.pop("victim", None)
        campaign, stage = str(params.pop("campaign", "")), params.pop("stage", 1)
        if not isinstance(stage, int) or stage < 1:
            raise ValueError(f"{text!r}: stage must be a whole number >= 1")
        spec = AttackSpec(kind, start=start, duration=dur, params=params, attacker=attacker, victims=[str(victim)] if victim else None,
                          campaign=campaign, stage=stage)
        attacks.append((spec, None if gateway is None else str(gateway)))
    opts = LiveOptions(out=args.out, devices=args.devices, gateways=args.gateways, duration=args.duration, seed=args.seed, attacks=attacks,
                       agent=args.agent, backends=not args.no_backends, profiles_dir=args.profiles, command="atlas-sim " + " ".join(args.argv))
    try:
        r = run_live(opts)
    except KeyboardInterrupt:
        print("atlas-sim live: interrupted; namespaces and processes removed", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"atlas-sim live: {e}", file=sys.stderr)
        return 2
    for g in r.gateways:
        found = r.incidents.get(g["id"])
        print(f"{args.out / g['pcap']}: {g['packets']} packets, {g['devices']} devices"
              + (f", {len(found)} incidents from the live agent" if found is not None else ""))
    for s in r.steps:
        print(f"  {s.kind:16s} {s.attacker:15s} {s.start - r.start:7.1f} .. {s.end - r.start:7.1f} s  {s.attacker_packets} packets sent "
              f"({s.params['tool']})")
    for sk in r.skipped:
        print(f"  {sk['kind']:16s} skipped: {sk['reason']}")
    for gw, found in r.incidents.items():
        for inc in found:
            print(f"  [{gw}] {inc['kind']:16s} {inc['src_ip']:15s} {inc.get('state', '')}")
    print(f"{r.cpu_seconds:.1f} CPU-seconds in the run's processes over {r.end - r.start:g} s; namespaces {r.namespaces[0].rsplit('-', 1)[0]}-* removed")
    return 0


def _federated(args) -> int:
    from atlas.sim.federated import FederatedOptions, run_federated

    opts = FederatedOptions(out=args.out, gateways=args.gateways, rounds=args.rounds, malicious=args.malicious, attack=args.attack,
                            seed=args.seed, strategy=args.strategy, target=args.target, devices=args.devices,
                            duration=args.duration, clip=args.clip, epochs=args.epochs, dp_noise=args.dp_noise, work=args.work, command="atlas-sim " + " ".join(args.argv))
    m = run_federated(opts, progress=lambda msg: print(msg, file=sys.stderr, flush=True))["metrics"]
    print(f"{args.target} detection after {args.rounds} rounds, {args.malicious} of {args.gateways} gateways poisoned ({args.attack}):")
    for name, v in m["targeted_kind_detection"].items():
        print(f"  {name:13s} {v:.3f}")
    print("every kind (minimum) / benign rows flagged per device-day, by strategy:")
    for name, v in m["kind_detection_by_strategy"].items():
        print(f"  {name:13s} {v:.3f} / {m['false_incidents_per_device_day_by_strategy'][name]:.1f}")
    print(f"configured ({args.strategy}), every kind (minimum): central {m['kind_detection']['central']:.3f}, "
          f"federated {m['kind_detection']['federated']:.3f}")
    print(f"update {m['bytes_per_round_per_gateway']:,.0f} bytes per round per gateway; its rows would be "
          f"{m['row_upload_bytes_per_gateway']:,.0f} bytes ({100 * m['update_share_of_row_upload']:.1f} %)")
    if "dp_epsilon" in m:
        print(f"with Gaussian DP (noise multiplier {args.dp_noise:g}, clip {args.clip:g}): {args.target} detection "
              f"{m['targeted_kind_detection']['configured_dp']:.3f}, epsilon {m['dp_epsilon']:.2f} at delta {m['dp_delta']:g}")
    print(f"{args.out / 'report.json'}, plots: convergence.png, kinds.png, false_flags.png")
    return 0


def _profiles(args) -> int:
    from atlas.firmware_profiles import load_device_profiles

    if getattr(args, "profiles_cmd", None) == "import-mud":
        return _import_mud(args)

    profiles = load_device_profiles(args.dir)
    if args.json:
        from dataclasses import asdict

        print(json.dumps({k: asdict(v) for k, v in profiles.items()}, indent=1, default=str))
        return 0
    for name, p in profiles.items():
        rate = sum(t.rate for t in p.mqtt.topics if t.direction == "publish")
        print(f"{name:26s} {p.domain:15s} {p.criticality:12s} {rate * 60:7.2f} msg/min  "
              f"ok: {','.join(p.responses.acceptable)}  with fallback: {','.join(p.responses.needs_fallback) or '-'}")
    print(f"{len(profiles)} profiles valid")
    return 0


def _import_mud(args) -> int:
    from atlas.firmware_profiles.mud import import_mud_file

    out, pol = import_mud_file(args.file, args.out, cls=args.cls, domain=args.domain, criticality=args.criticality,
                               overwrite=args.force, client_prefix=args.client_prefix)
    print(f"wrote {out}: {len(pol.protocols)} protocols, peers {', '.join(pol.peers)}")
    for note in pol.notes:
        print(f"  dropped: {note}")
    print("  edit the PLACEHOLDER sections ([hardware], [mqtt], [responses]): MUD does not describe them")
    return 0


def _attacks(args) -> int:
    from atlas.sim.attacks import ATTACKS
    from atlas.sim.traffic.lookalikes import DEFAULTS

    for kind, a in sorted(ATTACKS.items()):
        print(f"{kind:16s} duration {a.duration:g} s  " + " ".join(f"{k}={v}" for k, v in a.defaults.items()))
    for kind, d in sorted(DEFAULTS.items()):
        print(f"(benign) {kind:16s} " + " ".join(f"{k}={v}" for k, v in d.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
