"""The evaluation's scoring (atlas.sim.evaluate.metrics) on hand-made cases: every number below
is worked out by hand from the definitions in the module's docstring."""
from __future__ import annotations

import numpy as np
import pytest

from atlas.link.incidents import Incident
from atlas.sim.evaluate import metrics as M

GW = "gw-d01-tra"


def step(id="s1", kind="port_scan", attackers=("10.1.255.254",), start=30.0, end=150.0, gateway=GW, campaign="", stage=1):
    return M.Step(id, kind, gateway, tuple(attackers), start, end, campaign, stage)


def det(src, detected_at, last_seen=None, kind="port_scan", gateway=GW, id=""):
    return M.Detection(gateway, src, kind, detected_at, detected_at if last_seen is None else last_seen, detected_at, id or f"{src}@{detected_at}")


# ---- matching ---------------------------------------------------------------------------------

def test_a_detection_matches_its_attacker_inside_the_window_only():
    s = step(start=100.0, end=200.0)
    assert M.matches(det("10.1.255.254", 120), s)
    assert M.matches(det("10.1.255.254", 96), s)  # within the 5 s slack before the first packet
    assert not M.matches(det("10.1.255.254", 94, 94.5), s)  # before the slack, and over before it
    assert M.matches(det("10.1.255.254", 80, 101), s)  # raised earlier, still active when the step began
    assert M.matches(det("10.1.255.254", 259), s)  # inside the 60 s close window after the last packet
    assert not M.matches(det("10.1.255.254", 261), s)
    assert not M.matches(det("10.1.0.7", 120), s)  # a benign device
    assert not M.matches(det("10.1.255.254", 120, gateway="gw-d01-ene"), s)  # same address, other gateway
    assert M.matches(det("10.1.255.254", 120, gateway=""), s)  # a detection without a gateway: address and time decide


def test_a_late_detection_of_real_evidence_matches_with_its_true_delay():
    s = step(start=100.0, end=200.0)
    # a 300 s flow export: evidence 110..190, raised at 600, long after the step and its close window
    late = M.Detection(GW, "10.1.255.254", "port_scan", 600.0, 600.0, 110.0, "late")
    assert late.evidence_span == (110.0, 600.0)
    assert M.matches(late, s)
    m = M.match([late], [s])
    assert m.by_step == {"s1": [0]} and m.false_positives == []
    assert M.time_to_detection(s, [late], m.by_step["s1"]) == pytest.approx(500.0)  # from the raise, not the evidence
    # evidence that starts after the close window is about something else, however it is raised
    assert not M.matches(M.Detection(GW, "10.1.255.254", "port_scan", 600.0, 600.0, 265.0), s)
    # first evidence unknown (time 0): the raise stands for it, as before
    assert not M.matches(M.Detection(GW, "10.1.255.254", "port_scan", 600.0, 600.0, 0.0), s)
    assert M.Detection(GW, "x", "k", 50.0, 40.0, 0.0).evidence_span == (50.0, 50.0)


def test_score_counts_a_late_detection_as_detected_not_as_a_false_positive():
    s = step(start=100.0, end=200.0)
    late = M.Detection(GW, "10.1.255.254", "port_scan", 600.0, 600.0, 110.0, "late")
    active = {(GW, "10.1.255.254", m) for m in (1, 2, 3)}
    r = M.score([late], [s], [], active, origin=0.0, duration_s=3600.0, devices=10)
    assert r["overall"]["steps_detected"] == 1 and r["overall"]["ttd"]["median_s"] == pytest.approx(500.0)
    assert r["false_positives"]["incidents"] == 0
    # its minutes still come after the attack: the attack's minutes are misses, the late ones claims
    assert (r["overall"]["units"]["tp"], r["overall"]["units"]["fn"], r["overall"]["units"]["fp"]) == (0, 3, 1)


def test_match_splits_true_and_false_positives():
    steps = [step("a", start=100, end=200), step("b", kind="mqtt_flood", attackers=("10.1.255.247", "10.1.255.240"), start=300, end=320)]
    dets = [det("10.1.255.254", 101), det("10.1.255.240", 305), det("10.1.0.9", 150), det("10.1.255.254", 500)]
    m = M.match(dets, steps)
    assert m.by_step == {"a": [0], "b": [1]}
    assert m.false_positives == [2, 3]  # a benign device; the attacker's address long after its step


def test_time_to_detection_is_first_raise_after_the_first_packet_floored_at_zero():
    s = step(start=100, end=200)
    dets = [det("10.1.255.254", 130), det("10.1.255.254", 112.5), det("10.1.255.254", 97, 150)]
    assert M.time_to_detection(s, dets, [0, 1]) == pytest.approx(12.5)
    assert M.time_to_detection(s, dets, [0, 1, 2]) == 0.0  # already flagged when it began
    assert M.time_to_detection(s, dets, []) is None


