"""Config: TOML, validated, errors that name the key."""
import pytest

from atlas.agent.config import ConfigError, load_config


def write(tmp_path, text):
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, '[agent]\ngateway_id = "gw-7"\nmqtt_ports = [1883]\n[budget]\ncpu_percent = 5\n'))
    assert cfg.agent.gateway_id == "gw-7" and cfg.agent.mqtt_ports == [1883]
    assert cfg.budget.cpu_percent == 5.0 and cfg.detect.tick_seconds == 1.0


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[agent]\ngateway = 'x'\n", "agent.gateway: unknown key"),
        ("[agnet]\n", "unknown section [agnet]"),
        ("[budget]\ncpu_percent = 0\n", "budget.cpu_percent"),
        ("[budget]\ncpu_percent = 'high'\n", "budget.cpu_percent: expected float"),
        ("[agent]\ncapture_backend = 'pcap'\n", "agent.capture_backend"),
        ("[agent]\ncapture_ring_mb = 1\n", "agent.capture_ring_mb: must be an integer in [2, 1024]"),
        ("[agent]\ncapture_ring_mb = 8.5\n", "agent.capture_ring_mb"),
        ("[agent]\nmqtt_ports = [0]\n", "agent.mqtt_ports"),
        ("[detect]\ntick_seconds = 0\n", "detect.tick_seconds"),
        ("[hub]\naddress = 'hub:7443'\n", "hub: address is set"),
        ("[agent\n", "cannot parse as TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert needle in str(e.value) and "agent.toml" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")
