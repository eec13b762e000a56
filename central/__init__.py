"""The ATLAS hub: ingest, store, correlate, decide, dispatch; and model training."""
