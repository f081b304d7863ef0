#pragma once
// An executor written the way a user writes one: against the public API only (sl::Executor's
// run, sl::pass_sum, sl::serial_executor). docs/extending.md shows the marked region
// (scripts/check_doc_snippets.py keeps the two equal); test_executor.cpp runs it.
#include <algorithm>
#include <array>
#include <cstddef>

#include <steadyloss/steadyloss.hpp>

// [snippet user_executor]
namespace user {
namespace sl = steadyloss;

/// Runs each large stretch as tasks on a thread pool the program already has, so that the loss
/// shares the application's threads instead of starting its own. `Pool` is anything with
/// `pool.for_each(count, task)` that calls task(0), ..., task(count - 1), in any order or
/// concurrently, and returns when all are done. The chunks are whole multiples of 256 elements
/// (the serial pass's block, as sl::parallel_executor's) and their sums are added in chunk
/// order, so the result does not depend on how the pool schedules them. No allocation per call.
template <class Pool>
class pool_executor {
 public:
  static constexpr std::size_t max_chunks = 64;

  explicit pool_executor(Pool& pool, std::size_t min_chunk = std::size_t(1) << 16)
      : pool_(&pool), min_chunk_(std::max<std::size_t>(min_chunk, 1)) {}

  template <bool WriteGrad, bool Weighted, class Term, class T>
  sl::pass_sum run(const Term& term, const T* pred, const T* target, const T* weight, T* grad,
                   std::size_t n, T grad_scale) const {
    const sl::serial_executor serial;
    const std::size_t chunks = std::min(max_chunks, n / min_chunk_);
    if (chunks <= 1) return serial.run<WriteGrad, Weighted>(term, pred, target, weight, grad, n, grad_scale);
    const std::size_t chunk = (n / chunks + 255) / 256 * 256;
    std::array<sl::pass_sum, max_chunks> sums{};
    pool_->for_each(chunks, [&](std::size_t index) {
      const std::size_t begin = std::min(n, index * chunk), end = std::min(n, begin + chunk);
      sums[index] = serial.run<WriteGrad, Weighted>(term, pred + begin, target + begin,
                                                    Weighted ? weight + begin : weight,
                                                    WriteGrad ? grad + begin : grad, end - begin, grad_scale);
    });
    sl::pass_sum total;
    for (std::size_t index = 0; index < chunks; ++index) {
      total.value += sums[index].value;
      total.out_of_domain += sums[index].out_of_domain;
    }
    return total;
  }

 private:
  Pool* pool_;
  std::size_t min_chunk_;
};

}  // namespace user
// [end snippet]
