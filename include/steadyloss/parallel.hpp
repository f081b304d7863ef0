#pragma once
// sl::parallel_executor: the fused CPU pass on several threads, for large tensors.
//
//   sl::parallel_executor pool(4);                      // threads started once, reused every call
//   auto r = pool.evaluate(sl::Huber<float>{}, sl::inputs(pred, target), grad);
//   auto c = loss.evaluate_on(pool, sl::inputs(...), sl::inputs(...), sl::grads(...));
//
// Each contiguous stretch of at least `min_elements_per_thread` elements per thread is cut into
// chunks (multiples of the serial kernel's 256-element blocks), one per thread, the caller taking
// the first. The gradient is the serial pass's, bit for bit. The chunk sums are combined in chunk
// order, so a given thread count gives the same bits on every run (a different thread count may
// differ in the last bits, as any change of summation order does). Smaller stretches run
// serially: waking threads costs microseconds.
// Thread-safe: concurrent evaluations share the threads, one contiguous stretch at a time (each
// waits for the other's stretch); no allocation per call.

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "core/fwd.hpp"
#include "core/errors.hpp"
#include "core/evaluate.hpp"

namespace steadyloss {

class parallel_executor {
 public:
  explicit parallel_executor(unsigned threads = std::max(1u, std::thread::hardware_concurrency()),
                             std::size_t min_elements_per_thread = std::size_t(1) << 16)
      : min_elements_per_thread_(min_elements_per_thread), sums_(threads) {
    if (threads == 0) detail::fail<invalid_parameter>("parallel_executor: threads must be >= 1, got 0");
    workers_.reserve(threads - 1);
    try {
      for (unsigned index = 1; index < threads; ++index) workers_.emplace_back([this, index] { work(index); });
    } catch (...) {  // a thread that could not start: stop the ones that did, then report it
      stop();
      throw;
    }
  }
  ~parallel_executor() { stop(); }
  parallel_executor(const parallel_executor&) = delete;
  parallel_executor& operator=(const parallel_executor&) = delete;

  unsigned threads() const { return static_cast<unsigned>(workers_.size()) + 1; }

  // (Isa: cpu_isa.hpp says why it is there.)
  template <class Term, class Inputs, class Grad, class Isa = detail::isa_tag>
  auto evaluate(const Term& term, const Inputs& in, Grad&& grad, reduction reduction = reduction::mean) const {
    if constexpr (detail::check_term_and_inputs<Term, Inputs>()) {
      const auto out = grads(static_cast<Grad&&>(grad));
      if constexpr (detail::check_gradient_value_type<typename Term::value_type, std::remove_cvref_t<decltype(out)>>())
        return detail::run_term<Isa>(term, in, out.views[0], reduction, typename Term::value_type(1), *this);
    }
  }

  template <class Term, class Inputs, class Isa = detail::isa_tag>
  auto value(const Term& term, const Inputs& in, reduction reduction = reduction::mean) const {
    if constexpr (detail::check_term_and_inputs<Term, Inputs>()) {
      return detail::run_term<Isa>(term, in, std::nullopt, reduction, typename Term::value_type(1), *this);
    }
  }

  /// The sl::Executor interface (core/executor.hpp): one stretch, split into chunks of whole
  /// blocks, one per thread, summed in chunk order.
  template <bool WriteGrad, bool Weighted, class Term, class T>
  pass_sum run(const Term& term, const T* pred, const T* target, const T* weight, T* grad,
                       std::size_t n, T grad_scale) const {
    constexpr std::size_t block = detail::lanes * detail::block_rows;
    const std::size_t wanted = std::min<std::size_t>(threads(), n / std::max<std::size_t>(min_elements_per_thread_, 1));
    if (wanted <= 1) return detail::fused_pass<WriteGrad, Weighted>(term, pred, target, weight, grad, n, grad_scale);
    const std::size_t chunk = (n / wanted + block - 1) / block * block;
    auto run_chunk = [&](unsigned index) {
      const std::size_t begin = std::min(n, index * chunk), end = std::min(n, begin + chunk);
      sums_[index] = detail::fused_pass<WriteGrad, Weighted>(
          term, pred + begin, target + begin, Weighted ? weight + begin : weight,
          WriteGrad ? grad + begin : grad, end - begin, grad_scale);
    };
    std::lock_guard call(call_mutex_);
    dispatch(static_cast<unsigned>(wanted), &run_chunk,
             [](const void* context, unsigned index) { (*static_cast<const decltype(run_chunk)*>(context))(index); });
    pass_sum total;
    for (std::size_t index = 0; index < wanted; ++index) {  // fixed order: reproducible bits
      total.value += sums_[index].value;
      total.out_of_domain += sums_[index].out_of_domain;
    }
    return total;
  }

 private:
  using chunk_function = void (*)(const void* context, unsigned index);

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    start_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  // Runs chunk 0 on the caller and chunks 1..chunks-1 on the workers; returns when all are done.
  void dispatch(unsigned chunks, const void* context, chunk_function function) const {
    {
      std::lock_guard lock(mutex_);
      chunks_ = chunks;
      context_ = context;
      function_ = function;
      pending_ = static_cast<unsigned>(workers_.size());
      ++generation_;
    }
    start_.notify_all();
    function(context, 0);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

  void work(unsigned index) {
    std::uint64_t seen = 0;
    std::unique_lock lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      const unsigned chunks = chunks_;
      const void* context = context_;
      const chunk_function function = function_;
      lock.unlock();
      if (index < chunks) function(context, index);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::size_t min_elements_per_thread_;
  mutable std::vector<pass_sum> sums_;  // one slot per thread, allocated once
  mutable std::mutex call_mutex_, mutex_;
  mutable std::condition_variable start_, done_;
  mutable std::uint64_t generation_ = 0;
  mutable unsigned chunks_ = 0, pending_ = 0;
  mutable const void* context_ = nullptr;
  mutable chunk_function function_ = nullptr;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace steadyloss