def test_false_positive_inside_a_lookalike():
    ev = [M.Lookalike("l1", "firmware_update", GW, ("10.1.0.5", "10.1.0.6"), 100, 160)]
    assert M.in_lookalike(det("10.1.0.6", 150), ev).kind == "firmware_update"
    assert M.in_lookalike(det("10.1.0.6", 215), ev) is not None  # within the close window after it
    assert M.in_lookalike(det("10.1.0.6", 230), ev) is None
    assert M.in_lookalike(det("10.1.0.7", 150), ev) is None
    assert M.in_lookalike(det("10.1.0.6", 150, gateway="gw-d02-tra"), ev) is None


# ---- rates ------------------------------------------------------------------------------------

def test_rates_by_hand():
    r = M.rates(tp=8, fp=2, fn=2, tn=88)
    assert r["precision"] == pytest.approx(0.8)
    assert r["recall"] == pytest.approx(0.8)
    assert r["f1"] == pytest.approx(0.8)
    assert r["accuracy"] == pytest.approx(0.96)
    assert r["false_positive_rate"] == pytest.approx(2 / 90)
    assert r["balanced_accuracy"] == pytest.approx((0.8 + 88 / 90) / 2)


def test_rates_without_a_denominator_are_none_not_zero():
    r = M.rates(tp=0, fp=0, fn=3, tn=10)
    assert r["precision"] is None and r["recall"] == 0.0 and r["f1"] == 0.0
    assert M.rates(0, 0, 0, 0)["accuracy"] is None


def test_percentile():
    assert M.percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert M.percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    assert M.percentile([], 50) is None


# ---- units ------------------------------------------------------------------------------------

def test_minutes_spanned():
    assert list(M.minutes_spanned(30, 150, 0)) == [0, 1, 2]
    assert list(M.minutes_spanned(60, 60, 0)) == [1]
    assert list(M.minutes_spanned(59.9, 60, 0)) == [0, 1]
    assert list(M.minutes_spanned(1000, 1010, 1000)) == [0]
    assert list(M.minutes_spanned(10, 5, 0)) == []


def test_unit_confusion_by_hand():
    # Attacker A attacks from 30 s to 150 s: its minutes 0, 1, 2 are positive. The agent flags it
    # from 70 s to 100 s (minute 1 only) and flags benign B in minute 3.
    A, B = "10.1.255.254", "10.1.0.2"
    active = {(GW, A, m) for m in range(4)} | {(GW, B, m) for m in range(4)}
    dets = [det(A, 70, 100), det(B, 190, 195)]
    u = M.score_units(active, [step(attackers=(A,), start=30, end=150)], dets, origin=0.0)
    assert (u.overall.tp, u.overall.fn, u.overall.fp, u.overall.tn) == (1, 2, 1, 4)
    assert u.by_kind["port_scan"].tp == 1 and u.by_kind["port_scan"].fp == 1


def test_units_only_count_attack_minutes_with_traffic_but_every_claim():
    A = "10.1.255.254"
    active = {(GW, A, 0)}  # the attacker was silent in minute 1 (no feature row)
    dets = [det("10.1.0.3", 130)]  # a flagged minute nobody had traffic in is still a claim
    u = M.score_units(active, [step(attackers=(A,), start=30, end=90)], dets, origin=0.0)
    assert (u.overall.tp, u.overall.fn, u.overall.fp, u.overall.tn) == (0, 1, 1, 0)


def test_per_kind_units_share_the_negatives_and_count_only_their_positives():
    A, C = "10.1.255.254", "10.1.255.247"
    steps = [step("s1", "port_scan", (A,), 0, 50), step("s2", "mirai_scan", (C,), 0, 50)]
    active = {(GW, A, 0), (GW, C, 0), (GW, "10.1.0.2", 0), (GW, "10.1.0.3", 0)}
    u = M.score_units(active, steps, [det(A, 10), det("10.1.0.2", 10)], origin=0.0)
    assert (u.by_kind["port_scan"].tp, u.by_kind["port_scan"].fn) == (1, 0)
    assert (u.by_kind["mirai_scan"].tp, u.by_kind["mirai_scan"].fn) == (0, 1)
    for c in u.by_kind.values():
        assert (c.fp, c.tn) == (1, 1)


# ---- the whole scoring ------------------------------------------------------------------------

