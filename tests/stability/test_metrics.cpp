// StabilityMetrics against the documented closed forms.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <steadyloss/stability/metrics.hpp>

namespace sl = steadyloss;

TEMPLATE_TEST_CASE("StabilityMetrics score, variance and progress", "[stability][metrics]", float, double) {
  sl::StabilityMetrics<TestType> metrics({.window = 4});
  CHECK(metrics.stability_score() == 1.0);  // fewer than two values
  for (TestType x : {TestType(1), TestType(2), TestType(3), TestType(4)}) metrics.update(x, TestType(1));
  // {1, 2, 3, 4}: mean 2.5, sample variance 5/3, cv = sqrt(5/3) / 2.5, score 1 / (1 + cv)
  const double cv = std::sqrt(5.0 / 3.0) / 2.5;
  CHECK(metrics.loss_variance() == Approx(5.0 / 3.0));
  CHECK(metrics.stability_score() == Approx(1.0 / (1.0 + cv)));
  CHECK(metrics.progress() == 0.0);  // first full window: the reference level 2.5
  for (int i = 0; i < 4; ++i) metrics.update(TestType(1), TestType(1));
  CHECK(metrics.stability_score() == 1.0);  // flat
  CHECK(metrics.loss_variance() == 0.0);
  CHECK(metrics.progress() == Approx(1.0 - 1.0 / 2.5));
  for (int i = 0; i < 4; ++i) metrics.update(TestType(5), TestType(1));
  CHECK(metrics.progress() == 0.0);  // worse than the start: clamped
  metrics.update(std::numeric_limits<TestType>::quiet_NaN(), TestType(1));
  CHECK(metrics.loss_variance() == 0.0);  // the NaN never entered the window
}

TEST_CASE("StabilityMetrics gradient-norm EMA and explosion warning", "[stability][metrics]") {
  sl::StabilityMetrics<double> metrics({.window = 4, .grad_alpha = 0.5, .explosion_ratio = 5.0});
  metrics.update(1.0, 2.0);
  metrics.update(1.0, 4.0);
  // debiased EMA, f = 0.5: s1 = 1, s2 = 0.5 + 2 = 2.5; 2.5 / 0.75 = 10/3
  CHECK(metrics.grad_norm_ema() == Approx(10.0 / 3.0));
  metrics.update(1.0, 100.0);  // not warmed up (fewer than 4 norms): no warning
  CHECK_FALSE(metrics.grad_explosion());
  sl::StabilityMetrics<double> steady({.window = 4});
  for (int i = 0; i < 4; ++i) steady.update(1.0, 1.0);
  steady.update(1.0, 4.9);
  CHECK_FALSE(steady.grad_explosion());
  steady.update(1.0, 20.0);  // EMA is now below 2, so 20 > 5 * EMA
  CHECK(steady.grad_explosion());
  steady.update(1.0, std::numeric_limits<double>::infinity());
  CHECK(steady.grad_explosion());
  CHECK_THROWS_AS(sl::StabilityMetrics<double>({.window = 0}), sl::invalid_parameter);
  CHECK_THROWS_AS(sl::StabilityMetrics<double>({.explosion_ratio = 1.0}), sl::invalid_parameter);
}
