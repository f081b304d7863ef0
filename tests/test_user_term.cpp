// A user-written term (user_term.hpp, shown in docs/terms.md): a LossTerm by its members alone,
// evaluated by the library's executors like a built-in term, and right: values against long
// double closed forms, gradients against central differences of its own value.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <steadyloss/parallel.hpp>
#include <steadyloss/steadyloss.hpp>

#include "reference.hpp"
#include "user_term.hpp"

namespace sl = steadyloss;

static_assert(sl::LossTerm<user::LogCosh<float>>);
static_assert(sl::LossTerm<user::LogCosh<double>>);

TEMPLATE_TEST_CASE("A user-written term: values against log(cosh) in long double, gradients against central differences",
                   "[user_term]", float, double) {
  using T = TestType;
  const std::size_t n = 4099;
  auto pred = reference::uniform<T>(n, T(-100), T(100), 31);
  const auto target = reference::uniform<T>(n, T(-3), T(3), 32);
  pred[0] = target[0];  // d = 0: value 0, gradient 0
  std::vector<T> grad(n);
  const auto result = sl::evaluate(user::LogCosh<T>{}, sl::inputs(pred, target), grad);

  long double sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const long double d = static_cast<long double>(pred[i]) - static_cast<long double>(target[i]);
    // log cosh d = log((e^d + e^-d) / 2), from the definition, in long double (|d| < 110: no overflow).
    sum += std::log((std::exp(d) + std::exp(-d)) / 2.0L);
    const double h = 1e-3 * std::max(1.0, std::fabs(static_cast<double>(d)));
    const double p = static_cast<double>(pred[i]), y = static_cast<double>(target[i]);
    const user::LogCosh<double> exact;
    const double central = (exact.value(p + h, y) - exact.value(p - h, y)) / (2 * h);
    INFO("i " << i << " d " << static_cast<double>(d));
    CHECK(static_cast<double>(grad[i]) * static_cast<double>(n) == Approx(central).margin(1e-5).epsilon(1e-4));
  }
  CHECK(grad[0] == T(0));
  const double tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  CHECK(static_cast<double>(result.value) == Approx(static_cast<double>(sum / n)).epsilon(tolerance));
}

TEST_CASE("A user-written term composes with built-in terms and runs on the parallel executor", "[user_term]") {
  const std::size_t n = 1 << 18;
  const auto pred = reference::uniform<float>(n, -5.0f, 5.0f, 41);
  const auto target = reference::uniform<float>(n, -5.0f, 5.0f, 42);
  std::vector<float> g0(n), g1(n), h0(n), h1(n);
  auto loss = sl::compose(sl::term(user::LogCosh<float>{}, 2.0f), sl::term(sl::Huber<float>{}, 1.0f));
  const auto serial = loss.evaluate(sl::inputs(pred, target), sl::inputs(pred, target), sl::grads(g0, g1));
  const sl::parallel_executor pool(2, 1 << 14);
  const auto parallel = loss.evaluate_on(pool, sl::inputs(pred, target), sl::inputs(pred, target), sl::grads(h0, h1));
  CHECK(h0 == g0);
  CHECK(h1 == g1);
  CHECK(parallel.values[0] == Approx(serial.values[0]).epsilon(1e-6));
  CHECK(serial.total == Approx(2.0f * serial.values[0] + serial.values[1]).epsilon(1e-6));
}
