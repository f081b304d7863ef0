// AdaptiveWeight: closed forms of the documented rules on sequences where they are simple.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <span>
#include <vector>

#include <steadyloss/stability/adaptive_weight.hpp>

namespace sl = steadyloss;

TEMPLATE_TEST_CASE("AdaptiveWeight share_and_rate on constant terms", "[stability][adaptive]", float, double) {
  // Constant values (3, 1), weights 1: rates r = 1, so rho = 1; shares a = (1.5, 0.5);
  // targets 1/sqrt(1.5) = 0.8165 and 1/sqrt(0.5) = 1.4142 (clamped to 1.3). Step 1 is warm-up;
  // from step 2 each multiplier moves by at most 0.05 towards its target.
  sl::AdaptiveWeight<2, TestType> adaptive({.max_step = 0.05, .warmup = 1});
  const std::array<TestType, 2> values{TestType(3), TestType(1)};
  const double target0 = 1.0 / std::sqrt(1.5);
  for (int step = 1; step <= 12; ++step) {
    const auto m = adaptive.update(std::span<const TestType>(values));
    const int moves = step - 1;
    const double expected0 = std::max(1.0 - 0.05 * moves, target0);
    const double expected1 = std::min(1.0 + 0.05 * moves, 1.3);
    CHECK(m[0] == Approx(expected0).epsilon(1e-5));
    CHECK(m[1] == Approx(expected1).epsilon(1e-5));
  }
}

TEST_CASE("AdaptiveWeight keeps balanced terms at 1 and respects bounds", "[stability][adaptive]") {
  sl::AdaptiveWeight<3, double> balanced;
  const std::array<double, 3> values{0.5, 0.5, 0.5};
  for (int i = 0; i < 50; ++i) {
    const auto m = balanced.update(std::span<const double>(values));
    for (double w : m) CHECK(w == Approx(1.0));
  }
  // Weighted evaluation: contributions 35 * 0.2 = 7 and 1 * 0.7 = 0.7, mean 3.85: shares
  // a = (7 / 3.85, 0.7 / 3.85), rho = 1: targets 1 / sqrt(a) = (0.7416, 2.345 -> clamped 1.3).
  sl::AdaptiveWeight<2, double> weighted;
  const std::array<double, 2> v{0.2, 0.7}, w{35.0, 1.0};
  std::array<double, 2> m{};
  std::array<double, 2> previous{1.0, 1.0};
  for (int i = 0; i < 200; ++i) {
    m = weighted.update(std::span<const double>(v), std::span<const double>(w));
    for (int j = 0; j < 2; ++j) {
      CHECK(std::abs(m[j] - previous[j]) <= 0.01 + 1e-12);  // bounded change per step (default 0.01)
      CHECK(m[j] >= 0.7);
      CHECK(m[j] <= 1.3);
    }
    previous = m;
  }
  CHECK(m[0] == Approx(1.0 / std::sqrt(7.0 / 3.85)));
  CHECK(m[1] == Approx(1.3));
}

TEST_CASE("AdaptiveWeight DWA matches Liu et al.'s formula", "[stability][adaptive]") {
  // fast = 0 (no EMA): r_i = L_i(t) / L_i(t-1). Term 0 halves each step (r = 0.5), term 1 is
  // constant (r = 1). T = 2: w_0 = 2 e^{0.25} / (e^{0.25} + e^{0.5}) = 2 / (1 + e^{0.25}),
  // w_1 = 2 e^{0.25} / (1 + e^{0.25}). max_step 1 lets the multipliers reach the target at once.
  sl::AdaptiveWeight<2, double> dwa(
      {.lo = 0.0, .hi = 2.0, .max_step = 1.0, .fast = 0.0, .warmup = 2, .rule = sl::weight_rule::dwa});
  std::array<double, 2> m{};
  double level = 8.0;
  for (int step = 0; step < 4; ++step, level *= 0.5) {
    const std::array<double, 2> values{level, 1.0};
    m = dwa.update(std::span<const double>(values));
  }
  const double e = std::exp(0.25);
  CHECK(m[0] == Approx(2.0 / (1.0 + e)));
  CHECK(m[1] == Approx(2.0 * e / (1.0 + e)));

  // The same run bounded to [0.9, 1.1].
  sl::AdaptiveWeight<2, double> bounded(
      {.lo = 0.9, .hi = 1.1, .max_step = 1.0, .fast = 0.0, .warmup = 2, .rule = sl::weight_rule::dwa});
  level = 8.0;
  for (int step = 0; step < 4; ++step, level *= 0.5) {
    const std::array<double, 2> values{level, 1.0};
    m = bounded.update(std::span<const double>(values));
  }
  CHECK(m[0] == Approx(0.9));
  CHECK(m[1] == Approx(1.1));
}

TEST_CASE("AdaptiveWeight ignores non-finite steps and rejects bad input", "[stability][adaptive][errors]") {
  sl::AdaptiveWeight<2, double> adaptive({.warmup = 1});
  const std::array<double, 2> good{1.0, 1.0}, bad{std::nan(""), 1.0};
  adaptive.update(std::span<const double>(good));
  adaptive.update(std::span<const double>(bad));
  CHECK(adaptive.steps() == 1);
  const std::array<double, 3> three{1, 2, 3};
  CHECK_THROWS_AS(adaptive.update(std::span<const double>(three)), sl::shape_mismatch);
  CHECK_THROWS_WITH(adaptive.update(std::span<const double>(three)),
                    "AdaptiveWeight: values must have 2 entries, got 3");
  CHECK_THROWS_AS(adaptive.update(std::span<const double>(good), std::span<const double>(three)), sl::shape_mismatch);
  CHECK_THROWS_WITH((sl::AdaptiveWeight<2, double>({.lo = 1.3, .hi = 0.7})),
                    "AdaptiveWeight: bounds must have lo <= hi, got lo = 1.3, hi = 0.7");
  CHECK_THROWS_AS((sl::AdaptiveWeight<2, double>({.max_step = 0.0})), sl::invalid_parameter);
  CHECK_THROWS_AS((sl::AdaptiveWeight<2, double>({.fast = 1.0})), sl::invalid_parameter);
  CHECK_THROWS_AS((sl::AdaptiveWeight<2, double>({.temperature = -1.0})), sl::invalid_parameter);
}
