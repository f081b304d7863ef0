// EarlyStopper against PyTorch Lightning's EarlyStopping._evaluate_stopping_criteria, worked by
// hand. Lightning, min mode: improved iff current < best - |min_delta|; else wait_count += 1 and
// stop iff wait_count >= patience. Check order: non-finite, stopping_threshold,
// divergence_threshold, improvement, wait.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include <steadyloss/stability/early_stopper.hpp>

namespace sl = steadyloss;

namespace {
// Feeds the values; returns the index of the first step with should_stop (-1 if none).
template <class T>
long long stop_step(sl::EarlyStopper<T>& stopper, const std::vector<double>& values) {
  for (std::size_t i = 0; i < values.size(); ++i)
    if (stopper.update(static_cast<T>(values[i])).should_stop) return static_cast<long long>(i);
  return -1;
}
}  // namespace

TEMPLATE_TEST_CASE("EarlyStopper replays Lightning's rule", "[stability][early_stop]", float, double) {
  // patience 3, min_delta 0.1, min mode:
  //  step 0: 1.00 < inf              -> best 1.00, wait 0 (improved)
  //  step 1: 0.95 < 1.00 - 0.1? no   -> wait 1
  //  step 2: 0.85 < 0.90? yes        -> best 0.85, wait 0 (improved)
  //  step 3: 0.80 < 0.75? no         -> wait 1
  //  step 4: 0.76 < 0.75? no         -> wait 2
  //  step 5: 0.74 < 0.75? yes        -> best 0.74, wait 0 (improved)
  //  step 6: 0.70 < 0.64? no         -> wait 1
  //  step 7: 0.66 no                 -> wait 2
  //  step 8: 0.65 no                 -> wait 3 >= 3: stop at step 8, best 0.74 from step 5
  const std::vector<double> values{1.00, 0.95, 0.85, 0.80, 0.76, 0.74, 0.70, 0.66, 0.65, 0.10};
  const std::vector<bool> improved{true, false, true, false, false, true, false, false, false};
  const std::vector<long long> wait{0, 1, 0, 1, 2, 0, 1, 2, 3};
  for (double min_delta : {0.1, -0.1}) {  // the sign of min_delta never matters
    sl::EarlyStopper<TestType> stopper({.patience = 3, .min_delta = min_delta});
    for (std::size_t i = 0; i < 9; ++i) {
      const auto d = stopper.update(static_cast<TestType>(values[i]));
      CHECK(d.improved == improved[i]);
      CHECK(d.wait == wait[i]);
      CHECK(d.should_stop == (i == 8));
    }
    CHECK(stopper.stop_step() == 8);
    CHECK(stopper.best_step() == 5);
    CHECK(stopper.best() == Approx(0.74));
    CHECK(stopper.reason() == sl::stop_reason::patience);
    // The stop latches: 0.10 would be an improvement, but nothing changes any more.
    const auto after = stopper.update(TestType(0.1));
    CHECK(after.should_stop);
    CHECK_FALSE(after.improved);
    CHECK(stopper.best() == Approx(0.74));
    CHECK(stopper.stop_step() == 8);
  }
  // Max mode mirrored: the negated sequence stops at the same step.
  sl::EarlyStopper<TestType> max_stopper({.patience = 3, .min_delta = 0.1, .mode = sl::stop_mode::max});
  std::vector<double> negated;
  for (double v : values) negated.push_back(-v);
  CHECK(stop_step(max_stopper, negated) == 8);
  CHECK(max_stopper.best() == Approx(-0.74));
}

TEST_CASE("EarlyStopper improvement is strict", "[stability][early_stop]") {
  // best 2.0, min_delta 0.5: 1.5 < 1.5 is false (no improvement); 1.25 < 1.5 is.
  sl::EarlyStopper<double> stopper({.patience = 5, .min_delta = 0.5});
  CHECK(stopper.update(2.0).improved);
  CHECK_FALSE(stopper.update(1.5).improved);
  CHECK(stopper.wait() == 1);
  CHECK(stopper.update(1.25).improved);
  // Equal values with min_delta 0 never improve (strict <).
  sl::EarlyStopper<double> zero({.patience = 2, .min_delta = 0.0});
  CHECK(stop_step(zero, {1.0, 1.0, 1.0}) == 2);
}

