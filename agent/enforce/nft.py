"""nftables backend: ATLAS's own table `inet atlas`, named sets with kernel timeouts.

Everything goes through `nft -j -f -` (JSON on stdin) with a fixed argv: no shell, no string
interpolation into commands. The table is ATLAS's alone, so whatever it holds is ATLAS's and
reconcile can list it and rebuild it.

Layout (built once, atomically, by flushing and recreating the table):

    set allow4/allow6           interval   the allowlist; accepted ahead of every drop
    set quarantine4/6           timeout    address -> dropped from and to (input/forward/output)
    set filter4/6               timeout    address . proto . port -> dropped (input/forward)
    set rl4_<pps>/rl6_<pps>     timeout    address -> packets over <pps>/s dropped (one set
                                           per rate in use, each element has its own bucket)
    chain input/forward/output  base chains, priority filter-10; counters on every rule
    chain ratelimit             one rule per rate tier, rewritten when the tiers change

A rule becomes a set element whose kernel timeout is the rule's remaining TTL, so it expires
even if the agent is dead; the agent also removes expired elements itself.
"""
from __future__ import annotations

import ipaddress
import json
import math
import re
import subprocess
import time
from typing import Any, Iterable, Mapping, Sequence

from atlas.agent.enforce.backend import Backend, BackendError, Counter, Counters, Element, ReconcileReport, diff
from atlas.link.rules import Allowlist

FAMILY = "inet"
TABLE = "atlas"
DEFAULT_PRIORITY = -10  # "filter - 10": before ordinary filter chains, after conntrack
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_L3 = {4: "ip", 6: "ip6"}
_PROTO_NAMES = {6: "tcp", 17: "udp"}
_RL_SET = re.compile(r"rl([46])_([0-9]+)")


class NftError(BackendError):
    pass


class Nft:
    """Runs the `nft` binary, optionally inside a network namespace (tests, the lab)."""

    def __init__(self, nft: str = "nft", netns: str | None = None, timeout: float = 10.0) -> None:
        self.prefix: list[str] = ["ip", "netns", "exec", netns] if netns else []
        self.nft = nft
        self.netns = netns
        self.timeout = timeout

    def _run(self, args: Sequence[str], stdin: str | None = None) -> str:
        argv = [*self.prefix, self.nft, *args]
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout, check=False)
        except FileNotFoundError as exc:
            raise NftError(f"nftables: cannot run {argv[0]!r}: {exc.strerror}") from None
        except subprocess.TimeoutExpired:
            raise NftError(f"nftables: {' '.join(argv)} did not finish in {self.timeout:.0f} s") from None
        if proc.returncode != 0:
            where = f" (netns {self.netns})" if self.netns else ""
            raise NftError(f"nftables{where}: {_first_error(proc.stderr) or f'exit status {proc.returncode}'}")
        return proc.stdout

    def run(self, commands: list[dict[str, Any]]) -> None:
        """Apply a batch of JSON commands as one kernel transaction (all or nothing)."""
        if commands:
            self._run(["-j", "-f", "-"], json.dumps({"nftables": commands}))

    def list_table(self) -> list[dict[str, Any]] | None:
        """The table's objects (sets with elements, chains, rules), or None if it does not exist."""
        try:
            out = self._run(["-j", "list", "table", FAMILY, TABLE])
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
        return json.loads(out)["nftables"]

    def list_ruleset(self) -> list[dict[str, Any]]:
        return json.loads(self._run(["-j", "list", "ruleset"]))["nftables"]

    def available(self) -> bool:
        """True if nft runs here with the rights to read the ruleset (root / CAP_NET_ADMIN)."""
        try:
            self._run(["-j", "list", "tables"])
            return True
        except NftError:
            return False


def _first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    return (errors[0] if errors else (lines[0] if lines else "")).strip()


# ---- JSON builders -------------------------------------------------------------------

def _obj(kind: str, **fields: Any) -> dict[str, Any]:
    return {kind: {"family": FAMILY, "table": TABLE, **fields}}


def _add(kind: str, **fields: Any) -> dict[str, Any]:
    return {"add": _obj(kind, **fields)}


