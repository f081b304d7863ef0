// EarlyStopper against PyTorch Lightning's EarlyStopping._evaluate_stopping_criteria, worked by
// hand. Lightning, min mode: improved iff current < best - |min_delta|; else wait_count += 1 and
// stop iff wait_count >= patience. Check order: non-finite, stopping_threshold,
// divergence_threshold, improvement, wait.
#include <catch2/catch.hpp>

#include <charconv>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <steadyloss/stability/early_stopper.hpp>
#include <steadyloss/stability/stabilizer.hpp>

#include "early_stopper_helpers.hpp"

namespace sl = steadyloss;

namespace {
using early_stopper_helpers::stop_step;
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
  // Settings are rounded to the value type once; one that overflows it is rejected, naming it.
  CHECK_THROWS_WITH(sl::EarlyStopper<float>({.baseline = 1e300}), Catch::Contains("baseline"));
  CHECK_THROWS_WITH(sl::EarlyStopper<float>({.stopping_threshold = -1e39}), Catch::Contains("stopping_threshold"));
  CHECK_THROWS_WITH(sl::EarlyStopper<double>({.divergence_threshold = INFINITY}),
                    Catch::Contains("divergence_threshold"));
  CHECK_THROWS_WITH(sl::EarlyStopper<float>({.min_delta = 1e39}), Catch::Contains("min_delta"));
  CHECK_THROWS_WITH(sl::EarlyStopper<double>({.baseline_gates_wait = true}), Catch::Contains("baseline_gates_wait"));
  CHECK_NOTHROW(sl::EarlyStopper<double>({.baseline = 1e300}));
}

// Expected stop steps below come from Lightning's _evaluate_stopping_criteria replayed with
// LibTorch 1.13 ops on 0-d float32 / float64 tensors (current - min_delta against best with
// torch.lt/gt, thresholds passed as Python-float scalars), not from this code:
//   [1, .9, .9, .9], min_delta .1, patience 1:  f32 stops at 1 (fl32(0.9f + 0.1f) == 1), f64 at 1
//   min, stopping_threshold .7, [1, .7, .7]:    no stop in f32 (0.7f < 0.7f) nor f64
//   max, stopping_threshold .1, [0, .1, .1]:    no stop in f32 nor f64
//   min, divergence_threshold .1, [.05, .1, .1]: no stop
//   max, divergence_threshold .7, [1, .7, .7]:  no stop
//   [.9, .7, .7], min_delta .2, patience 1:     f32 stops at 1; f64 improves at 1
//                                               (0.7 + 0.2 = 0.8999999999999999 < 0.9), stops at 2
TEMPLATE_TEST_CASE("EarlyStopper breaks ties as Lightning does, in the value type", "[stability][early_stop]", float,
                   double) {
  using T = TestType;
  const bool is_float = std::is_same_v<T, float>;
  SECTION("improvement by exactly min_delta is no improvement") {
    sl::EarlyStopper<T> min_stopper({.patience = 1, .min_delta = 0.1});
    CHECK(stop_step(min_stopper, {1, 0.9, 0.9, 0.9}) == 1);
    CHECK(min_stopper.best() == T(1));
    sl::EarlyStopper<T> max_stopper({.patience = 1, .min_delta = 0.1, .mode = sl::stop_mode::max});
    CHECK(stop_step(max_stopper, {-1, -0.9, -0.9, -0.9}) == 1);
    sl::EarlyStopper<T> sum_form({.patience = 1, .min_delta = 0.2});
    CHECK(stop_step(sum_form, {0.9, 0.7, 0.7}) == (is_float ? 1 : 2));
  }
  SECTION("a value equal to a threshold does not stop") {
    sl::EarlyStopper<T> min_stop({.patience = 5, .stopping_threshold = 0.7});
    CHECK(stop_step(min_stop, {1, 0.7, 0.7}) == -1);
    sl::EarlyStopper<T> max_stop({.patience = 5, .mode = sl::stop_mode::max, .stopping_threshold = 0.1});
    CHECK(stop_step(max_stop, {0, 0.1, 0.1}) == -1);
    sl::EarlyStopper<T> min_div({.patience = 5, .divergence_threshold = 0.1});
    CHECK(stop_step(min_div, {0.05, 0.1, 0.1}) == -1);
    sl::EarlyStopper<T> max_div({.patience = 5, .mode = sl::stop_mode::max, .divergence_threshold = 0.7});
    CHECK(stop_step(max_div, {1, 0.7, 0.7}) == -1);
    // One step beyond in the value type does stop.
    sl::EarlyStopper<T> beyond({.patience = 5, .stopping_threshold = 0.7});
    CHECK(stop_step(beyond, {1, static_cast<double>(std::nextafter(T(0.7), T(0)))}) == 1);
  }
  SECTION("a value equal to the baseline (starting best) does not improve on it") {
    sl::EarlyStopper<T> stopper({.patience = 2, .min_delta = 0.0, .baseline = 0.7});
    CHECK_FALSE(stopper.update(T(0.7)).improved);
    CHECK(stopper.best_step() == -1);
  }
}

