// The Stabilizer pipeline: composition, integration with the composed loss, presets, bad input.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

#include <steadyloss/presets.hpp>
#include <steadyloss/stability/stability.hpp>
#include <steadyloss/steadyloss.hpp>

namespace sl = steadyloss;

TEMPLATE_TEST_CASE("Stabilizer runs policies in order on scalar inputs", "[stability][stabilizer]", float, double) {
  using T = TestType;
  sl::Stabilizer<sl::SpikeDampener<T>, sl::EmaSmoother<T>, sl::EarlyStopper<T>> guard(
      sl::SpikeDampener<T>({.window = 4, .detector = {.threshold = 2.0}}), sl::EmaSmoother<T>({.factor = 0.5}),
      sl::EarlyStopper<T>({.patience = 6, .min_delta = 0.0}));
  // Warm-up; smoothed stays 1, which is no improvement on the best 1 (strict): wait 1, 2, 3.
  for (int i = 0; i < 4; ++i) guard.update(T(1), T(1));
  // Spike 3 > 2 * mean(1): dampened to scale 2/3; the smoother sees the effective loss 2:
  // s5 = 0.5 s4 + 0.5 * 2 with s4 = 1 - 1/16 -> (0.46875 + 1) / (1 - 1/32) = 1.516129...
  auto r = guard.update(T(3), T(1));
  CHECK(r.step == 4);
  CHECK(r.is_spike);
  CHECK(r.scale == Approx(2.0 / 3.0));
  CHECK(r.smoothed == Approx(1.46875 / (1 - 1.0 / 32)));
  CHECK(r.wait == 4);  // the smoothed loss got worse than the best (1)
  // A NaN step is skipped: scale 0; the smoother and stopper do not observe it.
  r = guard.update(std::numeric_limits<T>::quiet_NaN(), T(1));
  CHECK(r.non_finite);
  CHECK(r.skipped);
  CHECK(r.scale == T(0));
  CHECK(r.wait == 4);
  CHECK(r.smoothed == Approx(1.46875 / (1 - 1.0 / 32)));
  CHECK_FALSE(r.should_stop);
  r = guard.update(T(1.5), T(1));  // smoothed (0.734375 + 0.75) / (1 - 1/64) = 1.508: wait 5
  CHECK(r.smoothed == Approx(1.484375 / (1 - 1.0 / 64)));
  CHECK_FALSE(r.should_stop);
  r = guard.update(T(1.5), T(1));  // wait 6: stop
  CHECK(r.should_stop);
  CHECK(r.reason == sl::stop_reason::patience);
  CHECK(r.best_step == 0);
}

TEST_CASE("Stabilizer drives the composed loss's multipliers", "[stability][stabilizer][compose]") {
  // The original table's pipeline: adaptive weights in [0.7, 1.3] (the stable preset may turn them off).
  auto loss = sl::presets::original_loss<float>();
  auto guard = sl::presets::stabilizer_for<float>(sl::presets::original);
  const std::vector<float> mel_pred{0.5f, 1.5f, -0.25f, 2.0f}, mel_target{0.0f, 1.0f, 0.0f, 0.0f};
  const std::vector<float> stop_logits{-2.0f, 0.5f, 3.0f, -1.0f}, stop_target{0.0f, 0.0f, 1.0f, 0.0f};
  std::vector<float> d_mel(4), d_stop(4);
  std::array<float, 2> previous{1.0f, 1.0f};
  for (int step = 0; step < 60; ++step) {
    const auto result = loss.evaluate(sl::inputs(mel_pred, mel_target), sl::inputs(stop_logits, stop_target),
                                      sl::grads(d_mel, d_stop));
    const auto bases = loss.base_weights();
    for (int i = 0; i < 2; ++i) CHECK(result.weights[i] == Approx(bases[i] * previous[i]));
    const auto report = guard.update(result, 1.0f);
    CHECK(report.loss == Approx(result.total));
    for (int i = 0; i < 2; ++i) {
      CHECK(report.weights[i] >= 0.7f);
      CHECK(report.weights[i] <= 1.3f);
      CHECK(std::abs(report.weights[i] - previous[i]) <= 0.0101f);
    }
    if (step % 2 == 0) sl::apply_weights(loss, report);
    else sl::apply(loss, report);  // the same multipliers (Huber follows no error scale)
    CHECK(loss.multipliers() == report.weights);
    previous = report.weights;
  }
  // The mel term (weight 35) dominates the total, so it is turned down and the stop term up.
  CHECK(previous[0] < 1.0f);
  CHECK(previous[1] > 1.0f);
}

