"""Human-readable form of Enforcer.status() for `atlas-agent status` (JSON stays the data)."""
from __future__ import annotations

from typing import Any


def format_status(status: dict[str, Any]) -> str:
    lines = [f"enforcement mode: {status.get('mode', '?')}"]
    if status.get("state_error"):
        lines.append(f"WARNING: {status['state_error']}")
    for name, info in status.get("backends", {}).items():
        kind = "enforces" if info.get("enforces") else "records only"
        line = f"  backend {name}: {kind}, {info.get('elements', 0)} element(s)"
        if info.get("error"):
            line += f"  ERROR: {info['error']}"
        lines.append(line)
    rules = status.get("rules", [])
    if not rules:
        lines.append("no active rules")
        return "\n".join(lines)
    lines.append(f"{'id':<24} {'action':<11} {'target':<28} {'params':<14} {'left s':>8} {'state':<9} {'packets':>9}")
    for r in rules:
        params = ",".join(f"{k}={v}" for k, v in sorted(r["params"].items()))
        packets = "-" if r.get("packets") is None else str(r["packets"])
        lines.append(f"{r['id']:<24} {r['action']:<11} {r['target']:<28} {params:<14} {r['remaining_s']:>8.1f} {r['state']:<9} {packets:>9}")
        if r.get("error"):
            lines.append(f"    error: {r['error']}")
    return "\n".join(lines)