TEST_CASE("EarlyStopper inside a float Stabilizer compares the value its report shows", "[stability][early_stop]") {
  // The pipeline carries doubles; the stopper rounds the monitored value to float first, so the
  // tie of [1, 0.9f, 0.9f] with min_delta 0.1 stops at step 1, as a standalone float stopper does.
  sl::Stabilizer<sl::EarlyStopper<float, sl::monitor::loss>> guard(
      sl::EarlyStopper<float, sl::monitor::loss>({.patience = 1, .min_delta = 0.1}));
  CHECK_FALSE(guard.update(1.0f, 1.0f).should_stop);
  CHECK(guard.update(0.9f, 1.0f).should_stop);
}

TEST_CASE("EarlyStopper relative_min_delta: ignite's expression, mirrored for negative best", "[stability][early_stop]") {
  // ignite (threshold_mode="rel", min): no improvement iff score >= best * (1 - threshold).
  // 0.1 * (1 - 0.1) = 0.1 * 0.9 = 0.09000000000000001 in double, so 0.09 improves; the margin
  // form 0.1 - 0.1 * 0.1 = 0.09 would not.
  sl::EarlyStopper<double> stopper({.patience = 1, .min_delta = 0.1, .relative_min_delta = true});
  CHECK(stopper.update(0.1).improved);
  CHECK(stopper.update(0.09).improved);
  // Max mode: ignite's test_state_dict_with_mode: 2.2 <= 2.0 * 1.1 is no improvement.
  sl::EarlyStopper<double> max_stopper(
      {.patience = 2, .min_delta = 0.1, .mode = sl::stop_mode::max, .relative_min_delta = true});
  CHECK(max_stopper.update(2.0).improved);
  CHECK_FALSE(max_stopper.update(2.2).improved);
  CHECK(max_stopper.update(2.21).improved);
  // Negative best (our rule; ignite's best * (1 - 0.1) = -9 would accept the worse -9.5): the
  // bar is -10 * 1.1 = -11.
  sl::EarlyStopper<double> negative({.patience = 5, .min_delta = 0.1, .relative_min_delta = true});
  CHECK(negative.update(-10.0).improved);
  CHECK_FALSE(negative.update(-9.5).improved);
  CHECK_FALSE(negative.update(-11.0).improved);
  CHECK(negative.update(-11.5).improved);
  sl::EarlyStopper<double> negative_max(
      {.patience = 5, .min_delta = 0.1, .mode = sl::stop_mode::max, .relative_min_delta = true});
  CHECK(negative_max.update(-10.0).improved);
  CHECK_FALSE(negative_max.update(-9.0).improved);  // bar -10 * 0.9 = -9
  CHECK(negative_max.update(-8.9).improved);
}

