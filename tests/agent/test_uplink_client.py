"""The uplink client's own logic: backoff, the rule gate, and never blocking the pipeline."""
from __future__ import annotations

import random
import socket
import time

import pytest

from atlas.link.rules import Rule
from atlas.link.wire import GatewayInfo, RuleAck, RuleChange, TelemetryBatch
from atlas.link import serde
from atlas.agent.uplink.client import Uplink, backoff_delay
from atlas.link.signing import RuleSigner
from atlas.central.ingest.testing import make_pki
from atlas.v1 import rules_pb2


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), ["gw-1"])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once it is closed


def make(pki, tmp_path, on_rules=None, **kw) -> Uplink:
    return Uplink(f"127.0.0.1:{closed_port()}", "gw-1", pki.gateway_tls("gw-1"), tmp_path / "spool",
                  on_rules or (lambda change: [RuleAck(s.rule.id, True) for s in change.rules]),
                  signing_pub=pki.signing_pub, **kw)


def test_backoff_is_exponential_jittered_and_capped():
    rng = random.Random(7)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (6, 30.0), (100, 30.0)]:
        delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(300)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling  # full jitter reaches up to the ceiling
        assert min(delays) < 0.2 * ceiling  # ... and spreads gateways out below it


def signed(pki, **changes):
    base = dict(id="r-1", action="quarantine", target="10.0.0.9", expires_at=time.time() + 60,
                reason="flood", decision_id="d-1")
    base.update(changes)
    return RuleSigner.from_pem_file(pki.signing_key).sign_rule(Rule(**base))


def test_an_unknown_action_is_refused_before_enforcement(pki, tmp_path):
    seen = []
    up = make(pki, tmp_path, on_rules=lambda c: seen.append(c) or [RuleAck(s.rule.id, True) for s in c.rules])
    good = serde.signed_rule_to_proto(signed(pki))
    alien = rules_pb2.SignedRule()
    alien.CopyFrom(serde.signed_rule_to_proto(signed(pki, id="r-2")))
    alien.rule.action = 99  # an action from a newer hub, or a forged one
    acks = up.apply_rule_change(rules_pb2.RuleChange(kind=rules_pb2.RuleChange.KIND_UPSERT, rules=[good, alien]))
    assert [s.rule.id for s in seen[0].rules] == ["r-1"]
    refused = [a for a in acks if not a.applied]
    assert len(refused) == 1 and refused[0].rule_id == "r-2"
    assert "action: 'unknown(99)' is not one of" in refused[0].error
    assert up.counters["rules_refused_action"] == 1


def test_an_empty_snapshot_still_reaches_enforcement(pki, tmp_path):
    seen = []
    up = make(pki, tmp_path, on_rules=lambda c: seen.append(c) or [])
    up.apply_rule_change(rules_pb2.RuleChange(kind=rules_pb2.RuleChange.KIND_SNAPSHOT))
    assert seen == [RuleChange(kind="snapshot")]  # the hub wants nothing enforced: clear it all


def test_a_snapshot_with_only_bad_rules_clears_instead_of_keeping_them(pki, tmp_path):
    seen = []
    up = make(pki, tmp_path, on_rules=lambda c: seen.append(c) or [])
    expired = serde.signed_rule_to_proto(signed(pki, expires_at=time.time() - 1))
    acks = up.apply_rule_change(rules_pb2.RuleChange(kind=rules_pb2.RuleChange.KIND_SNAPSHOT, rules=[expired]))
    assert seen == [RuleChange(kind="snapshot")] and not acks[0].applied


def test_bad_withdrawals_and_kinds_are_refused_and_counted(pki, tmp_path):
    seen = []
    up = make(pki, tmp_path, on_rules=lambda c: seen.append(c) or [])
    up.apply_rule_change(rules_pb2.RuleChange(kind=rules_pb2.RuleChange.KIND_WITHDRAW, withdrawn=["r-1", "r 2; drop"]))
    assert seen == [RuleChange(kind="withdraw", withdrawn=["r-1"])]
    assert up.counters["rules_refused_id"] == 1
    assert up.apply_rule_change(rules_pb2.RuleChange(kind=0)) == []
    assert up.counters["malformed_messages"] == 1 and len(seen) == 1


