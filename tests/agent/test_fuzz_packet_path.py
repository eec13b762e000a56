"""The packet path's fuzzers that have no older home, small enough for CI (seconds):
capture files through the reader, spoiled frame times through the whole pipeline, and the
bench script that runs every fuzzer to 1M inputs (bench/fuzz_packet_path.py), as a smoke run.
The header and MQTT fuzzers run in test_packets.py and test_mqtt_fuzz.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/agent/fuzzing.py (importlib mode)
from fuzzing import FUZZERS, fuzz_capture_files, fuzz_times  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_damaged_capture_files_raise_only_capture_errors():
    run = fuzz_capture_files(8_000, 3)
    assert run.unexpected == 0, run.examples
    s = run.stats
    # Coverage of the fuzz: files read to the end, refused, cut, corrupt past frames, untimed frames.
    assert s["read"] > 2_000 and s["capture_errors"] > 2_000 and s["frames"] > 5_000
    assert s["truncated"] > 200 and s["corrupt"] > 500 and s["untimed"] > 500


def test_spoiled_frame_times_through_the_pipeline():
    run = fuzz_times(60_000, 4, pipeline_inputs=20_000)
    assert run.unexpected == 0, run.examples
    s = run.stats
    assert s["bad_times"] > 100 and s["clock_steps"] > 5 and s["incidents"] > 5 and s["rows"] > 1_000


def test_bench_script_runs_every_fuzzer():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_packet_path.py"), "--inputs", "300", "--seed", "5", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["fuzzer"] for x in runs] == list(FUZZERS)
    assert all(x["inputs"] == 300 and x["unexpected"] == 0 and x["rate"] > 0 for x in runs)
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_packet_path.py"), "--only", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown fuzzer 'nope'" in bad.stderr and "Traceback" not in bad.stderr
