// validation_stopper against PyTorch Lightning's EarlyStopping(monitor="val_loss") worked by hand:
// min mode, improved iff current + |min_delta| < best (strict), wait += 1 otherwise, stop iff
// wait >= patience; patience counts validation checks. Smoothing is TensorBoard's debiased EMA,
// s_t = f s_{t-1} + (1 - f) x_t, shown as s_t / (1 - f^t). Values are dyadic where a tie is
// tested, so the hand arithmetic is exact in float and double alike.
#include <steadyloss/fwd.hpp>  // first: the forward declarations must agree with the definitions

#include <catch2/catch.hpp>

#include <array>
#include <climits>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <steadyloss/stability/stability.hpp>

#include "state_helpers.hpp"

namespace sl = steadyloss;

namespace {
using state_helpers::same_bits;
using state_helpers::with_value;

template <class T>
bool same_report(const sl::validation_report<T>& a, const sl::validation_report<T>& b) {
  return a.check == b.check && a.step == b.step && same_bits(a.value, b.value) && same_bits(a.monitored, b.monitored) &&
         a.improved == b.improved && a.should_stop == b.should_stop && a.reason == b.reason &&
         same_bits(a.best, b.best) && a.best_check == b.best_check && a.best_step == b.best_step && a.wait == b.wait;
}

template <class Stopper>
void check_rejected(Stopper& stopper, const std::string& text, const std::string& message) {
  const std::string before = stopper.save();
  try {
    stopper.restore(text);
    FAIL("restore accepted a state that should be rejected (" << message << ")");
  } catch (const sl::invalid_input& e) {
    CHECK_THAT(e.what(), Catch::Matchers::Contains(message));
  }
  CHECK(stopper.save() == before);  // unchanged
}
}  // namespace

TEMPLATE_TEST_CASE("validation_stopper counts patience in checks and reports the best check's step",
                   "[stability][validation]", float, double) {
  // patience 2, min_delta 0.125 (min mode), checks at irregular training steps:
  //  check 0, step  10: 4.0                              -> best 4.0, wait 0 (improved)
  //  check 1, step  25: 3.875 + 0.125 = 4.0  < 4.0? no  -> wait 1 (a tie is no improvement)
  //  check 2, step  40: 3.5   + 0.125 = 3.625 < 4.0     -> best 3.5, wait 0
  //  check 3, step 100: 3.25  + 0.125 = 3.375 < 3.5     -> best 3.25, wait 0
  //  check 4, step 130: 3.125 + 0.125 = 3.25 < 3.25? no -> wait 1 (tie)
  //  check 5, step 200: 3.0   + 0.125 = 3.125 < 3.25    -> best 3.0, wait 0
  //  check 6, step 260: 2.9375 + 0.125 = 3.0625 < 3.0? no -> wait 1
  //  check 7, step 300: 3.5: no                         -> wait 2 >= 2: stop at check 7 (step 300)
  const std::vector<double> values{4.0, 3.875, 3.5, 3.25, 3.125, 3.0, 2.9375, 3.5};
  const std::vector<long long> steps{10, 25, 40, 100, 130, 200, 260, 300};
  const std::vector<bool> improved{true, false, true, true, false, true, false, false};
  const std::vector<long long> wait{0, 1, 0, 0, 1, 0, 1, 2};
  const std::vector<double> best{4.0, 4.0, 3.5, 3.25, 3.25, 3.0, 3.0, 3.0};
  const std::vector<long long> best_check{0, 0, 2, 3, 3, 5, 5, 5};
  const std::vector<long long> best_step{10, 10, 40, 100, 100, 200, 200, 200};
  for (double min_delta : {0.125, -0.125}) {  // the sign of min_delta is ignored
    sl::validation_stopper<TestType> stopper({.patience = 2, .min_delta = min_delta});
    for (std::size_t i = 0; i < values.size(); ++i) {
      const auto r = stopper.check(static_cast<TestType>(values[i]), steps[i]);
      CHECK(r.check == static_cast<long long>(i));
      CHECK(r.step == steps[i]);
      CHECK(r.value == static_cast<TestType>(values[i]));
      CHECK(r.monitored == r.value);  // smoothing is off by default
      CHECK(r.improved == improved[i]);
      CHECK(r.wait == wait[i]);
      CHECK(r.best == static_cast<TestType>(best[i]));
      CHECK(r.best_check == best_check[i]);
      CHECK(r.best_step == best_step[i]);
      CHECK(r.should_stop == (i == 7));
      CHECK(r.reason == (i == 7 ? sl::stop_reason::patience : sl::stop_reason::none));
    }
    CHECK(stopper.stop_check() == 7);
    CHECK(stopper.last_step() == 300);
    CHECK(stopper.checks() == 8);
    CHECK(stopper.best_step() == 200);
    CHECK(stopper.best_check() == 5);
    // The stop latches: 1.0 would improve, but nothing changes any more.
    const auto after = stopper.check(TestType(1.0), 400);
    CHECK(after.should_stop);
    CHECK_FALSE(after.improved);
    CHECK(after.best == TestType(3.0));
    CHECK(after.best_step == 200);
    CHECK(after.check == 8);
  }
  // Max mode, the values negated: the same checks improve and the same check stops.
  sl::validation_stopper<TestType> max_stopper({.patience = 2, .min_delta = 0.125, .mode = sl::stop_mode::max});
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto r = max_stopper.check(static_cast<TestType>(-values[i]), steps[i]);
    CHECK(r.improved == improved[i]);
    CHECK(r.should_stop == (i == 7));
  }
  CHECK(max_stopper.best() == TestType(-3.0));
  CHECK(max_stopper.best_step() == 200);
}

