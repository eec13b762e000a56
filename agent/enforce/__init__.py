"""Enforce: apply the hub's rules on the gateway (nftables, MQTT broker), with TTLs.

The rule vocabulary and its checker are the contract's (atlas.link.rules); this package maps
checked rules to backend elements (validate.py) and keeps them installed until they expire.
"""
