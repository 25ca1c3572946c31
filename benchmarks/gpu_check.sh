#!/usr/bin/env bash
# GPU check: argonic serve with the TorchScript network on one NVIDIA GPU, inferences/s at
# batch 256 and 1693, fp32/fp16 (and fp16 + CUDA graphs), patch and plane mode; one table,
# JSON to $OUT/gpu_check.json when OUT is set. Under 8 minutes.
#
#     bash benchmarks/gpu_check.sh               # on the GPU machine
#     bash benchmarks/gpu_check.sh --cpu-smoke   # the same flow on a CPU, tiny times (~1 min)
#
# Wheels the GPU machine lacks (tritonclient, pydantic-settings, protobuf 6, ...) come from
# .whl/ (fetch them beforehand with benchmarks/gpu_wheels.sh); they are installed into
# $ARGONIC_SITE (default /tmp/site) only when the interpreter lacks a dependency or has
# protobuf >= 7. PYTHON (default python3) chooses the interpreter. Other options go to
# benchmarks/bench_gpu.py (--batch-sizes, --seconds, --clients, --result).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${ARGONIC_SITE:-/tmp/site}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

have_deps() {
  "$PYTHON" - <<'PY'
import importlib, sys
for name in ("tritonclient.grpc", "pydantic_settings", "grpc_health.v1", "grpc_reflection",
             "zstandard", "lz4", "rapidjson", "google.protobuf"):
    try:
        importlib.import_module(name)
    except Exception as exc:
        sys.exit(f"missing {name}: {exc}")
from google.protobuf import __version__ as v
sys.exit(f"protobuf {v} >= 7 (tritonclient needs < 7)" if int(v.split(".")[0]) >= 7 else 0)
PY
}

if ! have_deps; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_check: dependencies missing and no wheels in .whl/ (run benchmarks/gpu_wheels.sh)" >&2
    exit 2
  fi
  echo "gpu_check: installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $SITE"
  "$PYTHON" -m pip install -q --upgrade --no-index --no-deps --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE:$PYTHONPATH"
  have_deps
fi

timeout -k 10 470 "$PYTHON" benchmarks/bench_gpu.py "$@"