TEST_CASE("validation_stopper: with min_delta 0 an equal check is no improvement", "[stability][validation]") {
  // best 1.0 at check 0; 1.0 < 1.0 is false twice: wait 2 = patience at check 2 (step 3000).
  sl::validation_stopper<double> stopper({.patience = 2, .min_delta = 0.0});
  CHECK(stopper.check(1.0, 1000).improved);
  CHECK_FALSE(stopper.check(1.0, 2000).improved);
  const auto r = stopper.check(1.0, 3000);
  CHECK(r.should_stop);
  CHECK(r.wait == 2);
  CHECK(r.best_step == 1000);
  // The default stopper: smoothing off, EarlyStopper's defaults.
  const sl::validation_stopper<float> defaults;
  CHECK(defaults.settings().smoothing == 0.0);
  CHECK(defaults.settings().stop.patience == sl::EarlyStopper<float>::config{}.patience);
  CHECK(defaults.best_step() == -1);
  CHECK(defaults.last_step() == -1);
}

TEMPLATE_TEST_CASE("validation_stopper smoothing: the debiased EMA of the checks is compared",
                   "[stability][validation]", float, double) {
  // f = 0.5, checks 4, 2, 2.5 (patience 1, min_delta 0):
  //   s1 = 0.5*0 + 0.5*4   = 2,    / (1 - 0.5)   = 4
  //   s2 = 0.5*2 + 0.5*2   = 2,    / (1 - 0.25)  = 8/3
  //   s3 = 0.5*2 + 0.5*2.5 = 2.25, / (1 - 0.125) = 18/7 = 2.5714... < 8/3: improved, no stop.
  // Raw (smoothing off): 2.5 is not below 2, so wait 1 = patience: stop at check 2.
  const std::vector<double> values{4.0, 2.0, 2.5};
  sl::validation_stopper<TestType> smoothed({.patience = 1, .min_delta = 0.0}, 0.5);
  sl::validation_stopper<TestType> raw({.stop = {.patience = 1, .min_delta = 0.0}, .smoothing = 0.0});
  const std::vector<double> expected{4.0, 8.0 / 3.0, 18.0 / 7.0};
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto s = smoothed.check(static_cast<TestType>(values[i]), static_cast<long long>(i));
    const auto r = raw.check(static_cast<TestType>(values[i]), static_cast<long long>(i));
    CHECK(s.value == static_cast<TestType>(values[i]));
    CHECK(s.monitored == Approx(expected[i]).epsilon(1e-6));
    CHECK(s.improved);
    CHECK_FALSE(s.should_stop);
    CHECK(s.best == s.monitored);
    CHECK(r.monitored == static_cast<TestType>(values[i]));
    CHECK(r.improved == (i < 2));
    CHECK(r.should_stop == (i == 2));
  }
  CHECK(smoothed.best_check() == 2);
  CHECK(raw.best_check() == 1);
  CHECK_THROWS_AS(sl::validation_stopper<TestType>({.patience = 1}, 1.0), sl::invalid_parameter);
  CHECK_THROWS_AS(sl::validation_stopper<TestType>({.patience = 1}, -0.1), sl::invalid_parameter);
}