TEST_CASE("EarlyStopper cumulative_delta = false: ignite's default", "[stability][early_stop]") {
  // ignite, no improvement: if not cumulative, best = min(score, best) (min mode); counter += 1.
  // [1.0, 0.95, 0.9, 0.85], min_delta 0.1, patience 3, min mode:
  //   cumulative (Lightning): best 1.0; 0.95, 0.9 (0.9 + 0.1 < 1.0? no), 0.85 improves (0.95 < 1).
  //   not cumulative: best 1.0; 0.95 -> best 0.95, wait 1; 0.9 -> best 0.9, wait 2;
  //   0.85 + 0.1 < 0.9? no -> best 0.85, wait 3: stop at 3.
  sl::EarlyStopper<double> lightning({.patience = 3, .min_delta = 0.1});
  CHECK(stop_step(lightning, {1.0, 0.95, 0.9, 0.85}) == -1);
  CHECK(lightning.best() == 0.85);
  CHECK(lightning.wait() == 0);
  sl::EarlyStopper<double> ignite({.patience = 3, .min_delta = 0.1, .cumulative_delta = false});
  const std::vector<double> values{1.0, 0.95, 0.9, 0.85};
  const std::vector<long long> wait{0, 1, 2, 3};
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto d = ignite.update(values[i]);
    CHECK(d.improved);  // each is a new best value, the weights to keep
    CHECK(d.best == values[i]);
    CHECK(d.wait == wait[i]);
    CHECK(d.should_stop == (i == 3));
  }
  CHECK(ignite.best_step() == 3);
  // A value that is not better at all leaves best alone.
  sl::EarlyStopper<double> flat({.patience = 5, .min_delta = 0.1, .cumulative_delta = false});
  CHECK(flat.update(1.0).improved);
  CHECK_FALSE(flat.update(1.0).improved);
  CHECK_FALSE(flat.update(1.05).improved);
  CHECK(flat.best_step() == 0);
}

TEST_CASE("EarlyStopper baseline_gates_wait: Keras 3's baseline rule", "[stability][early_stop]") {
  // Keras: wait += 1; if current - min_delta improves on best: best = current, best_epoch = epoch,
  // and wait = 0 only if it also improves on the baseline (then return, no stop check);
  // otherwise stop if wait >= patience.
  SECTION("best follows the values even when none beats the baseline") {
    // Keras' test_early_stopping_final_weights_when_restoring_model_weights, second case:
    // baseline 0.5, patience 5, [0.9, 0.8, 0.7, 0.71, 0.72, 0.73]: 5 epochs run, the weights
    // of epoch 2 are restored.
    sl::EarlyStopper<double> keras({.patience = 5, .min_delta = 0.0, .baseline = 0.5, .baseline_gates_wait = true});
    CHECK(stop_step(keras, {0.9, 0.8, 0.7, 0.71, 0.72, 0.73}) == 4);
    CHECK(keras.best_step() == 2);
    CHECK(keras.best() == 0.7);
    // Baseline as the starting best: the same stop, but no best to restore.
    sl::EarlyStopper<double> start({.patience = 5, .min_delta = 0.0, .baseline = 0.5});
    CHECK(stop_step(start, {0.9, 0.8, 0.7, 0.71, 0.72, 0.73}) == 4);
    CHECK(start.best_step() == -1);
  }
  SECTION("improvements short of the baseline count toward patience but do not stop") {
    sl::EarlyStopper<double> keras({.patience = 2, .min_delta = 0.0, .baseline = 0.5, .baseline_gates_wait = true});
    const std::vector<double> values{0.9, 0.8, 0.7, 0.6, 0.65};
    const std::vector<long long> wait{1, 2, 3, 4, 5};
    for (std::size_t i = 0; i < values.size(); ++i) {
      const auto d = keras.update(values[i]);
      CHECK(d.wait == wait[i]);
      CHECK(d.improved == (i < 4));
      CHECK(d.should_stop == (i == 4));
    }
    // Beating the baseline resets the count.
    sl::EarlyStopper<double> beats({.patience = 2, .min_delta = 0.0, .baseline = 0.5, .baseline_gates_wait = true});
    CHECK(stop_step(beats, {0.9, 0.4, 0.45, 0.3, 0.35, 0.36}) == 5);
    CHECK(beats.best_step() == 3);
  }
  SECTION("min_delta applies to the baseline too") {
    sl::EarlyStopper<double> keras({.patience = 3, .min_delta = 0.1, .baseline = 0.5, .baseline_gates_wait = true});
    CHECK(keras.update(0.45).wait == 1);  // improves on inf, not on 0.5 by more than 0.1
    CHECK(keras.update(0.3).wait == 0);   // 0.3 + 0.1 < 0.45 and < 0.5
  }
}

