# Two commands for a fresh Debian machine (run as root, or with sudo for the apt step):
#   make demo   the main job: a small city end to end (atlas-sim city + evaluate), prints the paper's table
#   make test   installs everything the tests need, then runs every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEBIAN_PACKAGES := python3-venv libpcap0.8 mosquitto mosquitto-clients nftables iproute2 tcpdump tshark systemd nmap
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: demo evaluation test deps venv bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

venv: $(PY)
	$(PY) -m pip install -q -e '.[agent,central,ontology,train,respond,dev]'

deps:
	$(APT) update -qq
	DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq --no-install-recommends $(DEBIAN_PACKAGES)

demo: deps venv
	$(PY) -m atlas.sim.demo

# The full evaluation: 5,000 devices, 50 gateways, an hour of traffic (3 GB of pcap
# in out/city5k/city; about 10 minutes on 2 cores), report in out/city5k/report.
evaluation: deps venv
	$(PY) -m atlas.sim.demo --out out/city5k --devices 5000 --gateways 50 --duration 3600 --seed 7

test: deps venv
	$(PY) -m pytest -q

bench: venv
	$(PY) -m pytest bench/ --benchmark-only -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
