"""`atlas-agent replay` on damaged captures, through the real command: the attackers in the good
records are found, one warning line says what was repaired or skipped, exit 0; a file that
cannot be read at all is one error line and exit 2. Never a traceback."""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from atlas.agent.capture.pcapfile import read_capture
from atlas.sim.attacks import AttackSpec
from atlas.sim.capture import generate_capture

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/agent/capture_files.py (importlib mode)
from capture_files import epb, idb, shb, spb  # noqa: E402

AGENT = Path(sys.executable).with_name("atlas-agent")
LITERT_INFO = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."  # printed by LiteRT itself


SUMMARY = re.compile(r"^[\d,]+ packets, .* incidents in ")  # the line that ends a replay (stderr with --json)


def replay(path: Path) -> tuple[int, list[dict], list[str]]:
    """Exit code, incidents (--json) and stderr lines of the real command, less its summary line."""
    r = subprocess.run([str(AGENT), "replay", str(path), "--json"], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    err = [line for line in r.stderr.splitlines() if line.strip() and line != LITERT_INFO]
    summary = [line for line in err if SUMMARY.match(line)]
    assert len(summary) == (1 if r.returncode == 0 else 0), r.stderr
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines() if line.strip()], [e for e in err if e not in summary]


def kinds(incidents: list[dict]) -> set[tuple[str, str]]:
    return {(i["src_ip"], i["kind"]) for i in incidents}


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """The sim capture, its records, and what a replay of it finds (the reference)."""
    out = tmp_path_factory.mktemp("inputs") / "gw.pcap"
    truth = generate_capture(out, devices=20, duration=120, seed=5, attacks=[
        AttackSpec("port_scan", start=20, duration=20), AttackSpec("mqtt_bruteforce", start=60, duration=30)])
    records = [(b.frame(i), float(b.ts[i]), int(b.wirelens[i])) for b in read_capture(out) for i in range(len(b))]
    code, incidents, err = replay(out)
    assert code == 0 and not err, err
    attackers = {(s.attacker, s.kind) for s in truth.steps}
    assert attackers <= kinds(incidents)
    return out, records, kinds(incidents), attackers


def pcapng(records, *, timed_every: int = 1, times=None, far=()) -> bytes:
    """Records as EPBs (ns), except that only every `timed_every`-th is timed: the others are SPBs.
    Records whose index is in `far` are on a second interface whose time offset is 2^62 s."""
    out = [shb("<"), idb("<", 1, tsresol=9), idb("<", 1, tsresol=9, tsoffset=2**62)]
    for k, (data, t, wirelen) in enumerate(records):
        t = t if times is None else times[k]
        if k % timed_every == 0:
            out.append(epb("<", int(k in far), int(round(t * 1e9)), data, wirelen))
        else:
            out.append(spb("<", data, wirelen))
    return b"".join(out)


def tshark_count(path: Path) -> int | None:
    if not shutil.which("tshark"):
        return None
    r = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return len(r.stdout.splitlines())


def test_simple_packet_blocks_between_timed_ones(tmp_path, capture):
    _, records, _, _ = capture
    path = tmp_path / "spb.pcapng"
    path.write_bytes(pcapng(records, timed_every=10))
    assert tshark_count(path) in (None, len(records))
    code, incidents, err = replay(path)
    assert code == 0
    # Times are coarser (ten frames share one): the attackers are found, no one else is flagged.
    _, _, reference, attackers = capture
    assert attackers <= kinds(incidents) and {i["src_ip"] for i in incidents} <= {s for s, _ in reference}
    untimed = len(records) - len(records[::10])
    assert err == [f"WARNING atlas.agent.capture.pcapfile: {path}: {untimed} frames in simple packet blocks carry no "
                   f"timestamp; each was given the time of the frame before it (0, the epoch, before the first timed frame)"]


