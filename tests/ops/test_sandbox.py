"""The agent's kernel-facing work inside the limits its unit sets, reproduced without systemd.

systemd is not PID 1 here, so the unit cannot be started. What can be reproduced with the same
kernel mechanisms is reproduced: `setpriv` leaves only CAP_NET_RAW and CAP_NET_ADMIN (bounding,
inheritable and ambient sets, as AmbientCapabilities + CapabilityBoundingSet do) with
no-new-privileges, and the probe turns on MemoryDenyWriteExecute (prctl PR_SET_MDWE, the
kernel's own form of the directive). Inside a network namespace of its own (`unshare -n`,
gone when the probe exits) it then does what the agent does: raises lo, captures with the
agent's LiveCapture (AF_PACKET, BPF filter compiled by libpcap, both the TPACKET_V3 ring and
the socket backend), manages an nftables set, and runs int8 inference with LiteRT. A second probe without the capabilities shows capture is refused, so the
first result is down to exactly those two capabilities.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("setpriv", "unshare", "nft", "ip")),
                       reason="needs setpriv, unshare (util-linux), nft and ip"),
]

TWO_CAPS = ["--bounding-set=-all,+net_raw,+net_admin", "--inh-caps=-all,+net_raw,+net_admin",
            "--ambient-caps=-all,+net_raw,+net_admin"]
NO_CAPS = ["--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]

PROBE = textwrap.dedent(r"""
    import ctypes, json, mmap, socket, subprocess, sys, time
    out = {}
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    out["cap_eff"] = status["CapEff"].strip()
    out["no_new_privs"] = status["NoNewPrivs"].strip()
    libc = ctypes.CDLL(None, use_errno=True)
    out["mdwe"] = libc.prctl(65, 1, 0, 0, 0)  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        out["rwx_mapping"] = "allowed"
    except OSError:
        out["rwx_mapping"] = "refused"
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    except PermissionError as err:
        out["af_packet"] = f"refused: {err}"
        print(json.dumps(out)); sys.exit(0)
    out["af_packet"] = "open"
    sock.close()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    from atlas.agent.capture.live import LiveCapture
    out["captured"], out["captured_all_tcp_1883"] = {}, {}
    for backend in ("ring", "socket"):
        # The agent's own capture: AF_PACKET, a BPF filter compiled by libpcap, the mmap ring.
        with LiveCapture("lo", bpf="tcp port 1883", backend=backend, promisc=False,
                         timeout=0.1) as cap:
            # Loopback only, inside this namespace: a refused MQTT connect (its SYN and RST must
            # be captured) and a UDP datagram the filter must drop.
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.sendto(b"x" * 10, ("127.0.0.1", 9999))
            try:
                socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
            except OSError:
                pass
            frames = []
            deadline = time.monotonic() + 3
            for batch in cap.batches():
                for off, n in zip(batch.offsets, batch.caplens):
                    frames.append(bytes(batch.buf[int(off):int(off) + int(n)]))
                if frames and not len(batch) or time.monotonic() > deadline:
                    break
            out["captured"][cap.backend] = len(frames)
            out["captured_all_tcp_1883"][cap.backend] = all(
                f[23] == 6 and 1883 in (int.from_bytes(f[34:36], "big"), int.from_bytes(f[36:38], "big"))
                for f in frames)
    nft = lambda *a: subprocess.run(["nft", *a], capture_output=True, text=True)
    steps = [nft("add", "table", "inet", "atlas_probe"),
             nft("add", "set", "inet", "atlas_probe", "quarantine",
                 "{ type ipv4_addr; flags dynamic, timeout; }"),
             nft("add", "element", "inet", "atlas_probe", "quarantine", "{ 10.0.0.9 timeout 60s }")]
    out["nft_errors"] = [s.stderr.strip() for s in steps if s.returncode]
    listed = nft("-j", "list", "set", "inet", "atlas_probe", "quarantine")
    out["nft_set"] = listed.stdout
    if len(sys.argv) > 1:
        from ai_edge_litert.interpreter import Interpreter
        interp = Interpreter(model_path=sys.argv[1])
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        import numpy as np
        interp.set_tensor(inp["index"], np.ones(inp["shape"], dtype=inp["dtype"]))
        interp.invoke()
        out["inference_shape"] = list(interp.get_tensor(outp["index"]).shape)
    print(json.dumps(out))
""")


def _model(tmp_path: Path) -> Path | None:
    """A shipped int8 model if there is one, else a small one made with TensorFlow."""
    shipped = sorted(resources.files("atlas.agent.detect").joinpath("models").glob("*.tflite")) \
        if resources.files("atlas.agent.detect").joinpath("models").is_dir() else []
    if shipped:
        return Path(str(shipped[0]))
    try:
        import tensorflow as tf
    except ImportError:
        return None
    model = tf.keras.Sequential([tf.keras.Input((32,)), tf.keras.layers.Dense(16, activation="relu"),
                                 tf.keras.layers.Dense(32)])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.random((1, 32), dtype=np.float32)] for _ in range(64))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path = tmp_path / "probe.tflite"
    path.write_bytes(conv.convert())
    return path


def _probe(caps: list[str], *extra: str) -> dict:
    cmd = ["unshare", "--net", "setpriv", "--no-new-privs", *caps, sys.executable, "-c", PROBE, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("model"))


def test_capture_nftables_and_inference_work_with_only_the_two_capabilities(model):
    r = _probe(TWO_CAPS, *([str(model)] if model else []))
    assert int(r["cap_eff"], 16) == (1 << 12) | (1 << 13), "exactly CAP_NET_ADMIN + CAP_NET_RAW"
    assert r["no_new_privs"] == "1"
    assert r["mdwe"] == 0 and r["rwx_mapping"] == "refused", "MemoryDenyWriteExecute is in force"
    assert r["af_packet"] == "open"
    # Both capture backends, the TPACKET_V3 ring included, work and the kernel filter holds.
    assert set(r["captured"]) == {"ring", "socket"}, r
    for backend in ("ring", "socket"):
        assert r["captured"][backend] >= 2 and r["captured_all_tcp_1883"][backend], r
    assert r["nft_errors"] == []
    elements = json.loads(r["nft_set"])["nftables"][1]["set"]["elem"]
    assert any("10.0.0.9" in json.dumps(e) for e in elements)
    if model is None:
        pytest.skip("no .tflite model shipped and no TensorFlow to make one: inference unchecked")
    assert r["inference_shape"][0] >= 1


def test_without_the_capabilities_capture_is_refused():
    r = _probe(NO_CAPS)
    assert int(r["cap_eff"], 16) == 0
    assert r["af_packet"].startswith("refused")