TEST_CASE("validation_stopper non-finite checks", "[stability][validation]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  SECTION("stop_on_non_finite (Lightning's check_finite, the default): the first NaN or Inf check stops") {
    for (double bad : {nan, inf, -inf}) {
      sl::validation_stopper<double> stopper({.patience = 5});
      stopper.check(2.0, 50);
      const auto r = stopper.check(bad, 100);
      CHECK(r.should_stop);
      CHECK(r.reason == sl::stop_reason::non_finite);
      CHECK_FALSE(r.improved);
      CHECK(r.best == 2.0);
      CHECK(r.best_step == 50);
      CHECK(stopper.stop_check() == 1);
    }
    // With smoothing, the NaN is what is monitored (it never enters the EMA).
    sl::validation_stopper<double> smoothed({.patience = 5}, 0.9);
    smoothed.check(2.0, 1);
    const auto r = smoothed.check(nan, 2);
    CHECK(std::isnan(r.monitored));
    CHECK(r.reason == sl::stop_reason::non_finite);
    CHECK(smoothed.smoother().steps() == 1);
  }
  SECTION("stop_on_non_finite off: a non-finite check is no improvement and counts toward patience") {
    // patience 2: 2.0 best; NaN wait 1; 1.0 best, wait 0; NaN wait 1; -inf (min mode: taken as
    // NaN, not as the best value ever) wait 2 = patience -> stop (patience) at check 4, step 500.
    sl::validation_stopper<double> stopper({.patience = 2, .min_delta = 0.0, .stop_on_non_finite = false});
    CHECK(stopper.check(2.0, 100).improved);
    auto r = stopper.check(nan, 200);
    CHECK_FALSE(r.improved);
    CHECK(r.wait == 1);
    CHECK(std::isnan(r.value));
    CHECK(stopper.check(1.0, 300).improved);
    r = stopper.check(nan, 400);
    CHECK(r.wait == 1);
    r = stopper.check(-inf, 500);
    CHECK(r.monitored == -inf);  // reported as it is
    CHECK_FALSE(r.improved);
    CHECK(r.best == 1.0);
    CHECK(r.best_step == 300);
    CHECK(r.should_stop);
    CHECK(r.reason == sl::stop_reason::patience);
    CHECK(stopper.stop_check() == 4);
    // Max mode: +inf is the better side, taken as NaN too.
    sl::validation_stopper<double> max_stopper(
        {.patience = 3, .mode = sl::stop_mode::max, .stop_on_non_finite = false});
    max_stopper.check(0.5, 1);
    r = max_stopper.check(inf, 2);
    CHECK_FALSE(r.improved);
    CHECK(r.wait == 1);
    CHECK(r.best == 0.5);
  }
  SECTION("stop_on_non_finite off: +inf (min mode) still trips a divergence_threshold, as in Lightning") {
    sl::validation_stopper<double> stopper(
        {.patience = 5, .divergence_threshold = 10.0, .stop_on_non_finite = false});
    stopper.check(2.0, 1);
    CHECK_FALSE(stopper.check(nan, 2).should_stop);  // NaN > 10 is false
    const auto r = stopper.check(inf, 3);
    CHECK(r.should_stop);
    CHECK(r.reason == sl::stop_reason::divergence_threshold);
  }
}

