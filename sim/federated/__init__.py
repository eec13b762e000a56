"""`atlas-sim federated`: federated rounds over simulated gateways with the real code.

Each gateway's traffic is generated from its own device mix and replayed through the agent's
pipeline (rows.py); honest gateways train with the agent's local-training code
(atlas.agent.detect.local_training), poisoned ones as poison.py says; the hub aggregates with
atlas.central.federated's strategies; run.py scores every round and writes report.json.
"""
from atlas.sim.federated.run import FederatedOptions, run_federated

__all__ = ["FederatedOptions", "run_federated"]
