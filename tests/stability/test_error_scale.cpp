// ErrorScale (stability/error_scale.hpp) and sl::apply: the debiased EMA worked by hand, which steps
// it observes, its settings and state checks, bit-exact resume of a training loop whose AdaptiveHuber
// follows it, and the count-weighted values of a multi-rank pipeline.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <steadyloss/stability/stability.hpp>
#include <steadyloss/steadyloss.hpp>

#include "state_helpers.hpp"

namespace sl = steadyloss;
using Catch::Matchers::Contains;

namespace {

template <class T>
constexpr double relative = sizeof(T) == 4 ? 1e-6 : 1e-13;

template <class T, std::size_t N>
bool all_nan(const std::array<T, N>& values) {
  for (const T v : values)
    if (!std::isnan(v)) return false;
  return true;
}

}  // namespace

TEMPLATE_TEST_CASE("ErrorScale is the debiased EMA of each term's value", "[stability][error_scale]", float, double) {
  using T = TestType;
  // e_t = 0.9 e_{t-1} + 0.1 v_t, scale = e_t / (1 - 0.9^t), worked by hand:
  //   term 0: values 2, 4, 3:      e = 0.2, 0.58, 0.822;    scales 2, 0.58 / 0.19, 0.822 / 0.271
  //   term 1: values 0.5, 1, 0.25: e = 0.05, 0.145, 0.1555; scales 0.5, 0.145 / 0.19, 0.1555 / 0.271
  const std::array<std::array<T, 2>, 3> values{{{T(2), T(0.5)}, {T(4), T(1)}, {T(3), T(0.25)}}};
  const std::array<std::array<double, 2>, 3> want{{{2.0, 0.5}, {0.58 / 0.19, 0.145 / 0.19}, {0.822 / 0.271, 0.1555 / 0.271}}};

  sl::ErrorScale<2, T> alone({.factor = 0.9});
  CHECK(alone.scales() == std::array<T, 2>{T(1), T(1)});  // `initial` before the first observation
  CHECK(alone.steps() == 0);
  sl::Stabilizer<sl::ErrorScale<2, T>> guard;  // the default factor is 0.9
  CHECK(guard.error_scales() == std::array<T, 2>{T(1), T(1)});
  for (std::size_t step = 0; step < 3; ++step) {
    INFO("step " << step);
    const auto scales = alone.update(std::span<const T>(values[step]));
    const auto report = guard.update(values[step][0] + values[step][1], std::span<const T>(values[step]), T(1));
    for (std::size_t i = 0; i < 2; ++i) {
      CHECK(scales[i] == Approx(want[step][i]).epsilon(relative<T>));
      CHECK(report.error_scales[i] == Approx(want[step][i]).epsilon(relative<T>));
    }
    CHECK(alone.scales() == scales);
    CHECK(guard.error_scales() == report.error_scales);
    CHECK(alone.steps() == static_cast<long long>(step + 1));
  }

  // factor 0: the scale is the last value.
  sl::ErrorScale<2, T> memoryless({.factor = 0.0});
  for (const auto& v : values) CHECK(memoryless.update(std::span<const T>(v)) == v);
}

TEMPLATE_TEST_CASE("ErrorScale starts at `initial`, and a term that was always 0 stays there", "[stability][error_scale]",
                   float, double) {
  using T = TestType;
  sl::ErrorScale<2, T> scale({.factor = 0.5, .initial = 0.3});
  CHECK(scale.scales() == std::array<T, 2>{T(0.3), T(0.3)});
  const std::array<T, 2> values{T(0), T(2)};
  for (int i = 0; i < 5; ++i) scale.update(std::span<const T>(values));
  CHECK(scale.scales()[0] == T(0.3));
  CHECK(scale.scales()[1] == Approx(2.0).epsilon(relative<T>));

  // Through a pipeline and sl::apply(loss, guard) before any step: the loss gets `initial`.
  sl::Stabilizer<sl::ErrorScale<2, T>> guard(sl::ErrorScale<2, T>({.initial = 0.3}));
  auto loss = sl::compose(sl::term(sl::AdaptiveHuber<T>{}, T(1)), sl::term(sl::L1<T>{}, T(1)));
  sl::apply(loss, guard);
  CHECK(loss.template term<0>().scale == T(0.3));
  CHECK(loss.multipliers() == std::array<T, 2>{T(1), T(1)});
}

