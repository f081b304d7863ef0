// SpikeDampener and its detectors, against sequences worked by hand and brute-force references.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include <steadyloss/stability/spike_dampener.hpp>
#include <steadyloss/stability/stabilizer.hpp>

namespace sl = steadyloss;

TEMPLATE_TEST_CASE("SpikeDampener mean ratio: warm-up, dampen, non-finite, window hygiene", "[stability][spike]",
                   float, double) {
  sl::SpikeDampener<TestType> spikes({.window = 4, .detector = {.threshold = 2.0}});
  for (int i = 0; i < 4; ++i) {  // warm-up: no decision until 4 accepted values
    const auto d = spikes.update(TestType(1));
    CHECK(d.warming_up);
    CHECK(d.scale == TestType(1));
  }
  auto d = spikes.update(TestType(1));  // mean 1, limit 2
  CHECK_FALSE(d.warming_up);
  CHECK_FALSE(d.is_spike);
  d = spikes.update(TestType(3));  // 3 > 2: spike; dampen to 2/3 so the effective loss is 2
  CHECK(d.is_spike);
  CHECK(d.scale == Approx(2.0 / 3.0));
  CHECK(d.effective == Approx(2.0));
  CHECK(d.limit == Approx(2.0));
  d = spikes.update(std::numeric_limits<TestType>::quiet_NaN());  // non-finite: skip
  CHECK(d.non_finite);
  CHECK(d.skipped);
  CHECK(d.scale == TestType(0));
  d = spikes.update(TestType(1), std::numeric_limits<TestType>::infinity());  // inf grad norm: skip too
  CHECK(d.skipped);
  // Neither the spike nor the NaN entered the window: still mean 1, limit 2. 2 is not > 2.
  d = spikes.update(TestType(2));
  CHECK_FALSE(d.is_spike);
  CHECK(d.limit == Approx(2.0));
  // Window now 1, 1, 1, 2 (the oldest 1 dropped): mean 1.25, limit 2.5.
  d = spikes.update(TestType(2.6));
  CHECK(d.is_spike);
  CHECK(d.limit == Approx(2.5));
  CHECK(d.scale == Approx(2.5 / 2.6));
  CHECK(spikes.spikes() == 2);
  CHECK(spikes.skips() == 2);
}

TEMPLATE_TEST_CASE("SpikeDampener modes skip and report, explicit warm-up", "[stability][spike]", float, double) {
  sl::SpikeDampener<TestType> skip({.window = 3, .mode = sl::spike_mode::skip, .detector = {.threshold = 2.0}});
  sl::SpikeDampener<TestType> report({.window = 3, .mode = sl::spike_mode::report, .detector = {.threshold = 2.0}});
  for (int i = 0; i < 3; ++i) {
    skip.update(TestType(1));
    report.update(TestType(1));
  }
  const auto s = skip.update(TestType(5));
  CHECK(s.is_spike);
  CHECK(s.skipped);
  CHECK(s.scale == TestType(0));
  const auto r = report.update(TestType(5));
  CHECK(r.is_spike);
  CHECK_FALSE(r.skipped);
  CHECK(r.scale == TestType(1));
  CHECK(r.effective == TestType(5));

  // warmup 2 of window 4: decisions start after two accepted values.
  sl::SpikeDampener<TestType> quick({.window = 4, .warmup = 2, .detector = {.threshold = 2.0}});
  CHECK(quick.update(TestType(1)).warming_up);
  CHECK(quick.update(TestType(1)).warming_up);
  CHECK(quick.update(TestType(5)).is_spike);
}

