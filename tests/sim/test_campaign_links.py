"""Pairwise campaign-link scoring (atlas.sim.evaluate.campaigns.link_scores) on hand-made
incidents and correlated campaigns: the figure moves the right way when the engine errs."""
from atlas.central.correlate import Campaign, Event
from atlas.sim.evaluate.campaigns import score_campaigns
from atlas.sim.evaluate.metrics import Step

EXT, DECOY = "203.0.113.10", "203.0.113.99"
STEPS = [
    Step("c1-s1", "port_scan", "gw-a", (EXT,), 100, 120, "c1", 1),
    Step("c1-s2", "mqtt_bruteforce", "gw-b", (EXT,), 300, 330, "c1", 2),
    Step("c1-s3", "false_data", "gw-c", (EXT,), 500, 530, "c1", 3),
    Step("d1", "mqtt_bruteforce", "gw-b", (DECOY,), 310, 340),  # a second attacker, same tool, no campaign
]
DOMAIN = {"gw-a": "transportation", "gw-b": "energy", "gw-c": "energy"}


def ev(id: str, gw: str, src: str, t: float) -> Event:
    return Event(id, gw, DOMAIN[gw], "x", src, t, t + 10)


E1, E2, E3 = ev("e1", "gw-a", EXT, 105), ev("e2", "gw-b", EXT, 305), ev("e3", "gw-c", EXT, 505)
D = ev("d", "gw-b", DECOY, 315)
ALL = [E1, E2, E3, D]


def links(groups: list[list[Event]]) -> dict:
    camps = [Campaign(f"k{i}", g, []) for i, g in enumerate(groups)]
    return score_campaigns(camps, ALL, STEPS)["links"]


def test_the_right_campaign_links_every_true_pair_and_nothing_else():
    s = links([[E1, E2, E3], [D]])
    assert (s["pairs_true"], s["true_links"], s["false_links"]) == (3, 3, 0)
    assert s["precision"] == 1.0 and s["recall"] == 1.0


def test_a_decoy_merged_into_the_campaign_lowers_precision_not_recall():
    s = links([[E1, E2, E3, D]])
    assert s["false_links"] == 3  # the decoy with each of the three stages
    assert s["precision"] == 0.5 and s["recall"] == 1.0


def test_a_split_campaign_lowers_recall_and_within_domain_recall_counts_only_same_domain_pairs():
    s = links([[E1], [E2, E3], [D]])  # what per-domain correlation can do at best
    assert s["recall"] == 1 / 3 and s["precision"] == 1.0
    assert s["pairs_true_within_domain"] == 1 and s["recall_within_domain"] == 1.0


def test_two_incidents_of_one_step_are_no_pair_and_unmatched_incidents_are_left_out():
    twin = ev("e2b", "gw-b", EXT, 320)
    stray = ev("fp", "gw-a", "10.0.0.5", 105)  # matches no step: a false positive, scored elsewhere
    camps = [Campaign("k0", [E1, E2, twin, E3, stray], [])]
    s = score_campaigns(camps, [E1, E2, twin, E3, stray], STEPS)["links"]
    assert s["incidents"] == 4 and s["pairs_true"] == 5 and s["false_links"] == 0
