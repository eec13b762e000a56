"""The incident tracker: debouncing, one incident per attacker and kind, closing."""
from atlas.agent.alerts import IncidentTracker


def test_one_weak_tick_is_not_an_incident_two_are():
    t = IncidentTracker("gw", "m1", confirm_hits=2, confirm_window_s=10, strong_score=0.99)
    assert t.observe(100.0, "10.0.0.5", "port_scan", 0.9, 99.2, 50) is None
    inc = t.observe(101.0, "10.0.0.5", "port_scan", 0.95, 100.1, 60, dst_ip="10.0.0.1")
    assert inc is not None
    assert inc.time == 99.2 and inc.last_seen == 101.0 and inc.score == 0.95 and inc.packets == 110
    assert inc.id == "gw/10.0.0.5/port_scan/99200" and inc.dst_ip == "10.0.0.1" and inc.model_version == "m1"


def test_strong_score_opens_at_once_and_updates_after():
    t = IncidentTracker("gw", "m1", strong_score=0.99)
    inc = t.observe(5.0, "10.0.0.5", "slowite", 0.999, 4.5, 700)
    assert inc is not None and inc.state == "open"
    again = t.observe(6.0, "10.0.0.5", "slowite", 0.5, 5.5, 10)
    assert again is inc and inc.last_seen == 6.0 and inc.score == 0.999 and inc.packets == 710
    other = t.observe(6.0, "10.0.0.5", "mqtt_flood", 1.0, 5.5, 10)
    assert other is not inc and len(t.open) == 2  # per attacker AND kind


def test_hits_outside_the_window_do_not_confirm():
    t = IncidentTracker("gw", "m1", confirm_hits=2, confirm_window_s=10)
    assert t.observe(100.0, "a", "anomaly", 1.2, 99.5, 1) is None
    assert t.observe(120.0, "a", "anomaly", 1.2, 119.5, 1) is None
    assert not t.open


def test_quiet_incidents_close():
    t = IncidentTracker("gw", "m1", close_after_s=60)
    t.observe(10.0, "a", "port_scan", 1.0, 9.5, 1)
    assert t.expire(60.0) == []
    closed = t.expire(71.0)
    assert [i.state for i in closed] == ["closed"] and not t.open
    assert [i.src_ip for i in t.all()] == ["a"]


def test_ticks_without_a_finite_time_are_counted_not_raised():
    t = IncidentTracker("gw", "m1")
    for bad in (float("nan"), float("inf"), float("-inf")):
        assert t.observe(bad, "a", "port_scan", 1.0, 9.5, 1) is None
        assert t.expire(bad) == []
    assert t.bad_times == 3 and not t.open
    # A finite tick with a bad first-packet time opens at the tick's time.
    inc = t.observe(10.0, "a", "port_scan", 1.0, float("nan"), 1)
    assert inc.time == 10.0 and inc.id == "gw/a/port_scan/10000"
    assert t.observe(11.0, "a", "port_scan", 1.0, float("-inf"), 1) is inc and inc.time == 10.0


def test_time_going_back_never_moves_last_seen_back():
    t = IncidentTracker("gw", "m1", close_after_s=60)
    inc = t.observe(100.0, "a", "port_scan", 1.0, 99.5, 1)
    assert t.observe(95.0, "a", "port_scan", 1.0, 94.0, 1) is inc
    assert inc.last_seen == 100.0 and inc.packets == 2
    assert t.expire(90.0) == [] and t.open


def test_close_all_ends_open_and_pending():
    t = IncidentTracker("gw", "m1", confirm_hits=2)
    inc = t.observe(100.0, "a", "port_scan", 1.0, 99.5, 1)
    assert t.observe(100.0, "b", "port_scan", 0.5, 99.5, 1) is None  # pending
    assert t.close_all() == [inc] and inc.state == "closed" and not t.open
    # The pending hit of the old timeline does not confirm a hit in the new one.
    assert t.observe(10.0, "b", "port_scan", 0.5, 9.5, 1) is None
    assert t.all() == [inc]