def test_a_capture_of_simple_packet_blocks_only(tmp_path, capture):
    _, records, _, attackers = capture
    path = tmp_path / "spb-only.pcapng"
    path.write_bytes(pcapng([]) + b"".join(spb("<", d, w) for d, _, w in records))
    assert tshark_count(path) in (None, len(records))
    code, incidents, err = replay(path)
    assert code == 0 and len(err) == 1 and f"{len(records)} frames in simple packet blocks" in err[0]
    # No time at all: every frame is at the epoch; the attackers are still named.
    assert attackers <= kinds(incidents) and {i["time"] for i in incidents} == {0.0}


def test_a_corrupt_last_record_header_keeps_the_good_records(tmp_path, capture):
    src, records, reference, _ = capture
    data = bytearray(src.read_bytes())
    last = len(data) - 16 - len(records[-1][0])
    data[last + 8 : last + 12] = struct.pack("<I", 0xFFFFFFF0)  # captured length
    path = tmp_path / "bad-tail.pcap"
    path.write_bytes(bytes(data))
    code, incidents, err = replay(path)
    assert code == 0 and kinds(incidents) == reference
    assert len(err) == 1 and err[0].startswith(f"WARNING atlas.agent.capture.pcapfile: {path}: corrupt pcap record at offset {last}")
    assert f"kept the {len(records) - 1} frames before it and skipped the rest of the file ({len(data) - last} bytes)" in err[0]


def test_a_corrupt_last_pcapng_block_keeps_the_good_blocks(tmp_path, capture):
    _, records, reference, _ = capture
    data = bytearray(pcapng(records))
    data[-4:] = struct.pack("<I", 12)  # the last block's trailing length disagrees with its head
    path = tmp_path / "bad-tail.pcapng"
    path.write_bytes(bytes(data))
    code, incidents, err = replay(path)
    assert code == 0 and kinds(incidents) == reference
    assert len(err) == 1 and "corrupt pcapng packet block" in err[0]
    assert f"kept the {len(records) - 1} frames before it" in err[0]


def test_times_out_of_range_are_repaired(tmp_path, capture):
    _, records, reference, _ = capture
    rng = np.random.default_rng(1)
    far = set(np.flatnonzero(rng.random(len(records)) < 0.05).tolist())
    path = tmp_path / "far.pcapng"
    path.write_bytes(pcapng(records, far=far))
    code, incidents, err = replay(path)
    assert code == 0 and kinds(incidents) == reference
    assert err == ["WARNING atlas.agent: frames with a NaN, infinite or out-of-range time: each is given the time "
                   "before it (counted in pipeline.bad_timestamps)"]


def test_a_clock_step_back(tmp_path, capture):
    _, records, reference, _ = capture
    t0 = records[0][1]
    times = [t - 3600 if t >= t0 + 50 else t for _, t, _ in records]
    path = tmp_path / "step.pcapng"
    path.write_bytes(pcapng(records, times=times))
    code, incidents, err = replay(path)
    assert code == 0 and kinds(incidents) == reference
    assert len(err) == 1 and "WARNING atlas.agent: capture time went back from" in err[0]
    bf = next(i for i in incidents if i["kind"] == "mqtt_bruteforce")
    assert bf["time"] < t0 and 20 <= bf["last_seen"] - bf["time"] <= 40  # its own 30 s, in the new timeline


@pytest.mark.parametrize("name, data, message", [
    ("first.pcap", struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + struct.pack("<IIII", 0, 0, 1 << 30, 10),
     "corrupt pcap record at offset 24"),
    ("first.pcapng", shb("<") + idb("<", 1) + epb("<", 0, 0, b"x" * 20)[:-4] + b"\0\0\0\0",
     "corrupt pcapng packet block at offset"),
    ("usb.pcap", struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 189), "unsupported link type 189"),
    ("empty.pcapng", b"\x0a\x0d\x0d\x0a", "pcapng block at offset 0 is cut short"),
    ("cut.pcap", struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + struct.pack("<IIII", 0, 0, 100, 100) + b"x" * 10,
     "pcap record at offset 24 is cut short"),
])
def test_an_unusable_file_is_one_error_line(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    code, incidents, err = replay(path)
    assert code == 2 and not incidents
    assert len(err) == 1 and err[0].startswith(f"atlas-agent: {path}: ") and message in err[0], err
