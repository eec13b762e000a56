"""The contract every part of ATLAS shares: the agent, the hub and the simulator import it, it
imports none of them.

incidents  incidents and their kinds           rules      rules, their vocabulary, the one checker
wire       what travels between agent and hub  serde      the one place protobuf meets wire types
signing    Ed25519 over canonical bytes        bundle     the model-bundle format
inventory  the device inventory file format    tls        TLS files and gateway identity
control    the daemons' control socket         notify     systemd's notify protocol
metrics    what both daemons export            counters   thread-safe counters
textfile   reading an operator's config and inventory files without a hang or a traceback
"""

__version__ = "0.1.0"
