"""The hub's learned correlator: training data from campaign templates (`data`), the attention
GRU and its TFLite export (`model`), and the comparison with the rule-based engines
(`evaluate`). Run `python -m atlas.train.correlate train|evaluate`."""
