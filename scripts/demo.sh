#!/usr/bin/env bash
# The main demo: builds and runs the examples that exist (the stability study joins them when it lands).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTEADYLOSS_BUILD_TESTS=OFF \
      -DSTEADYLOSS_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/demo
./build/demo/examples/quickstart
