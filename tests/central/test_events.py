"""The hub's event stream: each subscriber gets its kinds in publication order, in its own
thread; a failing handler is logged and counted while the others go on; a full subscriber
queue drops (counted) instead of blocking the publisher."""
from __future__ import annotations

import threading
import time

import pytest

from atlas.central.events import EVENT_KINDS, Event, LocalBus


def test_each_subscriber_sees_its_kinds_in_publication_order():
    bus = LocalBus()
    seen_a, seen_b = [], []
    bus.subscribe(["incident_opened", "incident_updated"], lambda e: seen_a.append(e), "a")
    bus.subscribe(["incident_updated"], lambda e: seen_b.append(e), "b")
    events = [Event("incident_opened" if i % 3 == 0 else "incident_updated", float(i), {"n": i})
              for i in range(300)]
    for start in range(0, 300, 7):  # many publish calls, as many commits would make
        bus.publish(events[start:start + 7])
    assert bus.wait_idle(5)
    assert [e.payload["n"] for e in seen_a] == list(range(300))
    assert [e.payload["n"] for e in seen_b] == [i for i in range(300) if i % 3]
    assert bus.stats() == {"published": 300, "dropped": 0, "handler_errors": 0, "backlog": 0}
    bus.close()


def test_a_failing_handler_does_not_stop_the_others_nor_its_own_next_events(caplog):
    bus = LocalBus()
    good, survived = [], []

    def flaky(event):
        if event.payload["n"] == 1:
            raise RuntimeError("subscriber bug")
        survived.append(event.payload["n"])

    bus.subscribe(["rule_acked"], flaky, "flaky")
    bus.subscribe(["rule_acked"], lambda e: good.append(e.payload["n"]), "good")
    bus.publish([Event("rule_acked", 1.0, {"n": n}) for n in range(3)])
    assert bus.wait_idle(5)
    assert good == [0, 1, 2] and survived == [0, 2]
    assert bus.stats()["handler_errors"] == 1
    assert "event subscriber flaky failed on rule_acked" in caplog.text
    bus.close()


def test_a_full_subscriber_queue_drops_and_counts_without_blocking_the_publisher():
    bus = LocalBus(queue_size=4)
    release = threading.Event()
    got = []

    def slow(event):
        release.wait(5)
        got.append(event.payload["n"])

    bus.subscribe(["gateway_lost"], slow, "slow")
    # the slow worker holds one event and its queue takes 4 more: the rest are dropped
    bus.publish([Event("gateway_lost", 0.0, {"n": 0})])
    while not got and bus._subs[0].queue.qsize():  # the worker has taken #0
        threading.Event().wait(0.001)
    started = time.monotonic()
    bus.publish([Event("gateway_lost", 0.0, {"n": n}) for n in range(1, 10)])
    assert time.monotonic() - started < 1.0  # the publisher did not wait for the handler
    dropped = bus.stats()["dropped"]
    release.set()
    assert bus.wait_idle(5)
    assert dropped == 5 and got == [0, 1, 2, 3, 4]
    bus.close()


def test_events_are_frozen_known_and_survive_a_round_trip_through_json_form():
    event = Event("campaign_opened", 12.5, {"campaign": "c-1", "incidents": ["i-1", "i-2"]})
    with pytest.raises(AttributeError):
        event.kind = "campaign_updated"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.payload["campaign"] = "c-2"  # type: ignore[index]
    assert Event.from_dict(event.to_dict()) == event
    with pytest.raises(ValueError, match="unknown event kind 'incident_exploded'"):
        Event("incident_exploded", 0.0)
    with pytest.raises(ValueError, match="unknown event kind"):
        LocalBus().subscribe(["rule_ackd"], print)
    assert len(set(EVENT_KINDS)) == len(EVENT_KINDS)


def test_publishing_after_close_is_a_no_op_and_close_drains():
    bus = LocalBus()
    seen = []
    bus.subscribe(["model_pushed"], lambda e: seen.append(e.time), "s")
    bus.publish([Event("model_pushed", float(i)) for i in range(50)])
    bus.close()
    assert seen == [float(i) for i in range(50)]
    bus.publish([Event("model_pushed", 99.0)])
    assert seen[-1] == 49.0
