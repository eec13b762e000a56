"""The connection DoS is known by its connection churn, whatever topics its clients publish to.

Live (`atlas-sim live`, paho clients publishing to one city topic) the agent named it
`malformed`: the models had learned it from MQTT-malaria's per-client topic names
(mqtt-malaria/<client>/data/<k>/<n>: topic novelty and entropy), which a home-made load script
does not use. The simulator generates both (sim/attacks/dos.py `topic`), and half the training
corpus's connection DoS publish to one fixed topic (train/corpus.py FIXED_TOPIC_SHARE).
"""
from __future__ import annotations

import pytest

from atlas.agent.config import AgentConfig
from atlas.agent.detect import Detector
from atlas.agent.pipeline import replay
from atlas.sim.attacks import AttackSpec
from atlas.sim.capture import generate_capture


@pytest.mark.slow
@pytest.mark.parametrize("topic", ["city/d01/energy/malaria", ""])
def test_connection_dos_is_named_whatever_its_topics(tmp_path, topic):
    pcap = tmp_path / "dos.pcap"
    gt = generate_capture(pcap, devices=12, duration=60.0, seed=31,
                          attacks=[AttackSpec("connection_dos", start=10.0, duration=15.0,
                                              params={"rate": 30.0, "hosts": 2, "topic": topic})])
    step = gt.steps[0]
    incidents = list(replay([pcap], AgentConfig(), Detector()))
    kinds = {i.src_ip: set() for i in incidents if i.src_ip in step.attackers}
    for i in incidents:
        if i.src_ip in kinds:
            kinds[i.src_ip].add(i.kind)
    assert set(kinds) == set(step.attackers), f"attackers without an incident: {set(step.attackers) - set(kinds)}"
    assert all(k == {"connection_dos"} for k in kinds.values()), kinds