def test_enforcement_failure_is_reported_not_fatal(pki, tmp_path):
    def broken(change):
        raise RuntimeError("nft: No such file or directory")

    up = make(pki, tmp_path, on_rules=broken)
    acks = up.apply_rule_change(rules_pb2.RuleChange(kind=rules_pb2.RuleChange.KIND_UPSERT, rules=[serde.signed_rule_to_proto(signed(pki))]))
    assert acks == [RuleAck("r-1", False, "enforcement failed: nft: No such file or directory")]
    assert up.counters["on_rules_errors"] == 1


def test_submit_goes_on_while_the_hub_hangs(pki, tmp_path):
    """A hub that accepts TCP but never answers TLS holds the uplink's connect attempt; the
    pipeline's submit() must not care."""
    import threading

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes TCP handshakes; nobody ever speaks TLS
        up = Uplink(f"127.0.0.1:{silent.getsockname()[1]}", "gw-1", pki.gateway_tls("gw-1"), tmp_path / "spool",
                    lambda change: [], signing_pub=pki.signing_pub).start()
        try:
            seqs: list[int] = []
            pipeline = threading.Thread(target=lambda: seqs.extend(up.submit(TelemetryBatch(seq=0, time=float(n))) for n in range(500)))
            pipeline.start()
            pipeline.join(30)
            assert not pipeline.is_alive() and seqs == list(range(seqs[0], seqs[0] + 500))
            deadline = time.monotonic() + 10  # on a loaded machine the uplink thread may not have tried yet
            while not up.counters_snapshot().get("connect_attempts") and time.monotonic() < deadline:
                time.sleep(0.05)
            counters = up.counters_snapshot()
            assert counters["spool_depth"] == 500 and not up.connected
            assert counters["connect_attempts"] == 1 and counters.get("reconnects", 0) == 0  # still hanging
        finally:
            up.stop()


def test_configuration_mistakes_are_named(pki, tmp_path):
    with pytest.raises(ValueError, match="gateway id 'gw 1'"):
        Uplink("127.0.0.1:1", "gw 1", pki.gateway_tls("gw-1"), tmp_path, lambda c: [], signing_pub=pki.signing_pub)
    with pytest.raises(ValueError, match="differs from gateway_id"):
        Uplink("127.0.0.1:1", "gw-1", pki.gateway_tls("gw-1"), tmp_path, lambda c: [], signing_pub=pki.signing_pub,
               info=GatewayInfo(gateway_id="gw-2", software_version="1"))
    missing = pki.gateway_tls("gw-1").__class__(cert=tmp_path / "nope.crt", key=tmp_path / "k", ca=tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="TLS cert file not found: .*nope.crt"):
        Uplink("127.0.0.1:1", "gw-1", missing, tmp_path, lambda c: [], signing_pub=pki.signing_pub)


# ---- fail closed: a copy that fails its check never takes away a verified rule --------------

def tampered(pki, **changes):
    """A rule the hub signed, then edited (as in the hub's database): the signature no longer fits."""
    good = signed(pki)
    for key, value in changes.items():
        setattr(good.rule, key, value)
    return good


def proto_change(kind, *rules, withdrawn=()):
    kinds = {"snapshot": rules_pb2.RuleChange.KIND_SNAPSHOT, "upsert": rules_pb2.RuleChange.KIND_UPSERT,
             "withdraw": rules_pb2.RuleChange.KIND_WITHDRAW}
    return rules_pb2.RuleChange(kind=kinds[kind], rules=[serde.signed_rule_to_proto(r) for r in rules],
                                withdrawn=list(withdrawn))


@pytest.fixture
def gateway(pki, tmp_path):
    """A real enforcer (dry-run backends) behind a real uplink, one clock for both."""
    from atlas.agent.enforce.dryrun import DryRunBackend
    from atlas.agent.enforce.enforcer import Enforcer

    now = [time.time()]
    net = DryRunBackend(name="net", actions=("quarantine", "filter", "rate_limit", "revoke_mqtt"))
    enforcer = Enforcer([net], tmp_path / "enforce.json", clock=lambda: now[0])
    up = make(pki, tmp_path, on_rules=enforcer.apply, clock=lambda: now[0])
    return up, enforcer, now