namespace {

std::string reseal(std::string body) {
  body = body.substr(0, body.rfind("checksum "));
  char hex[17];
  const auto r = std::to_chars(hex, hex + 16, sl::detail::fnv1a(body), 16);
  body.append("checksum ");
  body.append(hex, r.ptr);
  body.push_back('\n');
  return body;
}

// The state with the value of `key` replaced, checksum recomputed.
std::string with_field(const std::string& state, const std::string& key, const std::string& value) {
  const auto at = state.find("\n" + key + " ");
  REQUIRE(at != std::string::npos);
  const auto start = at + 2 + key.size();
  std::string edited = state;
  edited.replace(start, state.find('\n', start) - start, value);
  return reseal(edited);
}

template <class Stopper>
void check_rejected(const std::string& text, const std::string& fragment, Stopper target) {
  const std::string before = sl::save_state(target);
  try {
    sl::restore_state(target, text);
    FAIL_CHECK("accepted: " << fragment);
  } catch (const sl::invalid_input& e) {
    CHECK_THAT(e.what(), Catch::Contains(fragment));
  }
  CHECK(sl::save_state(target) == before);
}

}  // namespace

TEST_CASE("EarlyStopper state: every deciding setting is saved and must match", "[stability][early_stop][state]") {
  using S = sl::EarlyStopper<double>;
  const S::config base{.patience = 3, .min_delta = 0.1, .baseline = 2.0, .stopping_threshold = 0.01,
                       .divergence_threshold = 100.0, .start_from = 1};
  S saved(base);
  for (double x : {5.0, 1.5, 1.45}) saved.update(x);
  const std::string text = sl::save_state(saved);
  S same(base);
  sl::restore_state(same, text);
  CHECK(sl::save_state(same) == text);
  CHECK(same.wait() == 1);

  auto differing = [&](const std::string& key, auto edit) {
    S::config c = base;
    edit(c);
    check_rejected(text, "saved with " + key + " = ", S(c));
  };
  differing("patience", [](S::config& c) { c.patience = 4; });
  differing("min_delta", [](S::config& c) { c.min_delta = 0.2; });
  differing("mode", [](S::config& c) { c.mode = sl::stop_mode::max; });
  differing("baseline", [](S::config& c) { c.baseline = 3.0; });
  differing("baseline_gates_wait", [](S::config& c) { c.baseline_gates_wait = true; });
  differing("stopping_threshold", [](S::config& c) { c.stopping_threshold = 0.02; });
  differing("divergence_threshold", [](S::config& c) { c.divergence_threshold = std::nan(""); });
  differing("stop_on_non_finite", [](S::config& c) { c.stop_on_non_finite = false; });
  differing("start_from", [](S::config& c) { c.start_from = 0; });
  differing("relative_min_delta", [](S::config& c) { c.relative_min_delta = true; });
  differing("cumulative_delta", [](S::config& c) { c.cumulative_delta = false; });
  // The precision decides ties, so a float stopper's state does not load into a double one.
  sl::EarlyStopper<float> as_float({.patience = 3, .min_delta = 0.1, .baseline = 2.0, .stopping_threshold = 0.01,
                                    .divergence_threshold = 100.0, .start_from = 1});
  check_rejected(text, "saved with value_digits = 53 (double), this one has 24 (float)", as_float);
}

