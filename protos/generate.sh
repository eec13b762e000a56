#!/usr/bin/env bash
# Regenerate the Python code for the atlas.v1 wire protocol from protos/atlas/v1/*.proto.
#   protos/generate.sh            write next to the .proto files (commit the result)
#   protos/generate.sh OUTDIR     write under OUTDIR/atlas/v1 (tests/test_protos.py diffs it)
# Uses grpcio-tools pinned in setup.cfg's `dev` extra, so the output is reproducible.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
python="${PYTHON:-python3}"
# Both may be given relative to the caller's folder: make them absolute before the cd.
case "$python" in */*) python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")" ;; esac
mkdir -p "$out/atlas/v1"
out="$(cd "$out" && pwd)"
cd "$here"
"$python" -m grpc_tools.protoc -I. \
    --python_out="$out" --pyi_out="$out" \
    atlas/v1/telemetry.proto atlas/v1/rules.proto atlas/v1/link.proto
# Only link.proto has a service; stubs for the others would be empty files.
"$python" -m grpc_tools.protoc -I. --grpc_python_out="$out" atlas/v1/link.proto