TEST_CASE("The stable pipeline sets the AdaptiveHuber mel term's scale through sl::apply",
          "[stability][stabilizer][compose]") {
  auto loss = sl::presets::stable_loss<double>();
  auto guard = sl::presets::stable_stabilizer<double>();
  // Errors 0.2, -0.6, 0.2, -0.6.
  const std::vector<double> mel_pred{0.2, -0.6, 1.2, 0.4}, mel_target{0.0, 0.0, 1.0, 1.0};
  const std::vector<double> stop_logits{-2.0, 0.5, 3.0, -1.0}, stop_target{0.0, 0.0, 1.0, 0.0};
  std::vector<double> d_mel(4), d_stop(4);
  const double k = sl::presets::stable.huber_k;
  // The mean value at a scale, worked from the closed form: huber_delta(d) / delta, delta = k s.
  const auto mean_value = [k](long double s) {
    const long double delta = k * s;
    long double sum = 0;
    for (long double d : {0.2L, -0.6L, 0.2L, -0.6L}) {
      const long double a = std::fabs(d);
      sum += (a <= delta ? 0.5L * a * a : delta * (a - 0.5L * delta)) / delta;
    }
    return sum / 4;
  };
  CHECK(loss.term<0>().scale == 1.0);  // before any step
  double previous_scale = 1.0;
  for (int step = 0; step < 300; ++step) {
    const auto result = loss.evaluate(sl::inputs(mel_pred, mel_target), sl::inputs(stop_logits, stop_target),
                                      sl::grads(d_mel, d_stop));
    REQUIRE(result.values[0] == Approx(double(mean_value(previous_scale))).epsilon(1e-12));
    const auto report = guard.update(result, 1.0);
    sl::apply(loss, report);
    CHECK(loss.term<0>().scale == report.error_scales[0]);
    CHECK(loss.term<1>().eps == sl::presets::stable.label_smoothing);  // a term without a scale: untouched
    previous_scale = loss.term<0>().scale;
  }
  // The fixed point s = mean_value(s) (the mean value falls as s grows: one root), by bisection.
  long double lo = 1e-6L, hi = 10;
  for (int i = 0; i < 100; ++i) (mean_value((lo + hi) / 2) > (lo + hi) / 2 ? lo : hi) = (lo + hi) / 2;
  CHECK(previous_scale == Approx(double(lo)).epsilon(1e-9));
}

TEST_CASE("Stabilizer takes per-term values without the composed loss", "[stability][stabilizer]") {
  sl::Stabilizer<sl::AdaptiveWeight<2, double>> guard(sl::AdaptiveWeight<2, double>({.warmup = 1}));
  const std::array<double, 2> values{3.0, 1.0};
  sl::step_report<double, 2> r;
  for (int i = 0; i < 3; ++i) r = guard.update(4.0, values, 1.0);
  // Same rule as the standalone policy: shares (1.5, 0.5), two moves of 0.01.
  CHECK(r.weights[0] == Approx(0.98));
  CHECK(r.weights[1] == Approx(1.02));
  const std::array<double, 3> three{1.0, 1.0, 1.0};
  CHECK_THROWS_AS(guard.update(3.0, three, 1.0), sl::shape_mismatch);
  CHECK_THROWS_WITH(guard.update(3.0, three, 1.0), "Stabilizer::update: per_term_values must have 2 entries, got 3");
}

