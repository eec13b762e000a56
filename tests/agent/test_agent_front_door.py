"""`atlas-agent` as a new user meets it: every bad input ends in one line naming the problem,
a non-zero exit and no traceback; whatever `run --check` accepts starts."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab  # noqa: E402
from frontdoor import bad_files, one_line_error  # noqa: E402

AGENT = str(Path(sys.executable).parent / "atlas-agent")
DEFAULT_SOCKET = "/run/atlas/agent/control.sock"


def agent(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=timeout, **kw)


def base(tmp_path: Path, interface: str = "lo") -> str:
    return (f'[agent]\ninterface = "{interface}"\nstate_dir = "{tmp_path / "state"}"\n'
            f'control_socket = "{tmp_path / "agent.sock"}"\n')


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from atlas.central.pki import init_pki, issue_gateway

    d = tmp_path_factory.mktemp("pki")
    p = init_pki(d)
    files = issue_gateway(d, "gw-01")
    return files, p.signing_pub


def hub_section(files, signing_pub, **override) -> str:
    keys = {"address": "127.0.0.1:9", "ca": files.ca, "cert": files.cert, "key": files.key, "signing_key": signing_pub} | override
    return "[hub]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())


# ---- what `run --check` refuses --------------------------------------------------------------

BAD_CONFIGS = [
    # (id, text after the [agent] table's base keys, what the one line must name)
    ("missing interface", None, "agent.interface"),
    ("spool NaN", "[hub]\nspool_max_mb = nan\n", "hub.spool_max_mb"),
    ("spool negative", "[hub]\nspool_max_mb = -4\n", "hub.spool_max_mb"),
    ("garbage bpf", 'bpf = "this is not ( a filter"\n', "agent.bpf"),
    ("gateway id with a path", 'gateway_id = "../../etc/cron.d/x"\n', "agent.gateway_id"),
    ("gateway id 100k long", f'gateway_id = "{"g" * 100_000}"\n', "agent.gateway_id"),
    ("alerts NaN", "[alerts]\nconfirm_window_s = nan\n", "alerts.confirm_window_s"),
    ("alerts negative", "[alerts]\nclose_after_s = -5\n", "alerts.close_after_s"),
    ("alerts score NaN", "[alerts]\nstrong_score = nan\n", "alerts.strong_score"),
    ("alerts inf rate", "[alerts]\nvolumetric_pps = inf\n", "alerts.volumetric_pps"),
    ("port true", "mqtt_ports = [true]\n", "agent.mqtt_ports[0]"),
    ("metrics port true", "[metrics]\nport = true\n", "metrics.port"),
    ("enforce NaN", "[enforce]\nmax_ttl_s = nan\n", "enforce.max_ttl_s"),
    ("budget NaN", "[budget]\ncpu_percent = nan\n", "budget.cpu_percent"),
    ("max devices huge", "[detect]\nmax_devices = 99999999999999999999\n", "detect.max_devices"),
]


@pytest.mark.parametrize("name, extra, key", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_check_refuses_what_would_not_start(tmp_path, name, extra, key):
    text = base(tmp_path, "nosuch0") if extra is None else base(tmp_path)
    if extra and not extra.startswith("["):
        text = text.replace("[agent]\n", "[agent]\n" + extra)
    elif extra:
        text += extra
    cfg = tmp_path / "agent.toml"
    cfg.write_text(text)
    one_line_error(agent("run", "--config", str(cfg), "--check"), str(cfg), key)


def test_check_refuses_missing_tls_and_signing_files(tmp_path, pki):
    files, signing_pub = pki
    for key, override in (("hub.ca", {"ca": tmp_path / "no-ca.crt"}), ("hub.key", {"key": tmp_path / "no.key"}),
                          ("hub.signing_key", {"signing_key": files.cert})):  # a certificate is not a signing key
        cfg = tmp_path / "agent.toml"
        cfg.write_text(base(tmp_path) + hub_section(files, signing_pub, **override))
        one_line_error(agent("run", "--config", str(cfg), "--check"), key)


def test_check_refuses_a_models_dir_that_is_a_file(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(base(tmp_path) + f'[detect]\nmodels_dir = "{cfg}"\n')
    one_line_error(agent("run", "--config", str(cfg), "--check"), "detect.models_dir", "is a file")


def test_check_refuses_unknown_boards_and_state_paths_that_are_not_what_they_say(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(base(tmp_path).replace("[agent]\n", '[agent]\nboard = "nosuch"\n'))
    one_line_error(agent("run", "--config", str(cfg), "--check"), "agent.board", "nosuch")
    folder = tmp_path / "keep"
    folder.mkdir()
    (folder / "precious").write_text("x")
    cfg.write_text(base(tmp_path) + f'[enforce]\nnftables = "off"\nstate_file = "{folder}"\n')
    for args in (("--check",), ()):  # the enforcer would set an unreadable state aside: never a folder
        one_line_error(agent("run", "--config", str(cfg), *args), "enforce.state_file", "not a regular file")
    assert (folder / "precious").read_text() == "x"
    cfg.write_text(base(tmp_path).replace(str(tmp_path / "state"), str(cfg)))
    one_line_error(agent("run", "--config", str(cfg), "--check"), "agent.state_dir", "is not a folder")


def test_check_refuses_to_capture_without_the_right_to(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to drop CAP_NET_RAW from a command")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(base(tmp_path))
    r = subprocess.run(["setpriv", "--bounding-set=-net_raw", AGENT, "run", "--config", str(cfg), "--check"],
                       capture_output=True, text=True, timeout=60)
    one_line_error(r, "agent.interface", "CAP_NET_RAW")


def test_check_refuses_an_inventory_that_is_a_fifo(tmp_path):
    fifo = tmp_path / "devices.toml"
    os.mkfifo(fifo)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(base(tmp_path) + f'[detect]\ninventory = "{fifo}"\n')
    one_line_error(agent("run", "--config", str(cfg), "--check", timeout=30), "detect.inventory", "not a regular file (a FIFO)")


def test_a_10_MB_gateway_id_is_refused_in_one_short_line(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(base(tmp_path).replace("[agent]\n", '[agent]\ngateway_id = "' + "g" * 10_000_000 + '"\n'))
    one_line_error(agent("run", "--config", str(cfg), "--check"), str(cfg), "MiB")


def test_missing_interface_and_busy_metrics_port_also_stop_run_in_one_line(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(base(tmp_path, "nosuch0"))
    one_line_error(agent("run", "--config", str(cfg)), "agent.interface", "nosuch0")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg.write_text(base(tmp_path) + f"[metrics]\nport = {busy.getsockname()[1]}\n")
        for args in (("--check",), ()):
            one_line_error(agent("run", "--config", str(cfg), *args), "metrics.port", "in use")


# ---- config files that are not config files -------------------------------------------------

def test_config_files_that_are_not_config_files(tmp_path):
    for name, path, prefix, says in bad_files(tmp_path, "[agent]\n"):
        t0 = time.monotonic()
        r = subprocess.run([*prefix, AGENT, "run", "--config", str(path), "--check"], capture_output=True, text=True, timeout=30)
        one_line_error(r, str(path), says)
        assert time.monotonic() - t0 < 20, name


# ---- whatever --check accepts starts --------------------------------------------------------

def good_configs(tmp_path: Path, files, signing_pub, metrics_port: int) -> dict[str, str]:
    b = base(tmp_path, "br0")
    return {
        "minimal": b,
        "filter, metrics, socket capture": b.replace("[agent]\n", '[agent]\nbpf = "tcp port 1883 or icmp"\nsnaplen = 128\n'
                                                       'capture_backend = "socket"\nmqtt_ports = [1883, 8883]\n')
                                           + f"[metrics]\nport = {metrics_port}\n",
        "hub and spool": b + hub_section(files, signing_pub) + f'spool_dir = "{tmp_path / "spool"}"\nspool_max_mb = 0.5\n',
        "shadow, alerts, detect": b.replace("[agent]\n", '[agent]\ngateway_id = "gw-01.a_b"\n')
                                  + '[enforce]\nmode = "shadow"\nallowlist = ["10.0.0.0/8"]\n[alerts]\nconfirm_hits = 1\n'
                                    "close_after_s = 30\n[detect]\ntick_seconds = 0.5\nmax_devices = 1024\n",
    }


@pytest.mark.netns
@pytest.mark.slow
def test_every_config_check_accepts_starts_and_stops(tmp_path, pki):
    reason = lab.netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    files, signing_pub = pki
    with lab.Lab(subnet="10.93.0.0/24", subnet6="fd93::/64") as the_lab:
        for name, text in good_configs(tmp_path, files, signing_pub, lab.free_port()).items():
            cfg = tmp_path / f"{name.replace(' ', '_').replace(',', '')}.toml"
            cfg.write_text(text)
            check = the_lab.run(the_lab.gw, [AGENT, "run", "--config", str(cfg), "--check"])
            assert check.returncode == 0 and "OK" in check.stdout, (name, check.stderr[-2000:])
            assert check.stderr == "", (name, check.stderr)  # nothing else on a good check (no runtime chatter)
            proc = the_lab.popen(the_lab.gw, [AGENT, "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            try:
                up = lab.wait_for(lambda: proc.poll() is not None or agent(
                    "status", "--json", "--socket", str(tmp_path / "agent.sock"), timeout=10).returncode == 0, 30)
                assert proc.poll() is None, (name, proc.communicate()[1][-2000:])
                assert up, f"{name}: the agent never answered on its control socket"
            finally:
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=20)
            assert proc.returncode == 0 and "Traceback" not in err, (name, err[-2000:])


# ---- status ---------------------------------------------------------------------------------

def test_status_without_a_daemon_json_is_an_error_object_naming_the_socket_once(tmp_path):
    sock = tmp_path / "none.sock"
    r = agent("status", "--json", "--socket", str(sock))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    answer = json.loads(r.stdout)
    assert answer["running"] is False and answer["socket"] == str(sock) and "no agent is running" in answer["error"]
    assert (r.stdout + r.stderr).count(str(sock)) == 1
    text = agent("status", "--socket", str(sock))
    assert one_line_error(text, "no agent is running").count(str(sock)) == 1


def test_status_help_names_the_real_default_socket():
    from atlas.agent.config import AgentConfig

    assert AgentConfig().agent.control_socket == DEFAULT_SOCKET
    r = agent("status", "--help")
    assert DEFAULT_SOCKET in " ".join(r.stdout.split())


def test_status_json_into_a_closed_pipe(tmp_path):
    """`atlas-agent status --json | head -c 10`: the reader goes away early; no BrokenPipeError."""
    sock = str(tmp_path / "agent.sock")
    from atlas.link.control import serve

    server = serve(sock, {"status": lambda: {"incidents": [{"n": i, "pad": "x" * 200} for i in range(5000)]}})
    try:
        r = subprocess.run(f"{AGENT} status --json --socket {sock} | head -c 10", shell=True, capture_output=True,
                           text=True, timeout=30)
    finally:
        server.close()
    assert r.stdout.startswith("{") and len(r.stdout) == 10
    assert r.stderr == "", r.stderr


# ---- bench and replay -----------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [(("--devices", "-5"), "--devices: -5 is not in [1, 20000]"),
                                        (("--seconds", "nan"), "--seconds: nan is not in [1, 3600]"),
                                        (("--seconds", "inf"), "--seconds: inf is not in"),
                                        (("--devices", "many"), "'many' is not a whole number")])
def test_bench_refuses_bad_numbers(args, says):
    r = agent("bench", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0], r.stderr


@pytest.fixture(scope="module")
def quiet_capture(tmp_path_factory) -> Path:
    from atlas.sim.capture import generate_capture

    out = tmp_path_factory.mktemp("quiet") / "traffic.pcap"
    generate_capture(out, devices=6, duration=20, seed=3, attacks=[])
    return out


def test_replay_without_incidents_ends_with_a_summary(quiet_capture):
    r = agent("replay", str(quiet_capture))
    assert r.returncode == 0 and r.stderr == "", r.stderr  # no runtime chatter on stderr either
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    import re

    m = re.fullmatch(r"([\d,]+) packets, ([\d,]+) MQTT messages, (\d+) devices, 0 incidents in (\d+) s of traffic "
                     r"\(analysed in [\d.]+ s\)", lines[0])
    assert m, lines[0]
    packets, messages, devices, seconds = (int(g.replace(",", "")) for g in m.groups())
    assert packets > messages > 0 and 6 <= devices <= 12 and 18 <= seconds <= 20
    j = agent("replay", str(quiet_capture), "--json")  # stdout stays JSON lines: the summary goes to stderr
    assert j.returncode == 0 and j.stdout == ""
    assert j.stderr.strip().startswith(lines[0].split(" (analysed")[0]), j.stderr


def test_replay_of_a_directory_or_a_fifo_says_so(tmp_path):
    one_line_error(agent("replay", str(tmp_path)), str(tmp_path), "is a directory")
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    one_line_error(agent("replay", str(fifo), timeout=30), str(fifo), "not a regular file")


def test_a_truncated_capture_is_warned_about_once_without_a_source_line(quiet_capture, tmp_path):
    cut = tmp_path / "cut.pcap"
    data = quiet_capture.read_bytes()
    cut.write_bytes(data[: len(data) - 7])
    r = agent("replay", str(cut))
    assert r.returncode == 0, r.stderr
    warn = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(warn) == 1 and "truncated" in warn[0] and ".py" not in warn[0], r.stderr