TEMPLATE_TEST_CASE("SpikeDampener: a run of level_shift_after spikes is a new level, not a spike",
                   "[stability][spike][level]", sl::detect::mean_ratio, sl::detect::median_ratio) {
  // Window 4, threshold 2: level 1, then the loss settles at 3 (a new data phase).
  sl::SpikeDampener<double, TestType> spikes({.window = 4, .detector = {.threshold = 2.0}});
  for (int i = 0; i < 4; ++i) spikes.update(1.0);
  for (int i = 0; i < 3; ++i) {  // three spikes, dampened to the limit 2
    const auto d = spikes.update(3.0);
    CHECK(d.is_spike);
    CHECK_FALSE(d.level_shift);
    CHECK(d.scale == Approx(2.0 / 3.0));
  }
  CHECK(spikes.consecutive_spikes() == 3);
  spikes.update(std::numeric_limits<double>::quiet_NaN());  // a NaN neither breaks nor extends the run
  CHECK(spikes.consecutive_spikes() == 3);
  auto d = spikes.update(3.5);  // the 4th (= window) consecutive spike: accepted as the new level
  CHECK(d.level_shift);
  CHECK_FALSE(d.is_spike);
  CHECK_FALSE(d.skipped);
  CHECK(d.scale == 1.0);
  CHECK(d.effective == 3.5);
  CHECK(spikes.level_shifts() == 1);
  CHECK(spikes.consecutive_spikes() == 0);
  // The reference restarted from the run 3, 3, 3, 3.5: mean 3.125 (limit 6.25), median 3 (limit 6).
  const double limit = std::is_same_v<TestType, sl::detect::mean_ratio> ? 6.25 : 6.0;
  d = spikes.update(3.2);
  CHECK_FALSE(d.is_spike);
  CHECK(d.limit == Approx(limit));
  d = spikes.update(7.0);  // a spike against the new level
  CHECK(d.is_spike);
  CHECK(spikes.spikes() == 4);
}

TEST_CASE("SpikeDampener: isolated spikes never add up to a level shift, shorter runs re-warm", "[stability][spike][level]") {
  sl::SpikeDampener<double> spikes({.window = 4, .mode = sl::spike_mode::skip, .detector = {.threshold = 2.0}});
  for (int i = 0; i < 4; ++i) spikes.update(1.0);
  for (int i = 0; i < 20; ++i) {  // spike, spike, spike, normal, ...: the run restarts every time
    const auto d = spikes.update(i % 4 == 3 ? 1.0 : 5.0);
    CHECK_FALSE(d.level_shift);
    CHECK(d.skipped == (i % 4 != 3));
  }
  CHECK(spikes.level_shifts() == 0);

  // level_shift_after 2 < warmup 4: the reference restarts from 2 values and warms up again.
  sl::SpikeDampener<double> quick({.window = 4, .level_shift_after = 2, .detector = {.threshold = 2.0}});
  for (int i = 0; i < 4; ++i) quick.update(1.0);
  CHECK(quick.update(4.0).is_spike);
  CHECK(quick.update(4.0).level_shift);
  CHECK(quick.update(4.0).warming_up);  // 3 of 4 values
  CHECK(quick.update(20.0).warming_up);  // 4 of 4: mean 8
  const auto d = quick.update(17.0);
  CHECK_FALSE(d.warming_up);
  CHECK(d.limit == Approx(16.0));
  CHECK(d.is_spike);
}

TEST_CASE("SpikeDampener level shifts: window 1 still flags spikes, SIZE_MAX never shifts and resumes",
          "[stability][spike][level]") {
  sl::SpikeDampener<double> one({.window = 1, .detector = {.threshold = 2.0}});  // level_shift_after: at least 2
  CHECK(one.settings().level_shift_after == 2);
  one.update(1.0);
  CHECK(one.update(100.0).is_spike);
  CHECK(one.update(1.0).scale == 1.0);  // the run ended: no shift
  CHECK(one.update(50.0).is_spike);
  CHECK(one.level_shifts() == 0);

  sl::SpikeDampener<double> never({.window = 3, .level_shift_after = SIZE_MAX, .detector = {.threshold = 2.0}});
  for (int i = 0; i < 3; ++i) never.update(1.0);
  for (int i = 0; i < 50; ++i) CHECK(never.update(5.0).is_spike);
  CHECK(never.level_shifts() == 0);
  sl::SpikeDampener<double> resumed({.window = 3, .level_shift_after = SIZE_MAX, .detector = {.threshold = 2.0}});
  sl::restore_state(resumed, sl::save_state(never));
  CHECK(resumed.consecutive_spikes() == 50);
  CHECK(resumed.update(5.0).is_spike);
}

