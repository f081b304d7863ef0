// Per-step cost of the full Stabilizer pipeline (SpikeDampener, EmaSmoother, AdaptiveWeight<2>,
// EarlyStopper, StabilityMetrics) fed a composed-loss result and a gradient norm, as a training
// loop would call it once per step. n = window of the spike detector and of the metrics.
// Goal: < 50 ns per step, and window 1000 within 1.2x of window 10 (O(1) per step).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include <steadyloss/stability/stability.hpp>

namespace sl = steadyloss;

namespace {

void step_pipeline(benchmark::State& state) {
  const auto window = static_cast<std::size_t>(state.range(0));
  sl::Stabilizer<sl::SpikeDampener<float>, sl::EmaSmoother<float>, sl::AdaptiveWeight<2, float>,
                 sl::EarlyStopper<float>, sl::StabilityMetrics<float>>
      guard(sl::SpikeDampener<float>({.window = window, .detector = {.threshold = 2.0}}), sl::EmaSmoother<float>{},
            sl::AdaptiveWeight<2, float>{}, sl::EarlyStopper<float>({.patience = 1 << 30}),
            sl::StabilityMetrics<float>({.window = window}));
  // Pre-generated inputs (noisy, with a spike every 97 steps) so the loop measures only update().
  std::vector<sl::composed_result<float, 2>> inputs(4096);
  std::vector<float> grad_norms(inputs.size());
  std::uint32_t seed = 1;
  auto uniform = [&] {
    seed = seed * 1664525u + 1013904223u;
    return static_cast<float>(seed >> 8) * 0x1.0p-24f;
  };
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    auto& r = inputs[i];
    r.values = {1.0f + 0.1f * uniform() + (i % 97 == 96 ? 5.0f : 0.0f), 0.3f + 0.03f * uniform()};
    r.weights = {35.0f, 1.0f};
    r.denominators = {1000.0, 1000.0};
    r.total = r.weights[0] * r.values[0] + r.weights[1] * r.values[1];
    grad_norms[i] = 1.0f + uniform();
  }
  std::size_t i = 0;
  for (auto _ : state) {
    auto report = guard.update(inputs[i], grad_norms[i]);
    benchmark::DoNotOptimize(report);
    i = (i + 1) & (inputs.size() - 1);
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(step_pipeline)->Name("step_pipeline/steadyloss")->Arg(10)->Arg(1000);
