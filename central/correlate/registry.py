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


ENGINES: dict[str, Callable[[float], CorrelationEngine]] = {"rules": RulesEngine}
DEFAULT_ENGINE = "rules"


def build_engine(name: str, window_s: float) -> CorrelationEngine:
    """The engine `name` (the config loader has checked it is one of ENGINES)."""
    return ENGINES[name](window_s)
