#pragma once
// Shared by the benchmark translation units: inputs, byte accounting and the naming scheme
// <case>/<implementation>/<n> that bench/run reads.

#include <benchmark/benchmark.h>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <new>
#include <random>
#include <string>
#include <vector>

namespace bench {

inline const std::vector<long> sizes{1024, 8192, 65536, 1048576, 16777216};

/// Where a benchmark buffer lies is part of what is measured, so it is chosen, not left to
/// malloc: every buffer starts 64-byte aligned (as framework tensors do: PyTorch's CPU allocator
/// aligns to 64 bytes), and the buffers of one case start at different offsets in a 4 KiB page
/// (slot k at k x 1088 bytes, a multiple of 64 but of no power of two above it), so a pass's
/// load and store streams never share their low 12 address bits (4K aliasing: a load waits for
/// an older store it only seems to overlap). malloc gives neither: large blocks come from mmap,
/// all at the same 16-byte offset in a page. misalign_bytes shifts the start off that alignment,
/// for the offset-view cases of bench_alignment.cpp.
template <class T>
class placed_allocator {
 public:
  using value_type = T;
  static constexpr std::size_t page = 4096, slot_stride = 1088;

  explicit placed_allocator(std::size_t slot = 0, std::size_t misalign_bytes = 0) noexcept
      : slot_(slot), misalign_bytes_(misalign_bytes) {}
  template <class U>
  placed_allocator(const placed_allocator<U>& other) noexcept : slot_(other.slot()), misalign_bytes_(other.misalign_bytes()) {}

  T* allocate(std::size_t n) {
    const std::size_t bytes = offset() + n * sizeof(T);
    auto* base = static_cast<char*>(::operator new((bytes + page - 1) / page * page, std::align_val_t{page}));
    return reinterpret_cast<T*>(base + offset());
  }
  void deallocate(T* p, std::size_t) noexcept {
    ::operator delete(reinterpret_cast<char*>(p) - offset(), std::align_val_t{page});
  }

  std::size_t slot() const noexcept { return slot_; }
  std::size_t misalign_bytes() const noexcept { return misalign_bytes_; }
  /// Bytes from the page start to the first element.
  std::size_t offset() const noexcept { return slot_ * slot_stride % page + misalign_bytes_; }
  friend bool operator==(const placed_allocator& a, const placed_allocator& b) noexcept {
    return a.slot_ == b.slot_ && a.misalign_bytes_ == b.misalign_bytes_;
  }

 private:
  std::size_t slot_, misalign_bytes_;
};

template <class T>
using placed_vector = std::vector<T, placed_allocator<T>>;

/// n zero elements in buffer slot `slot` (see placed_allocator).
template <class T = float>
placed_vector<T> placed(std::size_t n, std::size_t slot, std::size_t misalign_bytes = 0) {
  return placed_vector<T>(n, T{}, placed_allocator<T>(slot, misalign_bytes));
}

struct elementwise_data {
  placed_vector<float> pred, target, grad;
  /// misalign_bytes: every buffer starts that many bytes past its 64-byte boundary.
  elementwise_data(std::size_t n, bool binary_targets, std::size_t misalign_bytes = 0)
      : pred(placed(n, 0, misalign_bytes)), target(placed(n, 1, misalign_bytes)), grad(placed(n, 2, misalign_bytes)) {
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
  placed_vector<float> mel_pred, mel_target, stop_logits, stop_target, d_mel, d_stop, frame_mask;
  std::vector<int> lengths;
  tts_batch()
      : mel_pred(placed(batch * frames * mel_bins, 0)), mel_target(placed(mel_pred.size(), 1)),
        stop_logits(placed(batch * frames, 2)), stop_target(placed(stop_logits.size(), 3)),
        d_mel(placed(mel_pred.size(), 4)), d_stop(placed(stop_logits.size(), 5)),
        frame_mask(placed(stop_logits.size(), 6)), lengths(batch) {
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