TEST_CASE("validation_stopper in one process: the count changes nothing but must be valid",
          "[stability][validation]") {
  // 0.1 * 3 / 3 is not 0.1 in double: a single rank's value must come back as it is.
  sl::validation_stopper<double> stopper({.patience = 3});
  CHECK(stopper.check(0.1, 3.0, 10).value == 0.1);
  CHECK(stopper.check(0.7, 3.0, 20).value == 0.7);
  CHECK(stopper.check(0.2, 1.0, 30).value == 0.2);
  CHECK_THROWS_WITH(stopper.check(0.2, 0.0, 40), Catch::Matchers::Contains("no validation samples"));
  CHECK_THROWS_WITH(stopper.check(0.2, std::nan(""), 40), Catch::Matchers::Contains("count must be finite"));
  CHECK(stopper.checks() == 3);
}

TEST_CASE("validation_stopper rejects checks whose step is not after the previous one", "[stability][validation]") {
  sl::validation_stopper<double> stopper({.patience = 3});
  CHECK_THROWS_AS(stopper.check(1.0, -1), sl::invalid_input);
  CHECK(stopper.checks() == 0);
  CHECK(stopper.check(1.0, 0).check == 0);  // step 0 is a valid first step
  const std::string before = stopper.save();
  try {
    stopper.check(0.5, 0);
    FAIL("a repeated step was accepted");
  } catch (const sl::invalid_input& e) {
    CHECK_THAT(e.what(), Catch::Matchers::Contains("step 0 is not after the previous check's step 0"));
  }
  CHECK_THROWS_AS(stopper.check(0.5, -5), sl::invalid_input);
  CHECK(stopper.save() == before);  // a rejected check changes nothing
  const auto r = stopper.check(0.5, 1);
  CHECK(r.check == 1);
  CHECK(r.improved);
  CHECK(r.best_step == 1);
  CHECK_THROWS_AS(stopper.check(0.25, 1), sl::invalid_input);
}

namespace {
// A deterministic sequence of checks: noisy, improving then flat, with NaNs (stop_on_non_finite
// off) so the EMA skips some checks.
std::vector<double> check_values(int count) {
  state_helpers::lcg random;
  std::vector<double> values;
  for (int i = 0; i < count; ++i) {
    const double level = 1.0 + 2.0 / (1.0 + 0.2 * (i < 40 ? i : 40));
    values.push_back(i % 13 == 12 ? std::numeric_limits<double>::quiet_NaN() : level * (0.95 + 0.1 * random.uniform()));
  }
  return values;
}
}  // namespace

TEMPLATE_TEST_CASE("validation_stopper save/restore resumes bit for bit", "[stability][validation][state]", float,
                   double) {
  using Stopper = sl::validation_stopper<TestType>;
  const typename Stopper::config config{
      .stop = {.patience = 12, .min_delta = 0.001, .stop_on_non_finite = false}, .smoothing = 0.6};
  const auto values = check_values(120);
  auto step_of = [](std::size_t i) { return static_cast<long long>(7 + 25 * i); };
  Stopper reference(config);
  std::vector<sl::validation_report<TestType>> expected;
  for (std::size_t i = 0; i < values.size(); ++i)
    expected.push_back(reference.check(static_cast<TestType>(values[i]), step_of(i)));
  REQUIRE(expected.back().should_stop);  // the run reaches a stop, so resuming across it is tested
  for (std::size_t cut : {std::size_t{0}, std::size_t{1}, std::size_t{12}, std::size_t{13}, std::size_t{37},
                          std::size_t{64}, expected.size() - 1}) {
    Stopper first(config);
    for (std::size_t i = 0; i < cut; ++i) first.check(static_cast<TestType>(values[i]), step_of(i));
    const std::string text = first.save();
    Stopper resumed(config);
    resumed.restore(text);
    CHECK(resumed.save() == text);
    for (std::size_t i = cut; i < values.size(); ++i) {
      const auto r = resumed.check(static_cast<TestType>(values[i]), step_of(i));
      INFO("cut " << cut << ", check " << i);
      REQUIRE(same_report(r, expected[i]));
    }
  }
  // The single-policy helpers work on it too (a section inside a larger state).
  Stopper via_helpers(config);
  sl::restore_state(via_helpers, sl::save_state(reference));
  CHECK(via_helpers.save() == reference.save());
}

