"""Correlate: link incidents from many gateways into campaigns (multi-stage, cross-domain).

`rules` is the rule-based engine (also used by the simulator's evaluation); `attention` the
learned one (a GRU with attention, trained by atlas.train.correlate, served with LiteRT;
`features` are its inputs); `registry` names the engines central.toml may choose
(`[correlate] engine = "rules"`); `live` runs the chosen engine at the hub as an event-stream
subscriber and stores the campaigns it finds.
"""
from atlas.central.correlate.rules import (DEFAULT_WINDOW_S, LINK_REASONS, SCOPES, Campaign,
                                           Event, GatewayPlace, Hierarchy, Link, Topology,
                                           correlate, event_of, find_links, hierarchy,
                                           scope_of)

__all__ = ["DEFAULT_WINDOW_S", "LINK_REASONS", "SCOPES", "Campaign", "Event", "GatewayPlace",
           "Hierarchy", "Link", "Topology", "correlate", "event_of", "find_links", "hierarchy",
           "scope_of"]
