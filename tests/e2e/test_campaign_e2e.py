"""Two gateways of different domains, one campaign, all real: two lab sites (namespaces, a
bridge, mosquitto with dynamic security), `atlas-agent run` sniffing each site's bridge,
`atlas-central serve` in the energy site's namespace, the transportation site's agent reaching
it over a veth "WAN" link, mutual TLS both ways. The hub's config places the energy gateway;
the transportation gateway says where it stands in its hello (agent.toml [agent] domain). The same outside host (the sites are NATted
alike: it has the same address in both) brute-forces the energy site's broker, then, after the
hub's merge window, the transportation site's: two hub incidents, which the live correlator
links into one cross-domain campaign, shown by `atlas-central campaigns --json` and
`campaigns show`; a decision taken once the campaign exists records it (the policy's context
carried it)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab  # noqa: E402
from lab import wait_for  # noqa: E402

from atlas.central.pki import PkiDir, init_pki, issue_gateway  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SUBNET = "10.86.0.0/24"  # both sites: the attacker is 10.86.0.11 in each
WAN = "10.99.86.0/30"
HUB_PORT = 7443
TTL = 4  # seconds: the quarantine of an outside host, short so it is decided again
SITES = {"gw-ene": "energy", "gw-tra": "transportation"}


def cli(tool: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", f"atlas.{tool}.cli", *args], capture_output=True,
                          text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def central(tmp: Path, *args: str):
    proc = cli("central", *args, "--json", "--config", str(tmp / "central.toml"))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def sites(tmp_path):
    for reason in (lab.netns_unavailable_reason(), lab.mosquitto_unavailable_reason()):
        if reason:
            pytest.skip(reason)
    with lab.Lab(subnet=SUBNET, subnet6="fd86::/64") as ene, \
            lab.Lab(subnet=SUBNET, subnet6="fd86::/64") as tra:
        hub_wan, _ = ene.link_gateway(tra, WAN)
        pki = init_pki(tmp_path / "pki", hub_names=[hub_wan])
        labs = {"gw-ene": ene, "gw-tra": tra}
        attackers = {gw: site.add_device("attacker") for gw, site in labs.items()}
        for site in labs.values():
            site.start_mosquitto(bind="0.0.0.0", port=1883)
        (tmp_path / "central.toml").write_text(f"""
[hub]
listen = "0.0.0.0:{HUB_PORT}"
database = "central.db"
pki = "pki"
operator_poll = 0.1
[incidents]
merge_window = 2
[correlate]
engine = "rules"
window = 3600
[decide.playbook.default]
outside = {{ action = "quarantine", ttl = {TTL} }}
[gateways.gw-ene]
domain = "energy"
""")
        hub = ene.popen(ene.gw, [sys.executable, "-m", "atlas.central.cli", "serve", "--config",
                                 str(tmp_path / "central.toml")],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        agents = {}
        for gw, site in labs.items():
            folder = tmp_path / gw
            folder.mkdir()
            lab.write_agent_toml(folder / "agent.toml", gateway=gw, interface=site.bridge,
                                 hub_port=HUB_PORT, tls=issue_gateway(pki.root, gw),
                                 signing_pub=PkiDir(pki.root).signing_pub,
                                 hub_host="127.0.0.1" if gw == "gw-ene" else hub_wan,
                                 extra='[enforce]\nnftables = "off"\n')
            if gw == "gw-tra":  # placed by its own hello, not by the hub's config
                text = (folder / "agent.toml").read_text()
                (folder / "agent.toml").write_text(text.replace(
                    "[agent]\n", f'[agent]\ndomain = "{SITES[gw]}"\ndistrict = "d02"\n', 1))
            agents[gw] = site.popen(site.gw, [sys.executable, "-m", "atlas.agent.cli", "run",
                                              "--config", str(folder / "agent.toml")],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def connected(gw):
            for proc in (hub, agents[gw]):
                if proc.poll() is not None:
                    raise AssertionError(f"exited: {proc.stdout.read()}")
            r = cli("agent", "status", "--json", "--socket", str(tmp_path / gw / "agent.sock"))
            return r.returncode == 0 and json.loads(r.stdout)["hub"]["state"] == "connected"

        for gw in labs:
            assert wait_for(lambda: connected(gw), 60), f"agent {gw} did not connect to the hub"
        yield labs, attackers, tmp_path


def brute_force(site: lab.Lab, attacker: lab.Device, seconds: float) -> subprocess.Popen:
    return site.popen(attacker.netns, [sys.executable, "-c", lab.BRUTEFORCE, site.gw_ip, "1883",
                                       str(seconds)], stdout=subprocess.PIPE, text=True)


def incidents_of(tmp: Path, gateway: str) -> list[dict]:
    return [i for i in central(tmp, "incidents") if gateway in i["gateways"]]


def test_two_domains_one_campaign_visible_and_in_the_policy_context(sites):
    labs, attackers, tmp = sites
    attacker_ip = attackers["gw-ene"].ip
    assert attackers["gw-tra"].ip == attacker_ip

    # the energy site first; its incident is closed to new evidence once the attack stops
    first = brute_force(labs["gw-ene"], attackers["gw-ene"], 12)
    assert wait_for(lambda: incidents_of(tmp, "gw-ene"), 45), "no incident from gw-ene"
    first.wait(timeout=30)
    time.sleep(4)  # past the hub's merge window: the next site's attack is a new incident

    second = brute_force(labs["gw-tra"], attackers["gw-tra"], 30)
    try:
        assert wait_for(lambda: incidents_of(tmp, "gw-tra"), 45), "no incident from gw-tra"
        campaigns = wait_for(lambda: central(tmp, "campaigns"), 20)
        assert campaigns, "no campaign"
        [campaign] = campaigns
        assert campaign["gateways"] == ["gw-ene", "gw-tra"]
        assert campaign["domains"] == ["energy", "transportation"]
        assert campaign["scope"] == "city" and attacker_ip in campaign["attackers"]
        places = {g["id"]: (g["domain"], g["district"]) for g in central(tmp, "gateways")}
        assert places == {"gw-ene": ("energy", ""), "gw-tra": ("transportation", "d02")}
        ene = {i["id"] for i in incidents_of(tmp, "gw-ene")}
        tra = {i["id"] for i in incidents_of(tmp, "gw-tra")}
        assert ene.isdisjoint(tra) and ene | tra <= set(campaign["incidents"])
        assert any(lk["reason"] == "same_attacker" and lk["scope"] == "city"
                   and lk["gateways"] == ["gw-ene", "gw-tra"] for lk in campaign["links"])

        # the transportation incident's quarantine expires while the attack goes on: the
        # hub decides again, with the campaign in the policy's context
        def decided_in_campaign():
            return [d for d in central(tmp, "decisions")
                    if d["incident"] in tra and d["campaign"] == campaign["id"]]

        assert wait_for(decided_in_campaign, 30), central(tmp, "decisions")
    finally:
        second.terminate()
        second.wait(timeout=10)

    shown = cli("central", "campaigns", "show", campaign["id"], "--config",
                str(tmp / "central.toml"))
    assert shown.returncode == 0, shown.stderr
    assert "in 2 domain(s) (energy, transportation), linked across domains" in shown.stdout
    assert f"the same attacker, {attacker_ip} (across domains)" in shown.stdout
    assert "on gw-ene (energy) ->" in shown.stdout and "on gw-tra (transportation):" in shown.stdout
    print(f"\n{shown.stdout}")
