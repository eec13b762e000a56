"""Accepted MQTT logins as incident evidence: the hub revokes a presented identity only when
the broker accepted a login with it from the attacker's address, so the agent must say so."""
from __future__ import annotations

import sys
from pathlib import Path

from atlas.agent.capture import LINKTYPE_ETHERNET, FrameBatch
from atlas.agent.config import AgentConfig
from atlas.agent.pipeline import AgentPipeline
from atlas.link.incidents import LOGINS_ACCEPTED

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/agent/mqtt_segments.py
from mqtt_segments import Conn, connack, connect, frame  # noqa: E402

ATTACKER, DEVICE = "10.0.0.66", "10.0.0.7"


def login(client: str, port: int, cid: str, code: int, t: float) -> list:
    conn = Conn(client=client, cport=port, t=t).handshake()
    conn.send(True, connect(cid, username=cid))
    conn.send(False, connack(code))
    conn.fin(True)
    conn.fin(False)
    return conn.segs


def batch(segs) -> FrameBatch:
    frames = [frame(s) for s in sorted(segs, key=lambda s: s.ts)]
    out = FrameBatch.from_frames([f for f, _ in frames], [s.ts for s in sorted(segs, key=lambda s: s.ts)],
                                 LINKTYPE_ETHERNET)
    out.wirelens[:] = [w for _, w in frames]
    return out


def test_accepted_logins_are_counted_by_address_and_client_id_refusals_are_not():
    pipe = AgentPipeline(AgentConfig(), None)
    segs = (login(ATTACKER, 40001, "meter1", 5, 1000.0) + login(ATTACKER, 40002, "meter1", 5, 1000.1)
            + login(ATTACKER, 40003, "meter1", 0, 1000.2) + login(DEVICE, 40004, "meter7", 0, 1000.3))
    pipe.process(batch(segs))
    assert pipe.logins.of(ATTACKER) == {"meter1": 1}  # two guesses failed, one got in
    assert pipe.logins.of(DEVICE) == {"meter7": 1}
    assert pipe.logins.of("10.0.0.99") == {}


def test_an_open_incident_learns_of_a_later_accepted_login_and_a_new_one_carries_it():
    pipe = AgentPipeline(AgentConfig(), None)
    pipe.process(batch(login(ATTACKER, 40001, "meter1", 5, 1000.0)))
    inc = pipe.tracker.observe(1000.5, ATTACKER, "mqtt_bruteforce", 1.0, 1000.0, 10)
    assert LOGINS_ACCEPTED not in inc.evidence  # refused guesses are no evidence
    pipe.process(batch(login(ATTACKER, 40002, "meter1", 0, 1001.0)))
    assert inc.evidence[LOGINS_ACCEPTED] == {"meter1": 1}
    # an incident that opens later from the same address carries it from the start
    other = pipe.tracker.observe(1002.0, ATTACKER, "topic_scan", 1.0, 1002.0, 5)
    pipe._with_logins(other)
    assert other.evidence[LOGINS_ACCEPTED] == {"meter1": 1}
