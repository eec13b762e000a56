"""The features stage alone, on hand-built decoded packets and MQTT rows."""
import numpy as np
import pytest

from atlas.agent.decode import CONNACK, CONNECT, MQTT_DTYPE, PACKET_DTYPE, PUBLISH, TCP_ACK, TCP_RST, TCP_SYN
from atlas.agent.features.schema import FEATURE_NAMES, HALF_LIVES, N_FEATURES
from atlas.agent.features.windows import FeatureExtractor

SCANNER, VICTIM, SENSOR, BROKER = 0x0A000005, 0x0A000001, 0x0A000009, 0x0A000002


def packets(n, t0, dt, src, dst, sport, dport, flags, size=60):
    p = np.zeros(n, PACKET_DTYPE)
    p["ts"] = t0 + np.arange(n) * dt
    p["ipver"], p["proto"] = 4, 6
    p["src"], p["dst"], p["sport"], p["dport"], p["tcp_flags"], p["wirelen"] = src, dst, sport, dport, flags, size
    return p


def mqtt_rows(n, t0, dt, client, mtype, to_broker=1, **fields):
    m = np.zeros(n, MQTT_DTYPE)
    m["ts"] = t0 + np.arange(n) * dt
    m["client"], m["broker"], m["mtype"], m["to_broker"] = client, BROKER, mtype, to_broker
    for k, v in fields.items():
        m[k] = v
    return m


def feature(rows, device, name):
    i = int(np.flatnonzero(rows.devices == device)[0])
    return float(rows.X[i, FEATURE_NAMES.index(name)])


def test_schema_names_are_unique_and_counted():
    assert len(set(FEATURE_NAMES)) == N_FEATURES == len(FEATURE_NAMES)


def test_port_scan_is_attributed_to_the_scanner_in_both_directions():
    syn = packets(500, 100.0, 0.001, SCANNER, VICTIM, 40000, np.arange(500) + 1, TCP_SYN)
    rst = packets(500, 100.0005, 0.001, VICTIM, SCANNER, np.arange(500) + 1, 40000, TCP_RST | TCP_ACK)
    p = np.sort(np.concatenate([syn, rst]), order="ts")
    fx = FeatureExtractor()
    rows = fx.update(p) + fx.flush()
    assert len(rows) == 1
    r = rows[0]
    assert list(r.devices) == [SCANNER]  # the victim's RSTs belong to the scanner's conversation
    assert r.packets[0] == 1000 and r.top_peer[0] == VICTIM
    assert np.expm1(feature(r, SCANNER, "new_dports@2s")) == pytest.approx(500)
    assert np.expm1(feature(r, SCANNER, "rst_in@2s")) == pytest.approx(500)
    assert feature(r, SCANNER, "unanswered_syn_ratio") == pytest.approx(1.0)


def test_known_ports_are_not_new_again_within_the_horizon():
    fx = FeatureExtractor(novelty_horizon_s=300)
    rows = fx.update(packets(10, 100.0, 0.01, SCANNER, VICTIM, 40000, np.arange(10) + 1, TCP_SYN))
    rows += fx.update(packets(10, 101.0, 0.01, SCANNER, VICTIM, 40000, np.arange(10) + 1, TCP_SYN)) + fx.flush()
    assert len(rows) == 2
    assert np.expm1(feature(rows[0], SCANNER, "new_dports@2s")) == pytest.approx(10)
    # second tick: no new ports; the decayed sum only holds the first tick's 10, halved per 2 s
    assert np.expm1(feature(rows[1], SCANNER, "new_dports@2s")) == pytest.approx(10 * 2 ** (-1 / HALF_LIVES[0]), rel=1e-3)


def test_damped_window_decays_by_half_life():
    fx = FeatureExtractor(tick_s=1.0)
    fx.update(packets(100, 10.0, 0.001, SENSOR, BROKER, 50000, 1883, TCP_ACK))
    rows = fx.update(packets(1, 20.5, 0.0, SENSOR, BROKER, 50000, 1883, TCP_ACK)) + fx.flush()
    assert [len(r) for r in rows] == [1, 1]
    expected_short = 100 * 2 ** (-10 / HALF_LIVES[0]) + 1
    expected_long = 100 * 2 ** (-10 / HALF_LIVES[1]) + 1
    assert np.expm1(feature(rows[1], SENSOR, "pkts_out@2s")) == pytest.approx(expected_short, rel=1e-4)
    assert np.expm1(feature(rows[1], SENSOR, "pkts_out@30s")) == pytest.approx(expected_long, rel=1e-4)