TEST_CASE("SpikeDampener in skip mode recovers from a level shift that would otherwise freeze it",
          "[stability][spike][level]") {
  // A model whose loss can only change when a step is taken: skip mode would freeze it forever
  // if the dampener kept calling the new level a spike.
  sl::SpikeDampener<double> spikes({.window = 10, .mode = sl::spike_mode::skip, .detector = {.threshold = 2.0}});
  double loss = 1.0;
  int taken = 0;
  for (int step = 0; step < 100; ++step) {
    if (step == 30) loss = 4.0;  // a new loss term switched on
    const auto d = spikes.update(loss);
    if (!d.skipped) {
      ++taken;
      loss *= 0.999;
    }
  }
  CHECK(spikes.level_shifts() == 1);
  CHECK(spikes.skips() == 9);
  CHECK(taken == 91);
}

TEST_CASE("SpikeDampener median ratio ignores an outlier the mean does not", "[stability][spike]") {
  sl::SpikeDampener<double, sl::detect::median_ratio> median({.window = 5, .detector = {.threshold = 2.0}});
  sl::SpikeDampener<double, sl::detect::mean_ratio> mean({.window = 5, .detector = {.threshold = 2.0}});
  for (double x : {1.0, 2.0, 3.0, 4.0, 100.0}) {  // warm-up accepts the 100
    median.update(x);
    mean.update(x);
  }
  // window {1, 2, 3, 4, 100}: median 3 -> limit 6; mean 22 -> limit 44.
  const auto a = median.update(7.0);
  CHECK(a.is_spike);
  CHECK(a.limit == 6.0);
  const auto b = mean.update(7.0);
  CHECK_FALSE(b.is_spike);
  CHECK(b.limit == Approx(44.0));
}

TEST_CASE("SpikeDampener z-score: x > mean + k sigma (sample sigma)", "[stability][spike]") {
  sl::SpikeDampener<double, sl::detect::zscore> z({.window = 4, .detector = {.sigma_factor = 2.0}});
  for (double x : {1.0, 2.0, 3.0, 4.0}) z.update(x);
  // {1, 2, 3, 4}: mean 2.5, sample variance 5/3; limit 2.5 + 2 sqrt(5/3) = 5.0820.
  const double sd = std::sqrt(5.0 / 3.0);
  auto d = z.update(5.0);
  CHECK_FALSE(d.is_spike);
  CHECK(d.limit == Approx(2.5 + 2 * sd));
  // {2, 3, 4, 5}: mean 3.5, same spread; limit 6.0820.
  d = z.update(6.1);
  CHECK(d.is_spike);
  CHECK(d.limit == Approx(3.5 + 2 * sd));
  CHECK(d.scale == Approx((3.5 + 2 * sd) / 6.1));
  sl::SpikeDampener<double, sl::detect::zscore> defaults;
  CHECK(defaults.settings().detector.sigma_factor == 6.0);
}

TEST_CASE("SpikeDampener robust z-score: x > median + k 1.4826 MAD", "[stability][spike]") {
  sl::SpikeDampener<double, sl::detect::mad_zscore> odd({.window = 5, .detector = {.sigma_factor = 2.0}});
  for (double x : {1.0, 2.0, 3.0, 4.0, 100.0}) odd.update(x);  // warm-up accepts the 100
  // median 3; deviations {2, 1, 0, 1, 97}: MAD 1; limit 3 + 2 * 1.4826 = 5.9652, the 100 ignored.
  auto d = odd.update(5.96);
  CHECK_FALSE(d.is_spike);
  CHECK(d.limit == Approx(3 + 2 * 1.4826));
  // {2, 3, 4, 100, 5.96}: median 4; deviations {2, 1, 0, 96, 1.96}: MAD 1.96.
  d = odd.update(9.9);
  CHECK(d.is_spike);
  CHECK(d.limit == Approx(4 + 2 * 1.4826 * 1.96));

  sl::SpikeDampener<double, sl::detect::mad_zscore> even({.window = 4, .detector = {.sigma_factor = 3.0}});
  for (double x : {1.0, 2.0, 3.0, 10.0}) even.update(x);
  // median 2.5; deviations {1.5, 0.5, 0.5, 7.5}: MAD (0.5 + 1.5) / 2 = 1; limit 2.5 + 3 * 1.4826.
  d = even.update(7.0);
  CHECK(d.is_spike);
  CHECK(d.limit == Approx(2.5 + 3 * 1.4826));

  // A partial window decides once `warmup` values are in (window 50, warm-up 3).
  sl::SpikeDampener<double, sl::detect::mad_zscore> partial({.window = 50, .warmup = 3, .detector = {.sigma_factor = 1.0}});
  for (double x : {1.0, 2.0}) CHECK(partial.update(x).warming_up);
  partial.update(4.0);  // third value: still warm-up, now ready
  d = partial.update(10.0);  // {1, 2, 4}: median 2, MAD 1: limit 3.4826
  CHECK(d.is_spike);
  CHECK(d.limit == Approx(2 + 1.4826));
}