def test_score_by_hand():
    A, C, E = "10.1.255.254", "10.1.255.247", "198.51.100.23"
    steps = [
        step("s1", "port_scan", (A,), 30, 90),
        step("s2", "mirai_scan", (C,), 200, 260),  # novel, missed
        step("c1/1", "port_scan", (E,), 400, 420, campaign="c1", stage=1),
        step("c1/2", "mqtt_bruteforce", (E,), 500, 560, gateway="gw-d01-ene", campaign="c1", stage=2),
    ]
    dets = [
        det(A, 40, 80),  # s1 after 10 s
        det(E, 403, 410),  # c1/1 after 3 s
        det(E, 520, 530, kind="anomaly", gateway="gw-d01-ene"),  # c1/2 after 20 s, named "anomaly"
        det("10.1.0.5", 300, 301, kind="anomaly"),  # false positive inside a look-alike
        det(A, 700, 700),  # false positive on the attacker's address after its step
    ]
    look = [M.Lookalike("l1", "power_cut", GW, ("10.1.0.5",), 290, 310)]
    active = {(GW, A, m) for m in range(12)} | {(GW, "10.1.0.5", m) for m in range(12)}
    r = M.score(dets, steps, look, active, origin=0.0, duration_s=720.0, devices=120, novel_kinds=["mirai_scan"])
    o = r["overall"]
    assert (o["steps"], o["steps_detected"], o["named_right"]) == (4, 3, 2)
    assert o["ttd"]["median_s"] == pytest.approx(10.0) and o["ttd"]["n"] == 3
    assert r["novel"]["steps"] == 1 and r["novel"]["steps_detected"] == 0 and r["novel"]["ttd"]["median_s"] is None
    assert r["known"]["steps_detected"] == 3
    fp = r["false_positives"]
    assert fp["incidents"] == 2 and fp["share_of_detections"] == pytest.approx(2 / 5) and fp["in_lookalikes"] == 1 and fp["in_lookalikes_by_kind"] == {"power_cut": 1}
    assert fp["on_attacker_addresses"] == 1
    assert fp["per_device_day"] == pytest.approx(2 / (120 * 720 / 86400))
    assert r["campaigns"]["count"] == 1 and r["campaigns"]["every_stage_detected"] == 1
    assert r["by_kind"]["mirai_scan"]["step_recall"] == 0.0
    by_id = {s["id"]: s for s in r["steps"]}
    assert by_id["c1/2"]["named"] == ["anomaly"] and not by_id["c1/2"]["named_right"]


def test_campaigns_need_every_stage():
    rows = [{"campaign": "c1", "detected": True, "gateway": "a"}, {"campaign": "c1", "detected": False, "gateway": "b"},
            {"campaign": "c2", "detected": True, "gateway": "a"}, {"campaign": "", "detected": False, "gateway": "a"}]
    c = M.campaigns(rows)
    assert c["count"] == 2 and c["every_stage_detected"] == 1 and c["share_every_stage_detected"] == 0.5
    assert c["by_campaign"]["c1"] == {"stages": 2, "stages_detected": 1, "gateways": ["a", "b"]}


def test_detection_of_an_incident_uses_the_raise_time():
    inc = Incident(id="gw/10.1.255.254/port_scan/1", kind="port_scan", src_ip="10.1.255.254", dst_ip="", device="x",
                   gateway=GW, time=100.0, last_seen=140.0, score=0.99, model_version="m",
                   evidence={"detected_at": 102.0})
    d = M.detection_of(inc)
    assert (d.gateway, d.detected_at, d.last_seen, d.time) == (GW, 102.0, 140.0, 100.0)
    d = M.detection_of({"src_ip": "10.1.0.1", "time": 5.0, "kind": "syn_scan"}, gateway="gw-x")
    assert (d.gateway, d.detected_at, d.last_seen) == ("gw-x", 5.0, 5.0)
    s = M.step_of({"id": "s", "kind": "k", "gateway": GW, "attacker": "1.2.3.4", "attackers": [], "start": 1, "end": 2})
    assert s.attackers == ("1.2.3.4",)


# ---- ROC --------------------------------------------------------------------------------------

def test_roc_by_hand():
    edges = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    pos = np.array([0, 0, 1, 3])  # scores of 4 attack rows
    neg = np.array([6, 2, 2, 0])  # scores of 10 benign rows
    fpr, tpr, thr = M.roc_curve(pos, neg, edges)
    # flagging >= 0.75: tpr 3/4, fpr 0; >= 0.5: 4/4, 2/10; >= 0.25: 1, 4/10; >= 0: 1, 1
    assert np.allclose(fpr, [0, 0, 0.2, 0.4, 1.0]) and np.allclose(tpr, [0, 0.75, 1, 1, 1])
    assert list(thr[1:]) == [0.75, 0.5, 0.25, 0.0]
    assert M.auc(fpr, tpr) == pytest.approx(0.2 * 0.875 + 0.8 * 1.0)
    assert M.rate_at(pos, neg, edges, 0.5) == (pytest.approx(0.2), pytest.approx(1.0))


def test_roc_extremes():
    edges = np.linspace(0, 1, 11)
    fpr, tpr, _ = M.roc_curve(np.r_[np.zeros(9), 5], np.r_[5, np.zeros(9)], edges)
    assert M.auc(fpr, tpr) == pytest.approx(1.0)
    same = np.full(10, 3)
    fpr, tpr, _ = M.roc_curve(same, same, edges)
    assert M.auc(fpr, tpr) == pytest.approx(0.5)
