"""What must hold on this machine for `atlas-agent run` to start, checked before it starts.

The config loader checks values; this checks them against the machine: the capture interface
exists, the BPF filter compiles for it, the metrics port is free, the hub's TLS and signing
files are readable PEM, the enforcer's backends can be reached, the state and socket folders
can be written. `run --check` (the unit's ExecStartPre) and `run` call the same function, so
what `--check` accepts starts, and a start that cannot succeed ends with one line naming the
key instead of a traceback from deep inside the daemon.
"""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from atlas.agent.config import AgentConfig
from atlas.link.control import _SUN_PATH_MAX as SUN_PATH_MAX


class StartError(RuntimeError):
    """The daemon cannot start here; the message names the key and the problem."""


def preflight(cfg: AgentConfig) -> None:
    """Raise StartError for the first thing that would stop the daemon from starting."""
    _board(cfg)
    _capture(cfg)
    _metrics_port(cfg)
    _hub_files(cfg)
    _enforce(cfg)
    _folders(cfg)


def _board(cfg: AgentConfig) -> None:
    from atlas.agent.board import BoardError, detect_board

    try:
        detect_board(cfg.agent.board)
    except (BoardError, OSError) as exc:
        raise StartError(f"{cfg.source}: agent.board: {exc}") from None


def _capture(cfg: AgentConfig) -> None:
    from atlas.agent.capture.live import compile_bpf, interface_linktype

    try:
        linktype = interface_linktype(cfg.agent.interface)
    except ValueError as exc:
        raise StartError(f"{cfg.source}: agent.interface: {exc}") from None
    try:  # the capture socket: a packet socket needs CAP_NET_RAW (the unit grants it)
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError:
        raise StartError(f"{cfg.source}: agent.interface: capturing on {cfg.agent.interface} needs root or "
                         "CAP_NET_RAW (the atlas-agent unit grants it)") from None
    if cfg.agent.bpf:
        try:
            compile_bpf(cfg.agent.bpf, linktype, cfg.agent.snaplen)
        except (ValueError, RuntimeError) as exc:
            raise StartError(f"{cfg.source}: agent.bpf: {exc}") from None


def _metrics_port(cfg: AgentConfig) -> None:
    port = cfg.metrics.port
    if not port:
        return
    # The exporter binds 127.0.0.1 with SO_REUSEADDR; so does this probe, so a port in
    # TIME_WAIT passes here as it would there.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            why = "in use by another program" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise StartError(f"{cfg.source}: metrics.port: 127.0.0.1:{port} {why}") from None


def _hub_files(cfg: AgentConfig) -> None:
    h = cfg.hub
    if not h.address:
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from atlas.link.signing import RuleVerifier

    def pem(key: str, load) -> None:
        path = getattr(h, key)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise StartError(f"{cfg.source}: hub.{key}: cannot read {path}: {exc.strerror or exc}") from None
        try:
            load(data)
        except (ValueError, TypeError) as exc:
            raise StartError(f"{cfg.source}: hub.{key}: {path} is not usable: {exc}") from None

    pem("ca", x509.load_pem_x509_certificates)
    pem("cert", x509.load_pem_x509_certificate)
    pem("key", lambda data: serialization.load_pem_private_key(data, password=None))
    try:
        RuleVerifier.from_pem_file(h.signing_key)
    except OSError as exc:
        raise StartError(f"{cfg.source}: hub.signing_key: cannot read {h.signing_key}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise StartError(f"{cfg.source}: hub.signing_key: {exc}") from None


def _enforce(cfg: AgentConfig) -> None:
    e = cfg.enforce
    if e.mode == "enforce" and e.nftables == "on":
        from atlas.agent.enforce.nft import Nft

        if not Nft(e.nft_path, e.netns or None).available():
            raise StartError(f"{cfg.source}: enforce.nftables: 'on' but {e.nft_path!r} cannot list the ruleset here "
                             "(installed? root or CAP_NET_ADMIN?)")
    if e.mqtt_host and e.mode == "enforce":
        try:
            Path(e.mqtt_password_file).read_bytes()
        except OSError as exc:
            raise StartError(f"{cfg.source}: enforce.mqtt_password_file: cannot read {e.mqtt_password_file}: "
                             f"{exc.strerror or exc}") from None
    if e.mqtt_host and e.mqtt_tls_ca and not Path(e.mqtt_tls_ca).is_file():
        raise StartError(f"{cfg.source}: enforce.mqtt_tls_ca: no such file {e.mqtt_tls_ca}")


def _folders(cfg: AgentConfig) -> None:
    """The state, spool and control-socket paths can be made and written."""
    _writable_folder("agent.state_dir", Path(cfg.agent.state_dir), cfg.source)
    if cfg.hub.address:
        _writable_folder("hub.spool_dir", Path(cfg.hub.spool_dir or Path(cfg.agent.state_dir) / "spool"), cfg.source)
    # The enforcer sets an unreadable state file aside by renaming it: never let that be a folder.
    state = Path(cfg.enforce.state_file or Path(cfg.agent.state_dir) / "enforce.json")
    if state.exists() and not state.is_file():
        raise StartError(f"{cfg.source}: enforce.state_file: {state} exists and is not a regular file")
    _writable_folder("enforce.state_file", state.parent, cfg.source)
    sock = Path(cfg.agent.control_socket)
    if len(os.fsencode(sock)) > SUN_PATH_MAX:
        raise StartError(f"{cfg.source}: agent.control_socket: longer than {SUN_PATH_MAX} bytes (a Unix socket path)")
    _writable_folder("agent.control_socket", sock.parent, cfg.source)


def _writable_folder(key: str, folder: Path, source: str) -> None:
    """The folder exists and is writable, or can be created (its nearest existing parent is)."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise StartError(f"{source}: {key}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StartError(f"{source}: {key}: cannot write in {probe} (run as the atlas user, or fix the folder's owner)")