TEST_CASE("validation_stopper restore rejects a corrupted or mismatched state and stays unchanged",
          "[stability][validation][state]") {
  using Stopper = sl::validation_stopper<double>;
  const Stopper::config config{.stop = {.patience = 3, .min_delta = 0.0}, .smoothing = 0.5};
  Stopper saved(config);
  saved.check(4.0, 10);
  saved.check(2.0, 20);
  saved.check(3.0, 30);
  // checks 3, last step 30, best check 1 (2.0 -> EMA 8/3) at step 20, wait 1.
  const std::string good = saved.save();
  REQUIRE(good.find("begin ValidationStopper") != std::string::npos);

  Stopper target(config);
  target.check(9.0, 1);  // some state of its own, which must survive every rejection
  const auto control_next = Stopper(target).check(1.0, 2);

  std::string flipped = good;
  flipped[flipped.find("checks ") + 7] = '4';
  check_rejected(target, flipped, "checksum mismatch");
  check_rejected(target, good.substr(0, good.size() / 2), "checksum");
  check_rejected(target, with_value(good, "checks", "4"), "ValidationStopper checks = 4 but its EarlyStopper observed 3");
  check_rejected(target, with_value(good, "last_step", "1"), "ValidationStopper last_step = 1");
  check_rejected(target, with_value(good, "best_step", "0"), "ValidationStopper best_step = 0 must be in [1, 29]");
  check_rejected(target, with_value(good, "best_step", "30"), "ValidationStopper best_step = 30");
  check_rejected(target, with_value(good, "best_step", "-1"), "ValidationStopper best_step = -1");
  check_rejected(target, with_value(good, "steps", "4", "begin EmaSmoother"), "EmaSmoother");
  // Every deciding setting must match.
  Stopper other_patience({.stop = {.patience = 4, .min_delta = 0.0}, .smoothing = 0.5});
  check_rejected(other_patience, good, "saved with patience = 3, this one has 4");
  Stopper other_smoothing({.stop = {.patience = 3, .min_delta = 0.0}, .smoothing = 0.25});
  check_rejected(other_smoothing, good, "saved with factor = 0.5, this one has 0.25");
  Stopper other_non_finite({.stop = {.patience = 3, .non_finite_patience = 7, .min_delta = 0.0}, .smoothing = 0.5});
  check_rejected(other_non_finite, good, "saved with non_finite_patience = -1, this one has 7");
  sl::validation_stopper<float> as_float({.stop = {.patience = 3, .min_delta = 0.0}, .smoothing = 0.5});
  check_rejected(as_float, good, "value_digits = 53 (double), this one has 24 (float)");

  // After all the rejections the target decides exactly as before.
  CHECK(same_report(target.check(1.0, 2), control_next));
  // And the good state loads.
  target.restore(good);
  CHECK(target.save() == good);
  CHECK(target.best_step() == 20);
  CHECK(target.wait() == 1);
}

