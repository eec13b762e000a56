"""`atlas-agent`: the gateway daemon and its operator commands.

  atlas-agent run --config agent.toml [--check]   the daemon (--check: validate and exit)
  atlas-agent replay CAPTURE... [--json]         offline analysis of capture files
  atlas-agent status [--json]                    ask the running daemon
  atlas-agent bench [--json]                     what this gateway can do, on one screen
  atlas-agent install [--root DIR]               user, config, unit; enable the service
  atlas-agent --version
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path

from atlas.link import __version__
from atlas.link.incidents import Incident
from atlas.agent.config import AgentConfig, AgentSection, ConfigError, load_config

EXIT_USAGE = 2
DEFAULT_SOCKET = AgentSection().control_socket


class CliError(Exception):
    """An operator mistake or an unavailable resource: a message, not a stack trace."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A library's warning is shown once, as one line, without the Python source line under it.
    warnings.formatwarning = lambda message, category, *_a, **_k: f"atlas-agent: warning: {message}\n"
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (CliError, ConfigError) as exc:
        print(f"atlas-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `atlas-agent status --json | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except KeyboardInterrupt:
        return 130


def bounded(kind: type, low: float, high: float):
    """An argparse type: a finite number of `kind` in [low, high]."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text} is not in [{low:g}, {high:g}]")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atlas-agent", description="ATLAS gateway agent")
    p.add_argument("--version", action="version", version=f"atlas-agent {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon on a live interface")
    run.add_argument("--config", "-c", required=True, help="agent.toml")
    run.add_argument("--check", action="store_true", help="validate the config and models, then exit")
    run.add_argument("--verbose", "-v", action="store_true")
    run.set_defaults(func=cmd_run)

    rp = sub.add_parser("replay", help="analyse capture files offline")
    rp.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap or pcapng files")
    rp.add_argument("--json", action="store_true", help="one JSON object per incident per line")
    rp.add_argument("--config", "-c", help="agent.toml (defaults otherwise)")
    rp.add_argument("--models", help="model folder (default: the packaged models)")
    rp.add_argument("--verbose", "-v", action="store_true")
    rp.set_defaults(func=cmd_replay)

    st = sub.add_parser("status", help="state of the running daemon")
    st.add_argument("--json", action="store_true")
    st.add_argument("--config", "-c", help="agent.toml (for the control socket path)")
    st.add_argument("--socket", help=f"control socket (default: from --config, else {DEFAULT_SOCKET})")
    st.set_defaults(func=cmd_status)

    b = sub.add_parser("bench", help="measure this gateway: packets per CPU-second, inference, memory")
    b.add_argument("--json", action="store_true")
    b.add_argument("--devices", type=bounded(int, 1, 20000), default=300, help="devices in the generated traffic (1..20000)")
    b.add_argument("--seconds", type=bounded(float, 1, 3600), default=60.0, help="seconds of generated traffic (1..3600)")
    b.set_defaults(func=cmd_bench)

    ins = sub.add_parser("install", help="install the systemd service (user, directories, config, unit)")
    ins.add_argument("--root", type=Path, default=Path("/"), help="install into this root (default /)")
    ins.add_argument("--role", choices=("agent", "central"), default="agent")
    ins.add_argument("--interface", help="capture interface for a new agent.toml (default: the default route's)")
    ins.add_argument("--no-enable", action="store_true", help="do not enable the unit")
    ins.set_defaults(func=cmd_install)
    return p


# ---- replay -------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from atlas.agent.capture.pcapfile import CaptureError
    from atlas.agent.pipeline import ReplaySummary, replay

    cfg = load_config(args.config)
    for c in args.captures:
        if Path(c).is_dir():
            raise CliError(f"{c}: is a directory, not a capture file")
        if Path(c).exists() and not Path(c).is_file():  # a FIFO would block the reader, a device never end
            raise CliError(f"{c}: not a regular file; give a pcap or pcapng file")
        if not Path(c).is_file():
            raise CliError(f"{c}: no such capture file")
    detector = _detector(cfg, args.models)
    summary = ReplaySummary()
    try:
        for inc in replay(args.captures, cfg, detector, summary):
            print(json.dumps(incident_json(inc), sort_keys=True) if args.json else format_incident(inc), flush=True)
    except CaptureError as exc:
        raise CliError(str(exc)) from exc
    # The summary goes to stderr with --json, so stdout stays one JSON object per line.
    print(summary.line(), file=sys.stderr if args.json else sys.stdout)
    return 0


def incident_json(inc: Incident) -> dict:
    d = inc.to_dict()
    d["time"] = round(inc.time, 6)
    d["last_seen"] = round(inc.last_seen, 6)
    d["score"] = round(inc.score, 4)
    return d


def format_incident(inc: Incident) -> str:
    from datetime import datetime, timezone

    t = datetime.fromtimestamp(inc.time, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    dur = inc.last_seen - inc.time
    target = f" -> {inc.dst_ip}" if inc.dst_ip else ""
    who = f" ({inc.device})" if inc.device != inc.src_ip else ""
    return f"{t}Z  {inc.kind:<16} {inc.src_ip}{who}{target}  score {inc.score:.2f}  {dur:.0f}s  {inc.packets} pkts  [{inc.state}]"


def _detector(cfg: AgentConfig, models: str | None):
    from atlas.agent.detect import Detector, ModelError
    from atlas.agent.detect.runtime import RuntimeUnavailable

    try:
        return Detector(models or cfg.detect.models_dir or None, batch=cfg.detect.batch)
    except (ModelError, RuntimeUnavailable, FileNotFoundError, ValueError) as exc:
        raise CliError(f"cannot load the detection models: {exc}") from exc


# ---- run ------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from atlas.agent.preflight import StartError, preflight

    cfg = load_config(args.config)
    if not cfg.agent.interface:
        raise CliError(f"{cfg.source}: agent.interface: required for `run` (the capture interface)")
    detector = _detector(cfg, None)
    try:
        preflight(cfg)  # the same checks for --check and for a start: what --check accepts starts
    except StartError as exc:
        raise CliError(str(exc)) from None
    if args.check:
        print(f"config {cfg.source} OK; interface {cfg.agent.interface}; models {detector.version}; "
              f"budget {cfg.budget.cpu_percent}% of the machine")
        return 0
    from atlas.agent.daemon import run_daemon

    try:
        return run_daemon(cfg, detector)
    except (OSError, ValueError, RuntimeError) as exc:  # the machine changed since the checks
        if args.verbose:  # the whole story, for a bug report
            raise
        raise CliError(f"{cfg.source}: cannot start: {exc}") from None


# ---- status ---------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from atlas.link.control import ControlError, DaemonNotRunning, query

    path = args.socket or (load_config(args.config).agent.control_socket if args.config else DEFAULT_SOCKET)
    try:
        status = query(path, "status", timeout=3.0)
    except DaemonNotRunning:
        if args.json:
            print(json.dumps({"running": False, "socket": path, "error": "no agent is running: nothing listens on the socket"}))
            return EXIT_USAGE
        raise CliError(f"no agent is running: nothing listens on {path} (systemctl status atlas-agent)") from None
    except (ControlError, PermissionError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(status, indent=1, sort_keys=True))
    else:
        print(format_status(status))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from atlas.agent.bench import format_bench, run_bench

    result = run_bench(args.devices, args.seconds)
    print(json.dumps(result, indent=1) if args.json else format_bench(result))
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from atlas.agent.install import InstallError, install

    try:
        report = install(args.root, role=args.role, interface=args.interface, enable=not args.no_enable)
    except InstallError as exc:
        raise CliError(str(exc)) from exc
    print(report.as_text())
    return 0


def format_status(s: dict) -> str:
    cpu = s.get("cpu", {})
    lines = [
        f"atlas-agent {s.get('version', '?')} on {s.get('gateway_id', '?')} ({s.get('board', '?')}), up {s.get('uptime_s', 0):.0f}s",
        f"interface   {s.get('interface', '?')}  {s.get('packets_per_s', 0):.0f} pkt/s  kernel drops {s.get('kernel_drops', 0)}",
        f"cpu         {cpu.get('percent', 0):.2f}% of the machine, budget {cpu.get('budget', 0):.2f}%, shedding level {cpu.get('level', 0)} ({cpu.get('level_name', '')})",
        "models      " + ", ".join(f"{k} {v}" for k, v in s.get("models", {}).items()),
        f"hub         {s.get('hub', {}).get('state', 'standalone')}",
        f"incidents   {len(s.get('incidents', []))} open",
    ]
    updates = s.get("model_updates", [])
    if updates:  # the latest model push and its outcome, right under the models line
        u = updates[-1]
        outcome = "installed" if u.get("applied") else f"refused: {u.get('error', '')}"
        lines.insert(4, f"  last push {u.get('version', '?')} {outcome}")
    for inc in s.get("incidents", [])[:20]:
        lines.append(f"  {inc['kind']:<16} {inc['src_ip']} -> {inc.get('dst_ip', '')}  score {inc['score']:.2f}  {inc['packets']} pkts")
    rules = s.get("rules", [])
    if rules:
        lines.append(f"rules       {len(rules)} active")
    for r in rules:
        if r.get("kept"):  # fail closed, said out loud
            lines.append(f"  KEPT {r['id']} {r['action']} {r['target']}: the hub's copy was refused "
                         f"({r['kept']}); the last verified copy stays until its expiry")
    errors = s.get("last_errors", [])
    if errors:
        lines.append("last errors " + "; ".join(errors[-3:]))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
