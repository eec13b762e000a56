"""`atlas-central` as a new user meets it: bad config files and bad arguments end in one line
naming the problem, a non-zero exit and no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from frontdoor import bad_files, one_line_error  # noqa: E402

CENTRAL = str(Path(sys.executable).parent / "atlas-central")


def central(*args: str, prefix: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, CENTRAL, *args], capture_output=True, text=True, timeout=timeout)


def usage_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    """argparse's way: usage, then one `error:` line naming the argument; exit 2."""
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, r.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hub")
    r = central("pki", "init", "--dir", str(d / "pki"))
    assert r.returncode == 0, r.stderr
    cfg = d / "central.toml"
    cfg.write_text('[hub]\ndatabase = "central.db"\npki = "pki"\nlisten = "127.0.0.1:0"\n')
    return cfg


def test_config_files_that_are_not_config_files(tmp_path):
    good = '[hub]\ndatabase = "central.db"\n'
    for name, path, prefix, says in bad_files(tmp_path, good):
        t0 = time.monotonic()
        r = central("check", "--config", str(path), prefix=tuple(prefix), timeout=30)
        one_line_error(r, str(path), says)
        assert time.monotonic() - t0 < 20, name


@pytest.mark.parametrize("text, key", [
    ('[hub]\ndatabase = "c.db"\ntelemetry_retention = nan\n', "hub.telemetry_retention: must be a finite number"),
    ('[hub]\ndatabase = "c.db"\noperator_poll = inf\n', "hub.operator_poll"),
    ('[hub]\ndatabase = "c.db"\n[incidents]\nmerge_window = nan\n', "incidents.merge_window"),
])
def test_non_finite_numbers_are_refused(tmp_path, text, key):
    cfg = tmp_path / "central.toml"
    cfg.write_text(text)
    one_line_error(central("check", "--config", str(cfg)), key)


def test_a_rule_id_that_is_not_text(config):
    usage_error(central("revoke", "r-\udcff\udcfe", "--config", str(config), "--wait", "0"),
                "RULE_ID", "is not an id")


@pytest.mark.parametrize("args, needles", [
    (("incidents", "--limit", "99999999999999999999999"), ("--limit", "is not in [1,")),
    (("decisions", "--limit", "0"), ("--limit", "is not in [1,")),
    (("approve", "d-1", "--wait", "nan"), ("--wait", "is not in [0, 3600]")),
])
def test_numbers_out_of_range(config, args, needles):
    usage_error(central(*args, "--config", str(config)), *needles)


def test_pki_names_must_be_addresses_or_dns_names(tmp_path):
    usage_error(central("pki", "init", "--dir", str(tmp_path / "pki"), "--name", "bad name!"),
                "--name", "neither an IP address nor a DNS name")
    assert central("pki", "init", "--dir", str(tmp_path / "pki"), "--name", "hub-1.city.example", "--name", "10.0.0.5").returncode == 0


def test_an_inventory_that_is_not_a_file(tmp_path, config):
    fifo = tmp_path / "inventory.toml"
    os.mkfifo(fifo)
    cfg = config.parent / "with-inventory.toml"  # next to the hub's pki
    for inventory in (fifo, Path("/dev/zero")):
        cfg.write_text(config.read_text() + f'inventory = "{inventory}"\n')
        one_line_error(central("check", "--config", str(cfg), timeout=30), "hub.inventory", str(inventory), "not a regular file")


@pytest.mark.parametrize("days", ["-10", "0", "99999999"])
def test_pki_days_out_of_range(tmp_path, days):
    usage_error(central("pki", "init", "--dir", str(tmp_path / "pki"), "--days", days), "--days", "is not in [1, 3650]")
    assert not (tmp_path / "pki").exists()

