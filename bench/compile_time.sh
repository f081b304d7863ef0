#!/usr/bin/env bash
# Seconds to compile one translation unit that includes the umbrella header and the step
# policies and instantiates a composed TTS loss and a full Stabilizer (goal: under 2 s at -O2 on
# g++ 12). usage: bench/compile_time.sh [compiler] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${1:-g++} runs=${2:-3}
tu=$(mktemp --suffix=.cpp)
trap 'rm -f "$tu" "$tu.o"' EXIT
cat > "$tu" <<'CPP'
#include <steadyloss/steadyloss.hpp>
#include <steadyloss/stability/stability.hpp>
#include <vector>
namespace sl = steadyloss;
int main() {
  std::vector<float> mel(64), mel_target(64), stop(8), stop_target(8), d_mel(64), d_stop(8);
  std::vector<int> lengths{4, 3};
  auto loss = sl::compose(sl::term(sl::Huber<float>{}, 35.0f),
                          sl::term(sl::LabelSmoothing{sl::BalancedBCE<float>{}, 0.05f}, 1.0f));
  sl::Stabilizer<sl::SpikeDampener<float>, sl::EmaSmoother<float>, sl::AdaptiveWeight<2, float>,
                 sl::EarlyStopper<float>, sl::StabilityMetrics<float>> guard;
  const auto r = loss.evaluate(sl::inputs(mel, mel_target, sl::lengths(lengths, 4, 8)),
                               sl::inputs(stop, stop_target, sl::lengths(lengths, 4, 1)),
                               sl::grads(d_mel, d_stop));
  const auto step = guard.update(r, 1.0f);
  loss.set_multipliers(step.weights);
  return step.should_stop ? 1 : 0;
}
CPP
best_ms=""
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  "$cxx" -std=c++20 -O2 -Iinclude -c "$tu" -o "$tu.o"
  elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  if [ -z "$best_ms" ] || [ "$elapsed_ms" -lt "$best_ms" ]; then best_ms=$elapsed_ms; fi
done
printf 'compile time (%s -O2, best of %s): %d.%03d s (goal < 2 s)\n' "$("$cxx" --version | head -1)" \
  "$runs" $((best_ms / 1000)) $((best_ms % 1000))
