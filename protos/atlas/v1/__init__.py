"""atlas.v1: generated protobuf/gRPC code for the ATLAS wire protocol (see protos/atlas/v1/*.proto).

Regenerate with protos/generate.sh; tests/test_protos.py fails when this code does not match the
.proto files. Only atlas.agent.uplink (client, serde) and atlas.central.ingest import it.
"""
