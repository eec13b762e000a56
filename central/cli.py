"""`atlas-central`: the hub daemon and the operator's commands.

  atlas-central serve --config central.toml [--check]   the hub (alias: run)
  atlas-central check --config central.toml [--json]    validate everything, show the playbook
  atlas-central gateways | incidents | decisions | rules [--json]
  atlas-central campaigns [--json] | campaigns show CAMPAIGN_ID [--json]
  atlas-central approve DECISION_ID | reject DECISION_ID | revoke RULE_ID
  atlas-central audit verify [--anchor SEQ:HASH] | audit head
  atlas-central status [--json]
  atlas-central models push DIR_OR_BUNDLE_OR_VERSION [--gateway ID ...] | models list [--json]
  atlas-central pki init | pki issue          (certificates and the rule-signing key)
  atlas-central graph query 'SPARQL' [--json] | graph export --format ttl|jsonld [--out FILE]
  atlas-central graph explain INCIDENT_ID | graph check      (the city graph: ontology extra)
  atlas-central export stix [--since T] [--out FILE]         (STIX 2.1 bundle: ontology extra)

Every command finds the database through --config (default $ATLAS_CENTRAL_CONFIG, else
/etc/atlas/central.toml) or --db.

How an operator's command reaches the running hub: the CLI writes it to the database's
`operator_commands` table and waits for the hub's answer; the hub polls that table every
`operator_poll` seconds (0.2 by default) and runs the command through the same code path as
everything else, so an approval's rules are signed, audited and pushed to the gateways' streams
within a second. We chose the queue over a Unix socket (fail2ban's way) because it is durable
(a command given while the hub restarts runs when it is back, instead of being lost), it is
recorded with its result, it needs no second permission model (whoever may write the database
may command the hub, the same as whoever may read it may report), and it keeps working when
the store moves to PostgreSQL and the CLI runs on another machine. Reading commands open the
database read-only and never block the hub (WAL).

Exit codes: 0 done; 1 failed (audit chain broken, database unusable, command refused by the
hub); 2 operator mistake (bad config, unknown id, wrong state), never with a stack trace;
3 command queued but no hub is running to carry it out yet.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import getpass
import json
import logging
import os
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from atlas.link import __version__
from atlas.central.config import DEFAULT_CONFIG_PATH, ConfigError, HubConfig, load_config
from atlas.central.store import RULE_UNENDED, Store, StoreError, open_store

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_QUEUED = 3
HUB_ALIVE_SECONDS = 5.0  # a heartbeat older than this: no hub is running
DEFAULT_WAIT = 5.0


class CliError(Exception):
    """An operator mistake: printed as one line, exit code 2."""


class CliFailure(Exception):
    """Something failed that is not the operator's typing: exit code 1."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.INFO
    logging.basicConfig(level=level if getattr(args, "daemon", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (CliError, ConfigError) as exc:
        print(f"atlas-central: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CliFailure, StoreError) as exc:
        print(f"atlas-central: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except sqlite3.Error as exc:
        print(f"atlas-central: database error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `atlas-central rules | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atlas-central", description="ATLAS hub")
    p.add_argument("--version", action="version", version=f"atlas-central {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", "-c", help="central.toml (default: $ATLAS_CENTRAL_CONFIG, "
                       f"else {DEFAULT_CONFIG_PATH})")
    where.add_argument("--db", help="the hub's SQLite database (instead of --config)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")

    serve = sub.add_parser("serve", aliases=["run"], parents=[where],
                           help="run the hub: gRPC ingest (mutual TLS), decisions, dispatch")
    serve.add_argument("--check", action="store_true",
                       help="validate config, keys, inventory and playbook, then exit")
    serve.add_argument("--verbose", "-v", action="store_true")
    serve.set_defaults(func=cmd_serve, daemon=True)

    check = sub.add_parser("check", parents=[where, as_json],
                           help="validate config, keys, inventory and playbook; print the table")
    check.set_defaults(func=cmd_check)

    gws = sub.add_parser("gateways", parents=[where, as_json], help="the gateway registry")
    gws.set_defaults(func=cmd_gateways)

    inc = sub.add_parser("incidents", parents=[where, as_json],
                         help="incidents, merged across gateways, newest first")
    inc.add_argument("--open", action="store_true", help="only incidents still open")
    inc.add_argument("--limit", type=_positive_int, default=50)
    inc.set_defaults(func=cmd_incidents)

    dec = sub.add_parser("decisions", parents=[where, as_json], help="decisions, newest first")
    dec.add_argument("--pending", action="store_true", help="only those waiting for approval")
    dec.add_argument("--limit", type=_positive_int, default=50)
    dec.set_defaults(func=cmd_decisions)

    rules = sub.add_parser("rules", parents=[where, as_json],
                           help="rules in force, refused by their gateway, and shadow rules; "
                                "--all for history")
    rules.add_argument("--all", action="store_true", help="also expired and revoked rules")
    rules.add_argument("--limit", type=_positive_int, default=200)
    rules.set_defaults(func=cmd_rules)

    camp = sub.add_parser("campaigns", parents=[where, as_json],
                          help="incidents the correlator linked into campaigns, newest first")
    camp.add_argument("--all", action="store_true", help="also campaigns merged into others")
    camp.add_argument("--limit", type=_positive_int, default=50)
    camp.set_defaults(func=cmd_campaigns)
    camp_sub = camp.add_subparsers(dest="campaigns_command", metavar="{show}")
    show = camp_sub.add_parser("show", parents=[where, as_json],
                               help="one campaign: its incidents, its links and why")
    show.add_argument("campaign_id", metavar="CAMPAIGN_ID")
    show.set_defaults(func=cmd_campaign_show)

    for name, arg, text in (("approve", "decision_id", "carry out a decision waiting for approval"),
                            ("reject", "decision_id", "refuse a decision waiting for approval"),
                            ("revoke", "rule_id", "withdraw a rule from its gateway now")):
        cmd = sub.add_parser(name, parents=[where, as_json], help=text)
        cmd.add_argument(arg, metavar=arg.upper(), type=_identifier)
        cmd.add_argument("--operator", default=_operator(), type=_identifier,
                         help="who is asking (default: the login name)")
        cmd.add_argument("--wait", type=_wait_seconds, default=DEFAULT_WAIT,
                         help=f"seconds to wait for the hub's answer (default {DEFAULT_WAIT:g})")
        cmd.set_defaults(func=cmd_operator, kind=name, argument_name=arg)

    audit = sub.add_parser("audit", help="the hash-chained audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="{verify,head}")
    verify = audit_sub.add_parser("verify", parents=[where, as_json],
                                  help="check the whole chain; exit 1 if broken")
    verify.add_argument("--anchor", type=_anchor,
                        help="SEQ:HASH recorded earlier (from `audit head`): must still be there")
    verify.set_defaults(func=cmd_audit_verify)
    head = audit_sub.add_parser("head", parents=[where, as_json],
                                help="the latest row's seq and hash, to keep outside the hub")
    head.set_defaults(func=cmd_audit_head)
    audit.set_defaults(func=lambda a: _usage(audit))

    st = sub.add_parser("status", parents=[where, as_json], help="is the hub running; totals")
    st.set_defaults(func=cmd_status)

    models = sub.add_parser("models", help="detection model bundles pushed to the gateways")
    models_sub = models.add_subparsers(dest="models_command", metavar="{push,list}")
    push = models_sub.add_parser("push", parents=[where, as_json],
                                 help="upload a bundle and make it the gateways' desired model")
    push.add_argument("path", metavar="DIR_OR_BUNDLE",
                      help="a models folder (meta.json + the two .tflite files), a bundle file, "
                      "or the version of a bundle already stored (to roll back to it)")
    push.add_argument("--gateway", "-g", action="append", default=[], metavar="ID", type=_identifier,
                      help="only this gateway (repeatable; default: every gateway)")
    push.add_argument("--operator", default=_operator(), type=_identifier,
                      help="who is asking (default: the login name)")
    push.add_argument("--wait", type=_wait_seconds, default=DEFAULT_WAIT,
                      help=f"seconds to wait for the hub's answer (default {DEFAULT_WAIT:g})")
    push.set_defaults(func=cmd_models_push)
    mlist = models_sub.add_parser("list", parents=[where, as_json],
                                  help="bundles, their targets and what each gateway answered")
    mlist.set_defaults(func=cmd_models_list)
    models.set_defaults(func=lambda a: _usage(models))

    _add_graph_commands(sub, where, as_json)
    try:
        from atlas.central.pki import add_pki_commands
    except ImportError as exc:  # pragma: no cover - the pki module ships with the hub
        logging.getLogger(__name__).debug("pki commands unavailable: %s", exc)
    else:
        add_pki_commands(sub)
    return p


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


MAX_LIMIT = 1_000_000_000  # rows a report may ask for; SQLite's integers end at 2**63


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 < value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is not in [1, {MAX_LIMIT:,}]")
    return value


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 3600] seconds")
    return value


MAX_ID = 200


def _identifier(text: str) -> str:
    """A decision, rule, gateway or operator name as typed: printable text (a byte that is not
    UTF-8 reaches Python as an unprintable surrogate and could never match or be stored)."""
    if not text or len(text) > MAX_ID or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{ascii(text)[:80]} is not an id (1..{MAX_ID} printable characters)")
    return text


def _anchor(text: str) -> tuple[int, str]:
    seq, sep, digest = text.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64 or not _is_hex(digest):
        raise argparse.ArgumentTypeError(f"{text!r} is not SEQ:HASH (a number and 64 hex digits)")
    return int(seq), digest.lower()


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def _operator() -> str:
    for name in ("SUDO_USER", "USER", "LOGNAME"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container
        return f"uid{os.getuid()}"


# ---- finding the database ------------------------------------------------------------------

def _config(args: argparse.Namespace, required: bool = True) -> HubConfig | None:
    path = args.config or os.environ.get("ATLAS_CENTRAL_CONFIG")
    if path is None:
        if not required and not DEFAULT_CONFIG_PATH.is_file():
            return None
        path = str(DEFAULT_CONFIG_PATH)
    return load_config(path)


def _database(args: argparse.Namespace) -> Path:
    if getattr(args, "db", None):
        return Path(args.db)
    config = _config(args, required=False)
    if config is None:
        raise CliError(f"no configuration: give --config central.toml or --db FILE "
                       f"({DEFAULT_CONFIG_PATH} does not exist)")
    return config.database


def _reader(args: argparse.Namespace) -> Store:
    path = _database(args)
    if not path.is_file():
        raise CliError(f"{path}: no such database (has the hub ever run with this config?)")
    return open_store(path, readonly=True)


# ---- serve and check -----------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from atlas.central import daemon

    if args.db:
        raise CliError("serve needs --config (the database alone does not say how to run)")
    config = _config(args)
    if args.check:
        report = daemon.check(config)
        print(f"{config.path}: OK ({report['inventory_devices']} inventory devices, "
              f"listen {report['listen']}, database {report['database']})")
        return 0
    from atlas.central.ingest.server import ListenError

    try:
        return daemon.serve(config)
    except ListenError as exc:
        raise CliFailure(f"{config.path}: hub.listen: {exc}") from None


def cmd_check(args: argparse.Namespace) -> int:
    from atlas.central import daemon

    if args.db:
        raise CliError("check needs --config")
    report = daemon.check(_config(args))
    if args.json:
        _print_json(report)
        return 0
    print(f"{report['config']}: OK")
    print(f"  listen {report['listen']}, database {report['database']}, "
          f"{report['inventory_devices']} inventory devices, "
          f"shadow {'on' if report['shadow'] else 'off'}, "
          f"allowlist {', '.join(report['allowlist']) or '(empty)'}")
    print(f"  policy {report['policy']}, correlation engine {report['correlate']}, "
          f"{len(report['gateways'])} gateway(s) placed in the config")
    graph = report["graph"]
    print(f"  graph check: {graph['warnings']} warnings" if graph["checked"] else f"  graph check skipped: {graph['why']}")
    for finding in graph["findings"]:
        print(f"    {finding}")
    rows = []
    for kind, cells in report["playbook"].items():
        for cls, cell in cells.items():
            rows.append([kind, cls, _cell_text(cell)])
    _print_table(["KIND", "ATTACKER", "RESPONSE"], rows)
    return 0


def _cell_text(cell: dict[str, Any]) -> str:
    text = cell["action"]
    if cell["params"]:
        text += " " + ",".join(f"{k}={v}" for k, v in sorted(cell["params"].items()))
    if cell["action"] != "none":
        text += f" for {_duration(cell['ttl'])}"
    if cell["escalate"]:
        text += f"; {cell['escalate']} after approval"
    if cell["fallback"]:
        text += f"; without MQTT id: {cell['fallback']}"
    if cell["shadow"]:
        text += " (shadow)"
    return text


# ---- reports -------------------------------------------------------------------------------

def cmd_gateways(args: argparse.Namespace) -> int:
    store = _reader(args)
    gateways = store.list_gateways()
    rollout = _latest_model_status(store)
    if args.json:
        _print_json([g.to_dict() | {"model_push": rollout[g.id].to_dict() if g.id in rollout else None}
                     for g in gateways])
        return 0
    now = time.time()
    rows = []
    for g in gateways:
        h = g.health or {}
        rows.append([g.id, "up" if g.connections else "down", _ago(g.last_seen, now),
                     g.software_version or "-", g.board or "-", _model_text(g, rollout.get(g.id)),
                     str(g.last_seq),
                     _num(h.get("packets_per_s")), _cpu(h), str(h.get("kernel_drops", "-")),
                     str(h.get("shedding_level", "-"))])
    _print_table(["GATEWAY", "STREAM", "LAST SEEN", "SOFTWARE", "BOARD", "MODEL", "SEQ", "PKT/S",
                  "CPU% / BUDGET", "DROPS", "SHED"], rows, empty="no gateway has connected yet")
    return 0


def cmd_incidents(args: argparse.Namespace) -> int:
    store = _reader(args)
    incidents = store.list_incidents(limit=args.limit, state="open" if args.open else None)
    if args.json:
        _print_json([i.to_dict() for i in incidents])
        return 0
    now = time.time()
    rows = []
    for i in incidents:
        decisions = store.decisions_for_incident(i.id)
        rows.append([i.id, i.kind, i.src_ip, i.device if i.device != i.src_ip else "-",
                     ",".join(i.gateways), _ago(i.first_seen, now), _ago(i.last_seen, now),
                     f"{i.score:.2f}", str(i.packets), i.state,
                     ", ".join(f"{d.id} {d.action} {d.state}" for d in decisions) or "-"])
    _print_table(["INCIDENT", "KIND", "ATTACKER", "DEVICE", "GATEWAYS", "FIRST", "LAST", "SCORE",
                  "PACKETS", "STATE", "DECISIONS"], rows, empty="no incidents")
    return 0


def cmd_decisions(args: argparse.Namespace) -> int:
    store = _reader(args)
    decisions = store.list_decisions(states=("pending_approval",) if args.pending else None,
                                     limit=args.limit)
    if args.json:
        _print_json([d.to_dict() for d in decisions])
        return 0
    now = time.time()
    rows = [[d.id, d.incident, d.action + _params_text(d.params), d.target, d.state,
             ",".join(d.gateways), _ago(d.created_at, now),
             _until(d.expires_at, now) if d.expires_at else "-",
             d.approved_by or "-", d.reason] for d in decisions]
    _print_table(["DECISION", "INCIDENT", "ACTION", "TARGET", "STATE", "GATEWAYS", "DECIDED",
                  "EXPIRES", "BY", "REASON"], rows,
                 empty="no decision waits for approval" if args.pending else "no decisions")
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    store = _reader(args)
    rules = store.list_rules(states=None if args.all else RULE_UNENDED, limit=args.limit)
    if args.json:
        _print_json([r.to_dict() for r in rules])
        return 0
    now = time.time()
    rows = []
    for r in rules:
        ack = "-" if r.ack_applied is None else ("applied" if r.ack_applied else
                                                 f"REFUSED: {r.ack_error}" if r.ack_error
                                                 else "withdrawn")
        rows.append([r.rule.id, r.gateway, r.rule.action + _params_text(r.rule.params),
                     r.rule.target, r.state, _until(r.rule.expires_at, now), ack,
                     r.rule.decision_id])
    _print_table(["RULE", "GATEWAY", "ACTION", "TARGET", "STATE", "EXPIRES", "ACK", "DECISION"],
                 rows, empty="no rules" if args.all else "no rules in force")
    return 0


def cmd_campaigns(args: argparse.Namespace) -> int:
    store = _reader(args)
    campaigns = store.list_campaigns(limit=args.limit, state=None if args.all else "open")
    if args.json:
        _print_json([c.to_dict() for c in campaigns])
        return 0
    now = time.time()
    rows = [[c.id, str(len(c.incidents)), ",".join(c.gateways), ",".join(c.domains) or "-",
             ",".join(c.attackers), c.scope, _ago(c.first_seen, now), _ago(c.last_seen, now),
             c.state if not c.merged_into else f"merged into {c.merged_into}"]
            for c in campaigns]
    _print_table(["CAMPAIGN", "INCIDENTS", "GATEWAYS", "DOMAINS", "ATTACKERS", "SCOPE", "FIRST",
                  "LAST", "STATE"], rows, empty="no campaigns")
    return 0


def cmd_campaign_show(args: argparse.Namespace) -> int:
    from atlas.central.campaigns import describe

    store = _reader(args)
    campaign = store.get_campaign(args.campaign_id)
    if campaign is None:
        raise CliError(f"no campaign {args.campaign_id!r} (`atlas-central campaigns` lists them)")
    incidents = [i for i in (store.get_incident(i) for i in campaign.incidents) if i]
    decisions = [d for i in incidents for d in store.decisions_for_incident(i.id)]
    domains = {g.id: g.domain for g in store.list_gateways() if g.domain}
    config = _config(args, required=False) if not args.db else None
    if config is not None:
        domains.update({gid: p.domain for gid, p in config.gateways.items() if p.domain})
    if args.json:
        _print_json(campaign.to_dict() | {
            "incident_details": [i.to_dict() for i in incidents],
            "decisions": [d.to_dict() for d in decisions], "gateway_domains": domains})
        return 0
    print(describe(campaign, incidents, decisions, domains))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from atlas.link.control import ControlError, query
    from atlas.central.hub import HubView

    config = _config(args, required=False)
    status = None
    if config is not None and config.control_socket:  # the running hub answers for itself, with its live counters
        try:
            status = query(config.control_socket, "status", timeout=3.0)
        except (ControlError, PermissionError, OSError):
            status = None
    if status is None:  # no hub answers: what its database says
        store = _reader(args)
        status = HubView(store).status()
        status["running"] = _hub_alive(store)
    if args.json:
        _print_json(status)
        return 0
    hub = status["hub"]
    if status["running"]:
        print(f"hub: running (pid {hub['pid']} on {hub['host']}, version {hub['version']}, "
              f"listening on {hub['listen']}, up {_duration(time.time() - hub['started_at'])})")
    elif hub and hub["stopped_at"]:
        print(f"hub: stopped {_ago(hub['stopped_at'], time.time())}")
    elif hub:
        print(f"hub: NOT running (last heartbeat {_ago(hub['heartbeat'], time.time())}; "
              "it did not stop cleanly)")
    else:
        print("hub: has never run on this database")
    c = status["counts"]
    print(f"gateways: {c['gateways_online']} connected of {c['gateways']}")
    print(f"incidents: {c['incidents_open']} open of {c['incidents']}")
    if "campaigns" in c:
        print(f"campaigns: {c['campaigns']} open")
    print(f"rules: {c['rules_active']} in force, {c.get('rules_refused', 0)} refused by their "
          f"gateway, {c['rules_shadow']} shadow")
    print(f"approvals waiting: {c['pending_approvals']}")
    if c["queued_commands"]:
        print(f"operator commands queued: {c['queued_commands']}")
    head = status["audit_head"]
    print(f"audit: {c['audit_rows']} rows" + (f", head {head['seq']}:{head['hash']}" if head else ""))
    print(f"schema version: {status['schema_version']}")
    graph = status.get("graph")  # only the running hub knows its graph
    if graph:
        print(f"city graph: {graph_words(graph)}")
    wire = status.get("wire")
    if wire:
        print("wire: " + ", ".join(f"{k} {v}" for k, v in sorted(wire.items()) if v))
    return 0


def graph_words(graph: dict[str, Any]) -> str:
    if graph["state"] == "ready":
        return (f"ready, {graph['triples']} triples, {graph['devices']} devices, "
                f"inventory version {graph['inventory_version']}")
    if graph["state"] == "building":
        return f"building from {graph.get('inventory') or 'the inventory'} (decisions go on without it)"
    return f"{graph['state']}: {graph.get('why') or 'unknown'}"


# ---- audit ---------------------------------------------------------------------------------

def cmd_audit_verify(args: argparse.Namespace) -> int:
    from atlas.central.audit import AuditLog

    store = _reader(args)
    log = AuditLog(store)
    ok, bad = log.verify(anchor=args.anchor)
    head = log.head()
    result = {"ok": ok, "first_bad_seq": bad, "rows": head.seq if head else 0,
              "head": head.hash if head else None}
    if args.json:
        _print_json(result)
    elif ok:
        print(f"audit chain intact: {result['rows']} rows"
              + (f", head {head.seq}:{head.hash}" if head else ""))
    else:
        print(f"audit chain BROKEN at seq {bad}: that row (or the one before it) was edited, "
              "deleted or moved", file=sys.stderr)
    return 0 if ok else EXIT_FAILED


def cmd_audit_head(args: argparse.Namespace) -> int:
    from atlas.central.audit import AuditLog

    head = AuditLog(_reader(args)).head()
    if args.json:
        _print_json({"seq": head.seq, "hash": head.hash} if head else None)
    elif head:
        print(f"{head.seq}:{head.hash}")
    else:
        print("the audit log is empty", file=sys.stderr)
    return 0


# ---- operator commands ---------------------------------------------------------------------

def cmd_operator(args: argparse.Namespace) -> int:
    """Check the id here (a clear error at once), then queue it for the hub and wait."""
    argument = getattr(args, args.argument_name).strip()
    reader = _reader(args)
    _precheck(reader, args.kind, argument)
    return _queue_and_wait(args, reader, args.kind, argument)


def _queue_and_wait(args: argparse.Namespace, reader: Store, kind: str, argument: str) -> int:
    alive = _hub_alive(reader)
    writer = open_store(_database(args), migrate=False)
    try:
        command_id = writer.enqueue_command(kind, argument, args.operator, time.time())
    finally:
        writer.close()
    if not alive:
        message = (f"queued as operator command {command_id}: no hub is running on this "
                   "database, so it will be carried out when the hub starts")
        _emit(args, {"command": command_id, "state": "queued", "result": message}, message,
              to_stderr=True)
        return EXIT_QUEUED
    deadline = time.monotonic() + max(args.wait, 0.0)
    while True:
        command = reader.get_command(command_id)
        if command is not None and command.state != "queued":
            break
        if time.monotonic() >= deadline:
            message = (f"queued as operator command {command_id}; the hub has not answered "
                       f"within {args.wait:g} s (check `atlas-central status`)")
            _emit(args, {"command": command_id, "state": "queued", "result": message}, message,
                  to_stderr=True)
            return EXIT_QUEUED
        time.sleep(0.05)
    payload = {"command": command.id, "state": command.state, "result": command.result}
    if command.state == "done":
        _emit(args, payload, command.result)
        return 0
    _emit(args, payload, f"the hub refused: {command.result}", to_stderr=True)
    return EXIT_FAILED


# ---- model bundles -------------------------------------------------------------------------

def cmd_models_push(args: argparse.Namespace) -> int:
    """Upload the bundle into the database (checked here: a clear error at once), then ask the
    hub to sign it, record the push in the audit log and send it (operator queue, as approve).
    A version already stored may be given instead of a path: pushed again (a rollback)."""
    from atlas.central.models import ModelUploadError, bundle_record, load_bundle

    reader = _reader(args)
    if not Path(args.path).exists() and reader.get_model_bundle(args.path) is not None:
        # a version already stored (e.g. the previous one, to roll back): push it again
        _check_gateways(args.gateway, reader)
        request = json.dumps({"version": args.path, "gateways": list(args.gateway)})
        return _queue_and_wait(args, reader, "model_push", request)
    try:
        bundle = load_bundle(args.path)
    except ModelUploadError as exc:
        raise CliError(f"{exc} (nor a bundle version stored at the hub: `atlas-central models list`)") from None
    _check_gateways(args.gateway, reader)
    record = bundle_record(bundle, args.operator, time.time())
    writer = open_store(_database(args), migrate=False)
    try:
        with writer.transaction():
            writer.put_model_bundle(record)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        writer.close()
    request = json.dumps({"version": bundle.version, "gateways": list(args.gateway)})
    return _queue_and_wait(args, reader, "model_push", request)


def _check_gateways(gateways: list[str], reader: Store) -> None:
    from atlas.link.tls import check_gateway_id

    for gateway in gateways:
        try:
            check_gateway_id(gateway)
        except ValueError as exc:
            raise CliError(f"--gateway: {exc}") from None
    known = {g.id for g in reader.list_gateways()}
    unknown = [g for g in gateways if g not in known]
    if unknown:  # allowed (a gateway not yet installed gets it on first connect), but say so
        print(f"note: {', '.join(unknown)} never connected; the model waits for them",
              file=sys.stderr)


def cmd_models_list(args: argparse.Namespace) -> int:
    store = _reader(args)
    bundles = store.list_model_bundles()
    targets = store.model_targets()
    status = store.model_status()
    if args.json:
        _print_json({"bundles": [b.to_dict() for b in bundles], "targets": targets,
                     "gateways": [s.to_dict() for s in status]})
        return 0
    now = time.time()
    rows = []
    for b in bundles:
        aimed = sorted(g for g, v in targets.items() if v == b.version)
        states: dict[str, int] = {}
        for s in status:
            if s.version == b.version:
                states[s.state] = states.get(s.state, 0) + 1
        rows.append([b.version, str(b.meta.get("schema_version", "-")), b.sha256[:12],
                     f"{b.size / 1024:.1f} kB", _ago(b.uploaded_at, now), b.uploaded_by,
                     ("all" if aimed == ["*"] else ", ".join(aimed)) or "-",
                     ", ".join(f"{n} {k}" for k, n in sorted(states.items())) or "-"])
    _print_table(["VERSION", "SCHEMA", "SHA256", "SIZE", "UPLOADED", "BY", "TARGET", "GATEWAYS"],
                 rows, empty="no model bundle has been pushed")
    refused = [s for s in status if s.state == "refused"]
    for s in refused:
        print(f"  {s.gateway} refused {s.version}: {s.error}")
    return 0


def _latest_model_status(store: Store) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for s in store.model_status():  # per gateway, oldest first
        latest[s.gateway] = s
    return latest


def _model_text(gateway: Any, push: Any) -> str:
    running = gateway.model_versions.get("bundle") or gateway.model_versions.get("anomaly") or "-"
    if push is None or push.version == running:
        return running
    return f"{running} ({push.version} {push.state})"


def _precheck(store: Store, kind: str, argument: str) -> None:
    if kind in ("approve", "reject"):
        decision = store.get_decision(argument)
        if decision is None:
            raise CliError(f"no decision {argument!r} (see `atlas-central decisions --pending`)")
        if decision.state != "pending_approval":
            raise CliError(f"decision {argument} is {decision.state}, not waiting for approval")
    elif kind == "revoke":
        record = store.get_rule(argument)
        if record is None:
            raise CliError(f"no rule {argument!r} (see `atlas-central rules`)")
        if record.state not in RULE_UNENDED:
            raise CliError(f"rule {argument} is already {record.state}")


def _hub_alive(store: Store) -> bool:
    state = store.get_hub_state()
    if state is None or state.stopped_at is not None:
        return False
    if time.time() - state.heartbeat >= HUB_ALIVE_SECONDS:
        return False
    if state.host == socket.gethostname():
        # same machine: a hub killed a moment ago still has a fresh heartbeat; its pid tells
        try:
            os.kill(state.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's (the systemd unit's)
            return True
    return True


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str,
          to_stderr: bool = False) -> None:
    if args.json:
        _print_json(payload)
    else:
        print(text, file=sys.stderr if to_stderr else sys.stdout)


# ---- formatting ----------------------------------------------------------------------------

def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=_json_default)
    sys.stdout.write("\n")


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _print_table(header: list[str], rows: list[list[str]], empty: str = "") -> None:
    if not rows:
        if empty:
            print(empty)
        return
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)]
        print("  ".join(cells).rstrip())


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d"


def _ago(when: float | None, now: float) -> str:
    if not when:
        return "-"
    return f"{_duration(now - when)} ago" if now >= when else _stamp(when)


def _until(when: float | None, now: float) -> str:
    if not when:
        return "-"
    return f"in {_duration(when - now)}" if when > now else f"{_duration(now - when)} ago"


def _stamp(when: float) -> str:
    return dt.datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def _cpu(health: dict[str, Any]) -> str:
    if "cpu_percent" not in health:
        return "-"
    return f"{health['cpu_percent']:.1f} / {health.get('cpu_budget', 0):.1f}"


def _params_text(params: dict[str, Any]) -> str:
    return "(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")" if params else ""



