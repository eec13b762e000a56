"""The enforcer's persisted state: desired rules and what each backend may have installed.

Written atomically (temporary file in the same folder, fsync, rename, fsync the folder), so
after a crash or `kill -9` the file is either the old or the new version, never half of one.
The enforcer writes it *before* touching a backend (write-ahead): what a backend may hold is
always a superset of what the file says it applied, so reconcile can find every orphan.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.link.rules import Rule
from atlas.agent.enforce.backend import Element

VERSION = 1


class StateError(ValueError):
    """The state file cannot be read; the message names the file and the problem."""


@dataclass
class EnforceState:
    rules: dict[str, Rule] = field(default_factory=dict)  # desired rules by id (shadow ones too)
    applied: dict[str, list[Element]] = field(default_factory=dict)  # backend name -> elements


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    # by hand, not dataclasses.asdict: this runs on every apply and asdict deep-copies
    return {
        "id": rule.id, "action": rule.action, "target": rule.target, "expires_at": rule.expires_at,
        "reason": rule.reason, "decision_id": rule.decision_id, "shadow": rule.shadow, "params": dict(rule.params),
    }


def rule_from_dict(raw: dict[str, Any]) -> Rule:
    return Rule(
        id=raw["id"],
        action=raw["action"],
        target=raw["target"],
        expires_at=raw["expires_at"],
        reason=raw.get("reason", ""),
        decision_id=raw.get("decision_id", ""),
        shadow=raw.get("shadow", False),
        params=dict(raw.get("params", {})),
    )


def load_state(path: Path) -> EnforceState:
    """Read the state file; a missing file is an empty state."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return EnforceState()
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: cannot read enforcement state: {exc}") from None
    try:
        if raw.get("version") != VERSION:
            raise StateError(f"{path}: version {raw.get('version')!r}, expected {VERSION}")
        rules = {r["id"]: rule_from_dict(r) for r in raw.get("rules", [])}
        applied = {name: [Element.from_dict(e) for e in elems] for name, elems in raw.get("applied", {}).items()}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{path}: malformed enforcement state ({type(exc).__name__}: {exc})") from None
    return EnforceState(rules, applied)


def save_state(path: Path, state: EnforceState) -> None:
    doc = {
        "version": VERSION,
        "rules": [rule_to_dict(r) for r in sorted(state.rules.values(), key=lambda r: r.id)],
        "applied": {name: [e.to_dict() for e in sorted(elems)] for name, elems in sorted(state.applied.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, separators=(",", ":")))  # one line: the C encoder, fast
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)  # the rename itself must survive a power cut
    finally:
        os.close(dirfd)