TEST_CASE("ErrorScale observes only clean steps: non-finite, skipped and dampened ones leave it alone",
          "[stability][error_scale]") {
  using values_t = std::array<double, 2>;
  // factor 0.5; the SpikeDampener (window 4, threshold 2, dampen) listed before it.
  sl::Stabilizer<sl::SpikeDampener<double>, sl::ErrorScale<2, double>> guard(
      sl::SpikeDampener<double>({.window = 4, .detector = {.threshold = 2.0}}), sl::ErrorScale<2, double>({.factor = 0.5}));
  auto step = [&](double total, values_t values, double grad_norm = 1.0) {
    return guard.update(total, std::span<const double>(values), grad_norm);
  };
  const auto& scale = guard.get<sl::ErrorScale<2, double>>();
  for (int i = 0; i < 4; ++i) step(1.5, {1.0, 0.5});  // the dampener's warm-up: observed
  REQUIRE(scale.steps() == 4);
  const auto settled = guard.error_scales();
  CHECK(settled[0] == Approx(1.0));
  CHECK(settled[1] == Approx(0.5));

  // A spike (6 > 2 x 1.5), dampened to scale 0.5: the batch that caused it is not observed.
  auto r = step(6.0, {5.5, 0.5});
  REQUIRE(r.is_spike);
  REQUIRE(r.scale == Approx(0.5));
  CHECK(scale.steps() == 4);
  CHECK(r.error_scales == settled);
  // Non-finite steps: the total, one term, the gradient norm.
  r = step(std::nan(""), {1.0, 0.5});
  CHECK((r.non_finite && r.skipped));
  CHECK(step(1.5, {std::nan(""), 0.5}).non_finite);
  CHECK(step(1.5, {1.0, std::numeric_limits<double>::infinity()}).non_finite);
  CHECK(step(1.5, {1.0, 0.5}, std::numeric_limits<double>::infinity()).non_finite);
  CHECK(scale.steps() == 4);
  CHECK(guard.error_scales() == settled);
  // A negative per-term value is no mean of losses: not observed either.
  step(1.5, {-1.0, 0.5});
  CHECK(scale.steps() == 4);
  // The next clean step is: e5 = 0.5 (1 - 1/16) + 0.5 x 2 = 1.46875, debiased by 1 - 1/32.
  r = step(1.5, {2.0, 0.5});
  CHECK(scale.steps() == 5);
  CHECK(r.error_scales[0] == Approx(1.46875 / (1 - 1.0 / 32)).epsilon(1e-13));
  CHECK(r.error_scales[1] == Approx(0.5).epsilon(1e-13));

  // Skip mode: a skipped spike is not observed.
  sl::Stabilizer<sl::SpikeDampener<double>, sl::ErrorScale<2, double>> skipping(
      sl::SpikeDampener<double>({.window = 4, .mode = sl::spike_mode::skip, .detector = {.threshold = 2.0}}),
      sl::ErrorScale<2, double>{});
  const values_t clean{1.0, 0.5}, spiked{5.5, 0.5};
  for (int i = 0; i < 4; ++i) skipping.update(1.5, std::span<const double>(clean), 1.0);
  r = skipping.update(6.0, std::span<const double>(spiked), 1.0);
  CHECK((r.is_spike && r.skipped && r.scale == 0.0));
  CHECK(skipping.get<sl::ErrorScale<2, double>>().steps() == 4);
  // Report mode changes nothing in the step (scale 1): the step is observed.
  sl::Stabilizer<sl::SpikeDampener<double>, sl::ErrorScale<2, double>> reporting(
      sl::SpikeDampener<double>({.window = 4, .mode = sl::spike_mode::report, .detector = {.threshold = 2.0}}),
      sl::ErrorScale<2, double>{});
  for (int i = 0; i < 4; ++i) reporting.update(1.5, std::span<const double>(clean), 1.0);
  r = reporting.update(6.0, std::span<const double>(spiked), 1.0);
  CHECK((r.is_spike && r.scale == 1.0));
  CHECK(reporting.get<sl::ErrorScale<2, double>>().steps() == 5);

  // Without a SpikeDampener a non-finite step is not skipped, and still not observed.
  sl::Stabilizer<sl::ErrorScale<2, double>> bare;
  bare.update(1.5, std::span<const double>(clean), 1.0);
  const values_t broken{std::nan(""), 0.5};
  r = bare.update(std::nan(""), std::span<const double>(broken), 1.0);
  CHECK((r.non_finite && !r.skipped));
  CHECK(bare.get<sl::ErrorScale<2, double>>().steps() == 1);
  CHECK(r.error_scales == values_t{1.0, 0.5});
}