def _addr(version: int, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": _L3[version], "field": field}}


def _in_set(left: dict[str, Any], set_name: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": left, "right": f"@{set_name}"}}


def _rule(chain: str, comment: str, matches: list[dict[str, Any]], verdict: dict[str, Any]) -> dict[str, Any]:
    return _add("rule", chain=chain, comment=comment, expr=[*matches, {"counter": None}, verdict])


_ACCEPT: dict[str, Any] = {"accept": None}
_DROP: dict[str, Any] = {"drop": None}


def _filter_key(version: int) -> dict[str, Any]:
    return {"concat": [_addr(version, "saddr"), {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}


def rl_set_name(version: int, pps: int) -> str:
    return f"rl{version}_{pps}"


def _rl_set(version: int, pps: int) -> dict[str, Any]:
    # burst: 100 ms worth of packets, so a device at its allowed rate is not clipped by jitter
    limit = {"rate": pps, "per": "second", "burst": max(5, pps // 10), "inv": True}
    return _add("set", name=rl_set_name(version, pps), type=_ADDR_TYPE[version], flags=["timeout"], stmt=[{"limit": limit}])


def _rl_rules(tiers: Iterable[int]) -> list[dict[str, Any]]:
    return [
        _rule("ratelimit", f"rate limit v{v} {pps} pps", [_in_set(_addr(v, "saddr"), rl_set_name(v, pps))], _DROP)
        for pps in sorted(tiers)
        for v in (4, 6)
    ]


def skeleton(allowlist: Allowlist, priority: int = DEFAULT_PRIORITY, tiers: Iterable[int] = ()) -> list[dict[str, Any]]:
    """Commands that (re)create the whole table, empty of elements, in one transaction."""
    cmds: list[dict[str, Any]] = [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},  # so the delete cannot fail
        {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
    ]
    for v in (4, 6):
        cmds.append(_add("set", name=f"allow{v}", type=_ADDR_TYPE[v], flags=["interval"]))
        nets = allowlist.collapsed(v)
        if nets:
            elems = [{"prefix": {"addr": str(n.network_address), "len": n.prefixlen}} for n in nets]
            cmds.append(_add("element", name=f"allow{v}", elem=elems))
        cmds.append(_add("set", name=f"quarantine{v}", type=_ADDR_TYPE[v], flags=["timeout"], stmt=[{"counter": None}]))
        cmds.append(_add("set", name=f"filter{v}", type=[_ADDR_TYPE[v], "inet_proto", "inet_service"], flags=["timeout"], stmt=[{"counter": None}]))
        cmds.extend(_rl_set(v, pps) for pps in sorted(tiers))
    cmds.append(_add("chain", name="ratelimit"))
    for hook in ("input", "forward", "output"):
        cmds.append(_add("chain", name=hook, type="filter", hook=hook, prio=priority, policy="accept"))
    loopback = {"meta": {"key": "iif"}}
    cmds.append(_rule("input", "loopback", [{"match": {"op": "==", "left": loopback, "right": "lo"}}], _ACCEPT))
    cmds.append(_rule("output", "loopback", [{"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "lo"}}], _ACCEPT))
    # The allowlist first: nothing below can drop an allowlisted peer's traffic.
    for v in (4, 6):
        cmds.append(_rule("input", f"allowlist v{v}", [_in_set(_addr(v, "saddr"), f"allow{v}")], _ACCEPT))
        cmds.append(_rule("forward", f"allowlist from v{v}", [_in_set(_addr(v, "saddr"), f"allow{v}")], _ACCEPT))
        cmds.append(_rule("forward", f"allowlist to v{v}", [_in_set(_addr(v, "daddr"), f"allow{v}")], _ACCEPT))
        cmds.append(_rule("output", f"allowlist v{v}", [_in_set(_addr(v, "daddr"), f"allow{v}")], _ACCEPT))
    for v in (4, 6):
        cmds.append(_rule("input", f"quarantine v{v}", [_in_set(_addr(v, "saddr"), f"quarantine{v}")], _DROP))
        cmds.append(_rule("forward", f"quarantine from v{v}", [_in_set(_addr(v, "saddr"), f"quarantine{v}")], _DROP))
        cmds.append(_rule("forward", f"quarantine to v{v}", [_in_set(_addr(v, "daddr"), f"quarantine{v}")], _DROP))
        cmds.append(_rule("output", f"quarantine v{v}", [_in_set(_addr(v, "daddr"), f"quarantine{v}")], _DROP))
    for v in (4, 6):
        for chain in ("input", "forward"):
            cmds.append(_rule(chain, f"filter v{v}", [_in_set(_filter_key(v), f"filter{v}")], _DROP))
    for chain in ("input", "forward"):
        cmds.append(_rule(chain, "rate limit", [], {"jump": {"target": "ratelimit"}}))
    cmds.extend(_rl_rules(tiers))
    return cmds


def _version(element: Element) -> int:
    return ipaddress.ip_address(element.target).version


def set_of(element: Element) -> str:
    v = _version(element)
    if element.action == "quarantine":
        return f"quarantine{v}"
    if element.action == "filter":
        return f"filter{v}"
    if element.action == "rate_limit":
        return rl_set_name(v, element.pps)
    raise NftError(f"nftables: cannot enforce action {element.action!r}")


def _value(element: Element) -> Any:
    if element.action == "filter":
        return {"concat": [element.target, element.proto, element.port]}
    return element.target


def _element_cmd(op: str, element: Element, timeout_s: int | None = None) -> dict[str, Any]:
    value = _value(element)
    item = {"elem": {"val": value, "timeout": timeout_s}} if timeout_s is not None else value
    return {op: _obj("element", name=set_of(element), elem=[item])}


def _timeout(expires_at: float, now: float) -> int:
    # Whole seconds (the JSON grammar's unit), rounded up: the kernel's expiry is the safety
    # net for a dead agent and must not cut a rule short; the agent removes it on time.
    return max(1, math.ceil(expires_at - now))


def upsert_cmds(element: Element, expires_at: float, now: float) -> list[dict[str, Any]]:
    """Add, or refresh the timeout of, one element, whether or not the kernel holds it now.

    add (no-op if present) + delete + add: works on every kernel (older ones ignore a new
    timeout on re-add) and cannot fail on an element the kernel expired a moment ago.
    """
    t = _timeout(expires_at, now)
    return [_element_cmd("add", element, t), _element_cmd("delete", element), _element_cmd("add", element, t)]


def remove_cmds(element: Element) -> list[dict[str, Any]]:
    """Remove one element; the add first makes the delete safe if the kernel expired it already."""
    return [_element_cmd("add", element, 1), _element_cmd("delete", element)]


# ---- reading the table back ----------------------------------------------------------

def _set_elements(set_obj: Mapping[str, Any]) -> Iterable[tuple[Any, float | None, Mapping[str, int] | None]]:
    for item in set_obj.get("elem", []):
        if isinstance(item, dict) and "elem" in item:
            inner = item["elem"]
            yield inner.get("val"), inner.get("expires"), inner.get("counter")
        else:
            yield item, None, None


def _element_of(set_name: str, value: Any) -> Element | None:
    if set_name in ("quarantine4", "quarantine6") and isinstance(value, str):
        return Element("quarantine", ipaddress.ip_address(value).compressed)
    if set_name in ("filter4", "filter6") and isinstance(value, dict) and "concat" in value:
        addr, proto, port = value["concat"]
        proto = _PROTO_NAMES.get(proto, proto) if isinstance(proto, int) else str(proto)
        return Element("filter", ipaddress.ip_address(addr).compressed, proto=proto, port=int(port))
    m = _RL_SET.fullmatch(set_name)
    if m and isinstance(value, str):
        return Element("rate_limit", ipaddress.ip_address(value).compressed, pps=int(m.group(2)))
    return None


def parse_table(objects: list[dict[str, Any]], now: float) -> tuple[dict[Element, float | None], Counters, set[int]]:
    """(elements with expiry, counters, rate tiers present) from `nft -j list table` output."""
    elements: dict[Element, float | None] = {}
    counters = Counters()
    tiers: set[int] = set()
    for obj in objects:
        if "set" in obj:
            s = obj["set"]
            m = _RL_SET.fullmatch(s.get("name", ""))
            if m:
                tiers.add(int(m.group(2)))
            for value, expires, counter in _set_elements(s):
                element = _element_of(s["name"], value)
                if element is None:
                    continue
                elements[element] = now + expires if expires is not None else None
                if counter:
                    counters.elements[element] = Counter(counter.get("packets", 0), counter.get("bytes", 0))
        elif "rule" in obj:
            r = obj["rule"]
            for expr in r.get("expr", []):
                if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
                    c = expr["counter"]
                    counters.rules[f"{r.get('chain')}: {r.get('comment', '')}"] = Counter(c.get("packets", 0), c.get("bytes", 0))
    return elements, counters, tiers


class NftBackend(Backend):
    """Quarantine, filter and rate limits as elements of ATLAS's own nftables sets."""

    name = "nftables"
    actions = frozenset({"quarantine", "filter", "rate_limit"})

    def __init__(self, allowlist: Allowlist = Allowlist(), *, priority: int = DEFAULT_PRIORITY, nft: str = "nft", netns: str | None = None) -> None:
        super().__init__()
        self.allowlist = allowlist
        self.priority = priority
        self.nft = Nft(nft, netns)
        self.tiers: set[int] = set()  # rate tiers whose sets and rules exist in the kernel
        self.transactions = 0  # kernel transactions sent (a no-op apply sends none)

    def observe(self, candidates: Iterable[Element] = ()) -> dict[Element, float | None]:
        objects = self.nft.list_table()
        if objects is None:
            return {}
        elements, _, _ = parse_table(objects, time.time())
        return elements

    def reconcile(self, desired: Mapping[Element, float], candidates: Iterable[Element], now: float) -> ReconcileReport:
        """List the table, then rebuild it with exactly `desired` in one transaction."""
        observed = self.observe()
        live = {e: exp for e, exp in desired.items() if exp > now}
        tiers = {e.pps for e in live if e.action == "rate_limit"}
        cmds = skeleton(self.allowlist, self.priority, tiers)
        for element, expires_at in sorted(live.items()):
            cmds.append(_element_cmd("add", element, _timeout(expires_at, now)))
        self._send(cmds)
        self.tiers = tiers
        self.view = dict(live)
        return ReconcileReport(orphans=sorted(set(observed) - set(live)), missing=sorted(set(live) - set(observed)))

    def apply(self, desired: Mapping[Element, float], now: float) -> dict[Element, str]:
        upserts, removals = diff(self.view, desired)
        upserts = {e: exp for e, exp in upserts.items() if exp > now}
        tiers = {e.pps for e in desired if e.action == "rate_limit"}
        if not upserts and not removals and tiers == self.tiers:
            return {}
        cmds = [_rl_set(v, pps) for pps in sorted(tiers - self.tiers) for v in (4, 6)]
        for element in removals:
            cmds.extend(remove_cmds(element))
        for element, expires_at in sorted(upserts.items()):
            cmds.extend(upsert_cmds(element, expires_at, now))
        if tiers != self.tiers:
            cmds.append({"flush": _obj("chain", name="ratelimit")})
            cmds.extend(_rl_rules(tiers))
            cmds.extend({"delete": _obj("set", name=rl_set_name(v, pps))} for pps in sorted(self.tiers - tiers) for v in (4, 6))
        try:
            self._send(cmds)
        except NftError as exc:  # one transaction: nothing changed, every change failed
            return {e: str(exc) for e in [*upserts, *removals]}
        self.tiers = tiers
        for element in removals:
            del self.view[element]
        self.view.update(upserts)
        return {}

    def _send(self, cmds: list[dict[str, Any]]) -> None:
        self.nft.run(cmds)
        self.transactions += 1

    def counters(self) -> Counters:
        objects = self.nft.list_table()
        if objects is None:
            return Counters()
        _, counters, _ = parse_table(objects, time.time())
        return counters

    def remove_table(self) -> None:
        """Uninstall: delete ATLAS's table (the agent never does this on a normal stop)."""
        self.nft.run([{"add": {"table": {"family": FAMILY, "name": TABLE}}}, {"delete": {"table": {"family": FAMILY, "name": TABLE}}}])
        self.view = {}
        self.tiers = set()
