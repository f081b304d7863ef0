#pragma once
// Shared by the benchmark translation units: inputs, byte accounting and the naming scheme
// <case>/<implementation>/<n> that bench/run reads.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace bench {

inline const std::vector<long> sizes{1024, 8192, 65536, 1048576, 16777216};

struct elementwise_data {
  std::vector<float> pred, target, grad;
  elementwise_data(std::size_t n, bool binary_targets) : pred(n), target(n), grad(n) {
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::bernoulli_distribution stop(0.02);
    for (std::size_t i = 0; i < n; ++i) {
      pred[i] = normal(rng);
      target[i] = binary_targets ? (stop(rng) ? 1.0f : 0.0f) : normal(rng);
    }
  }
};

/// Bytes a fused value+gradient pass must move: read pred and target, write grad.
inline void set_value_grad_bytes(benchmark::State& state, std::size_t n) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(3 * n * sizeof(float)));
}

/// The padded TTS batch of the tts_composed case: 16 sequences x 400 frames x 80 mel bins.
struct tts_batch {
  static constexpr std::size_t batch = 16, frames = 400, mel_bins = 80;
  std::vector<float> mel_pred, mel_target, stop_logits, stop_target, d_mel, d_stop, frame_mask;
  std::vector<int> lengths;
  tts_batch()
      : mel_pred(batch * frames * mel_bins), mel_target(mel_pred.size()), stop_logits(batch * frames),
        stop_target(stop_logits.size()), d_mel(mel_pred.size()), d_stop(stop_logits.size()),
        frame_mask(stop_logits.size()), lengths(batch) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_int_distribution<int> length(frames / 2, frames);
    for (auto& x : mel_pred) x = normal(rng);
    for (auto& x : mel_target) x = normal(rng);
    for (auto& x : stop_logits) x = 3 * normal(rng);
    for (std::size_t b = 0; b < batch; ++b) {
      lengths[b] = length(rng);
      stop_target[b * frames + static_cast<std::size_t>(lengths[b]) - 1] = 1.0f;
      for (std::size_t t = 0; t < frames; ++t) frame_mask[b * frames + t] = t < static_cast<std::size_t>(lengths[b]) ? 1.0f : 0.0f;
    }
  }
  std::size_t bytes() const { return 3 * (mel_pred.size() + stop_logits.size()) * sizeof(float); }
};

template <class Function>
void register_sizes(const std::string& case_name, const std::string& implementation, Function f) {
  for (long n : sizes)
    benchmark::RegisterBenchmark((case_name + "/" + implementation + "/" + std::to_string(n)).c_str(), f)->Arg(n);
}

}  // namespace bench