TEST_CASE("ErrorScale's settings are checked, naming the setting and the value", "[stability][error_scale][errors]") {
  using scale_t = sl::ErrorScale<2, double>;
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  for (const double factor : {-0.1, 1.0, 1.5, nan, inf}) {
    INFO("factor " << factor);
    CHECK_THROWS_AS(scale_t({.factor = factor}), sl::invalid_parameter);
  }
  CHECK_THROWS_WITH(scale_t({.factor = 1.0}), Contains("ErrorScale: factor must be in [0, 1), got 1"));
  CHECK_THROWS_WITH(scale_t({.factor = -0.1}), Contains("got -0.1"));
  for (const double initial : {0.0, -1.0, nan, inf, -inf}) {
    INFO("initial " << initial);
    CHECK_THROWS_AS(scale_t({.initial = initial}), sl::invalid_parameter);
  }
  CHECK_THROWS_WITH(scale_t({.initial = 0.0}), Contains("ErrorScale: initial must be finite and > 0, got 0"));
  CHECK_NOTHROW(scale_t({.factor = 0.0, .initial = 1e-300}));
  CHECK_NOTHROW(scale_t({.factor = std::nextafter(1.0, 0.0)}));
  scale_t scale;
  const std::array<double, 3> three{1, 2, 3};
  CHECK_THROWS_AS(scale.update(three), sl::shape_mismatch);
  CHECK_THROWS_WITH(scale.update(three), Contains("values must have 2 entries, got 3"));
  CHECK(scale.steps() == 0);
}

TEMPLATE_TEST_CASE("Without an ErrorScale the report's error_scales are NaN and sl::apply keeps the term's scale",
                   "[stability][error_scale][apply]", float, double) {
  using T = TestType;
  sl::Stabilizer<sl::AdaptiveWeight<2, T>> guard(sl::AdaptiveWeight<2, T>({.warmup = 1}));
  static_assert(!decltype(guard)::has_error_scale);
  auto loss = sl::compose(sl::term(sl::AdaptiveHuber<T>{.k = T(2), .scale = T(0.5)}, T(35)), sl::term(sl::L1<T>{}, T(1)));
  const std::vector<T> pred{T(0.5), T(-1), T(2)}, target{T(0), T(0), T(0)};
  sl::step_report<T, 2> report;
  for (int i = 0; i < 5; ++i) {
    report = guard.update(loss.evaluate(sl::inputs(pred, target), sl::inputs(pred, target)), T(1));
    CHECK(all_nan(report.error_scales));
    sl::apply(loss, report);
    CHECK(loss.template term<0>().scale == T(0.5));
    CHECK(loss.multipliers() == report.weights);
  }
  CHECK(report.weights[0] < T(1));  // the multipliers did move: apply did its other job
  CHECK(all_nan(guard.error_scales()));
  loss.template term<0>().scale = T(0.75);
  sl::apply(loss, guard);
  CHECK(loss.template term<0>().scale == T(0.75));
  CHECK(loss.multipliers() == guard.multipliers());

  // A term that follows no error scale ignores ErrorScale's estimate for it.
  sl::Stabilizer<sl::ErrorScale<2, T>> scaled;
  auto mixed = sl::compose(sl::term(sl::L1<T>{}, T(1)), sl::term(sl::AdaptiveHuber<T>{}, T(1)));
  const std::array<T, 2> values{T(3), T(0.25)};
  const auto r = scaled.update(T(3.25), std::span<const T>(values), T(1));
  sl::apply(mixed, r);
  CHECK(mixed.template term<1>().scale == T(0.25));
}