TEST_CASE("EarlyStopper state: out-of-range and inconsistent fields are rejected by name",
          "[stability][early_stop][state]") {
  using S = sl::EarlyStopper<double>;
  const S::config c{.patience = 3, .min_delta = 0.1, .start_from = 1};
  S stopper(c);
  for (double x : {9.0, 5.0, 4.0, 4.5}) stopper.update(x);  // step 4, best 4 at step 2, wait 1
  const std::string good = sl::save_state(stopper);
  {
    S fresh(c);
    sl::restore_state(fresh, good);
    CHECK(fresh.wait() == 1);
  }
  const S target(c);
  check_rejected(with_field(good, "step", std::to_string(LLONG_MAX)), "EarlyStopper step = ", target);  // the next ++ overflows
  check_rejected(with_field(good, "step", "-1"), "EarlyStopper step = ", target);
  check_rejected(with_field(good, "best", "inf"), "EarlyStopper best = ", target);
  check_rejected(with_field(good, "best", "-inf"), "EarlyStopper best = ", target);
  check_rejected(with_field(good, "best", "nan"), "EarlyStopper best = ", target);
  check_rejected(with_field(good, "best_step", "4"), "EarlyStopper best_step = ", target);
  check_rejected(with_field(good, "best_step", "0"), "EarlyStopper best_step = ", target);  // before start_from
  check_rejected(with_field(with_field(good, "best_step", "-1"), "best", "0x1p+2"), "EarlyStopper best = ", target);
  check_rejected(with_field(good, "wait", "1000000"), "EarlyStopper wait = ", target);
  check_rejected(with_field(good, "wait", "3"), "EarlyStopper wait = ", target);  // patience reached without a stop
  check_rejected(with_field(good, "wait", "-1"), "EarlyStopper wait = ", target);
  check_rejected(with_field(good, "improved", "1"), "EarlyStopper improved = ", target);
  check_rejected(with_field(good, "stopped", "1"), "EarlyStopper stopped = ", target);
  check_rejected(with_field(good, "stop_step", "2"), "EarlyStopper stop_step = ", target);
  check_rejected(with_field(good, "reason", "9"), "EarlyStopper reason = ", target);
  check_rejected(with_field(good, "non_finite_run", "4"), "EarlyStopper non_finite_run = ", target);
  check_rejected(with_field(good, "non_finite_run", "-2"), "EarlyStopper non_finite_run = ", target);
  // A stop for a reason this configuration cannot produce.
  const std::string stopped_by_threshold =
      with_field(with_field(with_field(good, "stopped", "1"), "reason", "2"), "stop_step", "3");
  check_rejected(stopped_by_threshold, "stopping_threshold", target);
  const std::string stopped_by_patience =
      with_field(with_field(with_field(good, "stopped", "1"), "reason", "4"), "stop_step", "3");
  check_rejected(stopped_by_patience, "EarlyStopper wait = ", target);
  // With cumulative_delta on and baseline_gates_wait off an improvement resets the wait, so
  // wait counts the steps since best_step at most.
  {
    S improving(c);
    for (double x : {9.0, 5.0, 4.0, 4.5, 3.0}) improving.update(x);  // step 5, best 3 at step 4, wait 0
    const std::string last = sl::save_state(improving);
    check_rejected(with_field(last, "wait", "1"), "EarlyStopper wait = 1 must be 0 when improved = 1", target);
    // step 4, best_step 2: at most 1 step since best_step
    check_rejected(with_field(good, "wait", "2"), "EarlyStopper wait = 2 must be at most step - 1 - best_step (1)",
                   target);
  }
  // In the other modes a best step need not reset the wait: those states stay valid.
  {
    S ignite({.patience = 5, .min_delta = 0.05, .cumulative_delta = false});
    ignite.update(1.0);
    REQUIRE(ignite.update(0.99).improved);  // best, without improving by min_delta
    REQUIRE(ignite.wait() == 1);
    S resumed({.patience = 5, .min_delta = 0.05, .cumulative_delta = false});
    sl::restore_state(resumed, sl::save_state(ignite));
    CHECK(sl::save_state(resumed) == sl::save_state(ignite));
    const S::config keras_config{.patience = 5, .min_delta = 0.0, .baseline = 0.5, .baseline_gates_wait = true};
    S keras(keras_config);
    for (double x : {1.0, 0.9}) keras.update(x);  // better, but not better than the baseline: counted
    REQUIRE(keras.wait() == 2);
    S resumed_keras(keras_config);
    sl::restore_state(resumed_keras, sl::save_state(keras));
    CHECK(sl::save_state(resumed_keras) == sl::save_state(keras));
  }
  // best must be a value of the stopper's type.
  sl::EarlyStopper<float> f({.patience = 3});
  f.update(1.0f);
  check_rejected(with_field(sl::save_state(f), "best", "0x1.000001p+0"), "EarlyStopper best = ", f);
}