TEST_CASE("Stabilizer: absent policies cost nothing and report neutral values", "[stability][stabilizer]") {
  static_assert(sizeof(sl::Stabilizer<sl::EmaSmoother<double>>) ==
                sizeof(sl::EmaSmoother<double>) + sizeof(long long));
  sl::Stabilizer<> empty;
  const auto r = empty.update(2.5f, 1.0f);
  CHECK(r.scale == 1.0f);
  CHECK(r.smoothed == 2.5f);
  CHECK_FALSE(r.should_stop);
  CHECK(r.stability_score == 1.0f);
  // The smoothed monitor, with its dependency listed first, compiles and watches the EMA.
  sl::Stabilizer<sl::EmaSmoother<double>, sl::EarlyStopper<double, sl::monitor::smoothed>> smoothed(
      sl::EmaSmoother<double>({.factor = 0.5}), sl::EarlyStopper<double, sl::monitor::smoothed>({.patience = 1}));
  smoothed.update(4.0, 1.0);                    // smoothed 4, best 4
  CHECK(smoothed.update(2.0, 1.0).improved);    // smoothed (1 + 1) / 0.75 = 2.67 < 4
  // The raw monitor sees 3 > 2 and stops; the smoothed one (s = 2.5 / 0.875 = 2.857) too:
  CHECK(smoothed.update(3.0, 1.0).should_stop);
}