# ---- the city graph and STIX (atlas.central.ontology; needs the `ontology` extra) ---------

def _add_graph_commands(sub: Any, where: argparse.ArgumentParser, as_json: argparse.ArgumentParser) -> None:
    city = argparse.ArgumentParser(add_help=False)
    city.add_argument("--inventory", type=Path, help="inventory file (default: the config's [hub] inventory)")
    city.add_argument("--city", type=Path, help="city description with the gateways' districts, domains, subnets "
                      "and brokers (atlas-sim's city.json)")
    city.add_argument("--services", type=Path, help="folder of critical-service declarations (default: packaged)")
    city.add_argument("--profiles", type=Path, help="folder of device profiles (default: packaged)")
    graph = sub.add_parser("graph", help="the city graph: devices, services, threats, countermeasures")
    graph_sub = graph.add_subparsers(dest="graph_command", metavar="{query,export,explain,check}")
    query = graph_sub.add_parser("query", parents=[where, as_json, city], help="run a SPARQL query on the graph")
    query.add_argument("sparql", metavar="SPARQL", help="the query (prefixes atlas:, city:, saref:, sosa:, prov:, d3f: are bound)")
    query.set_defaults(func=cmd_graph_query)
    export = graph_sub.add_parser("export", parents=[where, city], help="write the graph as Turtle or JSON-LD")
    export.add_argument("--format", choices=("ttl", "jsonld"), default="ttl")
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")
    export.set_defaults(func=cmd_graph_export)
    explain = graph_sub.add_parser("explain", parents=[where, as_json, city],
                                   help="an incident's assets, services at risk, technique and countermeasures")
    explain.add_argument("incident_id", metavar="INCIDENT_ID")
    explain.set_defaults(func=cmd_graph_explain)
    check = graph_sub.add_parser("check", parents=[where, as_json, city],
                                 help="SHACL report on the inventory and the service declarations")
    check.set_defaults(func=cmd_graph_check)
    graph.set_defaults(func=lambda a: _usage(graph))

    export_top = sub.add_parser("export", help="export the hub's knowledge for other tools")
    export_sub = export_top.add_subparsers(dest="export_command", metavar="{stix}")
    stix = export_sub.add_parser("stix", parents=[where, city],
                                 help="incidents, campaigns and responses as a STIX 2.1 bundle")
    stix.add_argument("--since", type=_since, default=0.0,
                      help="only incidents first seen at or after T (epoch seconds or ISO 8601, UTC if no zone)")
    stix.add_argument("--out", type=Path, help="file to write (default: standard output)")
    stix.set_defaults(func=cmd_export_stix)
    export_top.set_defaults(func=lambda a: _usage(export_top))