@pytest.mark.parametrize("kind", ["snapshot", "upsert"])
@pytest.mark.parametrize("edit", [{"target": "10.0.0.10"}, {"target": "127.0.0.1"}, {"expires_at": 10.0 ** 10}])
def test_a_tampered_copy_is_refused_and_the_last_verified_rule_stays_until_its_expiry(gateway, pki, kind, edit):
    up, enforcer, now = gateway
    original = signed(pki)
    assert up.apply_rule_change(proto_change("snapshot", original)) == [RuleAck("r-1", True, "")]
    [ack] = up.apply_rule_change(proto_change(kind, tampered(pki, **edit)))
    assert not ack.applied and ack.rule_id == "r-1"
    assert "keeps enforcing its last verified copy" in ack.error
    [held] = enforcer.rules()
    assert (held.target, held.expires_at) == ("10.0.0.9", original.rule.expires_at)  # the verified copy
    assert set(up.kept) == {"r-1"} and up.counters["rules_kept_last_verified"] == 1
    # ... until its own expiry
    now[0] = held.expires_at + 0.1
    enforcer.expire()
    assert enforcer.rules() == []
    up.apply_rule_change(proto_change("snapshot", tampered(pki, **edit)))
    assert enforcer.rules() == [] and up.kept == {}


def test_the_hub_can_still_withdraw_a_kept_rule(gateway, pki):
    up, enforcer, _ = gateway
    up.apply_rule_change(proto_change("snapshot", signed(pki)))
    up.apply_rule_change(proto_change("snapshot", tampered(pki, target="10.0.0.10")))
    assert [r.target for r in enforcer.rules()] == ["10.0.0.9"]
    up.apply_rule_change(proto_change("withdraw", withdrawn=["r-1"]))
    assert enforcer.rules() == [] and up.kept == {}
    # and a snapshot that no longer lists it withdraws it too (an operator's revoke while away)
    up.apply_rule_change(proto_change("snapshot", signed(pki)))
    up.apply_rule_change(proto_change("snapshot", tampered(pki, target="10.0.0.10")))
    up.apply_rule_change(proto_change("snapshot"))
    assert enforcer.rules() == [] and up.kept == {}


def test_a_good_copy_after_a_bad_one_ends_the_keeping(gateway, pki):
    up, enforcer, _ = gateway
    up.apply_rule_change(proto_change("snapshot", signed(pki)))
    up.apply_rule_change(proto_change("snapshot", tampered(pki, target="10.0.0.10")))
    assert up.kept
    assert up.apply_rule_change(proto_change("snapshot", signed(pki))) == [RuleAck("r-1", True, "")]
    assert up.kept == {}


def test_status_and_metrics_say_a_rule_is_kept(gateway, pki, tmp_path):
    from atlas.agent.cli import format_status
    from atlas.agent.config import parse_config
    from atlas.agent.daemon import AgentDaemon
    from atlas.agent.metrics import AgentMetrics

    up, enforcer, _ = gateway
    up.apply_rule_change(proto_change("snapshot", signed(pki)))
    up.apply_rule_change(proto_change("snapshot", tampered(pki, target="10.0.0.10")))
    from atlas.agent.detect import Detector

    daemon = AgentDaemon(parse_config({"agent": {"state_dir": str(tmp_path / "state")}}), Detector())
    daemon.enforcer, daemon.uplink = enforcer, up  # what run() starts
    status = daemon.status()
    assert [r.get("kept", "") for r in status["rules"]] == [up.kept["r-1"]]
    text = format_status(status)
    assert "KEPT r-1 quarantine 10.0.0.9: the hub's copy was refused (signature: does not match" in text
    assert "stays until its expiry" in text
    m = AgentMetrics(process_metrics=False)
    m.set_rules_kept(len(up.kept))
    assert b"atlas_agent_rules_kept_verified 1.0" in m.scrape()


def test_the_rules_an_enforcer_held_before_a_restart_are_kept_too(gateway, pki, tmp_path):
    first, enforcer, now = gateway
    first.apply_rule_change(proto_change("snapshot", signed(pki)))
    first.spool.close()
    # the agent restarts: a new uplink, the enforcer's rules from its state file
    from atlas.agent.enforce.dryrun import DryRunBackend
    from atlas.agent.enforce.enforcer import Enforcer

    again = Enforcer([DryRunBackend(name="net")], tmp_path / "enforce.json", clock=lambda: now[0])
    again.reconcile()
    up = make(pki, tmp_path / "2", on_rules=again.apply, clock=lambda: now[0], verified=again.rules())
    [ack] = up.apply_rule_change(proto_change("snapshot", tampered(pki, target="10.0.0.10")))
    assert not ack.applied and "keeps enforcing" in ack.error
    assert [r.target for r in again.rules()] == ["10.0.0.9"]
