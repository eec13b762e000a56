"""The hub's correlation engine on hand-made incidents: each link rule, time order and window,
scopes (gateway < domain < city), the hierarchy, and bad input."""
from __future__ import annotations

import pytest
from atlas.link.incidents import Incident
from atlas.central.correlate import (
    Event,
    GatewayPlace,
    Topology,
    correlate,
    event_of,
    find_links,
    hierarchy,
)

T0 = 1_767_254_400.0
TOPO = Topology([
    GatewayPlace("gw-d01-tra", "transportation", "d01", "10.1.0.0/16", "10.1.0.1"),
    GatewayPlace("gw-d01-ene", "energy", "d01", "10.2.0.0/16", "10.2.0.1"),
    GatewayPlace("gw-d01-pub", "public_safety", "d01", "10.3.0.0/16", "10.3.0.1"),
    GatewayPlace("gw-d02-tra", "transportation", "d02", "10.4.0.0/16", "10.4.0.1"),
])
EXT = "203.0.113.10"


def ev(id, gw, src, t, kind="anomaly", dst="", last=None, **kw) -> Event:
    return Event(id=id, gateway=gw, domain=TOPO.domain(gw), kind=kind, src_ip=src, time=T0 + t,
                 last_seen=T0 + (last if last is not None else t + 30), dst_ip=dst, **kw)


def groups(campaigns) -> list[list[str]]:
    return sorted(sorted(e.id for e in c.events) for c in campaigns)


def test_same_attacker_across_domains_links_only_city_wide():
    events = [ev("s1", "gw-d01-tra", EXT, 0, "port_scan", dst="10.1.0.1"),
              ev("s2", "gw-d01-ene", EXT, 300, "mqtt_bruteforce", dst="10.2.0.1"),
              ev("s3", "gw-d01-pub", EXT, 600, "false_data")]
    city = correlate(events, TOPO)
    assert groups(city) == [["s1", "s2", "s3"]]
    assert city[0].scope == "city" and city[0].domains == ["energy", "public_safety", "transportation"]
    assert {(lk.earlier, lk.later, lk.reason) for lk in city[0].links} >= {("s1", "s2", "same_attacker"), ("s2", "s3", "same_attacker")}
    assert groups(correlate(events, TOPO, scope="domain")) == [["s1"], ["s2"], ["s3"]]
    assert city[0].multi_stage


def test_same_domain_other_district_links_at_domain_scope():
    events = [ev("a", "gw-d01-tra", EXT, 0), ev("b", "gw-d02-tra", EXT, 100)]
    assert groups(correlate(events, TOPO, scope="domain")) == [["a", "b"]]
    assert groups(correlate(events, TOPO, scope="gateway")) == [["a"], ["b"]]
    assert find_links(events, TOPO)[0].scope == "domain"


def test_pivot_from_a_victim_address():
    # an outside host attacks device 10.1.3.7; later that device attacks the energy broker
    events = [ev("a", "gw-d01-tra", EXT, 0, "mqtt_bruteforce", dst="10.1.3.7"),
              ev("b", "gw-d01-ene", "10.1.3.7", 200, "mqtt_bruteforce", dst="10.2.0.1")]
    links = find_links(events, TOPO)
    assert [(lk.reason, lk.earlier, lk.later) for lk in links] == [("pivot", "a", "b")]
    # a victim named in the evidence counts too
    events = [ev("a", "gw-d01-tra", EXT, 0, dst="10.1.0.1", victims=("10.1.9.9",)),
              ev("b", "gw-d01-pub", "10.1.9.9", 200)]
    assert groups(correlate(events, TOPO)) == [["a", "b"]]


def test_pivot_from_a_scanned_network():
    # recon of gw-d01-tra's network from outside: a device behind it that attacks later is linked
    scan = ev("scan", "gw-d01-tra", EXT, 0, "port_scan", dst="10.1.0.1")
    later = ev("dev", "gw-d01-ene", "10.1.4.4", 400, "mqtt_bruteforce", dst="10.2.0.1")
    assert [lk.reason for lk in find_links([scan, later], TOPO)] == ["pivot"]
    # a device behind another gateway is not
    other = ev("dev2", "gw-d01-ene", "10.4.4.4", 400, "mqtt_bruteforce", dst="10.2.0.1")
    assert find_links([scan, other], TOPO) == []
    # a rogue host scanning its own network exposes nothing new
    inside = ev("scan2", "gw-d01-tra", "10.1.255.254", 0, "port_scan", dst="10.1.0.1")
    assert find_links([inside, later], TOPO) == []


