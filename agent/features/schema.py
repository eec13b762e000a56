"""The feature schema: names in order, shared by the agent and the training pipeline.

Bump SCHEMA_VERSION whenever a feature is added, removed, reordered or its meaning changes;
models record the version they were trained on and the detector refuses a mismatch.
"""
from __future__ import annotations

SCHEMA_VERSION = 2  # 2: refused_ratio and unanswered_syn_ratio are 0 below 0.5 events in the short window

# Per-tick counters accumulated for each device (the MQTT client side / the initiator).
COUNTERS = (
    "pkts_out",
    "pkts_in",
    "bytes_out",
    "bytes_in",
    "syn_out",  # SYN without ACK sent: connection attempts
    "synack_in",  # SYN+ACK received: attempts that a server accepted
    "rst_in",  # RST received: refused connections (closed ports)
    "rst_out",
    "new_dports",  # destination ports not seen from this device in the novelty horizon
    "new_dhosts",  # destination hosts not seen ...
    "mqtt_connect",
    "mqtt_refused",  # CONNACK with a non-zero return/reason code
    "mqtt_publish_out",
    "mqtt_publish_bytes",
    "mqtt_subscribe",
    "mqtt_wildcard",  # subscriptions with '#' or '+'
    "mqtt_sys",  # topics/filters under $SYS
    "mqtt_malformed",
    "mqtt_new_topics",
    "mqtt_disconnect",
    "mqtt_ping",
    "mqtt_msgs_out",
)
C = {name: i for i, name in enumerate(COUNTERS)}

# Decayed sums of the counters at two time scales (half-lives in seconds), in the manner of
# Kitsune's damped windows: value <- value * 2**(-dt / half_life) + counts of the tick.
HALF_LIVES = (2.0, 30.0)
LONG_COUNTERS = (
    "pkts_out",
    "syn_out",
    "rst_in",
    "new_dports",
    "mqtt_connect",
    "mqtt_refused",
    "mqtt_publish_out",
    "mqtt_malformed",
    "mqtt_new_topics",
    "mqtt_disconnect",
)

# Shape features computed from the short window.
SHAPE = (
    "mean_pkt_size_out",
    "mean_publish_size",
    "refused_ratio",
    "syn_ratio",  # syn_out / pkts_out
    "unanswered_syn_ratio",  # 1 - synack_in / syn_out
    "topic_entropy",  # Shannon entropy (bits) of the device's PUBLISH topics in the tick
    "keepalive_log",  # log2(1 + mean CONNECT keepalive in the tick), 0 when no CONNECT
    "iat_mean_log",  # log of mean inter-arrival (s) of the device's packets in the tick
    "iat_cv",  # coefficient of variation of inter-arrival in the tick
)

FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"{n}@{HALF_LIVES[0]:g}s" for n in COUNTERS)
    + tuple(f"{n}@{HALF_LIVES[1]:g}s" for n in LONG_COUNTERS)
    + SHAPE
)
N_FEATURES = len(FEATURE_NAMES)
