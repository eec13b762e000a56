"""nftables enforcement with real kernels rules and real packets, in namespaces the test makes.

The gateway namespace gets ATLAS's `inet atlas` table; devices (dev1, att, mgmt) reach it
over veth pairs on a bridge. The host's own ruleset is never touched: every nft runs as
`ip netns exec <gw> nft ...`.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab  # noqa: E402  (tests/lab.py: the shared namespace lab)

from atlas.link.rules import Rule  # noqa: E402
from atlas.agent.enforce.backend import Element  # noqa: E402
from atlas.agent.enforce.enforcer import Enforcer  # noqa: E402
from atlas.agent.enforce.nft import Nft, NftBackend  # noqa: E402
from atlas.link.rules import Allowlist  # noqa: E402
from atlas.link.wire import RuleChange, SignedRule  # noqa: E402

REASON = lab.netns_unavailable_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(REASON), reason=REASON or "ok")]

PORT = 8883
OTHER_PORT = 8884


class Net:
    def __init__(self, tmp_path: Path) -> None:
        self.lab = lab.Lab()
        try:
            self.dev1 = self.lab.add_device("dev1")
            self.att = self.lab.add_device("att")
            self.mgmt = self.lab.add_device("mgmt", ip="10.77.0.5")
        except Exception:
            self.lab.close()
            raise
        self.gw = self.lab.gw
        self.allow = Allowlist.build([self.lab.gw_ip, self.mgmt.ip])
        self.tmp = tmp_path
        self.sockets: list[socket.socket] = []

    def enforcer(self, clock=time.time, state: str = "enforce.json") -> Enforcer:
        backend = NftBackend(self.allow, netns=self.gw)
        return Enforcer([backend], self.tmp / state, self.allow, clock=clock)

    def listen(self, netns: str, port: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
        with lab.in_netns(netns):
            s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
        self.sockets.append(s)
        return s

    def elements(self) -> set[Element]:
        return set(NftBackend(netns=self.gw).observe())

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.lab.close()


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    yield n
    n.close()


def rule(rid: str, target: str, ttl: float = 60, action: str = "quarantine", now: float | None = None, **params) -> Rule:
    return Rule(id=rid, action=action, target=target, expires_at=(now or time.time()) + ttl, reason="test", decision_id="d1", params=params)


def upsert(*rules: Rule) -> RuleChange:
    return RuleChange("upsert", [SignedRule(r, b"") for r in rules])


def test_quarantine_drops_the_attacker_and_nobody_else(net):
    net.listen(net.gw, PORT)
    net.listen(net.att.netns, PORT)
    enf = net.enforcer()
    assert lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT) and lab.tcp_connects(net.gw, net.att.ip, PORT)
    (ack,) = enf.apply(upsert(rule("q-att", net.att.ip)))
    assert ack.applied, ack.error
    assert not lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT, timeout=0.5)  # from it
    assert not lab.tcp_connects(net.gw, net.att.ip, PORT, timeout=0.5)  # to it
    assert lab.tcp_connects(net.dev1.netns, net.lab.gw_ip, PORT)
    (entry,) = enf.status()["rules"]
    assert entry["state"] == "enforced" and entry["packets"] >= 2 and 55 < entry["remaining_s"] <= 60
    counters = enf.status()["backends"]["nftables"]["counters"]
    assert counters["input: quarantine v4"]["packets"] >= 1 and counters["output: quarantine v4"]["packets"] >= 1
    enf.apply(RuleChange("withdraw", withdrawn=["q-att"]))
    assert lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT)


def test_quarantine_of_an_ipv6_address(net):
    if not (net.lab.gw_ip6 and net.att.ip6):
        pytest.skip("IPv6 is disabled in this kernel")
    with lab.in_netns(net.gw):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    net.sockets.append(s)
    s.bind(("::", PORT))
    s.listen(16)
    enf = net.enforcer()
    assert lab.tcp_connects(net.att.netns, net.lab.gw_ip6, PORT)
    (ack,) = enf.apply(upsert(rule("q6", net.att.ip6)))
    assert ack.applied, ack.error
    assert not lab.tcp_connects(net.att.netns, net.lab.gw_ip6, PORT, timeout=0.5)
    assert lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT)  # its IPv4 address was not named
    assert lab.tcp_connects(net.dev1.netns, net.lab.gw_ip6, PORT)
    assert enf.status()["backends"]["nftables"]["counters"]["input: quarantine v6"]["packets"] >= 1


def test_the_kernel_expires_a_rule_even_if_the_agent_is_gone(net):
    net.listen(net.gw, PORT)
    enf = net.enforcer()
    start = time.monotonic()
    enf.apply(upsert(rule("q-att", net.att.ip, ttl=2)))
    assert not lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT, timeout=0.3)
    # No expire() call: only the kernel's own timeout can lift it.
    while Element("quarantine", net.att.ip) in net.elements() and time.monotonic() - start < 6:
        time.sleep(0.1)
    gone_after = time.monotonic() - start
    assert 1.5 < gone_after < 4.0
    assert lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT)
    assert enf.expire() == ["q-att"]  # the agent's own cleanup copes with the element being gone
    assert enf.rules() == [] and enf.status()["backends"]["nftables"]["elements"] == 0


def test_the_agent_removes_an_expired_rule_itself(net):
    net.listen(net.gw, PORT)
    clock = [time.time()]
    enf = net.enforcer(clock=lambda: clock[0])
    enf.apply(upsert(rule("q-att", net.att.ip, ttl=300, now=clock[0])))  # kernel timeout: 300 s
    assert Element("quarantine", net.att.ip) in net.elements()
    clock[0] += 301
    assert enf.expire() == ["q-att"]
    assert net.elements() == set()
    assert lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT)


def _udp_burst(netns: str, dest: str, port: int, count: int, pps: float) -> float:
    with lab.in_netns(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    try:
        for i in range(count):
            s.sendto(b"x" * 32, (dest, port))
            time.sleep(max(0.0, start + (i + 1) / pps - time.monotonic()))
    finally:
        s.close()
    return time.monotonic() - start


def test_rate_limit_drops_the_excess_per_source(net):
    sink = net.listen(net.gw, PORT, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sink.settimeout(0.5)
    received: dict[str, int] = {}

    def drain() -> None:
        while True:
            try:
                _, (src, _) = sink.recvfrom(64)
            except (socket.timeout, OSError):
                return
            received[src] = received.get(src, 0) + 1

    enf = net.enforcer()
    (ack,) = enf.apply(upsert(rule("rl-att", net.att.ip, action="rate_limit", pps=20)))
    assert ack.applied, ack.error
    reader = threading.Thread(target=drain)
    reader.start()
    sent = 300
    results = {}
    senders = [threading.Thread(target=lambda d=d: results.__setitem__(d.ip, _udp_burst(d.netns, net.lab.gw_ip, PORT, sent, 200))) for d in (net.att, net.dev1)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    reader.join()
    elapsed = results[net.att.ip]
    allowed = 20 * elapsed + 5  # token bucket: the rate over the run plus the burst (5 packets)
    assert received.get(net.dev1.ip) == sent  # an unlimited device loses nothing
    assert 0.5 * 20 * elapsed <= received.get(net.att.ip, 0) <= allowed + 2
    counters = enf.status()["backends"]["nftables"]["counters"]
    assert counters["ratelimit: rate limit v4 20 pps"]["packets"] == sent - received[net.att.ip]


def test_filter_drops_one_port_only(net):
    net.listen(net.gw, PORT)
    net.listen(net.gw, OTHER_PORT)
    enf = net.enforcer()
    (ack,) = enf.apply(upsert(rule("f-att", net.att.ip, action="filter", port=PORT, proto="tcp")))
    assert ack.applied, ack.error
    assert not lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT, timeout=0.5)
    assert lab.tcp_connects(net.att.netns, net.lab.gw_ip, OTHER_PORT)
    assert lab.tcp_connects(net.dev1.netns, net.lab.gw_ip, PORT)
    (entry,) = enf.status()["rules"]
    assert entry["packets"] >= 1


def _stable(objects: list) -> str:
    """A listing without what changes by itself (countdowns, counters, handles)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("expires", "counter", "handle", "packets", "bytes")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return "\n".join(sorted(json.dumps(strip(o), sort_keys=True) for o in objects))  # order-free