def _since(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither epoch seconds nor an ISO 8601 time") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()


def _ontology(*modules: str) -> None:
    from atlas.central.ontology import OntologyUnavailable, require

    try:
        require(*modules)
    except OntologyUnavailable as exc:
        raise CliFailure(str(exc)) from None


def _city_facts(args: argparse.Namespace, store: Store | None = None) -> Any:
    """The graph's inputs: --inventory (else the config's), --city, and the gateways the hub
    knows (the store's registry) when a database is at hand."""
    from atlas.central.ontology.facts import FactsError, load_facts

    inventory = args.inventory
    config = _config(args, required=False) if not args.db else None
    if inventory is None and config is not None:
        inventory = config.inventory
    if inventory is None and args.city is None:
        raise CliError("the graph needs devices: give --inventory FILE or --city city.json "
                       "(or a --config whose [hub] inventory is set)")
    gateways = [g.id for g in store.list_gateways()] if store is not None else []
    try:
        facts = load_facts(inventory=inventory, city=args.city, services_dir=args.services,
                           profiles_dir=args.profiles, gateway_ids=gateways)
    except FactsError as exc:
        raise CliError(str(exc)) from None
    if config is None:
        return facts
    from atlas.central.ontology.knowledge import place_gateways, places_of

    # the config's [gateways.<id>] place them as the running hub does
    return place_gateways(facts, places_of(config.gateways))


def _optional_reader(args: argparse.Namespace) -> Store | None:
    try:
        return _reader(args)
    except CliError:
        return None


def _city_graph(args: argparse.Namespace) -> tuple[Any, Any]:
    from atlas.central.ontology.graph import build_graph

    facts = _city_facts(args, _optional_reader(args) if (args.db or args.config) else None)
    return facts, build_graph(facts)


def cmd_graph_query(args: argparse.Namespace) -> int:
    _ontology("rdflib")
    _facts, graph = _city_graph(args)
    try:
        result = graph.query(args.sparql)
    except Exception as exc:  # noqa: BLE001 - pyparsing and rdflib raise many kinds; say it in one line
        raise CliError(f"SPARQL: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if result.type == "ASK":
        _emit(args, {"ask": bool(result.askAnswer)}, "yes" if result.askAnswer else "no")
        return 0
    if result.type == "CONSTRUCT" or result.type == "DESCRIBE":
        sys.stdout.write(result.graph.serialize(format="json-ld" if args.json else "turtle"))
        return 0
    names = [str(v) for v in result.vars]
    rows = [["" if row[i] is None else str(row[i]) for i in range(len(names))] for row in result]
    if args.json:
        _print_json([dict(zip(names, r)) for r in rows])
    else:
        _print_table([n.upper() for n in names], rows, empty="no results")
    return 0


def cmd_graph_export(args: argparse.Namespace) -> int:
    _ontology("rdflib")
    _facts, graph = _city_graph(args)
    text = graph.serialize(format="turtle" if args.format == "ttl" else "json-ld")
    _write_out(args.out, text)
    return 0


def cmd_graph_explain(args: argparse.Namespace) -> int:
    _ontology("rdflib")
    from atlas.central.ontology.query import explanation_text, query_for

    store = _reader(args)
    incident = store.get_incident(args.incident_id)
    if incident is None:
        raise CliError(f"no incident {args.incident_id!r} (see `atlas-central incidents`)")
    incident.gateways = incident.gateways or store.incident_gateways(incident.id)
    facts = _city_facts(args, store)
    actions = [(d.action, d.target) for d in store.decisions_for_incident(incident.id) if d.action != "none"]
    explained = query_for(facts).explain(incident, actions)
    _emit(args, explained, explanation_text(explained))
    return 0


def cmd_graph_check(args: argparse.Namespace) -> int:
    _ontology("rdflib", "pyshacl")
    from atlas.central.ontology.shapes import check

    facts, graph = _city_graph(args)
    findings = check(graph, facts)
    errors = sum(f.severity == "error" for f in findings)
    if args.json:
        _print_json({"errors": errors, "warnings": len(findings) - errors,
                     "findings": [dataclasses.asdict(f) for f in findings]})
    else:
        for f in findings:
            print(f)
        print(f"{len(facts.devices)} devices, {len(facts.gateways)} gateways, {len(facts.services)} services: "
              f"{errors} errors, {len(findings) - errors} warnings")
    return EXIT_FAILED if errors else 0


def cmd_export_stix(args: argparse.Namespace) -> int:
    _ontology("stix2", "stix2validator")
    from atlas.central.correlate import Topology, correlate, event_of
    from atlas.central.ontology import stix

    store = _reader(args)
    incidents = [i for i in store.list_incidents(limit=1_000_000) if i.first_seen >= args.since]
    for i in incidents:
        i.gateways = i.gateways or store.incident_gateways(i.id)
    chosen = {i.id for i in incidents}
    decisions = [d for d in store.list_decisions(limit=1_000_000) if d.incident in chosen]
    devices: dict[str, dict[str, str]] = {}
    topology = Topology([])
    if args.inventory or args.city or (args.config and _config(args).inventory):
        facts = _city_facts(args, store)
        from atlas.central.correlate import GatewayPlace

        topology = Topology(GatewayPlace(g.id, g.domain, g.district, g.subnet, g.broker) for g in facts.gateways)
        for d in facts.devices:
            info = {"class": d.profile, "gateway": d.gateway}
            for name in (d.client_id, d.address):
                if name:
                    devices[name] = info
    events = [event_of(i, topology, i.gateways[0] if i.gateways else "") for i in incidents]
    campaigns = correlate(events, topology) if events else []
    text = stix.serialize(stix.bundle(incidents, decisions, campaigns, devices=devices))
    errors = stix.validate(text)
    if errors:
        raise CliFailure(f"the STIX bundle does not validate: {errors[0]}")
    _write_out(args.out, text)
    if args.out:
        print(f"{args.out}: {len(incidents)} incidents, {len(decisions)} decisions, "
              f"{sum(len(c.events) > 1 for c in campaigns)} campaigns")
    return 0


def _write_out(path: Path | None, text: str) -> None:
    if path is None:
        sys.stdout.write(text)
        return
    try:
        path.write_text(text)
    except OSError as exc:
        raise CliError(f"--out: cannot write {path}: {exc.strerror or exc}") from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
