"""Model hot swap on the gateway, measured:

1. Nothing lost: a simulated gateway capture with attacks replayed through the agent's pipeline
   twice in the same run, once with no update and once while bundles are pushed (checked,
   installed on disk and swapped in between batches, as the daemon does, by ModelUpdater on
   another thread). Same frames, same incidents (attacker, kind, first packet) in both runs;
   every incident carries the version that was running when it opened; replay CPU with the
   swaps against without.
2. Push -> active: the real hub (SQLite, `push_model`) and an agent's Uplink over mutual TLS on
   loopback; the time from the operator's push to the new detector scoring, against a rule's
   trip over the same stream (push -> on_rules) as the baseline.

    .venv/bin/python -m pytest bench/test_bench_model_swap.py --benchmark-enable -s
"""
from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_throughput import make_capture  # noqa: E402

from atlas.agent.detect import Detector, packaged_models_dir  # noqa: E402
from atlas.link.bundle import META, Bundle, pack_bundle, read_bundle_dir  # noqa: E402

DEVICES, SECONDS = 200, 240  # a few hundred thousand packets with one of each attack kind
SWAPS = 6  # bundles pushed during the replay
PUSHES = 10  # push -> active, timed one by one (bounded)


def bundle_of(version: str) -> Bundle:
    """The shipped models under another version (same weights: detection must not change)."""
    shipped = read_bundle_dir(packaged_models_dir())
    meta = shipped.meta
    meta["version"] = version
    meta["anomaly"]["version"] = f"{version}-ae"
    meta["classifier"]["version"] = f"{version}-clf"
    return Bundle(version, {**shipped.files, META: json.dumps(meta).encode()})


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return make_capture(tmp_path_factory.mktemp("swap") / "gw.pcap", DEVICES, SECONDS, seed=23)


def replay(path: Path, state_dir: Path | None, signer=None) -> dict:
    """Replay `path`; with state_dir, push SWAPS bundles spread over the replay, each handled
    by a ModelUpdater on its own thread and swapped in between batches."""
    from atlas.agent.capture.pcapfile import read_capture
    from atlas.agent.config import AgentConfig
    from atlas.agent.detect.update import ModelUpdater
    from atlas.agent.pipeline import AgentPipeline

    batches = list(read_capture(path))
    labels: dict[str, tuple[str, str]] = {}  # incident id -> (its model_version, the running one) when it opened

    def opened(inc) -> None:
        labels.setdefault(inc.id, (inc.model_version, pipe.detector.version))

    pipe = AgentPipeline(AgentConfig(), Detector(), on_incident=opened)
    pending: list[Detector] = []
    lock = threading.Lock()

    def swap(detector: Detector) -> None:  # the daemon's way: hand over, the data path applies
        with lock:
            pending.append(detector)

    updater = ModelUpdater(state_dir, pipe.detector, swap) if state_dir else None
    at = {round(len(batches) * (k + 1) / (SWAPS + 1)): f"swap-{k + 1}" for k in range(SWAPS)}
    threads, applied = [], []
    t0 = time.process_time()
    for i, batch in enumerate(batches):
        if updater is not None and i in at:
            update = signer.sign_model("bundle", at[i], pack_bundle(bundle_of(at[i])))
            thread = threading.Thread(target=updater.handle, args=(update,))
            thread.start()
            threads.append(thread)
        if pending:
            with lock:
                detector = pending.pop(0)
            pipe.swap_detector(detector)
            applied.append((float(batch.ts[0]) if len(batch) else 0.0, detector.version))
        pipe.process(batch)
    incidents = pipe.finish()
    cpu = time.process_time() - t0
    for thread in threads:
        thread.join(30)
    return {"frames": pipe.counters.frames, "incidents": incidents, "cpu_s": cpu, "applied": applied, "labels": labels,
            "acks": list(updater.history) if updater else []}