TEST_CASE("Presets hold the table of presets.hpp", "[stability][presets]") {
  namespace presets = sl::presets;
  using presets::baseline;
  using presets::original;
  using presets::stable;

  // baseline: L1 mel (weight 45) + plain BCE stop (pos_weight 1); no step policies; validation
  // early stopping, patience 20 checks.
  CHECK(baseline.mel == presets::mel_term::l1);
  CHECK(baseline.mel_weight == 45.0);
  CHECK(baseline.stop_pos_weight == 1.0);
  CHECK(baseline.label_smoothing == 0.0);
  CHECK(baseline.stop_weight == 1.0);
  CHECK_FALSE(baseline.adaptive_weights);
  CHECK(baseline.smoothing == 0.0);
  CHECK_FALSE(baseline.spike_detection);
  CHECK(baseline.patience == 20);
  CHECK(baseline.min_delta == 0.0);
  CHECK(baseline.validation_smoothing == 0.0);
  auto base_loss = presets::baseline_loss<double>();
  static_assert(std::is_same_v<decltype(base_loss), sl::composed_loss<sl::L1<double>, sl::BalancedBCE<double>>>);
  CHECK(base_loss.base_weights() == std::array<double, 2>{45.0, 1.0});
  CHECK(base_loss.term<1>().pos_weight == 1.0);
  // No policy that acts: metrics only. Every step is kept whole, the smoothed loss is the loss.
  static_assert(std::is_same_v<presets::baseline_stabilizer_type<double>, sl::Stabilizer<sl::StabilityMetrics<double>>>);
  auto base = presets::baseline_stabilizer<double>();
  for (double x : {5.0, 50.0, 0.5}) {
    const auto r = base.update(x, 1.0);
    CHECK(r.smoothed == x);
    CHECK(r.scale == 1.0);
    CHECK_FALSE(r.is_spike);
    CHECK_FALSE(r.should_stop);
  }
  const auto base_stopper = presets::early_stopper_for<double>(baseline);
  CHECK(base_stopper.settings().patience == 20);
  CHECK(base_stopper.settings().min_delta == 0.0);

  // original: the original project's table, kept for comparison.
  CHECK(original.mel == presets::mel_term::huber);
  CHECK(original.huber_delta == 1.0);
  CHECK(original.mel_weight == 35.0);
  CHECK(original.stop_pos_weight == 5.0);
  CHECK(original.label_smoothing == 0.05);
  CHECK(original.stop_weight == 1.0);
  CHECK(original.adaptive_weights);
  CHECK(original.weight_lo == 0.7);
  CHECK(original.weight_hi == 1.3);
  CHECK(original.smoothing == 0.1);
  CHECK(original.spike_detection);
  CHECK(original.spikes == sl::spike_mode::dampen);
  CHECK(original.patience == 25);
  CHECK(original.min_delta == 0.0005);
  auto original_loss = presets::original_loss<double>();
  static_assert(std::is_same_v<decltype(original_loss),
                               sl::composed_loss<sl::Huber<double>, sl::LabelSmoothing<sl::BalancedBCE<double>>>>);
  CHECK(original_loss.base_weights() == std::array<double, 2>{35.0, 1.0});
  CHECK(original_loss.term<0>().delta == 1.0);
  CHECK(original_loss.term<1>().eps == 0.05);
  CHECK(original_loss.term<1>().inner.pos_weight == 5.0);
  auto guard = presets::stabilizer_for<double>(original);
  CHECK(guard.get<sl::EmaSmoother<double>>().settings().factor == 0.1);
  CHECK(guard.get<sl::AdaptiveWeight<2, double>>().settings().lo == 0.7);
  CHECK(guard.get<sl::AdaptiveWeight<2, double>>().settings().hi == 1.3);
  // The calibrated detector (docs/spike-calibration.md), dampening.
  const auto& spikes = guard.get<sl::SpikeDampener<double, sl::detect::mad_zscore>>().settings();
  CHECK(spikes.window == 25);
  CHECK(spikes.warmup == 10);
  CHECK(spikes.detector.sigma_factor == 15.0);
  CHECK(spikes.min_ratio == 1.5);
  CHECK(spikes.level_shift_after == 10);
  CHECK(spikes.mode == sl::spike_mode::dampen);
  const auto original_stopper = presets::early_stopper_for<double>(original);
  CHECK(original_stopper.settings().patience == 25);
  CHECK(original_stopper.settings().min_delta == 0.0005);

  // stable: only what does not depend on the tuned numbers. The mel term follows the data's error
  // scale (AdaptiveHuber, its scale set by the pipeline's ErrorScale); spikes are handled;
  // early stopping is not a per-step policy.
  CHECK(stable.mel == presets::mel_term::adaptive_huber);
  CHECK(stable.spike_detection);
  CHECK(stable.spikes != sl::spike_mode::report);
  auto stable_loss = presets::stable_loss<double>();
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(stable_loss.term<0>())>, sl::AdaptiveHuber<double>>);
  CHECK(stable_loss.term<0>().k == stable.huber_k);
  CHECK(stable_loss.term<0>().scale == 1.0);
  CHECK(stable_loss.base_weights() == std::array<double, 2>{stable.mel_weight, stable.stop_weight});
  CHECK(stable_loss.reduction<0>() == sl::reduction::mean);  // sl::apply needs it
  using stable_type = presets::stable_stabilizer_type<double>;
  static_assert(stable_type::has_error_scale && stable_type::terms == 2);
  static_assert(std::is_same_v<decltype(presets::stable_stabilizer<double>()), stable_type>);
  auto stable_guard = presets::stable_stabilizer<double>();
  CHECK(stable_guard.get<sl::ErrorScale<2, double>>().settings().factor == stable.scale_factor);
  CHECK(stable_guard.get<presets::calibrated_spike_dampener<double>>().settings().mode == stable.spikes);
  CHECK(stable_guard.get<sl::EmaSmoother<double>>().settings().factor == stable.smoothing);
  // Every preset runs on the one pipeline type; a remedy that is off gets neutral settings.
  auto neutral = presets::stabilizer_for<double>(baseline);
  CHECK(neutral.get<presets::calibrated_spike_dampener<double>>().settings().mode == sl::spike_mode::report);
  CHECK(neutral.get<sl::AdaptiveWeight<2, double>>().settings().lo == 1.0);
  CHECK(neutral.get<sl::AdaptiveWeight<2, double>>().settings().hi == 1.0);
  CHECK(neutral.get<sl::EmaSmoother<double>>().settings().factor == 0.0);
}

