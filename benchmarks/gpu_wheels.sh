#!/usr/bin/env bash
# Download, into .whl/, the wheels benchmarks/gpu_check.sh needs on a GPU machine that has
# Python 3.12 + torch (CUDA) + numpy, grpcio, onnx, h5py, aiohttp, ... but not these
# (tritonclient needs protobuf < 7: a 6.x wheel shadows a newer one there).
# Versions: those argonic is tested with. Run from anywhere, on a machine with PyPI access:
#     bash benchmarks/gpu_wheels.sh
# then copy the checkout (with .whl/, which git ignores) to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEST=.whl
WHEELS=(
  tritonclient==2.73.0
  protobuf==6.33.6
  grpcio==1.85.3
  grpcio-health-checking==1.81.1
  grpcio-reflection==1.81.1
  pydantic==2.14.4
  pydantic-core==2.50.5
  pydantic-settings==2.16.3
  typing-inspection==0.4.5
  annotated-types==0.8.0
  typing-extensions==4.16.0
  python-dotenv==1.2.4
  python-rapidjson==1.25
  archspec==0.2.7
)
# zstandard and lz4 (7 MB) stay behind: argonic imports them only for tensor compression,
# which the GPU check does not use, and the checkout + .whl/ must stay under the device
# machine's 64 MiB
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
mkdir -p "$DEST"
for wheel in "${WHEELS[@]}"; do
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$wheel"
done
# prove the set installs for CPython 3.12 on manylinux x86_64 (into a throw-away folder)
check=$(mktemp -d)
"$PYTHON" -m pip install -q --no-index --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" --target "$check" "$DEST"/*.whl
rm -rf "$check"
ls -1 "$DEST"
echo "gpu_wheels: ${#WHEELS[@]} wheels in $DEST/ (CPython 3.12, manylinux x86_64)"
