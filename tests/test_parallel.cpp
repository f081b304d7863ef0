// parallel.hpp: the multi-threaded executor gives the serial results (gradients bit for bit,
// values to rounding), the same bits on every run, on every weighting path.
#include <catch2/catch.hpp>

#include <vector>

#include <steadyloss/parallel.hpp>
#include <steadyloss/steadyloss.hpp>

#include "reference.hpp"

namespace sl = steadyloss;

TEMPLATE_TEST_CASE("parallel_executor matches the serial pass", "[parallel]", float, double) {
  using T = TestType;
  const std::size_t n = 3 * 100006;  // not a multiple of the block: the last chunk is ragged
  const auto pred = reference::uniform<T>(n, T(-6), T(6), 1);
  const auto target = reference::bernoulli<T>(n, 0.1, 2);
  std::vector<T> serial(n), parallel(n), again(n);
  const sl::LabelSmoothing term{sl::BalancedBCE<T>{}, T(0.05)};
  const sl::parallel_executor pool(3, 1024);
  REQUIRE(pool.threads() == 3);

  const auto a = sl::evaluate(term, sl::inputs(pred, target), serial);
  const auto b = pool.evaluate(term, sl::inputs(pred, target), parallel);
  const auto c = pool.evaluate(term, sl::inputs(pred, target), again);
  CHECK(b.value == Approx(a.value).epsilon(1e-6));
  CHECK(b.value == c.value);  // reproducible
  CHECK(parallel == serial);
  CHECK(again == serial);
  CHECK(pool.value(term, sl::inputs(pred, target)).value == b.value);

  // Mask and lengths paths, through a composed loss.
  const std::size_t frames = n / 1;  // per-element mask
  std::vector<T> mask(frames, T(1));
  for (std::size_t i = 0; i < frames; i += 3) mask[i] = T(0);
  const std::vector<long> lengths{100006, 3, 70001};
  auto loss = sl::compose(sl::term(sl::Huber<T>{}, T(2)), term);
  std::vector<T> g0(n), g1(n), h0(n), h1(n);
  const auto serial_r = loss.evaluate(sl::inputs(pred, target, mask), sl::inputs(pred, target, sl::lengths(lengths, 100006, 1)),
                                      sl::grads(g0, g1));
  const auto parallel_r = loss.evaluate_on(pool, sl::inputs(pred, target, mask),
                                           sl::inputs(pred, target, sl::lengths(lengths, 100006, 1)), sl::grads(h0, h1));
  CHECK(parallel_r.total == Approx(serial_r.total).epsilon(1e-6));
  CHECK(h0 == g0);
  CHECK(h1 == g1);
}

TEST_CASE("parallel_executor rejects zero threads and checks inputs like evaluate", "[parallel][errors]") {
  CHECK_THROWS_AS(sl::parallel_executor(0), sl::invalid_parameter);
  const sl::parallel_executor pool(2);
  std::vector<float> pred(10), target(9), grad(10);
  CHECK_THROWS_AS(pool.evaluate(sl::Huber<float>{}, sl::inputs(pred, target), grad), sl::shape_mismatch);
}
