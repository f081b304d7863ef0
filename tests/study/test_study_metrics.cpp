// The study's metric code (examples/tts_stability/study_metrics.hpp). Expected values come from
// published Student-t tables and closed forms worked by hand, never from the code under test.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "study_metrics.hpp"

namespace st = steadyloss::study;

TEST_CASE("t quantile matches the published 97.5% table", "[study][interval]") {
  // NIST/SEMATECH e-Handbook, table 1.3.6.7.2 (upper critical values of the t distribution).
  CHECK(st::t_quantile_975(1) == Approx(12.706).epsilon(1e-4));
  CHECK(st::t_quantile_975(2) == Approx(4.303).epsilon(1e-3));
  CHECK(st::t_quantile_975(9) == Approx(2.262).epsilon(1e-3));
  CHECK(st::t_quantile_975(19) == Approx(2.093).epsilon(1e-3));
  CHECK(st::t_quantile_975(30) == Approx(2.042).epsilon(1e-3));
  // Past the table: the expansion must join it smoothly and tend to the normal quantile.
  CHECK(st::t_quantile_975(40) == Approx(2.021).epsilon(1e-3));
  CHECK(st::t_quantile_975(60) == Approx(2.000).epsilon(1e-3));
  CHECK(st::t_quantile_975(100) == Approx(1.984).epsilon(1e-3));
  CHECK(st::t_quantile_975(31) < st::t_quantile_975(30));
  CHECK(st::t_quantile_975(1000000) == Approx(1.959964).epsilon(1e-5));  // z(0.975) + O(1 / df)
  CHECK(std::isnan(st::t_quantile_975(0)));
}

TEST_CASE("mean_ci95 is mean +- t s / sqrt(n)", "[study][interval]") {
  const std::vector<double> x{1, 2, 3, 4, 5};  // mean 3, s = sqrt(2.5), t(0.975, 4) = 2.776
  const auto i = st::mean_ci95(x);
  CHECK(i.n == 5);
  CHECK(i.mean == Approx(3.0));
  CHECK(i.half_width == Approx(2.776445 * std::sqrt(2.5) / std::sqrt(5.0)).epsilon(1e-6));
  CHECK(i.lo() == Approx(3.0 - 1.963243).epsilon(1e-6));
  CHECK(i.hi() == Approx(3.0 + 1.963243).epsilon(1e-6));
}

TEST_CASE("mean_ci95 edge cases", "[study][interval]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK(std::isnan(st::mean_ci95(std::vector<double>{}).mean));
  CHECK(st::mean_ci95(std::vector<double>{}).n == 0);
  const auto one = st::mean_ci95(std::vector<double>{7.5});
  CHECK(one.mean == 7.5);
  CHECK(std::isnan(one.half_width));
  const auto same = st::mean_ci95(std::vector<double>{2, 2, 2});
  CHECK(same.half_width == 0.0);
  // Non-finite entries are left out: this is the {1, 2, 3, 4, 5} sample again.
  const auto filtered = st::mean_ci95(std::vector<double>{1, nan, 2, 3, inf, 4, 5});
  CHECK(filtered.n == 5);
  CHECK(filtered.mean == Approx(3.0));
  CHECK(filtered.half_width == Approx(1.963243).epsilon(1e-6));
  // A large offset does not cancel the spread (two-pass variance).
  const auto offset = st::mean_ci95(std::vector<double>{1e9 + 1, 1e9 + 2, 1e9 + 3, 1e9 + 4, 1e9 + 5});
  CHECK(offset.half_width == Approx(1.963243).epsilon(1e-6));
}

TEST_CASE("balanced accuracy and F1 follow scikit-learn", "[study][classification]") {
  st::confusion c;
  // 4 positives (3 found), 96 negatives (6 false alarms).
  for (int i = 0; i < 3; ++i) c.add(true, true);
  c.add(false, true);
  for (int i = 0; i < 6; ++i) c.add(true, false);
  for (int i = 0; i < 90; ++i) c.add(false, false);
  CHECK(c.tp == 3);
  CHECK(c.fn == 1);
  CHECK(c.fp == 6);
  CHECK(c.tn == 90);
  CHECK(st::balanced_accuracy(c) == Approx((3.0 / 4.0 + 90.0 / 96.0) / 2.0));
  CHECK(st::f1(c) == Approx(6.0 / 13.0));  // precision 1/3, recall 3/4: 2 p r / (p + r) = 6/13
}