TEMPLATE_TEST_CASE("sl::apply rejects a summed AdaptiveHuber and a scale whose delta is subnormal, changing no term",
                   "[stability][error_scale][apply][errors]", float, double) {
  using T = TestType;
  sl::Stabilizer<sl::ErrorScale<2, T>> guard;
  const std::array<T, 2> values{T(2), T(3)};
  const auto report = guard.update(T(5), std::span<const T>(values), T(1));

  // Term 1 would take its new scale, term 0 is summed: the scale is a mean value's, so neither changes.
  auto summed = sl::compose(sl::term(sl::AdaptiveHuber<T>{.scale = T(0.5)}, T(1), sl::reduction::sum),
                            sl::term(sl::AdaptiveHuber<T>{.scale = T(0.25)}, T(1)));
  CHECK_THROWS_AS(sl::apply(summed, report), sl::invalid_parameter);
  CHECK_THROWS_WITH(sl::apply(summed, report),
                    Contains("term 0 (AdaptiveHuber) follows its own mean value; give it reduction::mean"));
  CHECK_THROWS_AS(sl::apply(summed, guard), sl::invalid_parameter);
  CHECK(summed.template term<0>().scale == T(0.5));
  CHECK(summed.template term<1>().scale == T(0.25));
  // The reverse order: term 0 would be set, term 1 is summed.
  auto summed_last = sl::compose(sl::term(sl::AdaptiveHuber<T>{.scale = T(0.5)}, T(1)),
                                 sl::term(sl::AdaptiveHuber<T>{.scale = T(0.25)}, T(1), sl::reduction::sum));
  CHECK_THROWS_WITH(sl::apply(summed_last, report), Contains("term 1 (AdaptiveHuber)"));
  CHECK(summed_last.template term<0>().scale == T(0.5));
  CHECK(summed_last.template term<1>().scale == T(0.25));
  // A summed term that follows no scale is fine.
  auto summed_l1 = sl::compose(sl::term(sl::L1<T>{}, T(1), sl::reduction::sum), sl::term(sl::AdaptiveHuber<T>{}, T(1)));
  CHECK_NOTHROW(sl::apply(summed_l1, report));
  CHECK(summed_l1.template term<1>().scale == Approx(3.0).epsilon(relative<T>));

  // A term's mean value so small that k x scale is subnormal in T: 1 / delta would be Inf.
  const T tiny = std::numeric_limits<T>::min() / T(8);  // subnormal, finite, >= 0: observed
  sl::Stabilizer<sl::ErrorScale<2, T>> small;
  const std::array<T, 2> small_values{T(1), tiny};
  const auto small_report = small.update(T(1), std::span<const T>(small_values), T(1));
  REQUIRE(small_report.error_scales[1] > T(0));
  REQUIRE(T(3.88) * small_report.error_scales[1] < std::numeric_limits<T>::min());
  auto loss = sl::compose(sl::term(sl::AdaptiveHuber<T>{.scale = T(0.5)}, T(1)),
                          sl::term(sl::AdaptiveHuber<T>{.scale = T(0.25)}, T(1)));
  CHECK_THROWS_AS(sl::apply(loss, small_report), sl::invalid_parameter);
  CHECK_THROWS_WITH(sl::apply(loss, small), Contains("finite normal number"));
  CHECK(loss.template term<0>().scale == T(0.5));  // term 0's new scale (1) was valid: not set either
  CHECK(loss.template term<1>().scale == T(0.25));
}

TEST_CASE("sl::apply changes nothing when it throws, multipliers included",
          "[stability][error_scale][apply][errors]") {
  // Regression: the multipliers were set before the error scales were checked, so a rejected
  // scale left the loss half-updated (the next step's weights with the previous step's deltas).
  auto loss = sl::compose(sl::term(sl::AdaptiveHuber<float>{.scale = 0.5f}, 1.0f),
                          sl::term(sl::AdaptiveHuber<float>{.scale = 0.25f}, 1.0f));
  sl::step_report<float, 2> report;
  report.weights = {1.2f, 0.8f};
  report.error_scales = {1.0f, std::numeric_limits<float>::min() / 8};
  CHECK_THROWS_AS(sl::apply(loss, report), sl::invalid_parameter);
  CHECK(loss.multipliers() == std::array<float, 2>{1.0f, 1.0f});
}