TEST_CASE("best_state copies only on improvement and restores the best check's state", "[stability][validation]") {
  sl::validation_stopper<double> stopper({.patience = 10, .min_delta = 0.0});
  sl::best_state<std::vector<float>> best;
  std::vector<float> weights{0.0f, 0.0f};
  CHECK_FALSE(best.has_value());
  CHECK(best.step() == -1);
  std::vector<float> untouched{7.0f};
  CHECK_FALSE(best.restore(untouched));
  CHECK(untouched == std::vector<float>{7.0f});
  // Checks at steps 100..500; the weights are {step, check}. Best: 3.0 at check 1 then 2.0 at check 3.
  const std::vector<double> values{5.0, 3.0, 4.0, 2.0, 2.5};
  const std::vector<bool> copies{true, true, false, true, false};
  for (std::size_t i = 0; i < values.size(); ++i) {
    const long long step = 100 * static_cast<long long>(i + 1);
    weights = {static_cast<float>(step), static_cast<float>(i)};
    CHECK(best.update(stopper.check(values[i], step), weights) == copies[i]);
  }
  CHECK(best.has_value());
  CHECK(best.step() == 400);
  CHECK(best.check() == 3);
  REQUIRE(best.get() != nullptr);
  CHECK(*best.get() == std::vector<float>{400.0f, 3.0f});
  CHECK(best.restore(weights));
  CHECK(weights == std::vector<float>{400.0f, 3.0f});
  best.reset();
  CHECK_FALSE(best.has_value());

  // Any copyable State: a struct of arrays, as a model's parameters might be.
  struct model {
    std::array<double, 3> w{};
    double bias = 0;
  };
  sl::best_state<model> kept;
  sl::validation_report<float> report;
  report.improved = false;
  CHECK_FALSE(kept.update(report, model{{1, 2, 3}, 4}));
  report.improved = true;
  report.step = 42;
  CHECK(kept.update(report, model{{5, 6, 7}, 8}));
  model m;
  CHECK(kept.restore(m));
  CHECK(m.w == std::array<double, 3>{5, 6, 7});
  CHECK(m.bias == 8);
  CHECK(kept.step() == 42);
}

namespace {
// An all-reduce over two ranks in one process, in two passes: a recorder captures what each
// rank contributes (its own buffer, untouched), then each rank's reducer adds the other's.
struct recording_reducer {
  std::vector<double>* recorded;
  void sum(std::span<double> values) { recorded->assign(values.begin(), values.end()); }
  int size() const { return 2; }
};
struct adding_reducer {
  const std::vector<double>* peer;
  void sum(std::span<double> values) {
    REQUIRE(peer->size() == values.size());
    for (std::size_t i = 0; i < values.size(); ++i) values[i] += (*peer)[i];
  }
  int size() const { return 2; }
};

using rank_stopper = sl::basic_validation_stopper<double, adding_reducer>;
using recorder = sl::basic_validation_stopper<double, recording_reducer>;
using reports = std::pair<sl::validation_report<double>, sl::validation_report<double>>;

struct two_ranks {
  std::vector<double> from0, from1;
  rank_stopper rank0, rank1;
  explicit two_ranks(const sl::EarlyStopper<double>::config& c)
      : rank0(adding_reducer{&from1}, c), rank1(adding_reducer{&from0}, c) {}
  // Pass one: what each rank contributes. A recorder's own reduction may be rejected (it sees
  // one rank only, e.g. no samples); only the buffer it recorded matters.
  template <class... Args>
  void record(std::vector<double>& into, Args... args) {
    recorder r(recording_reducer{&into}, sl::EarlyStopper<double>::config{});
    try {
      r.check(args...);
    } catch (const sl::invalid_input&) {
    }
  }
  // One check: rank 0 has mean m0 over c0 samples, rank 1 mean m1 over c1.
  reports check(double m0, double c0, double m1, double c1, long long step) {
    record(from0, m0, c0, step);
    record(from1, m1, c1, step);
    return {rank0.check(m0, c0, step), rank1.check(m1, c1, step)};
  }
  // The plain overload: one value per rank.
  reports check(double v0, double v1, long long step) {
    record(from0, v0, step);
    record(from1, v1, step);
    return {rank0.check(v0, step), rank1.check(v1, step)};
  }
};
}  // namespace