TEST_CASE("EarlyStopper state: every state a run writes loads and resumes identically",
          "[stability][early_stop][state]") {
  // Random configurations and sequences (a fixed LCG), observed, skipped and non-finite steps
  // mixed, saved after every step: each state must pass validation and resume bit for bit.
  std::uint64_t seed = 7;
  auto next = [&] {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(seed >> 11) * 0x1.0p-53;
  };
  auto step_once = [&](auto& stopper, double u, double x) {
    sl::step_context<0> ctx;
    if (u < 0.1) {
      ctx.skipped = true;
      ctx.finite = u < 0.07;
      stopper.on_step(ctx);
    } else if (u < 0.13) {
      stopper.update(static_cast<typename std::decay_t<decltype(stopper)>::value_type>(
          u < 0.115 ? std::nan("") : -INFINITY));
    } else if (u < 0.16) {
      stopper.skip();
    } else {
      stopper.update(static_cast<typename std::decay_t<decltype(stopper)>::value_type>(x));
    }
  };
  auto run = [&](auto tag) {
    using T = decltype(tag);
    for (int trial = 0; trial < 300; ++trial) {
      typename sl::EarlyStopper<T>::config c;
      c.patience = static_cast<int>(next() * 4);
      c.min_delta = next() < 0.3 ? 0.0 : 0.05 * next();
      c.mode = next() < 0.5 ? sl::stop_mode::min : sl::stop_mode::max;
      const double sign = c.mode == sl::stop_mode::min ? 1.0 : -1.0;
      if (next() < 0.4) {
        c.baseline = sign * 0.8;
        c.baseline_gates_wait = next() < 0.5;
      }
      if (next() < 0.2) c.stopping_threshold = sign * 0.05;
      if (next() < 0.2) c.divergence_threshold = sign * 1.5;
      c.stop_on_non_finite = next() < 0.6;
      c.start_from = next() < 0.3 ? 3 : 0;
      c.relative_min_delta = next() < 0.3;
      c.cumulative_delta = next() < 0.6;
      sl::EarlyStopper<T> live(c);
      double level = 1.0;
      for (int i = 0; i < 40; ++i) {
        level *= 0.9 + 0.15 * next();
        const double u = next();
        step_once(live, u, sign * level);
        const std::string text = sl::save_state(live);
        sl::EarlyStopper<T> resumed(c);
        try {
          sl::restore_state(resumed, text);
        } catch (const sl::invalid_input& e) {
          FAIL("trial " << trial << " step " << i << ": " << e.what() << "\n" << text);
        }
        REQUIRE(sl::save_state(resumed) == text);
      }
    }
  };
  run(0.0);
  run(0.0f);
}

