"""Incident -> rule active in the gateway's kernel, over the real loop, p50 and p99.

    .venv/bin/python -m pytest bench/test_bench_loop.py --benchmark-enable -s

`atlas-central serve` runs as a subprocess (mutual TLS on loopback); the agent side is the real
Uplink handing rule changes to the real Enforcer with the nftables backend, inside a network
namespace this benchmark creates (so the host's ruleset is never touched). Each round the
agent submits an incident from a new outside address (TEST-NET-2, never contacted: it only
becomes a set element); the time is taken when Enforcer.apply has returned, which is when the
element is in the kernel. Baseline in the same run: a telemetry batch without an incident,
from submit to the hub's acknowledgement (the plain round trip). Goal: p99 under 1 s.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import lab  # noqa: E402

from atlas.link.incidents import Incident  # noqa: E402
from atlas.agent.enforce.enforcer import Enforcer  # noqa: E402
from atlas.agent.enforce.nft import NftBackend  # noqa: E402
from atlas.link.rules import Allowlist  # noqa: E402
from atlas.link.wire import Health, TelemetryBatch  # noqa: E402
from atlas.agent.uplink.client import Uplink  # noqa: E402
from atlas.central.pki import PkiDir, init_pki, issue_gateway  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.slow]

GATEWAY = "gw-bench"
ROUNDS = 40
GOAL_P99_S = 1.0


@pytest.fixture
def netns():
    reason = lab.netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    name = f"atlas-loop-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def hub(tmp_path):
    pki = init_pki(tmp_path / "pki")
    issue_gateway(pki.root, GATEWAY)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "central.toml"
    config.write_text(f'[hub]\nlisten = "127.0.0.1:{port}"\ndatabase = "central.db"\npki = "pki"\nsync = "normal"\n')
    proc = subprocess.Popen([sys.executable, "-m", "atlas.central.cli", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield f"127.0.0.1:{port}", PkiDir(pki.root), tmp_path
    proc.terminate()
    proc.wait(timeout=20)


def test_incident_to_rule_active_p99(benchmark, hub, netns):
    address, pki, tmp = hub
    enforcer = Enforcer([NftBackend(Allowlist(), netns=netns)], tmp / "enforce.json")
    enforcer.reconcile()
    applied: dict[str, float] = {}
    cond = threading.Condition()

    def on_rules(change):
        acks = enforcer.apply(change)
        now = time.perf_counter()
        with cond:
            for s in change.rules:
                applied.setdefault(s.rule.target, now)
            cond.notify_all()
        return acks

    uplink = Uplink(address, GATEWAY, pki.gateway_tls(GATEWAY), tmp / "spool", on_rules, signing_pub=pki.signing_pub,
                    backoff_initial=0.1, backoff_max=0.5)
    uplink.start()
    try:
        assert uplink.wait_connected(30), uplink.last_error

        def wait(pred, timeout=10.0):
            end = time.perf_counter() + timeout
            with cond:
                while not pred():
                    left = end - time.perf_counter()
                    assert left > 0, "timed out"
                    cond.wait(min(left, 0.01))

        def one_round(i: int) -> tuple[float, float]:
            target = f"198.51.100.{i + 1}"
            t0 = time.perf_counter()
            seq = uplink.submit(TelemetryBatch(0, time.time(), [_incident(target)]))
            wait(lambda: target in applied)
            rule_s = applied[target] - t0
            assert seq
            t1 = time.perf_counter()
            seq = uplink.submit(TelemetryBatch(0, time.time(), health=Health(time=time.time())))
            wait(lambda: uplink.spool.stats().acked >= seq)
            return rule_s, time.perf_counter() - t1

        results = benchmark.pedantic(lambda: [one_round(i) for i in range(ROUNDS)], rounds=1, iterations=1)
    finally:
        uplink.stop()
        enforcer.shutdown()
    rule = np.array([r for r, _ in results])
    base = np.array([b for _, b in results])
    listed = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "set", "inet", "atlas", "quarantine4"],
                            capture_output=True, text=True).stdout
    assert all(f"198.51.100.{i + 1}" in listed for i in range(ROUNDS))  # every rule is in the kernel
    p50, p99 = np.percentile(rule, 50), np.percentile(rule, 99)
    ratio = p50 / np.percentile(base, 50)
    benchmark.extra_info.update(p50_ms=round(p50 * 1e3, 1), p99_ms=round(p99 * 1e3, 1),
                                baseline_p50_ms=round(np.percentile(base, 50) * 1e3, 1), ratio_p50=round(ratio, 1))
    print(f"\nincident -> rule active: p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms; plain telemetry round trip p50 "
          f"{np.percentile(base, 50) * 1e3:.0f} ms ({ratio:.1f}x)")
    assert p99 < GOAL_P99_S


def _incident(src: str) -> Incident:
    t = time.time()
    return Incident(id=f"{GATEWAY}/{src}/mqtt_flood/{int(t * 1000)}", kind="mqtt_flood", src_ip=src, dst_ip="10.0.0.2",
                    device=src, gateway=GATEWAY, time=t, last_seen=t, score=0.99, model_version="bench", packets=5000)