def test_applying_the_same_rules_twice_changes_nothing(net):
    enf = net.enforcer()
    change = upsert(rule("q", net.att.ip), rule("f", net.dev1.ip, action="filter", port=PORT, proto="udp"), rule("r", "10.77.0.40", action="rate_limit", pps=100))
    assert all(a.applied for a in enf.apply(change))
    nft = Nft(netns=net.gw)
    before = nft.list_ruleset()
    sent = enf.backends[0].transactions
    assert all(a.applied for a in enf.apply(change))
    assert all(a.applied for a in enf.apply(RuleChange("snapshot", change.rules)))
    assert enf.backends[0].transactions == sent  # nothing sent to the kernel
    assert _stable(nft.list_ruleset()) == _stable(before)
    enf.reconcile()  # a rebuild from the same desired state gives the same ruleset too
    assert _stable(nft.list_ruleset()) == _stable(before)


def test_allowlist_is_refused_and_accepted_ahead_of_every_drop(net):
    net.listen(net.gw, PORT)
    enf = net.enforcer()
    for action, params in (("quarantine", {}), ("filter", {"port": PORT, "proto": "tcp"}), ("rate_limit", {"pps": 1})):
        (ack,) = enf.apply(upsert(rule("bad", net.mgmt.ip, action=action, **params)))
        assert not ack.applied and "allowlisted" in ack.error and ack.error.startswith("target:")
    assert net.elements() == set()
    # Even if an allowlisted address got into the drop set (a bug, a hand edit), it passes:
    nft = Nft(netns=net.gw)
    for ip in (net.mgmt.ip, net.att.ip):
        nft.run([{"add": {"element": {"family": "inet", "table": "atlas", "name": "quarantine4", "elem": [{"elem": {"val": ip, "timeout": 60}}]}}}])
    assert lab.tcp_connects(net.mgmt.netns, net.lab.gw_ip, PORT)
    assert not lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT, timeout=0.5)  # the drop set works