TEST_CASE("validation_stopper reduces a check through the Reducer: count-weighted mean over ranks",
          "[stability][validation][distributed]") {
  static_assert(sl::Reducer<adding_reducer>);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  SECTION("the global value and the decisions are the same on both ranks") {
    two_ranks ranks({.patience = 2, .min_delta = 0.0});
    // (1.0 * 3 + 3.0 * 1) / 4 = 1.5
    auto [a, b] = ranks.check(1.0, 3.0, 3.0, 1.0, 100);
    CHECK(a.value == 1.5);
    CHECK(same_report(a, b));
    CHECK(a.improved);
    // (2.0 * 1 + 0.5 * 3) / 4 = 0.875: improves on 1.5
    std::tie(a, b) = ranks.check(2.0, 1.0, 0.5, 3.0, 200);
    CHECK(a.value == 0.875);
    CHECK(a.improved);
    CHECK(same_report(a, b));
    // A rank without samples contributes nothing, whatever its value: (1.0 * 5) / 5 = 1.0
    std::tie(a, b) = ranks.check(nan, 0.0, 1.0, 5.0, 300);
    CHECK(a.value == 1.0);
    CHECK(a.wait == 1);
    CHECK(same_report(a, b));
    // No samples anywhere: rejected on both ranks, neither changes.
    const std::string before0 = ranks.rank0.save(), before1 = ranks.rank1.save();
    CHECK_THROWS_WITH(ranks.check(1.0, 0.0, 2.0, 0.0, 400), Catch::Matchers::Contains("no validation samples"));
    CHECK_THROWS_AS(ranks.rank1.check(2.0, 0.0, 400), sl::invalid_input);
    CHECK(ranks.rank0.save() == before0);
    CHECK(ranks.rank1.save() == before1);
    // A bad count on one rank is reported on every rank.
    CHECK_THROWS_WITH(ranks.check(1.0, 2.0, 2.0, -1.0, 400), Catch::Matchers::Contains("count must be finite"));
    CHECK_THROWS_WITH(ranks.rank1.check(2.0, -1.0, 400), Catch::Matchers::Contains("this rank: -1"));
    // The plain overload is the mean over ranks: (0.25 + 0.75) / 2 = 0.5
    std::tie(a, b) = ranks.check(0.25, 0.75, 400);
    CHECK(a.value == 0.5);
    CHECK(a.improved);
    CHECK(same_report(a, b));
  }
  SECTION("a non-finite value on any rank is non-finite on every rank") {
    two_ranks nan_ranks({.patience = 2});
    auto [a, b] = nan_ranks.check(nan, 4.0, 1.0, 4.0, 10);
    CHECK(std::isnan(a.value));
    CHECK(std::isnan(b.value));
    CHECK(a.should_stop);
    CHECK(b.should_stop);
    CHECK(a.reason == sl::stop_reason::non_finite);
    two_ranks lenient({.patience = 2, .stop_on_non_finite = false});
    std::tie(a, b) = lenient.check(inf, 1.0, 1.0, 1.0, 10);  // the mean over all samples: +inf
    CHECK(a.value == inf);
    CHECK(same_report(a, b));
    std::tie(a, b) = lenient.check(inf, 1.0, -inf, 1.0, 20);  // inf - inf: NaN
    CHECK(std::isnan(a.value));
    CHECK(same_report(a, b));
  }
}