namespace {

// A two-term training loop whose terms both follow an error scale: the predictions approach the
// targets, with a bad batch (errors x10) every 29 steps for the SpikeDampener. Each step's batch
// is a function of the step alone, so an interrupted loop sees the same data.
template <class T>
struct batch {
  std::vector<T> mel_pred, mel_target, frame_pred, frame_target;
  explicit batch(long long step) {
    std::mt19937_64 engine(static_cast<std::uint64_t>(1000 + step));
    std::uniform_real_distribution<double> unit(-1.0, 1.0);
    const double amplitude = (step % 29 == 28 ? 10.0 : 1.0) * (0.05 + 2.0 / (1.0 + 0.05 * static_cast<double>(step)));
    for (int i = 0; i < 333; ++i) {
      const double target = unit(engine);
      mel_target.push_back(static_cast<T>(target));
      mel_pred.push_back(static_cast<T>(target + amplitude * unit(engine) * unit(engine)));
    }
    for (int i = 0; i < 41; ++i) {
      frame_target.push_back(static_cast<T>(unit(engine)));
      frame_pred.push_back(static_cast<T>(frame_target.back() + 3 * amplitude * unit(engine)));
    }
  }
};

template <class T>
auto make_loss() {
  return sl::compose(sl::term(sl::AdaptiveHuber<T>{}, T(45)), sl::term(sl::AdaptiveHuber<T>{.k = T(2)}, T(1)));
}
template <class T>
auto make_guard() {
  return sl::Stabilizer<sl::SpikeDampener<T>, sl::EmaSmoother<T>, sl::AdaptiveWeight<2, T>, sl::ErrorScale<2, T>>(
      sl::SpikeDampener<T>({.window = 8}), sl::EmaSmoother<T>({.factor = 0.5}), sl::AdaptiveWeight<2, T>({.warmup = 3}),
      sl::ErrorScale<2, T>({.factor = 0.8}));
}

/// What one step computed, as bits: the values, the total, the deltas it ran with, a gradient.
template <class T>
struct step_bits {
  std::array<T, 2> values{}, deltas{};
  T total{}, first_grad{};
  typename decltype(make_guard<T>())::report_type report;
};

template <class T, class Loss, class Guard>
void run(Loss& loss, Guard& guard, long long from, long long to, std::vector<step_bits<T>>& out) {
  for (long long step = from; step < to; ++step) {
    const batch<T> b(step);
    std::vector<T> d_mel(b.mel_pred.size()), d_frame(b.frame_pred.size());
    step_bits<T> bits;
    bits.deltas = {loss.template term<0>().delta(), loss.template term<1>().delta()};
    const auto r = loss.evaluate(sl::inputs(b.mel_pred, b.mel_target), sl::inputs(b.frame_pred, b.frame_target),
                                 sl::grads(d_mel, d_frame));
    double squares = 0;
    for (const T g : d_mel) squares += double(g) * double(g);
    for (const T g : d_frame) squares += double(g) * double(g);
    bits.values = r.values;
    bits.total = r.total;
    bits.first_grad = d_mel[0];
    bits.report = guard.update(r, static_cast<T>(std::sqrt(squares)));
    sl::apply(loss, bits.report);
    out.push_back(bits);
  }
}

template <class T>
bool same_step(const step_bits<T>& a, const step_bits<T>& b) {
  using state_helpers::same_bits;
  bool same = same_bits(a.total, b.total) && same_bits(a.first_grad, b.first_grad) &&
              state_helpers::same_report(a.report, b.report);
  for (std::size_t i = 0; i < 2; ++i)
    same = same && same_bits(a.values[i], b.values[i]) && same_bits(a.deltas[i], b.deltas[i]) &&
           same_bits(a.report.error_scales[i], b.report.error_scales[i]);
  return same;
}

}  // namespace

