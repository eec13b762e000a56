"""Scripted defenders, each a callable env -> action, scored on the same episodes:

    none      never acts
    static    the paper's static playbook: quarantine whatever is flagged (the shield still runs)
    playbook  the hub's criticality playbook (atlas.central.decide.playbook through decide.respond),
              its escalations asked of a human
    greedy    one-step look-ahead: the valid action with the best next reward
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from atlas.central.decide import NO_ACTION, respond
from atlas.central.decide.playbook import Playbook
from atlas.sim.respond.env import CUTS_OFF, RespondEnv, encode_action

Defender = Callable[[RespondEnv], int]


def none_defender() -> Defender:
    return lambda env: 0


def static_defender(ttl_s: float = 900.0) -> Defender:
    def act(env: RespondEnv) -> int:
        for slot, inc in enumerate(env.slots()):
            if inc is not None and inc.rule == NO_ACTION and inc.approval_at < 0:
                return encode_action(slot, "quarantine", ttl_s)
        return 0
    return act


def playbook_defender() -> Defender:
    """Each new incident once: the playbook's first decision at once, its escalations (the
    decisions that wait for a human) as approval requests on later ticks."""
    policy = Playbook()
    decided: set[str] = set()
    queued: list[tuple[str, int]] = []  # (incident id, action)

    def act(env: RespondEnv) -> int:
        slots = env.slots()
        where = {inc.id: n for n, inc in enumerate(slots) if inc is not None}
        mask = env.action_masks()
        while queued:
            iid, verb_ttl = queued.pop(0)
            if iid in where:
                a = encode_action(where[iid], *verb_ttl)
                if mask[a]:
                    return a
        for slot, inc in enumerate(slots):
            if inc is None or inc.id in decided:
                continue
            decided.add(inc.id)
            hub, ctx = env.hub_view(inc)
            actions = []
            for d in respond(policy, hub, ctx):
                if d.suppressed or d.action == NO_ACTION:
                    continue
                if d.requires_approval and d.action not in CUTS_OFF:
                    continue  # a gentle action a human must clear: not modelled
                verb = "ask_human" if d.requires_approval else d.action
                actions.append((verb, d.ttl or 900.0))
            if not actions:
                continue
            queued.extend((inc.id, v) for v in actions[1:])
            a = encode_action(slot, *actions[0])
            if mask[a]:
                return a
        return 0
    return act


def greedy_defender() -> Defender:
    def act(env: RespondEnv) -> int:
        snap = env.snapshot()
        best, best_r = 0, -np.inf
        for a in np.flatnonzero(env.action_masks()):
            _, r, *_ = env.step(int(a))
            env.restore(snap)
            if r > best_r + 1e-12:
                best, best_r = int(a), r
        return best
    return act


DEFENDERS: dict[str, Callable[[], Defender]] = {
    "none": none_defender, "static": static_defender, "playbook": playbook_defender,
    "greedy": greedy_defender}