TEST_CASE("SpikeDampener guards raise the limit for every detector", "[stability][spike]") {
  // Ratio guard: the mean is 1, the detector's limit 2, min_ratio 3 raises it to 3.
  sl::SpikeDampener<double> ratio({.window = 3, .min_ratio = 3.0, .detector = {.threshold = 2.0}});
  for (int i = 0; i < 3; ++i) ratio.update(1.0);
  auto d = ratio.update(2.5);
  CHECK_FALSE(d.is_spike);  // above 2x, below 3x: a hard batch, accepted (the mean becomes 1.5)
  d = ratio.update(4.6);    // limit max(2 x 1.5, 3 x 1.5) = 4.5
  CHECK(d.is_spike);
  CHECK(d.limit == Approx(4.5));
  CHECK(d.effective == Approx(4.5));  // dampened to the guarded limit

  // Absolute guard: reference 0.003, the 2x limit 0.006; min_excess 0.01 raises it to 0.013.
  sl::SpikeDampener<double> excess({.window = 3, .min_excess = 0.01, .detector = {.threshold = 2.0}});
  for (int i = 0; i < 3; ++i) excess.update(0.003);
  CHECK_FALSE(excess.update(0.012).is_spike);
  d = excess.update(0.02);  // the window now holds {0.003, 0.003, 0.012}: mean 0.006, limit 0.016
  CHECK(d.is_spike);
  CHECK(d.limit == Approx(0.016));

  // A z-score limit collapses onto the mean of a smooth stream: a 1.2x batch is "many sigma".
  sl::SpikeDampener<double, sl::detect::zscore> bare({.window = 4, .detector = {.sigma_factor = 6.0}});
  sl::SpikeDampener<double, sl::detect::zscore> guarded({.window = 4, .min_ratio = 1.5, .detector = {.sigma_factor = 6.0}});
  for (double x : {1.0, 1.001, 0.999, 1.0}) {
    bare.update(x);
    guarded.update(x);
  }
  CHECK(bare.update(1.2).is_spike);
  CHECK_FALSE(guarded.update(1.2).is_spike);
  CHECK(guarded.update(2.0).is_spike);  // the 1.2 entered the window: mean 1.05, sigma 0.1, limit 1.65
}

TEST_CASE("SpikeDampener EMA z-score on the gradient norm (ZClip)", "[stability][spike]") {
  sl::SpikeDampener<double, sl::detect::ema_zscore> zclip({.warmup = 2, .detector = {.alpha = 0.5, .z_threshold = 1.0}});
  zclip.update(0.0, 1.0);
  zclip.update(0.0, 3.0);  // warm-up: mu = 2, variance (population) = 1
  // g = 2.5: limit 2 + 1 = 3, accepted; mu = 0.5*2 + 0.5*2.5 = 2.25,
  // var = 0.5*1 + 0.5*(2.5 - 2.25)^2 = 0.53125
  auto d = zclip.update(123.0, 2.5);  // the loss is not what this detector watches
  CHECK_FALSE(d.is_spike);
  CHECK(d.limit == Approx(3.0));
  const double limit = 2.25 + std::sqrt(0.53125);
  d = zclip.update(0.0, 4.0);
  CHECK(d.is_spike);
  CHECK(d.limit == Approx(limit));
  CHECK(d.scale == Approx(limit / 4.0));  // the gradient norm is clipped to the limit
  // ZClip updates its EMAs with the clipped norm.
  const double mu = 0.5 * 2.25 + 0.5 * limit;
  const double var = 0.5 * 0.53125 + 0.5 * (limit - mu) * (limit - mu);
  d = zclip.update(0.0, 0.0);
  CHECK(d.limit == Approx(mu + std::sqrt(var)));
  sl::SpikeDampener<float, sl::detect::ema_zscore> defaults;
  CHECK(defaults.settings().detector.alpha == 0.97);
  CHECK(defaults.settings().detector.z_threshold == 2.5);
}

