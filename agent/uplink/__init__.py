"""Uplink: the agent's side of the link to the hub (gRPC client, spool, device summaries).

What travels is the contract's (atlas.link.wire, atlas.link.serde); this package sends it,
keeps it when the hub is away, and takes the hub's rules and models.
"""
