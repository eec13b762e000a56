"""The ATLAS gateway agent: capture -> decode -> features -> detect -> alerts (-> uplink, enforce)."""