TEST_CASE("a classifier that always says no scores 0.5 and F1 0", "[study][classification]") {
  st::confusion c;
  c.add(false, true);
  for (int i = 0; i < 99; ++i) c.add(false, false);
  CHECK(st::balanced_accuracy(c) == Approx(0.5));  // plain accuracy would be 0.99
  CHECK(st::f1(c) == 0.0);
}

TEST_CASE("classification edge cases", "[study][classification]") {
  st::confusion none;
  CHECK(std::isnan(st::balanced_accuracy(none)));
  CHECK(st::f1(none) == 0.0);  // 0 / 0: scikit-learn's zero_division default
  st::confusion negatives_only;
  negatives_only.add(false, false);
  negatives_only.add(true, false);
  CHECK(st::balanced_accuracy(negatives_only) == Approx(0.5));  // only the class present counts
  CHECK(st::f1(negatives_only) == 0.0);
  st::confusion perfect;
  perfect.add(true, true);
  perfect.add(false, false);
  CHECK(st::balanced_accuracy(perfect) == 1.0);
  CHECK(st::f1(perfect) == 1.0);
}

TEST_CASE("steps_to_target finds the first step at or below the target", "[study][target]") {
  const std::vector<long long> steps{10, 20, 30, 40, 50};
  const std::vector<double> values{1.0, 0.5, 0.2, 0.3, 0.1};
  CHECK(st::steps_to_target(steps, values, 0.2) == 30);  // reaching it exactly counts
  CHECK(st::steps_to_target(steps, values, 0.25) == 30);
  CHECK(st::steps_to_target(steps, values, 0.15) == 50);
  CHECK(st::steps_to_target(steps, values, 2.0) == 10);
  CHECK(st::steps_to_target(steps, values, 0.05) == -1);
  CHECK(st::steps_to_target({}, {}, 1.0) == -1);
  const std::vector<double> with_nan{std::numeric_limits<double>::quiet_NaN(), 0.1};
  CHECK(st::steps_to_target(std::vector<long long>{1, 2}, with_nan, 0.5) == 2);
}

TEST_CASE("variability is the spread of log-ratios, blind to trend and scale", "[study][variability]") {
  // A steady exponential decrease has no jitter, however fast.
  std::vector<double> geometric;
  for (int k = 0; k < 20; ++k) geometric.push_back(std::pow(0.7, k));
  CHECK(st::variability(geometric) == Approx(0.0).margin(1e-12));
  // Alternating x2, /2: log-ratios +-ln 2, mean 0, sample sd ln 2 sqrt(4 / 3) over 4 pairs.
  const std::vector<double> zigzag{1, 2, 1, 2, 1};
  CHECK(st::variability(zigzag) == Approx(std::log(2.0) * std::sqrt(4.0 / 3.0)));
  // Scale-free: a loss weighted 45 instead of 1 has the same variability.
  std::vector<double> weighted;
  for (double x : zigzag) weighted.push_back(45.0 * x);
  CHECK(st::variability(weighted) == Approx(st::variability(zigzag)));
  // The same zigzag on a downward trend: the trend shifts every log-ratio equally.
  std::vector<double> trending;
  for (std::size_t k = 0; k < zigzag.size(); ++k) trending.push_back(zigzag[k] * std::pow(0.5, double(k)));
  CHECK(st::variability(trending) == Approx(st::variability(zigzag)));
}

TEST_CASE("variability edge cases", "[study][variability]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(st::variability(std::vector<double>{})));
  CHECK(std::isnan(st::variability(std::vector<double>{1.0})));
  CHECK(std::isnan(st::variability(std::vector<double>{1.0, 2.0})));  // one pair: no spread
  // Pairs with a zero, negative or NaN member are left out: here 1->2, 2->1 and 1->2 remain,
  // log-ratios ln2, -ln2, ln2: mean ln2/3, sample variance (4/9 + 16/9 + 4/9) ln2^2 / 2 = 4/3 ln2^2.
  const std::vector<double> gaps{1, 2, 1, 0, 1, 2, nan, -1, 3};
  CHECK(st::variability(gaps) == Approx(std::log(2.0) * std::sqrt(4.0 / 3.0)));
}