namespace {
template <class Pipeline, class Policy>
inline constexpr bool lists = false;
template <class R, class... Policies, class Policy>
inline constexpr bool lists<sl::BasicStabilizer<R, Policies...>, Policy> = (std::is_same_v<Policies, Policy> || ...);
}  // namespace

static_assert(!lists<sl::presets::baseline_stabilizer_type<double>, sl::EarlyStopper<double>>);
static_assert(lists<sl::presets::stable_stabilizer_type<double>, sl::ErrorScale<2, double>>);

TEST_CASE("Presets: the per-step EarlyStopper only ends runs of non-finite steps", "[stability][presets]") {
  // Patience counts validation checks (presets::early_stopper_for); the per-step stopper never runs
  // out of patience on the training loss, whatever the preset.
  for (const auto& preset : {sl::presets::baseline, sl::presets::original, sl::presets::stable}) {
    auto guard = sl::presets::stabilizer_for<double>(preset);
    const auto& settings = guard.get<sl::EarlyStopper<double>>().settings();
    CHECK(settings.patience == std::numeric_limits<int>::max());
    CHECK(settings.non_finite_patience == preset.non_finite_steps);
    CHECK(settings.stop_on_non_finite);
    CHECK(preset.non_finite_steps > 0);
    double loss = 1.0;
    for (int i = 0; i < 500; ++i) {
      loss *= 1.001;  // a slowly rising loss: never an improvement after the first step
      CHECK_FALSE(guard.update(loss, std::vector<double>{loss, 0.1}, 1.0).should_stop);
    }
  }
}

TEST_CASE("Stabilizer without a SpikeDampener passes a NaN on to the EarlyStopper", "[stability][stabilizer]") {
  sl::Stabilizer<sl::EmaSmoother<double>, sl::EarlyStopper<double>> guard;
  guard.update(1.0, 1.0);
  const auto r = guard.update(std::nan(""), 1.0);
  CHECK(r.non_finite);
  CHECK_FALSE(r.skipped);  // skipping is SpikeDampener's rule; without one the stopper decides
  CHECK(std::isnan(r.smoothed));
  CHECK(r.should_stop);
  CHECK(r.reason == sl::stop_reason::non_finite);
  CHECK(guard.get<sl::EmaSmoother<double>>().steps() == 1);  // the NaN did not enter the EMA
}