def test_mqtt_counters_refusals_topics_and_keepalive():
    conn = mqtt_rows(20, 50.0, 0.01, SENSOR, CONNECT, keepalive=60)
    refused = mqtt_rows(15, 50.005, 0.01, SENSOR, CONNACK, to_broker=0, return_code=5)
    accepted = mqtt_rows(5, 50.2, 0.01, SENSOR, CONNACK, to_broker=0, return_code=0)
    pub = mqtt_rows(8, 50.3, 0.01, SENSOR, PUBLISH, topic_hash=np.array([1, 1, 2, 2, 3, 3, 4, 4], np.uint64), payload_len=100)
    m = np.sort(np.concatenate([conn, refused, accepted, pub]), order="ts")
    fx = FeatureExtractor()
    rows = fx.update(np.zeros(0, PACKET_DTYPE), m) + fx.flush()
    r = rows[0]
    assert list(r.devices) == [SENSOR] and r.top_peer[0] == BROKER
    assert np.expm1(feature(r, SENSOR, "mqtt_connect@2s")) == pytest.approx(20)
    assert np.expm1(feature(r, SENSOR, "mqtt_refused@2s")) == pytest.approx(15)
    assert feature(r, SENSOR, "refused_ratio") == pytest.approx(0.75)
    assert np.expm1(feature(r, SENSOR, "mqtt_new_topics@2s")) == pytest.approx(4)
    assert feature(r, SENSOR, "topic_entropy") == pytest.approx(2.0)  # four topics, equally often
    assert feature(r, SENSOR, "keepalive_log") == pytest.approx(np.log2(61))
    assert np.expm1(feature(r, SENSOR, "mean_publish_size")) == pytest.approx(100)


def test_batches_spanning_many_ticks_and_idle_gaps():
    fx = FeatureExtractor(tick_s=1.0)
    p = np.concatenate([packets(5, 100.0, 0.1, SENSOR, BROKER, 50000, 1883, TCP_ACK), packets(5, 105.0, 0.1, SENSOR, BROKER, 50000, 1883, TCP_ACK)])
    rows = fx.update(p) + fx.flush()
    assert [r.tick_end for r in rows] == [101.0, 106.0]  # empty ticks emit nothing
    assert all(r.packets[0] == 5 for r in rows)


def test_out_of_order_timestamps_are_not_lost():
    p = packets(10, 100.0, 0.1, SENSOR, BROKER, 50000, 1883, TCP_ACK)
    p["ts"][3] = 100.95
    p["ts"][8] = 100.05
    fx = FeatureExtractor()
    rows = fx.update(p) + fx.flush()
    assert sum(int(r.packets.sum()) for r in rows) == 10


def test_device_table_is_bounded_and_counts_evictions():
    fx = FeatureExtractor(max_devices=32)
    for t in range(10):
        srcs = 0x0B000000 + t * 100 + np.arange(10)
        p = packets(10, 100.0 + t, 0.01, 0, BROKER, 50000, 1883, TCP_ACK)
        p["src"] = srcs
        fx.update(p)
    fx.flush()
    assert len(fx._slot) <= 32
    assert fx.stats.evicted_devices >= 100 - 32
    assert fx.stats.devices == 100


def test_non_ip_frames_are_counted_not_featurized():
    p = packets(3, 1.0, 0.1, SENSOR, BROKER, 50000, 1883, TCP_ACK)
    p["ipver"][1] = 0
    fx = FeatureExtractor()
    rows = fx.update(p) + fx.flush()
    assert fx.stats.non_ip == 1 and rows[0].packets[0] == 2
    assert rows[0].X.shape == (1, N_FEATURES) and rows[0].X.dtype == np.float32
    assert np.isfinite(rows[0].X).all()