def test_time_order_and_window():
    a = ev("a", "gw-d01-tra", EXT, 1000, dst="10.1.3.7", last=1100)
    before = ev("b", "gw-d01-ene", "10.1.3.7", 10)  # attacked as a victim only later: no pivot
    assert find_links([a, before], TOPO) == []
    near = ev("n", "gw-d01-pub", EXT, 1100 + 3600)
    far = ev("f", "gw-d01-pub", EXT, 1100 + 3601)
    assert [lk.later for lk in find_links([a, near], TOPO)] == ["n"]
    assert find_links([a, far], TOPO) == []
    assert find_links([a, far], TOPO, window_s=4000) != []


def test_shared_identity_and_brokers_never_attack():
    a = ev("a", "gw-d01-tra", "10.1.5.5", 0, identities=("tsc-d01-0007",))
    b = ev("b", "gw-d01-pub", "10.9.9.9", 60, identities=("tsc-d01-0007",))
    assert [lk.reason for lk in find_links([a, b], TOPO)] == ["same_identity"]
    r1 = ev("r1", "gw-d01-tra", "10.1.0.1", 0)
    r2 = ev("r2", "gw-d01-ene", "10.1.0.1", 60)
    assert find_links([r1, r2], TOPO) == []


def test_unrelated_incidents_stay_apart():
    events = [ev("a", "gw-d01-tra", "10.1.1.1", 0, dst="10.1.0.1"), ev("b", "gw-d01-ene", "10.2.2.2", 10, dst="10.2.0.1"),
              ev("c", "gw-d01-pub", "10.3.3.3", 20, dst="10.3.0.1")]
    city = correlate(events, TOPO)
    assert groups(city) == [["a"], ["b"], ["c"]]
    assert not any(c.multi_stage for c in city)
    assert [c.id for c in city] == ["campaign-1", "campaign-2", "campaign-3"]


def test_hierarchy_levels():
    events = [ev("s1", "gw-d01-tra", EXT, 0), ev("s1b", "gw-d01-tra", EXT, 5, "volumetric"),
              ev("s2", "gw-d02-tra", EXT, 100), ev("s3", "gw-d01-ene", EXT, 200)]
    h = hierarchy(events, TOPO)
    assert groups(h.gateway["gw-d01-tra"]) == [["s1", "s1b"]]
    assert groups(h.domain["transportation"]) == [["s1", "s1b", "s2"]]
    assert groups(h.domain["energy"]) == [["s3"]]
    assert groups(h.city) == [["s1", "s1b", "s2", "s3"]]
    assert not h.gateway["gw-d01-tra"][0].multi_stage and h.city[0].multi_stage


def test_event_of_an_agent_incident_and_its_dict():
    inc = Incident(id="gw-d01-ene/10.1.4.4/mqtt_bruteforce/1", kind="mqtt_bruteforce", src_ip="10.1.4.4",
                   dst_ip="10.2.0.1", device="tsc-d01-0004-x1", gateway="gw-d01-ene", time=T0, last_seen=T0 + 9,
                   score=0.99, model_version="m", evidence={"username": "tsc-d01-0004", "victims": ["10.2.0.1"]})
    for item in (inc, inc.to_dict()):
        e = event_of(item, TOPO)
        assert (e.domain, e.district, e.src_ip, e.dst_ip) == ("energy", "d01", "10.1.4.4", "10.2.0.1")
        assert e.identities == ("tsc-d01-0004", "tsc-d01-0004-x1") and e.victims == ("10.2.0.1",)
    plain = event_of({"id": "x", "kind": "anomaly", "src_ip": "10.1.1.1", "device": "10.1.1.1", "time": T0,
                      "last_seen": T0}, TOPO, gateway="gw-d01-tra")
    assert plain.identities == () and plain.gateway == "gw-d01-tra" and plain.domain == "transportation"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="scope: 'district'"):
        correlate([], TOPO, scope="district")
    with pytest.raises(ValueError, match="window_s"):
        correlate([], TOPO, window_s=0)
    with pytest.raises(ValueError, match="event id 'a' is not unique"):
        correlate([ev("a", "gw-d01-tra", EXT, 0), ev("a", "gw-d01-ene", EXT, 1)], TOPO)
    with pytest.raises(ValueError, match="gateway gw-x: subnet 'nope'"):
        Topology([GatewayPlace("gw-x", "energy", subnet="nope")])
    assert Topology.from_city({"gateways": [{"id": "g", "domain": "energy", "subnet": "10.9.0.0/16"}]}).network_of("10.9.1.1") == "g"


def test_event_of_a_hub_incident():
    from atlas.central.store import HubIncident

    hub = HubIncident(id="h1", kind="port_scan", src_ip=EXT, device=EXT, dst_ip="10.1.0.1", first_seen=T0 + 5,
                      last_seen=T0 + 50, score=1.0, packets=10, state="open", created_at=T0 + 6,
                      gateways=["gw-d01-tra"])
    e = event_of(hub, TOPO, gateway=hub.gateways[0])
    assert (e.id, e.time, e.last_seen, e.gateway, e.domain) == ("h1", T0 + 5, T0 + 50, "gw-d01-tra", "transportation")