TEST_CASE("window_median and windowed_stats match brute force", "[stability][spike][window]") {
  std::mt19937 rng(7);
  std::normal_distribution<double> noise(0.0, 1.0);
  for (std::size_t window : {1u, 2u, 5u, 64u}) {
    sl::detail::window_median median(window);
    sl::detail::windowed_stats stats(window);
    std::deque<double> reference;
    for (int i = 0; i < 3000; ++i) {
      // Large offset and many ties: the naive sum-of-squares variance would lose all digits here.
      const double x = 1e6 + (i % 7 == 0 ? 0.0 : std::round(noise(rng) * 4) / 4);
      median.push(x);
      stats.push(x);
      reference.push_back(x);
      if (reference.size() > window) reference.pop_front();
      std::vector<double> sorted(reference.begin(), reference.end());
      std::sort(sorted.begin(), sorted.end());
      const std::size_t n = sorted.size();
      const double expected_median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
      REQUIRE(median.median() == expected_median);
      double mean = 0;
      for (double v : sorted) mean += v;
      mean /= static_cast<double>(n);
      double m2 = 0;
      for (double v : sorted) m2 += (v - mean) * (v - mean);
      REQUIRE(stats.mean() == Approx(mean).epsilon(1e-12));
      if (n > 1) REQUIRE(stats.sample_variance() == Approx(m2 / static_cast<double>(n - 1)).epsilon(1e-6).margin(1e-9));
    }
  }
}

TEST_CASE("SpikeDampener rejects bad parameters", "[stability][spike][errors]") {
  CHECK_THROWS_WITH(sl::SpikeDampener<double>({.window = 0}), "SpikeDampener: window must be > 0, got 0");
  CHECK_THROWS_WITH(sl::SpikeDampener<double>({.detector = {.threshold = 1.0}}), "SpikeDampener: threshold must be finite and > 1, got 1");
  CHECK_THROWS_AS(sl::SpikeDampener<double>({.detector = {.threshold = 0.5}}), sl::invalid_parameter);
  CHECK_THROWS_AS(sl::SpikeDampener<double>({.window = 4, .warmup = 5}), sl::invalid_parameter);
  CHECK_THROWS_AS((sl::SpikeDampener<double, sl::detect::zscore>({.detector = {.sigma_factor = 0.0}})), sl::invalid_parameter);
  CHECK_THROWS_AS((sl::SpikeDampener<double, sl::detect::ema_zscore>({.detector = {.alpha = 1.0}})), sl::invalid_parameter);
  CHECK_THROWS_AS((sl::SpikeDampener<double, sl::detect::median_ratio>({.window = 0})), sl::invalid_parameter);
  CHECK_THROWS_WITH(sl::SpikeDampener<double>({.min_ratio = -1.0}),
                    "SpikeDampener: min_ratio must be finite and >= 0, got -1");
  CHECK_THROWS_AS(sl::SpikeDampener<double>({.min_excess = std::numeric_limits<double>::quiet_NaN()}),
                  sl::invalid_parameter);
  CHECK_THROWS_AS((sl::SpikeDampener<double, sl::detect::mad_zscore>({.detector = {.sigma_factor = -2.0}})), sl::invalid_parameter);
  // A standard deviation or a MAD needs two values: with window 1 they would never decide.
  CHECK_THROWS_WITH((sl::SpikeDampener<double, sl::detect::zscore>({.window = 1})),
                    "SpikeDampener: zscore needs window >= 2 (a spread needs two values), got 1");
  CHECK_THROWS_WITH((sl::SpikeDampener<double, sl::detect::mad_zscore>({.window = 1})),
                    "SpikeDampener: mad_zscore needs window >= 2 (a spread needs two values), got 1");
  CHECK_NOTHROW(sl::SpikeDampener<double, sl::detect::zscore>({.window = 2}));
  CHECK_NOTHROW(sl::SpikeDampener<double, sl::detect::mean_ratio>({.window = 1}));
  CHECK_THROWS_WITH(sl::SpikeDampener<double>({.level_shift_after = 1}),
                    Catch::Contains("level_shift_after must be 0 (= window) or >= 2, got 1"));
}
