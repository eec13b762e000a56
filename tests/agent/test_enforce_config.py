"""The [enforce] section: value checks name the key; build_enforcer picks the backends."""
from __future__ import annotations

import pytest

from atlas.agent.enforce.config import EnforceConfigError, EnforceSection, build_enforcer, check_enforce
from atlas.agent.enforce.dryrun import DryRunBackend


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"mode": "block"}, "enforce.mode"),
        ({"nftables": "maybe"}, "enforce.nftables"),
        ({"priority": 1000}, "enforce.priority"),
        ({"max_ttl_s": 1.0}, "enforce.max_ttl_s"),
        ({"expire_interval_s": 0.0}, "enforce.expire_interval_s"),
        ({"mqtt_host": "127.0.0.1"}, "enforce.mqtt_host"),
        ({"mqtt_host": "127.0.0.1", "mqtt_port": 0, "mqtt_username": "a", "mqtt_password_file": "/x"}, "enforce.mqtt_port"),
        ({"allowlist": ["10.0.0.1", "hub.example"]}, "enforce.allowlist"),
    ],
)
def test_bad_values_name_the_key(kw, key):
    with pytest.raises(EnforceConfigError) as exc:
        check_enforce(EnforceSection(**kw), "gw.toml")
    assert str(exc.value).startswith(f"gw.toml: {key}")


def test_the_admin_account_is_always_allowlisted():
    allow = check_enforce(EnforceSection(mqtt_host="127.0.0.1", mqtt_username="atlas-admin", mqtt_password_file="/p"))
    assert "atlas-admin" in allow.usernames


def test_shadow_mode_and_nftables_off_only_record(tmp_path):
    enf = build_enforcer(EnforceSection(mode="shadow"), str(tmp_path))
    assert [type(b) for b in enf.backends] == [DryRunBackend] and enf.backends[0].actions == {"quarantine", "filter", "rate_limit", "revoke_mqtt"}
    enf = build_enforcer(EnforceSection(nftables="off", allowlist=["10.0.0.0/8"]), str(tmp_path), hub_address="127.0.0.1:50051")
    assert [b.name for b in enf.backends] == ["dry-run"] and not enf.backends[0].enforces
    assert enf.state_path == tmp_path / "enforce.json"
    assert [str(n) for n in enf.allowlist.networks] == ["10.0.0.0/8", "127.0.0.1/32"]  # the hub joins the allowlist


def test_nftables_on_without_a_usable_nft_is_an_error(tmp_path):
    with pytest.raises(EnforceConfigError, match="enforce.nftables: 'on' but '/nonexistent/nft'"):
        build_enforcer(EnforceSection(nftables="on", nft_path="/nonexistent/nft"), str(tmp_path))


def test_missing_password_file_names_the_key(tmp_path):
    section = EnforceSection(nftables="off", mqtt_host="127.0.0.1", mqtt_username="a", mqtt_password_file=str(tmp_path / "nope"))
    with pytest.raises(EnforceConfigError, match="enforce.mqtt_password_file: cannot read"):
        build_enforcer(section, str(tmp_path))