AGENT = """
import json, sys, time
from atlas.link.rules import Rule
from atlas.agent.enforce.enforcer import Enforcer
from atlas.agent.enforce.nft import NftBackend
from atlas.link.rules import Allowlist
from atlas.link.wire import RuleChange, SignedRule
netns, state, rules, allow = sys.argv[1:5]
allowlist = Allowlist.build(json.loads(allow))
enf = Enforcer([NftBackend(allowlist, netns=netns)], state, allowlist)
enf.reconcile()
acks = enf.apply(RuleChange("upsert", [SignedRule(Rule(**r), b"") for r in json.loads(rules)]))
print(json.dumps([a.applied for a in acks]), flush=True)
time.sleep(120)
"""


def test_reconcile_after_kill_9_removes_orphans_and_restores_missing(net):
    net.listen(net.gw, PORT)
    now = time.time()
    rules = [rule("q-att", net.att.ip, ttl=120, now=now), rule("f-dev1", net.dev1.ip, ttl=120, action="filter", now=now, port=OTHER_PORT, proto="tcp")]
    state = net.tmp / "enforce.json"
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, net.gw, str(state), json.dumps([r.__dict__ for r in rules]), json.dumps([net.lab.gw_ip, net.mgmt.ip])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = agent.stdout.readline()
        assert json.loads(line) == [True, True], agent.stderr.read() if not line else line
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.communicate(timeout=10)
    want = {Element("quarantine", net.att.ip), Element("filter", net.dev1.ip, proto="tcp", port=OTHER_PORT)}
    assert net.elements() == want  # the dead agent's rules are still enforced
    # While it was dead: one element lost, one orphan appeared (someone, something).
    nft = Nft(netns=net.gw)
    nft.run([
        {"delete": {"element": {"family": "inet", "table": "atlas", "name": "quarantine4", "elem": [net.att.ip]}}},
        {"add": {"element": {"family": "inet", "table": "atlas", "name": "quarantine4", "elem": [{"elem": {"val": "10.77.0.99", "timeout": 600}}]}}},
    ])
    assert lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT)
    enf = net.enforcer()
    report = enf.reconcile()
    assert report.orphans == [Element("quarantine", "10.77.0.99")]
    assert report.missing == [Element("quarantine", net.att.ip)]
    assert net.elements() == want
    assert not lab.tcp_connects(net.att.netns, net.lab.gw_ip, PORT, timeout=0.5)
    remaining = {r["id"]: r["remaining_s"] for r in enf.status()["rules"]}
    assert set(remaining) == {"q-att", "f-dev1"} and all(100 < s <= 120 for s in remaining.values())


def test_a_gateway_namespace_that_appears_later_is_reconciled_on_a_tick(net):
    late = f"atlas-{net.lab.id}-late"
    clock = [time.time()]
    enf = Enforcer([NftBackend(net.allow, netns=late)], net.tmp / "late.json", net.allow, clock=lambda: clock[0])
    try:
        report = enf.reconcile()
        assert late in report.backend_errors["nftables"]
        (ack,) = enf.apply(upsert(rule("q", net.att.ip, ttl=60, now=clock[0])))
        assert not ack.applied and "retried" in ack.error
        subprocess.run(["ip", "netns", "add", late], check=True)
        clock[0] += 6  # past the retry interval
        enf.expire()
        (entry,) = enf.status()["rules"]
        assert entry["state"] == "enforced" and entry["error"] == ""
        assert set(NftBackend(netns=late).observe()) == {Element("quarantine", net.att.ip)}
    finally:
        subprocess.run(["ip", "netns", "del", late], capture_output=True)