TEST_CASE("EarlyStopper baseline, thresholds, non-finite, start_from, patience 0", "[stability][early_stop]") {
  SECTION("baseline: stop unless better than the baseline within patience") {
    sl::EarlyStopper<double> stopper({.patience = 2, .min_delta = 0.0, .baseline = 0.5});
    CHECK(stop_step(stopper, {0.6, 0.55, 0.1}) == 1);  // wait 1, wait 2 >= 2
    CHECK(stopper.best_step() == -1);
    sl::EarlyStopper<double> beats({.patience = 2, .min_delta = 0.0, .baseline = 0.5});
    CHECK(stop_step(beats, {0.6, 0.4, 0.45, 0.45}) == 3);  // wait 1, improve, wait 1, wait 2
  }
  SECTION("stopping threshold: stop once strictly better than it") {
    sl::EarlyStopper<double> stopper({.patience = 10, .stopping_threshold = 0.2});
    CHECK(stop_step(stopper, {0.5, 0.3, 0.2, 0.1}) == 3);
    CHECK(stopper.reason() == sl::stop_reason::stopping_threshold);
  }
  SECTION("divergence threshold: stop once strictly worse than it") {
    sl::EarlyStopper<double> stopper({.patience = 10, .divergence_threshold = 10.0});
    CHECK(stop_step(stopper, {5.0, 10.0, 11.0}) == 2);
    CHECK(stopper.reason() == sl::stop_reason::divergence_threshold);
  }
  SECTION("Lightning's order: non-finite before thresholds, stopping before divergence") {
    sl::EarlyStopper<double> a({.patience = 10, .stopping_threshold = 1.0, .divergence_threshold = 0.5});
    CHECK(stop_step(a, {0.7}) == 0);  // both apply; stopping_threshold is checked first
    CHECK(a.reason() == sl::stop_reason::stopping_threshold);
    sl::EarlyStopper<double> b({.patience = 10, .stopping_threshold = 1.0});
    CHECK(stop_step(b, {2.0, std::numeric_limits<double>::quiet_NaN()}) == 1);
    CHECK(b.reason() == sl::stop_reason::non_finite);
  }
  SECTION("stop_on_non_finite = false: a NaN is just not an improvement") {
    sl::EarlyStopper<double> stopper({.patience = 2, .stop_on_non_finite = false});
    const double nan = std::numeric_limits<double>::quiet_NaN();
    CHECK(stop_step(stopper, {1.0, nan, nan}) == 2);
    CHECK(stopper.reason() == sl::stop_reason::patience);
    CHECK(stopper.best() == 1.0);
  }
  SECTION("start_from ignores the first observations") {
    sl::EarlyStopper<double> late({.patience = 2, .start_from = 2});
    CHECK(stop_step(late, {0.1, 0.1, 5, 5, 5}) == 4);  // steps 0, 1 ignored; best 5 at step 2
    CHECK(late.best_step() == 2);
    sl::EarlyStopper<double> early({.patience = 2});
    CHECK(stop_step(early, {0.1, 0.1, 5, 5, 5}) == 2);
  }
  SECTION("relative min_delta: margin |min_delta| * |best|") {
    sl::EarlyStopper<double> stopper({.patience = 5, .min_delta = 0.1, .relative_min_delta = true});
    CHECK(stopper.update(10.0).improved);   // best inf: any finite value improves
    CHECK_FALSE(stopper.update(9.5).improved);  // needs < 9
    CHECK(stopper.update(8.9).improved);
  }
  SECTION("patience 0 stops at the first non-improvement") {
    sl::EarlyStopper<double> stopper({.patience = 0});
    CHECK(stop_step(stopper, {1.0, 2.0}) == 1);
  }
}

TEST_CASE("EarlyStopper defaults and bad parameters", "[stability][early_stop][errors]") {
  sl::EarlyStopper<float> stopper;
  CHECK(stopper.settings().patience == 25);
  CHECK(stopper.settings().min_delta == 0.0005);
  CHECK_THROWS_AS(sl::EarlyStopper<double>({.patience = -1}), sl::invalid_parameter);
  CHECK_THROWS_WITH(sl::EarlyStopper<double>({.patience = -3}), "EarlyStopper: patience must be >= 0, got -3");
  CHECK_THROWS_AS(sl::EarlyStopper<double>({.min_delta = std::nan("")}), sl::invalid_parameter);
  CHECK_THROWS_AS(sl::EarlyStopper<double>({.start_from = -1}), sl::invalid_parameter);
}