@pytest.mark.slow
def test_swap_loses_no_packet_and_no_incident(benchmark, capture, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from atlas.link.signing import RuleSigner

    signer = RuleSigner(Ed25519PrivateKey.generate())
    replay(capture, None)  # warm-up: page cache, interpreter, allocations
    base = replay(capture, None)
    swapped = benchmark.pedantic(replay, args=(capture, tmp_path / "state", signer), rounds=1, iterations=1)
    key = lambda inc: (inc.src_ip, inc.kind, round(inc.time, 3))  # noqa: E731
    assert swapped["frames"] == base["frames"]  # every packet went through the pipeline
    assert sorted(map(key, swapped["incidents"])) == sorted(map(key, base["incidents"]))
    assert base["incidents"], "the capture's attacks raised no incident"
    assert all(a["applied"] for a in swapped["acks"]) and len(swapped["acks"]) == SWAPS
    versions = [v for _, v in swapped["applied"]]
    assert versions == [f"swap-{k + 1}" for k in range(len(versions))] and versions
    # each incident carries the model that was scoring when it opened
    assert swapped["labels"] and all(label == running for label, running in swapped["labels"].values())
    info = {"frames": base["frames"], "incidents": len(base["incidents"]), "swaps_applied": len(versions),
            "incidents_by_version": {v: sum(i.model_version == v for i in swapped["incidents"])
                                     for v in sorted({i.model_version for i in swapped["incidents"]})},
            "install_s_p50": round(statistics.median(a["seconds"] for a in swapped["acks"]), 4),
            "replay_cpu_ratio_with_swaps": round(swapped["cpu_s"] / base["cpu_s"], 3)}
    print("model swap during replay", json.dumps(info))
    benchmark.extra_info.update(info)


@pytest.mark.slow
def test_push_to_active_over_the_wire(benchmark, tmp_path):
    from atlas.agent.detect.update import ModelUpdater
    from atlas.link.rules import Rule
    from atlas.link.wire import RuleAck, RuleChange
    from atlas.agent.uplink.client import Uplink
    from atlas.link.signing import RuleSigner
    from atlas.central.decide.playbook import Playbook
    from atlas.central.hub import Hub
    from atlas.central.ingest import serve
    from atlas.central.ingest.testing import make_pki
    from atlas.central.models import bundle_record
    from atlas.central.store import open_store

    pki = make_pki(tmp_path / "pki", ["gw-1"])
    signer = RuleSigner.from_pem_file(pki.signing_key)
    hub = Hub(open_store(tmp_path / "hub.db"), Playbook(), signer)
    server = serve(hub, "127.0.0.1:0", pki.hub_tls())
    active: dict[str, float] = {}
    rules_seen: dict[str, float] = {}
    cond = threading.Condition()

    def on_swap(detector):
        with cond:
            active[detector.version] = time.perf_counter()
            cond.notify_all()

    def on_rules(change):
        with cond:
            for signed in change.rules:
                rules_seen[signed.rule.id] = time.perf_counter()
            cond.notify_all()
        return [RuleAck(s.rule.id, True) for s in change.rules]

    updater = ModelUpdater(tmp_path / "state", Detector(), on_swap)
    up = Uplink(f"127.0.0.1:{server.port}", "gw-1", pki.gateway_tls("gw-1"), tmp_path / "spool", on_rules,
                signing_pub=pki.signing_pub, on_model=updater.handle).start()

    def wait(table, key, timeout=30.0):
        with cond:
            assert cond.wait_for(lambda: key in table, timeout), f"{key} never arrived"
        return table[key]

    def run():
        assert up.wait_connected(10)
        model_s, rule_s = [], []
        for n in range(PUSHES):
            version = f"push-{n}"
            with hub.store.transaction():
                hub.store.put_model_bundle(bundle_record(bundle_of(version), "bench", time.time()))
            t0 = time.perf_counter()
            hub.push_model(version, ["gw-1"], "bench")
            model_s.append(wait(active, version) - t0)
            # baseline: a signed rule down the same stream (issued, stored, sent, verified)
            rule = Rule(id=f"r-{n}", action="quarantine", target=f"198.51.100.{n + 1}", expires_at=time.time() + 600,
                        reason="bench", decision_id=f"d-{n}")
            t0 = time.perf_counter()
            for feed in hub.dispatch.feeds_of("gw-1"):
                feed.push(RuleChange("upsert", [signer.sign_rule(rule)]))
            rule_s.append(wait(rules_seen, rule.id) - t0)
        return model_s, rule_s

    try:
        model_s, rule_s = benchmark.pedantic(run, rounds=1, iterations=1)
        deadline = time.monotonic() + 10  # the last swap fires before its ack has reached the hub's store
        while True:
            acked = [s for s in hub.store.model_status("gw-1") if s.state == "applied"]
            if len(acked) >= PUSHES or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        up.stop()
        server.stop(0)
        hub.close()
        hub.store.close()
    assert len(acked) == PUSHES  # the hub recorded every install
    info = {"pushes": PUSHES,
            "push_to_active_p50_ms": round(statistics.median(model_s) * 1000, 1),
            "push_to_active_max_ms": round(max(model_s) * 1000, 1),
            "rule_trip_p50_ms": round(statistics.median(rule_s) * 1000, 1),
            "ratio_p50_to_rule_trip": round(statistics.median(model_s) / statistics.median(rule_s), 1)}
    print("push to active", json.dumps(info))
    benchmark.extra_info.update(info)
