"""The `[enforce]` section of the agent's config, and building an Enforcer from it.

Flat keys with plain types so atlas.agent.config can add it as one more section
(`enforce: EnforceSection`) with its usual unknown-key and type checks; `check_enforce`
does the value checks and names the key.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from atlas.agent.enforce.backend import Backend
from atlas.agent.enforce.dryrun import DryRunBackend
from atlas.agent.enforce.enforcer import Enforcer
from atlas.agent.enforce.nft import DEFAULT_PRIORITY, Nft, NftBackend
from atlas.link.rules import DEFAULT_MAX_TTL, Allowlist

log = logging.getLogger(__name__)

MODES = ("enforce", "shadow")
NFTABLES = ("auto", "on", "off")


@dataclass
class EnforceSection:
    mode: str = "enforce"  # enforce | shadow (every rule recorded by dry-run backends, nothing blocked)
    nftables: str = "auto"  # auto: nft if usable here, else dry-run | on: required | off: dry-run
    nft_path: str = "nft"
    netns: str = ""  # run nft inside this network namespace (labs, tests); empty = this one
    priority: int = DEFAULT_PRIORITY  # of the input/forward/output hooks
    allowlist: list[str] = field(default_factory=list)  # addresses/networks never blocked
    allow_usernames: list[str] = field(default_factory=list)  # MQTT users never revoked
    max_ttl_s: float = DEFAULT_MAX_TTL
    expire_interval_s: float = 0.5
    state_file: str = ""  # default <agent.state_dir>/enforce.json
    mqtt_host: str = ""  # broker with the dynamic-security plugin; empty = no revoke_mqtt
    mqtt_port: int = 1883
    mqtt_username: str = ""  # a dynsec admin account
    mqtt_password_file: str = ""  # the admin password, alone in a file (not in the config)
    mqtt_tls_ca: str = ""  # CA file if the broker's listener uses TLS


class EnforceConfigError(ValueError):
    pass


def check_enforce(section: EnforceSection, source: str = "<config>") -> Allowlist:
    """Validate values; return the allowlist (the config's, not yet the hub's address)."""
    def bad(key: str, why: str) -> EnforceConfigError:
        return EnforceConfigError(f"{source}: enforce.{key}: {why}")

    if section.mode not in MODES:
        raise bad("mode", f"must be one of {', '.join(MODES)}, got {section.mode!r}")
    if section.nftables not in NFTABLES:
        raise bad("nftables", f"must be one of {', '.join(NFTABLES)}, got {section.nftables!r}")
    if not -400 <= section.priority <= 400:
        raise bad("priority", f"must be in [-400, 400], got {section.priority}")
    if not 60 <= section.max_ttl_s <= 30 * 86400:
        raise bad("max_ttl_s", f"must be in [60, {30 * 86400}], got {section.max_ttl_s}")
    if not 0.05 <= section.expire_interval_s <= 60:
        raise bad("expire_interval_s", f"must be in [0.05, 60], got {section.expire_interval_s}")
    if section.mqtt_host:
        if not 0 < section.mqtt_port < 65536:
            raise bad("mqtt_port", f"must be a port number, got {section.mqtt_port}")
        if not section.mqtt_username or not section.mqtt_password_file:
            raise bad("mqtt_host", "is set, so mqtt_username and mqtt_password_file (a dynsec admin) are required")
    try:
        allow = Allowlist.build(section.allowlist, section.allow_usernames, where=f"{source}: enforce.allowlist")
    except ValueError as exc:
        raise EnforceConfigError(str(exc)) from None
    if section.mqtt_username:  # the enforcer must never lock itself out of the broker
        allow = Allowlist(allow.networks, allow.usernames | {section.mqtt_username})
    return allow


def hub_addresses(hub_address: str) -> list[str]:
    """The hub's IP addresses from `host:port` (resolved once at start), for the allowlist."""
    if not hub_address:
        return []
    host = hub_address.rsplit(":", 1)[0].strip("[]")
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except OSError as exc:
        log.warning("enforce: cannot resolve hub %r for the allowlist: %s", host, exc)
        return []


def build_enforcer(section: EnforceSection, state_dir: str, hub_address: str = "", source: str = "<config>") -> Enforcer:
    """The Enforcer for this gateway: nftables (or dry-run) + MQTT dynsec if configured."""
    allow = check_enforce(section, source)
    extra = Allowlist.build(hub_addresses(hub_address))
    allow = Allowlist(allow.networks + extra.networks, allow.usernames)
    backends: list[Backend] = []
    if section.mode == "shadow":
        backends.append(DryRunBackend())
    else:
        nft = Nft(section.nft_path, section.netns or None)
        use_nft = section.nftables == "on" or (section.nftables == "auto" and nft.available())
        if section.nftables == "on" and not nft.available():
            raise EnforceConfigError(f"{source}: enforce.nftables: 'on' but {section.nft_path!r} cannot list the ruleset here (installed? root/CAP_NET_ADMIN?)")
        if use_nft:
            backends.append(NftBackend(allow, priority=section.priority, nft=section.nft_path, netns=section.netns or None))
        else:
            log.warning("enforce: nftables not usable here; quarantine/filter/rate_limit are recorded by a dry-run backend")
            backends.append(DryRunBackend(name="dry-run", actions=("quarantine", "filter", "rate_limit")))
        if section.mqtt_host:
            from atlas.agent.enforce.dynsec import DynsecBackend, DynsecClient  # paho only when used

            try:
                password = Path(section.mqtt_password_file).read_text().strip()
            except OSError as exc:
                raise EnforceConfigError(f"{source}: enforce.mqtt_password_file: cannot read {section.mqtt_password_file}: {exc.strerror}") from None
            client = DynsecClient(section.mqtt_host, section.mqtt_port, section.mqtt_username, password, tls_ca=section.mqtt_tls_ca)
            backends.append(DynsecBackend(client))
    state_file = Path(section.state_file or Path(state_dir) / "enforce.json")
    return Enforcer(backends, state_file, allow, max_ttl=section.max_ttl_s, mode=section.mode)