TEST_CASE("Behind a SpikeDampener, one NaN is skipped but patience NaNs in a row stop the run",
          "[stability][stabilizer]") {
  // The calibrated spike detector, and the original table's stopper (patience 25) on the per-step loss.
  sl::Stabilizer<sl::presets::calibrated_spike_dampener<double>, sl::EmaSmoother<double>, sl::AdaptiveWeight<2, double>,
                 sl::EarlyStopper<double>>
      guard(sl::presets::calibrated_spike_dampener<double>(sl::presets::calibrated_spikes),
            sl::EmaSmoother<double>({.factor = 0.1}), sl::AdaptiveWeight<2, double>{},
            sl::presets::early_stopper_for<double>(sl::presets::original));
  const auto step = [&](double loss, double grad_norm = 1.0) {
    const std::array<double, 2> terms{loss, 0.1};
    return guard.update(loss, std::span<const double>(terms), grad_norm);
  };
  const double nan = std::nan("");
  double loss = 2.0;  // improving by 1% a step: patience never runs out on the finite steps
  for (int i = 0; i < 20; ++i) step(loss *= 0.99);
  // A lone NaN is skipped and the run goes on.
  auto r = step(nan);
  CHECK(r.skipped);
  CHECK_FALSE(r.should_stop);
  CHECK_FALSE(step(loss *= 0.99).should_stop);
  // 24 non-finite steps in a row, broken by one finite step, then 25 in a row: the 25th stops.
  for (int i = 0; i < 24; ++i) CHECK_FALSE(step(nan).should_stop);
  CHECK_FALSE(step(loss *= 0.99).should_stop);
  for (int i = 0; i < 24; ++i) CHECK_FALSE(step(loss, std::numeric_limits<double>::infinity()).should_stop);
  r = step(nan);
  CHECK(r.skipped);
  CHECK(r.should_stop);
  CHECK(r.reason == sl::stop_reason::non_finite);

  // Non-finite steps before start_from are ignored, as observations are: the run counts from there.
  sl::Stabilizer<sl::SpikeDampener<double>, sl::EarlyStopper<double>> late(
      sl::SpikeDampener<double>{}, sl::EarlyStopper<double>({.patience = 5, .start_from = 20}));
  double level = 2.0;
  for (int i = 0; i < 12; ++i) late.update(level *= 0.99, 1.0);
  for (int i = 12; i < 24; ++i) CHECK_FALSE(late.update(nan, 1.0).should_stop);  // steps 20-23: a run of 4
  const auto last = late.update(nan, 1.0);  // step 24: the 5th from start_from
  CHECK(last.should_stop);
  CHECK(last.reason == sl::stop_reason::non_finite);

  // stop_on_non_finite = false keeps the old behaviour: skipped forever, never stopped.
  sl::Stabilizer<sl::SpikeDampener<double>, sl::EarlyStopper<double>> lenient(
      sl::SpikeDampener<double>{}, sl::EarlyStopper<double>({.patience = 3, .stop_on_non_finite = false}));
  for (int i = 0; i < 10; ++i) lenient.update(loss *= 0.99, 1.0);
  for (int i = 0; i < 100; ++i) CHECK_FALSE(lenient.update(nan, 1.0).should_stop);
}

namespace {
// Stand-ins for an all-reduce in one process: `twin` is a second rank with identical inputs;
// `peer_non_finite` is a second rank whose step was non-finite (flag 1, contributions 0).
struct twin_reducer {
  void sum(std::span<double> values) {
    for (double& v : values) v *= 2;
  }
  int size() const { return 2; }
};
struct peer_non_finite_reducer {
  void sum(std::span<double> values) {
    values[0] += 1;  // the non-finite flag
    for (std::size_t i = 4; i < values.size(); i += 2) values[i] *= 2;  // the peer's counts
  }
  int size() const { return 2; }
};
}  // namespace

TEST_CASE("Stabilizer globalizes its inputs through the Reducer", "[stability][stabilizer][distributed]") {
  static_assert(sl::Reducer<twin_reducer>);
  sl::composed_result<double, 2> r;
  r.values = {0.5, 0.25};
  r.weights = {2.0, 4.0};
  r.denominators = {10.0, 6.0};
  r.total = 2.0;
  // A twin rank: the count-weighted means equal the local values, so the reports match the
  // single-process pipeline's.
  auto twin = sl::with_reducer(twin_reducer{}, sl::EmaSmoother<double>{}, sl::AdaptiveWeight<2, double>{});
  sl::Stabilizer<sl::EmaSmoother<double>, sl::AdaptiveWeight<2, double>> local;
  for (int i = 0; i < 20; ++i) {
    const auto a = twin.update(r, 3.0);
    const auto b = local.update(r, 3.0);
    CHECK(a.loss == Approx(b.loss));
    CHECK(a.grad_norm == Approx(3.0));
    CHECK(a.smoothed == Approx(b.smoothed));
    CHECK(a.weights[0] == Approx(b.weights[0]));
  }
  // A peer's NaN makes this rank's step non-finite too, so both skip it.
  auto guarded = sl::with_reducer(peer_non_finite_reducer{}, sl::SpikeDampener<double>{});
  const auto skipped = guarded.update(r, 3.0);
  CHECK(skipped.non_finite);
  CHECK(skipped.skipped);
  CHECK(skipped.scale == 0.0);
}
