"""The ATLAS gateway agent: capture -> decode -> features -> detect -> alerts (-> uplink, enforce)."""

__version__ = "0.1.0"