TEST_CASE("EarlyStopper non_finite_patience: a run of that many skipped non-finite steps stops, not before",
          "[stability][validation][early_stop]") {
  const double nan = std::nan("");
  using Guard = sl::Stabilizer<sl::SpikeDampener<double>, sl::EarlyStopper<double>>;
  // Patience out of the way (early stopping watches the validation loss); 3 NaN steps in a row stop.
  Guard guard(sl::SpikeDampener<double>{}, sl::EarlyStopper<double>({.patience = INT_MAX, .non_finite_patience = 3}));
  for (int i = 0; i < 300; ++i) CHECK_FALSE(guard.update(2.0, 1.0).should_stop);  // flat: patience never runs out
  CHECK_FALSE(guard.update(nan, 1.0).should_stop);
  CHECK_FALSE(guard.update(1.0, std::numeric_limits<double>::infinity()).should_stop);  // a non-finite grad norm
  CHECK_FALSE(guard.update(2.0, 1.0).should_stop);  // a finite step ends the run of 2
  CHECK_FALSE(guard.update(nan, 1.0).should_stop);
  CHECK_FALSE(guard.update(nan, 1.0).should_stop);
  const auto r = guard.update(nan, 1.0);  // step 305: the 3rd in a row
  CHECK(r.skipped);
  CHECK(r.should_stop);
  CHECK(r.reason == sl::stop_reason::non_finite);
  CHECK(guard.get<sl::EarlyStopper<double>>().stop_step() == 305);

  // The default (negative) keeps the rule before the setting: max(patience, 1) in a row.
  Guard by_patience(sl::SpikeDampener<double>{}, sl::EarlyStopper<double>({.patience = 4}));
  for (int i = 0; i < 12; ++i) by_patience.update(2.0 - 0.01 * i, 1.0);
  for (int i = 0; i < 3; ++i) CHECK_FALSE(by_patience.update(nan, 1.0).should_stop);
  CHECK(by_patience.update(nan, 1.0).should_stop);
  // 0 acts as 1: the first skipped non-finite step stops.
  Guard at_once(sl::SpikeDampener<double>{}, sl::EarlyStopper<double>({.patience = 50, .non_finite_patience = 0}));
  for (int i = 0; i < 12; ++i) at_once.update(2.0 - 0.01 * i, 1.0);
  CHECK(at_once.update(nan, 1.0).should_stop);
  CHECK(sl::EarlyStopper<double>({.patience = 50, .non_finite_patience = 0}).non_finite_limit() == 1);
  CHECK(sl::EarlyStopper<double>({.patience = 0}).non_finite_limit() == 1);
  CHECK(sl::EarlyStopper<double>({.patience = 6, .non_finite_patience = -5}).non_finite_limit() == 6);
  // stop_on_non_finite off: never stopped by a run, whatever its length.
  Guard lenient(sl::SpikeDampener<double>{},
                sl::EarlyStopper<double>({.patience = INT_MAX, .non_finite_patience = 2, .stop_on_non_finite = false}));
  for (int i = 0; i < 12; ++i) lenient.update(2.0, 1.0);
  for (int i = 0; i < 50; ++i) CHECK_FALSE(lenient.update(nan, 1.0).should_stop);

  // A deciding setting: saved, and checked on load (every negative value is the same rule).
  Guard resumed(sl::SpikeDampener<double>{}, sl::EarlyStopper<double>({.patience = INT_MAX, .non_finite_patience = 3}));
  Guard copy = guard;
  resumed.restore(copy.save());
  CHECK(resumed.save() == copy.save());
  Guard other(sl::SpikeDampener<double>{}, sl::EarlyStopper<double>({.patience = INT_MAX, .non_finite_patience = 4}));
  CHECK_THROWS_WITH(other.restore(guard.save()),
                    Catch::Matchers::Contains("saved with non_finite_patience = 3, this one has 4"));
  sl::EarlyStopper<double> minus_one({.patience = 2, .non_finite_patience = -1});
  sl::EarlyStopper<double> minus_two({.patience = 2, .non_finite_patience = -2});
  minus_one.update(1.0);
  sl::restore_state(minus_two, sl::save_state(minus_one));
  CHECK(sl::save_state(minus_two) == sl::save_state(minus_one));
  // A state whose run has reached the limit without a stop is not one this class writes.
  sl::Stabilizer<sl::SpikeDampener<double>, sl::EarlyStopper<double>> two(
      sl::SpikeDampener<double>{}, sl::EarlyStopper<double>({.patience = INT_MAX, .non_finite_patience = 2}));
  for (int i = 0; i < 12; ++i) two.update(2.0, 1.0);
  two.update(nan, 1.0);  // a run of 1
  const std::string text = two.save();
  auto fresh = two;
  CHECK_THROWS_WITH(fresh.restore(with_value(text, "non_finite_run", "2")),
                    Catch::Matchers::Contains("non_finite_run = 2 reached the non-finite limit (2)"));
}
