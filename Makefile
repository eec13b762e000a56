# Two commands for a fresh Debian machine (run as root, or with sudo for the apt step):
#   make demo   the main job: a small city end to end (atlas-sim city + evaluate), prints the paper's table
#   make test   installs everything the tests need, then runs every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEBIAN_PACKAGES := python3-venv libpcap0.8 mosquitto mosquitto-clients nftables iproute2 tcpdump tshark systemd nmap
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: demo test deps venv bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

venv: $(PY)
	$(PY) -m pip install -q -e '.[agent,central,train,dev]'

deps:
	$(APT) update -qq
	DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq --no-install-recommends $(DEBIAN_PACKAGES)

demo: deps venv
	$(PY) -m atlas.sim.demo

test: deps venv
	$(PY) -m pytest -q

bench: venv
	$(PY) -m pytest bench/ --benchmark-only -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