TEMPLATE_TEST_CASE("A loop resumed with sl::apply(loss, guard) repeats every value and delta bit for bit",
                   "[stability][error_scale][state]", float, double) {
  using T = TestType;
  const long long steps = 150;
  std::vector<step_bits<T>> expected;
  {
    auto loss = make_loss<T>();
    auto guard = make_guard<T>();
    run<T>(loss, guard, 0, steps, expected);
  }
  // The loop does exercise what is resumed: deltas that move, dampened bad batches.
  int dampened = 0;
  for (const auto& s : expected) dampened += s.report.scale < T(1);
  CHECK(dampened >= 3);
  CHECK(expected[60].deltas[0] != expected[59].deltas[0]);
  CHECK(expected.back().deltas[0] < T(0.5) * expected[20].deltas[0]);

  for (const long long checkpoint : {1LL, 28LL, 29LL, 77LL}) {
    INFO("checkpoint at step " << checkpoint);
    std::vector<step_bits<T>> first_half, resumed, without_apply;
    auto loss = make_loss<T>();
    auto guard = make_guard<T>();
    run<T>(loss, guard, 0, checkpoint, first_half);
    const std::string saved = guard.save();

    auto fresh_loss = make_loss<T>();  // a new process: only the text survives
    auto fresh_guard = make_guard<T>();
    fresh_guard.restore(saved);
    sl::apply(fresh_loss, fresh_guard);
    CHECK(fresh_loss.template term<0>().delta() == loss.template term<0>().delta());
    CHECK(fresh_loss.multipliers() == loss.multipliers());
    run<T>(fresh_loss, fresh_guard, checkpoint, steps, resumed);
    long long mismatches = 0;
    for (long long i = checkpoint; i < steps; ++i)
      mismatches += !same_step(resumed[static_cast<std::size_t>(i - checkpoint)], expected[static_cast<std::size_t>(i)]);
    CHECK(mismatches == 0);

    // Restored without sl::apply, the loss runs its first resumed step with scale 1 (delta = k):
    // another value, and every later decision drifts.
    auto forgetful_loss = make_loss<T>();
    auto forgetful_guard = make_guard<T>();
    forgetful_guard.restore(saved);
    run<T>(forgetful_loss, forgetful_guard, checkpoint, steps, without_apply);
    CHECK_FALSE(same_step(without_apply[0], expected[static_cast<std::size_t>(checkpoint)]));
    CHECK(without_apply[0].deltas[0] != expected[static_cast<std::size_t>(checkpoint)].deltas[0]);
    long long differing = 0;
    for (long long i = checkpoint; i < steps; ++i)
      differing += !same_step(without_apply[static_cast<std::size_t>(i - checkpoint)], expected[static_cast<std::size_t>(i)]);
    CHECK(differing > 0);
  }
}

TEST_CASE("Corrupted ErrorScale states are rejected whole", "[stability][error_scale][state]") {
  using state_helpers::with_value;
  using scale_t = sl::ErrorScale<2, double>;
  scale_t source({.factor = 0.9});
  const std::array<std::array<double, 2>, 3> observed{{{2.0, 0.5}, {4.0, 1.0}, {3.0, 0.25}}};
  for (const auto& v : observed) source.update(std::span<const double>(v));
  const std::string good = sl::save_state(source);
  const std::string initial = sl::save_state(scale_t({.factor = 0.9}));

  scale_t target({.factor = 0.9});
  const std::array<double, 2> once{1.5, 1.5};
  target.update(std::span<const double>(once));
  const std::string before = sl::save_state(target);
  auto rejects = [&](scale_t& into, const std::string& text, const std::string& fragment) {
    REQUIRE_FALSE(text.empty());
    const std::string kept = sl::save_state(into);
    try {
      sl::restore_state(into, text);
      FAIL("accepted a bad state: " << fragment);
    } catch (const sl::invalid_input& e) {
      CHECK_THAT(e.what(), Contains(fragment));
    }
    CHECK(sl::save_state(into) == kept);  // never half-loaded
  };
  rejects(target, with_value(good, "sum", "2 -0x1p+0 0x1p+0"), "ErrorScale sum value 0 must be >= 0");
  rejects(target, with_value(good, "sum", "2 0x1p+0 -0x1p-3"), "value 1 must be >= 0");
  rejects(target, with_value(initial, "sum", "2 0x1p+0 0x0p+0"), "value 0 must be 0 before the first step");
  rejects(target, with_value(good, "history_power", "0x1p-1"), "history_power must be");
  rejects(target, with_value(good, "steps", "-1"), "steps");
  rejects(target, with_value(good, "sum", "2 0x1p+0"), "sum");
  // Settings: another factor or initial, another number of terms.
  scale_t other_factor({.factor = 0.8});
  rejects(other_factor, good, "ErrorScale was saved with factor = 0.9, this one has 0.8");
  rejects(target, with_value(good, "factor", "0x1p-1"), "ErrorScale was saved with factor = 0.5, this one has 0.9");
  scale_t other_initial({.factor = 0.9, .initial = 2.0});
  rejects(other_initial, good, "initial");
  sl::ErrorScale<3, double> three({.factor = 0.9});
  try {
    sl::restore_state(three, good);
    FAIL("a 2-term state loaded into ErrorScale<3>");
  } catch (const sl::invalid_input& e) {
    CHECK_THAT(e.what(), Contains("terms = 2, this one has 3"));
  }
  CHECK(sl::save_state(target) == before);
  // The good states load, and say what was saved.
  sl::restore_state(target, good);
  CHECK(sl::save_state(target) == good);
  CHECK(target.scales() == source.scales());
  sl::restore_state(target, initial);
  CHECK(target.steps() == 0);

  // Inside a Stabilizer, ErrorScale cannot have observed more steps than the pipeline ran.
  sl::Stabilizer<sl::ErrorScale<2, double>> guard;
  for (int i = 0; i < 3; ++i) guard.update(2.0, std::span<const double>(once), 1.0);
  const std::string pipeline = guard.save();
  sl::Stabilizer<sl::ErrorScale<2, double>> fresh;
  try {
    fresh.restore(with_value(pipeline, "step", "2"));
    FAIL("accepted ErrorScale ahead of the pipeline");
  } catch (const sl::invalid_input& e) {
    CHECK_THAT(e.what(), Contains("ErrorScale observed 3 steps"));
  }
  CHECK(fresh.get<sl::ErrorScale<2, double>>().steps() == 0);
  fresh.restore(pipeline);
  CHECK(fresh.error_scales() == guard.error_scales());
}

