#!/usr/bin/env bash
# The main demo: the TTS stability study (baseline, original, oracle and stable presets in five
# scenarios, and ablations; 10 seeds each; 69-77 s on a shared 2-core VM), after the 30-second
# quickstart example. Pass --full for the long study.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTEADYLOSS_BUILD_TESTS=OFF \
      -DSTEADYLOSS_BUILD_EXAMPLES=ON -DSTEADYLOSS_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/demo --target quickstart tts_stability
./build/demo/examples/quickstart
echo
(cd build/demo/examples/tts_stability && ./tts_stability "$@")
echo "table, plot and per-step CSV: build/demo/examples/tts_stability/tts_stability_out/"
