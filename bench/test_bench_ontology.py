"""The city graph of issue 13's goals, on the 5,000-device, 50-gateway city (the simulator's
layout, atlas.sim.city.layout.describe_city: the same gateways, districts, addresses and MQTT
ids as `atlas-sim city --devices 5000 --gateways 50`, without generating traffic):

1. build (profiles, services, city description -> rdflib graph + rules) in a fresh process:
   CPU seconds (wall too) and the process's peak RSS. Goals: <= 5 s, <= 200 MB. Baseline in the same
   run: rdflib parsing the same graph's triples from N-Triples (the least it costs to hold
   them in rdflib at all).
2. blast_radius, cached per inventory version: p50 / p99 over every device's quarantine and
   revoke_mqtt (warm), against the first (uncached) calls and against one SPARQL query for
   one device's services. Goal: p99 <= 5 ms.

    python -m pytest bench/test_bench_ontology.py --benchmark-only -q -s
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytest.importorskip("rdflib", reason="the ontology extra")

from atlas.central.ontology.facts import load_facts  # noqa: E402
from atlas.central.ontology.graph import build_graph  # noqa: E402
from atlas.central.ontology.query import CityQuery  # noqa: E402
from atlas.firmware_profiles import load_device_profiles  # noqa: E402
from atlas.sim.city.layout import describe_city, plan_layout  # noqa: E402

DEVICES, GATEWAYS = 5000, 50
BUILD_GOAL_S, MEMORY_GOAL_MB, P99_GOAL_MS = 5.0, 200.0, 5.0
# Peak RSS from /proc/self/status VmHWM, the high-water mark of this process's own memory:
# getrusage's ru_maxrss carries over the parent's peak when it was spawned with vfork + exec
# (a benchmark session of 1 GB read as 1 GB here).
BUILD = """
import re, sys, time
t, c = time.perf_counter(), time.process_time()
from atlas.central.ontology.facts import load_facts
from atlas.central.ontology.graph import build_graph
from atlas.central.ontology.query import CityQuery
facts = load_facts(city=sys.argv[1])
graph = build_graph(facts)
built, built_cpu = time.perf_counter() - t, time.process_time() - c
CityQuery(graph, facts.version)
hwm_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(built, built_cpu, time.process_time() - c, len(graph), hwm_kb / 1024)
"""


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    profiles = load_device_profiles()
    path = tmp_path_factory.mktemp("c5k") / "city.json"
    path.write_text(json.dumps(describe_city(plan_layout(profiles, DEVICES, GATEWAYS), profiles)))
    return path


@pytest.mark.slow
def test_graph_build_time_and_memory(benchmark, city, tmp_path):
    def fresh_process():
        out = subprocess.run([sys.executable, "-c", BUILD, str(city)], capture_output=True, text=True, timeout=120, check=True)
        return [float(x) for x in out.stdout.split()]

    built_s, built_cpu, indexed_cpu, triples, rss_mb = benchmark.pedantic(fresh_process, rounds=1, iterations=1)
    nt = tmp_path / "city.nt"
    build_graph(load_facts(city=city)).serialize(nt, format="nt")
    c = time.process_time()
    import rdflib
    assert len(rdflib.Graph().parse(nt, format="nt")) == int(triples)
    parse_cpu = time.process_time() - c
    # CPU seconds, not wall: on this shared 2-core machine other work stretches the wall time.
    print(f"\ncity graph: {DEVICES} devices, {int(triples)} triples; build {built_cpu:.2f} CPU-s ({built_s:.2f} s wall), "
          f"with the query index {indexed_cpu:.2f} CPU-s; peak RSS {rss_mb:.0f} MB; N-Triples parse of the same "
          f"graph {parse_cpu:.2f} CPU-s: build / parse = {built_cpu / parse_cpu:.2f}")
    assert built_cpu <= BUILD_GOAL_S and rss_mb <= MEMORY_GOAL_MB


def test_blast_radius_cached_p99(benchmark, city):
    facts = load_facts(city=city)
    graph = build_graph(facts)
    q = CityQuery(graph, facts.version)
    data = json.loads(city.read_text())
    targets = [(a, d["client_id"]) for d in data["devices"] for a in ("quarantine", "revoke_mqtt")]
    t = time.perf_counter()
    first = q.blast_radius("quarantine", data["gateways"][0]["broker"])  # the widest: a whole gateway
    uncached_ms = (time.perf_counter() - t) * 1e3
    assert len(first.devices_down) == data["gateways"][0]["devices"]
    cold = []
    for a, target in targets:  # the first call for each target computes; it is cached from then on
        t = time.perf_counter_ns()
        q.blast_radius(a, target)
        cold.append(time.perf_counter_ns() - t)
    cold.sort()
    cold_p99 = cold[int(len(cold) * 0.99)] / 1e6
    times = []
    for a, target in targets:
        t = time.perf_counter_ns()
        q.blast_radius(a, target)
        times.append(time.perf_counter_ns() - t)
    times.sort()
    p50, p99 = times[len(times) // 2] / 1e6, times[int(len(times) * 0.99)] / 1e6
    sparql = ("SELECT ?s WHERE { ?d atlas:clientId \"%s\" ; atlas:feeds ?s }" % data["devices"][0]["client_id"])
    t = time.perf_counter()
    rows = list(graph.query(sparql))
    sparql_ms = (time.perf_counter() - t) * 1e3
    assert rows
    benchmark(q.blast_radius, *targets[0])
    print(f"\nblast_radius over {len(targets)} targets, cached: p50 {p50 * 1e3:.1f} us, p99 {p99 * 1e3:.1f} us; "
          f"first call p99 {cold_p99:.2f} ms, a whole broker {uncached_ms:.2f} ms; one SPARQL query for a device's services "
          f"{sparql_ms:.2f} ms: SPARQL / cached p99 = {sparql_ms / p99:.0f}x")
    assert p99 <= P99_GOAL_MS