namespace {

// Two ranks in one process. Each rank's reducer publishes its own contribution and adds the
// other rank's last one, so a step runs: a throwaway copy of rank 1 publishes rank 1's buffer,
// then rank 0 updates (reading it), then rank 1 updates (reading rank 0's). Nothing here knows
// the buffer's layout: the sum is elementwise, as an all-reduce's.
struct exchange {
  std::array<std::vector<double>, 2> published;
};
struct pair_reducer {
  exchange* shared = nullptr;
  int rank = 0;
  bool publish_only = false;  ///< the throwaway copy: publish, add nothing
  void sum(std::span<double> values) {
    shared->published[static_cast<std::size_t>(rank)].assign(values.begin(), values.end());
    if (publish_only) return;
    const auto& other = shared->published[static_cast<std::size_t>(1 - rank)];
    if (other.size() != values.size()) throw std::logic_error("pair_reducer: the other rank published nothing");
    for (std::size_t i = 0; i < values.size(); ++i) values[i] += other[i];
  }
  int size() const { return 2; }
};

struct rank_data {
  std::vector<double> mel_pred, mel_target, frame_pred, frame_target, frame_mask;
};
rank_data make_rank(std::size_t mel_count, std::size_t frame_count, double spread, unsigned seed) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  rank_data d;
  for (std::size_t i = 0; i < mel_count; ++i) {
    d.mel_target.push_back(unit(engine));
    d.mel_pred.push_back(d.mel_target.back() + spread * unit(engine));
  }
  for (std::size_t i = 0; i < frame_count; ++i) {
    d.frame_target.push_back(unit(engine));
    d.frame_pred.push_back(d.frame_target.back() + 2 * spread * unit(engine));
    d.frame_mask.push_back(i % 3 == 0 ? 0.0 : (i % 3 == 1 ? 1.0 : 0.5));
  }
  return d;
}

/// Huber_delta(d) / delta in long double, from the definition.
long double adaptive_reference(long double d, long double delta) {
  const long double a = std::fabs(d);
  return (a <= delta ? 0.5L * a * a : delta * (a - 0.5L * delta)) / delta;
}

}  // namespace

