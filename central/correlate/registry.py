"""Correlation engines by name, chosen in central.toml (`[correlate] engine = "rules"`).

An engine turns the incidents of the last window into campaigns; a learned engine plugs in by
adding a factory here that takes the window (seconds) and returns a `CorrelationEngine`."""
from __future__ import annotations

from typing import Callable, Protocol

from atlas.central.correlate.rules import Campaign, Event, Topology, correlate


class CorrelationEngine(Protocol):
    name: str
    window_s: float

    def campaigns(self, events: list[Event], topology: Topology) -> list[Campaign]:
        """Every event in exactly one campaign (alone if nothing links it), with its links."""


class RulesEngine:
    """Same attacker, pivot, same identity within the window; links up to city scope."""

    name = "rules"

    def __init__(self, window_s: float):
        self.window_s = float(window_s)

    def campaigns(self, events: list[Event], topology: Topology) -> list[Campaign]:
        return correlate(events, topology, scope="city", window_s=self.window_s)


def attention_engine(window_s: float) -> CorrelationEngine:
    """The learned engine (atlas.central.correlate.attention); its model loads here, so a
    missing model or runtime stops the hub at start with one line, not at the first incident."""
    from atlas.central.correlate.attention import AttentionEngine

    return AttentionEngine(window_s)


ENGINES: dict[str, Callable[[float], CorrelationEngine]] = {"rules": RulesEngine,
                                                            "attention": attention_engine}
DEFAULT_ENGINE = "rules"


def build_engine(name: str, window_s: float) -> CorrelationEngine:
    """The engine `name` (the config loader has checked it is one of ENGINES). A learned
    engine whose model or runtime is missing raises ModelUnavailable."""
    return ENGINES[name](window_s)
