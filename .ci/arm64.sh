#!/usr/bin/env bash
# The emulated-ARM CI job (issue 5): runs the agent's tests and a bench smoke run inside a
# Debian bookworm arm64 root under qemu-user-static, as a gateway would run them.
#
#   bash .ci/arm64.sh            (as root; about 2 cores, network to Debian's mirror and PyPI)
#
# Layers, each cached under $ATLAS_ARM64_CACHE (default /var/cache/atlas-arm64) and keyed by a
# hash of what built it, so a second run on the same machine only copies the source and tests:
#   base-<key>/   debootstrap --variant=minbase of bookworm arm64 + the Debian packages below
#   venv-<key>/   a Python venv with the `agent` and `dev` extras from aarch64 wheels,
#                 bind-mounted at /opt/atlas-venv inside the root
# A layer is built in a .tmp folder and renamed when complete, so an interrupted build is never
# reused. Environment knobs:
#   ATLAS_ARM64_TESTS    test paths (default: tests/agent tests/ops)
#   ATLAS_ARM64_MARKERS  pytest -m expression (default: what makes sense under emulation: no
#                        network namespaces, no TensorFlow, not slow, not marked noarm)
#   ATLAS_ARM64_BENCH_MARKERS  pytest -m expression for bench/ (default: not netns/train/noarm)
#   ATLAS_ARM64_BENCH    smoke (default: `atlas-agent bench`, its JSON kept in $ATLAS_ARM64_CACHE), full (the
#                        pytest-benchmark suites, JSON kept in
#                        $ATLAS_ARM64_CACHE/bench-arm64.json), or 0 (none)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${ATLAS_ARM64_CACHE:-/var/cache/atlas-arm64}
SUITE=bookworm
MIRROR=${ATLAS_ARM64_MIRROR:-http://deb.debian.org/debian}
# python3-venv brings ensurepip; libpcap0.8 lets Scapy compile BPF filters; mosquitto, nftables
# and iproute2 are what the agent's tests drive for real.
DEB_PACKAGES="python3,python3-venv,libpcap0.8,mosquitto,nftables,iproute2,procps"
TEST_PATHS=${ATLAS_ARM64_TESTS:-tests/agent tests/ops}
TEST_MARKERS=${ATLAS_ARM64_MARKERS:-not netns and not train and not slow and not noarm}
BENCH_MARKERS=${ATLAS_ARM64_BENCH_MARKERS:-not netns and not train and not noarm}
VENV_IN_ROOT=/opt/atlas-venv
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

t_start=$SECONDS
phase() { printf '[arm64 %4ds] %s\n' "$((SECONDS - t_start))" "$*"; }

[ "$(id -u)" = 0 ] || { echo "arm64.sh: must run as root (debootstrap, chroot, mounts)" >&2; exit 2; }

# --- host tools ---------------------------------------------------------------------------------
if ! command -v debootstrap >/dev/null || [ ! -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
    phase "installing debootstrap and qemu-user-static on the host"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends debootstrap qemu-user-static >/dev/null
fi

# binfmt_misc is not mounted in this kind of container, so binfmt-support cannot register
# anything: mount it and register the aarch64 interpreter by hand. The F flag in Debian's
# conf makes the kernel open the interpreter now, so the root needs no copy of qemu.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi
phase "binfmt: $(head -1 /proc/sys/fs/binfmt_misc/qemu-aarch64) ($(sed -n 2p /proc/sys/fs/binfmt_misc/qemu-aarch64))"

# --- requirements: the agent and dev extras, read from setup.cfg --------------------------------
requirements=$(python3 - "$REPO/setup.cfg" <<'EOF'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
lines = []
for section, key in (("options", "install_requires"), ("options.extras_require", "agent"),
                     ("options.extras_require", "dev")):
    lines += [l.strip() for l in cfg.get(section, key, fallback="").splitlines() if l.strip()]
lines += ["setuptools>=68", "wheel"]  # to build the atlas package itself without isolation
# ai-edge-litert 2.3.0's aarch64 build segfaults in Interpreter() under qemu-user (seen
# 2026-11-27, any QEMU_CPU, with or without delegates); 1.4.0 runs the same models there.
# Real boards take the newest release from the `agent` extra; only this emulated root pins.
lines = ["ai-edge-litert==1.4.0" if l.startswith("ai-edge-litert") else l for l in lines]
print("\n".join(lines))
EOF
)
hash_of() { printf '%s' "$*" | sha256sum | cut -c1-16; }
base_key=$(hash_of "$SUITE arm64 minbase $DEB_PACKAGES $MIRROR v1")
venv_key=$(hash_of "$base_key $requirements v1")
BASE=$CACHE/base-$base_key
VENV=$CACHE/venv-$venv_key
mkdir -p "$CACHE"

# --- mounts, always undone ----------------------------------------------------------------------
ROOT=""
mounted=()
mount_in() {  # mount_in ROOT TARGET MOUNT-ARGS...
    local target=$1/$2; shift 2
    mkdir -p "$target"
    mount "$@" "$target"
    mounted+=("$target")
}
unmount_all() {
    local i
    for ((i=${#mounted[@]}-1; i>=0; i--)); do
        umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null || true
    done
    mounted=()
    # ... and whatever the tests mounted inside the root (`ip netns add` bind-mounts /run/netns).
    if [ -n "$ROOT" ]; then
        awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r |
            while read -r m; do umount -l "$m" || true; done
    fi
}
trap unmount_all EXIT
# A run killed hard leaves its mounts behind: undo them before anything under $CACHE is removed.
awk -v c="$CACHE/" 'index($2, c) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" || true
done
safe_rm() {  # never follow a bind mount of /dev or /proc into the host
    if awk -v d="$1/" 'index($2, d) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
        echo "arm64.sh: $1 still has mounts, not removing it" >&2; return 1
    fi
    rm -rf --one-file-system "$1"
}
enter_root() {  # enter_root ROOT VENV: the kernel file systems a test run needs (psutil reads /proc)
    ROOT=$1
    mount_in "$ROOT" proc -t proc proc
    mount_in "$ROOT" sys -t sysfs sysfs
    mount_in "$ROOT" dev --bind /dev
    mount_in "$ROOT" dev/pts --bind /dev/pts
    mount_in "$ROOT" dev/shm -t tmpfs tmpfs
    mount_in "$ROOT" tmp -t tmpfs -o mode=1777 tmpfs
    mount_in "$ROOT" "${VENV_IN_ROOT#/}" --bind "$2"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    # pip inside the root trusts what the host trusts (the host may sit behind a TLS proxy).
    mkdir -p "$ROOT/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
}
in_root() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=$VENV_IN_ROOT/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_DEFAULT_TIMEOUT=180 ATLAS_EMULATED=qemu-aarch64 "$@"
}

# --- layer 1: the Debian root -------------------------------------------------------------------
if [ ! -d "$BASE" ]; then
    phase "debootstrap $SUITE arm64 minbase (+ $DEB_PACKAGES) into $BASE"
    safe_rm "$BASE.tmp"
    debootstrap --arch=arm64 --variant=minbase --include="$DEB_PACKAGES" \
        "$SUITE" "$BASE.tmp" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
        || { tail -30 "$CACHE/debootstrap.log"; exit 1; }
    rm -rf "$BASE.tmp/var/cache/apt/archives/"*.deb
    mv "$BASE.tmp" "$BASE"
    phase "root built: $(du -sh "$BASE" | cut -f1)"
else
    phase "root cached: $BASE"
fi

# --- layer 2: the venv (built at its final path inside the root, so its shebangs are right) --
if [ ! -d "$VENV" ]; then
    phase "venv with the agent + dev extras from aarch64 wheels"
    safe_rm "$VENV.tmp"; mkdir -p "$VENV.tmp"
    enter_root "$BASE" "$VENV.tmp"
    in_root python3 -m venv "$VENV_IN_ROOT"
    printf '%s\n' "$requirements" > "$BASE/tmp/requirements.txt"
    in_root "$VENV_IN_ROOT/bin/pip" install -q --only-binary=:all: --upgrade pip
    # Wheels only: an sdist compiled under qemu would take far longer than the 25-minute goal.
    in_root "$VENV_IN_ROOT/bin/pip" install -q --prefer-binary -r /tmp/requirements.txt
    # Scapy sets interfaces promiscuous with PACKET_ADD_MEMBERSHIP, which qemu-user does not
    # translate (errno 92): turn it off for every Python in this venv, not in the agent's code.
    site=$(in_root "$VENV_IN_ROOT/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    cat > "$BASE$site/_atlas_emulation.py" <<'EOF'
"""Under qemu-user, set scapy's conf.sniff_promisc = False as soon as scapy.config loads."""
import importlib.abc
import importlib.util
import sys


class _ScapyConfigHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "scapy.config":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.conf.sniff_promisc = False

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _ScapyConfigHook())
EOF
    echo 'import _atlas_emulation' > "$BASE$site/_atlas_emulation.pth"
    unmount_all
    mv "$VENV.tmp" "$VENV"
    phase "venv built: $(du -sh "$VENV" | cut -f1)"
else
    phase "venv cached: $VENV"
fi

# Keep one generation of each layer: older keys are dead weight.
for old in "$CACHE"/base-* "$CACHE"/venv-*; do
    case $old in "$BASE"|"$VENV") ;; *) [ -d "$old" ] && safe_rm "$old" ;; esac
done

# --- this run: a fresh copy of the source, the package installed without dependencies ----------
enter_root "$BASE" "$VENV"
safe_rm "$BASE/atlas"; mkdir -p "$BASE/atlas/src"
tar -C "$REPO" -cf - --exclude=./.git --exclude=./.venv --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=./build --exclude=.pytest_cache . | tar -C "$BASE/atlas/src" -xf -
phase "installing atlas (no dependencies) into the arm64 venv"
in_root /bin/sh -c "cd /atlas/src && pip install -q --no-deps --no-build-isolation --no-index ." \
    > "$CACHE/build.log" 2>&1 || { cat "$CACHE/build.log"; exit 1; }

in_root /bin/sh -c 'cd /tmp && python - <<EOF
import platform, numpy, scapy.all, paho.mqtt.client, prometheus_client, psutil
from scapy.config import conf
from ai_edge_litert.interpreter import Interpreter
assert platform.machine() == "aarch64", platform.machine()
assert conf.sniff_promisc is False, "emulation hook not active"
print("arm64 python", platform.python_version(), "numpy", numpy.__version__,
      "scapy", scapy.VERSION, "psutil", psutil.__version__, "litert ok")
EOF'

status=0
phase "tests: pytest $TEST_PATHS -m '$TEST_MARKERS'"
# shellcheck disable=SC2086 # the paths are meant to split
in_root /bin/sh -c 'cd /atlas/src && exec python -m pytest "$@"' pytest -q -p no:cacheprovider \
    $TEST_PATHS -m "$TEST_MARKERS" || status=$?
if [ "$status" = 5 ]; then
    phase "tests: none collected (exit 5) - nothing to check yet"; status=0
fi

BENCH=${ATLAS_ARM64_BENCH:-smoke}
if [ "$BENCH" != 0 ]; then
    bstatus=0
    if [ "$BENCH" = full ]; then  # real figures for bench/RESULTS.md's emulated-ARM column
        phase "bench: full pytest-benchmark run, JSON to $CACHE/bench-arm64.json"
        in_root /bin/sh -c "cd /atlas/src && python -m pytest -q -p no:cacheprovider bench/ \
            --benchmark-only --benchmark-enable --benchmark-json=/tmp/bench-arm64.json \
            -m '$BENCH_MARKERS'" || bstatus=$?
        cp "$BASE/tmp/bench-arm64.json" "$CACHE/bench-arm64.json" 2>/dev/null || true
    else
        # The pytest suites under qemu take far longer than the job's budget (Scapy baselines
        # at 1/8 speed); the smoke run is the integrator's one-screen bench instead: it
        # generates traffic, replays it through the whole agent and times int8 inference.
        phase "bench smoke: atlas-agent bench"
        in_root /bin/sh -c "cd /tmp && atlas-agent bench --devices 100 --seconds 30 && \
            atlas-agent bench --devices 100 --seconds 30 --json > /tmp/agent-bench-arm64.json" || bstatus=$?
        cp "$BASE/tmp/agent-bench-arm64.json" "$CACHE/agent-bench-arm64.json" 2>/dev/null || true
    fi
    if [ "$bstatus" = 5 ]; then phase "bench smoke: no benchmarks collected"; bstatus=0; fi
    [ "$status" != 0 ] || status=$bstatus
fi

unmount_all
phase "done, exit $status"
exit "$status"