TEST_CASE("Two ranks with different values and counts get the count-weighted mean scale, and one delta",
          "[stability][error_scale][distributed]") {
  static_assert(sl::Reducer<pair_reducer>);
  exchange shared;
  // Rank 0: 600 small errors; rank 1: 90 errors eight times larger. A frame mask on the second term.
  const rank_data data[2] = {make_rank(600, 50, 0.25, 1), make_rank(90, 31, 2.0, 2)};
  auto make = [&](int rank) {
    return sl::with_reducer(pair_reducer{&shared, rank}, sl::AdaptiveWeight<2, double>({.warmup = 2}),
                            sl::ErrorScale<2, double>({.factor = 0.9}));
  };
  auto guard0 = make(0);
  auto guard1 = make(1);
  using loss_t = decltype(sl::compose(sl::term(sl::AdaptiveHuber<double>{}, 45.0), sl::term(sl::AdaptiveHuber<double>{.k = 2.0}, 1.0)));
  std::array<loss_t, 2> losses{sl::compose(sl::term(sl::AdaptiveHuber<double>{}, 45.0), sl::term(sl::AdaptiveHuber<double>{.k = 2.0}, 1.0)),
                               sl::compose(sl::term(sl::AdaptiveHuber<double>{}, 45.0), sl::term(sl::AdaptiveHuber<double>{.k = 2.0}, 1.0))};
  auto evaluate = [&](int rank) {
    const rank_data& d = data[rank];
    return losses[static_cast<std::size_t>(rank)].evaluate(sl::inputs(d.mel_pred, d.mel_target),
                                                            sl::inputs(d.frame_pred, d.frame_target, d.frame_mask));
  };

  for (int step = 0; step < 30; ++step) {
    INFO("step " << step);
    const std::array<double, 2> deltas{losses[0].term<0>().delta(), losses[0].term<1>().delta()};
    // The global per-term means this step, over both ranks' elements (weights: the mask).
    std::array<long double, 2> weighted{}, weights{}, per_rank_mean0{};
    for (int rank = 0; rank < 2; ++rank) {
      const rank_data& d = data[rank];
      long double rank_sum = 0;
      for (std::size_t i = 0; i < d.mel_pred.size(); ++i) {
        rank_sum += adaptive_reference(d.mel_pred[i] - d.mel_target[i], deltas[0]);
        weights[0] += 1;
      }
      weighted[0] += rank_sum;
      per_rank_mean0[static_cast<std::size_t>(rank)] = rank_sum / static_cast<long double>(d.mel_pred.size());
      for (std::size_t i = 0; i < d.frame_pred.size(); ++i) {
        weighted[1] += d.frame_mask[i] * adaptive_reference(d.frame_pred[i] - d.frame_target[i], deltas[1]);
        weights[1] += d.frame_mask[i];
      }
    }
    const std::array<double, 2> global{double(weighted[0] / weights[0]), double(weighted[1] / weights[1])};

    const auto r0 = evaluate(0), r1 = evaluate(1);
    {
      auto probe = guard1;  // publishes rank 1's contribution; its own report is discarded
      probe.reducer().publish_only = true;
      probe.update(r1, 1.0);
    }
    const auto report0 = guard0.update(r0, 1.0);
    const auto report1 = guard1.update(r1, 1.0);
    sl::apply(losses[0], report0);
    sl::apply(losses[1], report1);

    // Every rank saw the same global values and keeps the same state: the same delta, bit for bit.
    for (std::size_t i = 0; i < 2; ++i) {
      CHECK(state_helpers::same_bits(report0.error_scales[i], report1.error_scales[i]));
      CHECK(state_helpers::same_bits(report0.weights[i], report1.weights[i]));
      CHECK(state_helpers::same_bits(losses[0].term<0>().delta(), losses[1].term<0>().delta()));
      CHECK(state_helpers::same_bits(losses[0].term<1>().delta(), losses[1].term<1>().delta()));
    }
    CHECK(guard0.save() == guard1.save());
    if (step == 0) {
      // One observation: the debiased EMA is the value itself, the count-weighted global mean
      // (not the mean of the two ranks' means, which weighs rank 1's 90 errors like rank 0's 600).
      CHECK(report0.error_scales[0] == Approx(global[0]).epsilon(1e-12));
      CHECK(report0.error_scales[1] == Approx(global[1]).epsilon(1e-12));
      const double mean_of_means = double((per_rank_mean0[0] + per_rank_mean0[1]) / 2);
      CHECK(std::fabs(report0.error_scales[0] - mean_of_means) > 0.1 * mean_of_means);
      CHECK(report0.loss == Approx(45 * global[0] + global[1]).epsilon(1e-12));
    }
  }
  // The pipeline's scales differ from either rank's own.
  sl::Stabilizer<sl::ErrorScale<2, double>> local;
  const auto alone = local.update(evaluate(1), 1.0);
  CHECK(alone.error_scales[0] != Approx(guard0.error_scales()[0]));
}
