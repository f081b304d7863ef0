// Executors (core/executor.hpp): the concept accepts the library's two and a user-written one
// (user_executor.hpp, shown in docs/extending.md), refuses what lacks run; the user's executor
// gives the serial pass's gradients bit for bit, its value to rounding, the same bits whatever
// order its pool runs the chunks in, on every weighting path of a composed loss.
#include <catch2/catch.hpp>

#include <cstddef>
#include <span>
#include <thread>
#include <vector>

#include <steadyloss/parallel.hpp>
#include <steadyloss/steadyloss.hpp>

#include "reference.hpp"
#include "user_executor.hpp"

namespace sl = steadyloss;

namespace {
/// Runs the tasks backwards on the calling thread: a schedule unlike the chunk order.
struct backwards_pool {
  template <class Task>
  void for_each(std::size_t count, Task&& task) {
    for (std::size_t i = count; i-- > 0;) task(i);
  }
};
/// One thread per task, all at once.
struct thread_pool {
  template <class Task>
  void for_each(std::size_t count, Task&& task) {
    std::vector<std::jthread> threads;
    for (std::size_t i = 0; i < count; ++i) threads.emplace_back([&task, i] { task(i); });
  }
};
struct no_run {};
struct wrong_result {
  template <bool WriteGrad, bool Weighted, class Term, class T>
  double run(const Term&, const T*, const T*, const T*, T*, std::size_t, T) const {
    return 0;
  }
};
}  // namespace

static_assert(sl::Executor<sl::serial_executor, sl::Huber<float>>);
static_assert(sl::Executor<sl::parallel_executor, sl::BalancedBCE<double>>);
static_assert(sl::Executor<user::pool_executor<backwards_pool>, sl::LabelSmoothing<sl::BalancedBCE<float>>>);
static_assert(!sl::Executor<no_run, sl::Huber<float>>);
static_assert(!sl::Executor<wrong_result, sl::Huber<float>>);  // run must return sl::pass_sum
static_assert(!sl::Executor<sl::serial_executor, int>);       // and the second argument be a term

TEMPLATE_TEST_CASE("A user-written executor matches the serial pass on every weighting path", "[executor]", float,
                   double) {
  using T = TestType;
  const std::size_t frames = 3001, frame_size = 80, n = frames * frame_size;  // 240,080: ragged last chunk
  const auto pred = reference::uniform<T>(n, T(-4), T(4), 11);
  const auto target = reference::uniform<T>(n, T(-4), T(4), 12);
  const auto stop_pred = reference::uniform<T>(n, T(-8), T(8), 13);
  const auto stop_target = reference::bernoulli<T>(n, 0.01, 14);
  std::vector<T> mask(frames, T(1));
  for (std::size_t f = 0; f < frames; f += 7) mask[f] = T(0);
  const std::vector<long> lengths{1000, 1, 700};  // 3 padded sequences of up to 1000 frames of 80
  auto loss = sl::compose(sl::term(sl::Huber<T>{}, T(35)), sl::term(sl::BalancedBCE<T>{}, T(1)));

  backwards_pool backwards;
  thread_pool threads;
  const user::pool_executor<backwards_pool> on_backwards(backwards, 4096);
  const user::pool_executor<thread_pool> on_threads(threads, 4096);

  std::vector<T> s0(n), s1(n), b0(n), b1(n), t0(n), t1(n);
  auto run = [&](const auto& executor, std::vector<T>& g0, std::vector<T>& g1, int path) {
    if (path == 0)
      return loss.evaluate_on(executor, sl::inputs(pred, target), sl::inputs(stop_pred, stop_target),
                              sl::grads(g0, g1));
    if (path == 1)
      return loss.evaluate_on(executor, sl::inputs(pred, target, sl::per_frame(mask, frame_size)),
                              sl::inputs(stop_pred, stop_target, sl::per_frame(mask, frame_size)),
                              sl::grads(g0, g1));
    const auto seq = sl::lengths(lengths, 1000, frame_size);
    const std::size_t used = 3 * 1000 * frame_size;
    const std::span<const T> p(pred.data(), used), y(target.data(), used), sp(stop_pred.data(), used),
        sy(stop_target.data(), used);
    const std::span<T> h0(g0.data(), used), h1(g1.data(), used);
    return loss.evaluate_on(executor, sl::inputs(p, y, seq), sl::inputs(sp, sy, seq), sl::grads(h0, h1));
  };
  for (int path = 0; path < 3; ++path) {
    INFO("weighting path " << path << " (0 none, 1 frame mask, 2 lengths)");
    const auto serial = run(sl::serial_executor{}, s0, s1, path);
    const auto back = run(on_backwards, b0, b1, path);
    const auto threaded = run(on_threads, t0, t1, path);
    CHECK(b0 == s0);  // each element's gradient is its own: any split gives the same bits
    CHECK(b1 == s1);
    CHECK(t0 == s0);
    CHECK(t1 == s1);
    for (std::size_t i = 0; i < 2; ++i) {
      CHECK(back.values[i] == Approx(serial.values[i]).epsilon(1e-6));
      CHECK(threaded.values[i] == back.values[i]);  // chunk order, not schedule, fixes the sum
    }
    CHECK(threaded.total == back.total);
  }
}

TEST_CASE("A user-written executor reports targets outside the term's domain", "[executor]") {
  const std::size_t n = 50000;
  const auto pred = reference::uniform<float>(n, -2.0f, 2.0f, 21);
  auto target = reference::bernoulli<float>(n, 0.5, 22);
  target[n - 3] = 1.5f;  // in the last chunk
  std::vector<float> grad(n);
  backwards_pool pool;
  const user::pool_executor<backwards_pool> executor(pool, 1024);
  auto loss = sl::compose(sl::term(sl::BalancedBCE<float>{}, 1.0f));
  CHECK_THROWS_AS(loss.evaluate_on(executor, sl::inputs(pred, target), sl::grads(grad)), sl::invalid_input);
}
