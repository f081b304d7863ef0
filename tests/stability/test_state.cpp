// Resume: a restored pipeline makes bit-identical decisions; bad states are rejected whole.
#include <catch2/catch.hpp>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <steadyloss/presets.hpp>
#include <steadyloss/stability/stability.hpp>

#include "state_helpers.hpp"

namespace sl = steadyloss;

namespace {

using namespace state_helpers;

template <class Make>
void check_resume(Make make, long long steps, std::vector<long long> checkpoints) {
  using Pipeline = decltype(make());
  using T = typename Pipeline::value_type;
  auto reference = make();
  std::vector<typename Pipeline::report_type> expected;
  loss_stream<T> stream;
  for (long long i = 0; i < steps; ++i) {
    T g{};
    const auto r = stream.next(g);
    expected.push_back(reference.update(r, g));
  }
  for (long long k : checkpoints) {
    auto first = make();
    loss_stream<T> inputs;
    for (long long i = 0; i < k; ++i) {
      T g{};
      const auto r = inputs.next(g);
      first.update(r, g);
    }
    const std::string saved = first.save();
    auto resumed = make();  // a fresh process: nothing but the text survives
    resumed.restore(saved);
    CHECK(resumed.save() == saved);
    long long mismatches = 0;
    for (long long i = k; i < steps; ++i) {
      T g{};
      const auto r = inputs.next(g);
      const auto got = resumed.update(r, g);
      const auto& want = expected[static_cast<std::size_t>(i)];
      bool same = same_report(got, want);
      for (std::size_t term = 0; term < got.error_scales.size(); ++term)
        same = same && same_bits(got.error_scales[term], want.error_scales[term]);
      if (!same) ++mismatches;
    }
    INFO("checkpoint at step " << k);
    CHECK(mismatches == 0);
  }
}

// Every policy, each with state that moves on this stream (the stable preset has no EarlyStopper
// and, until tuned, may hold its adaptive weights at 1).
template <class T, class Detector>
auto make_pipeline() {
  typename sl::SpikeDampener<T, Detector>::config spikes{.window = 16};
  if constexpr (requires { spikes.detector.sigma_factor; }) spikes.detector.sigma_factor = 4.0;
  return sl::Stabilizer<sl::SpikeDampener<T, Detector>, sl::EmaSmoother<T>, sl::AdaptiveWeight<2, T>,
                        sl::ErrorScale<2, T>, sl::EarlyStopper<T>, sl::StabilityMetrics<T>>(
      sl::SpikeDampener<T, Detector>(spikes), sl::EmaSmoother<T>{},
      sl::AdaptiveWeight<2, T>{}, sl::ErrorScale<2, T>({.factor = 0.95}),
      sl::EarlyStopper<T>({.patience = 400, .min_delta = 0.0}), sl::StabilityMetrics<T>({.window = 16}));
}

}  // namespace

TEMPLATE_TEST_CASE("A restored stable pipeline repeats every later report bit for bit", "[stability][state]", float,
                   double) {
  check_resume([] { return sl::presets::stable_stabilizer<TestType>(); }, 1000, {0, 1, 7, 123, 500, 704, 999});
  check_resume([] { return sl::presets::stabilizer_for<TestType>(sl::presets::original); }, 1000, {7, 500, 704});
  check_resume([] { return make_pipeline<TestType, sl::detect::mean_ratio>(); }, 1000, {5, 705});
  check_resume([] { return make_pipeline<TestType, sl::detect::median_ratio>(); }, 1000, {5, 705});
  check_resume([] { return make_pipeline<TestType, sl::detect::zscore>(); }, 1000, {5, 705});
  check_resume([] { return make_pipeline<TestType, sl::detect::ema_zscore>(); }, 1000, {5, 640});
}

TEST_CASE("The run being resumed exercises spikes, NaNs, skips and a level shift", "[stability][state]") {
  auto guard = sl::presets::stable_stabilizer<double>();
  loss_stream<double> stream;
  int spikes = 0, non_finite = 0, level_shifts = 0, first_shift = -1, kept = 0;
  for (int i = 0; i < 1000; ++i) {
    double g = 0;
    const auto r = guard.update(stream.next(g), g);
    kept += !r.non_finite && r.scale == 1.0;
    spikes += r.is_spike;
    non_finite += r.non_finite;
    level_shifts += r.level_shift;
    if (r.level_shift && first_shift < 0) first_shift = i;
  }
  CHECK(spikes >= 20);
  CHECK(non_finite == 9);
  CHECK(level_shifts == 1);
  // The 10th spike of the new level (steps 700-710; the NaN at 706 does not count); checkpoints
  // 704 and 705 fall inside the run.
  CHECK(first_shift == 710);
  // The error scales moved with the stream (the state being resumed is not the initial one), and
  // only steps kept whole were observed.
  CHECK(kept < 1000 - non_finite);
  CHECK(guard.get<sl::ErrorScale<2, double>>().steps() == kept);
  CHECK(guard.error_scales()[0] > 1.5);
}

TEST_CASE("Corrupted, truncated, wrong-version or mismatched states are rejected whole", "[stability][state]") {
  auto guard = sl::presets::stable_stabilizer<double>();
  loss_stream<double> stream;
  for (int i = 0; i < 50; ++i) {
    double g = 0;
    guard.update(stream.next(g), g);
  }
  const std::string good = guard.save();
  auto target = sl::presets::stable_stabilizer<double>();
  target.update(2.0, std::vector<double>{1.0, 1.0}, 1.0);
  const std::string before = target.save();

  auto rejects = [&](const std::string& text, const std::string& fragment) {
    try {
      target.restore(text);
      FAIL("accepted a bad state: " << fragment);
    } catch (const sl::invalid_input& e) {
      CHECK_THAT(e.what(), Catch::Matchers::Contains(fragment));
    }
    CHECK(target.save() == before);  // never half-loaded
  };
  std::string flipped = good;
  REQUIRE(flipped.find("\nsteps ") != std::string::npos);
  char& digit = flipped[flipped.find("\nsteps ") + 7];
  digit = digit == '9' ? '8' : '9';
  rejects(flipped, "checksum mismatch");
  rejects(good.substr(0, good.size() / 2), "checksum");
  rejects(good.substr(0, good.size() - 3), "checksum");
  rejects("", "not a steadyloss state");

  // A well-formed state of another version (checksum recomputed so only the version is wrong).
  std::string old_version = good;
  REQUIRE(old_version.rfind("steadyloss-state 5\n", 0) == 0);
  old_version.replace(0, 18, "steadyloss-state 4");  // the format before each detector saved its own settings
  rejects(reseal(old_version), "unsupported version '4', this build reads version 5");
  rejects(reseal(old_version), "resume with the steadyloss version that wrote it, or start a new state");
  std::string bad_number = good;
  const auto at = bad_number.find("sum 0x");
  bad_number.replace(at + 4, 2, "zz");
  rejects(reseal(bad_number), "not a hexadecimal double");
  std::string bad_key = good;
  REQUIRE(bad_key.find("level_shifts") != std::string::npos);
  bad_key.replace(bad_key.find("level_shifts"), 12, "levelxshifts");
  rejects(reseal(bad_key), "expected key 'level_shifts'");
  // The ErrorScale's section is checked like every other (more in test_error_scale.cpp).
  rejects(with_value(good, "sum", "2 -0x1p+0 0x1p+0", "begin ErrorScale"), "ErrorScale sum value 0 must be >= 0");

  // A state saved by a differently configured pipeline.
  auto other = sl::presets::stable_stabilizer<double>();
  using Spikes = sl::presets::calibrated_spike_dampener<double>;
  auto wider = sl::presets::calibrated_spikes;
  wider.window = 20;
  other.get<Spikes>() = Spikes(wider);
  try {
    other.restore(good);
    FAIL("accepted a state of another configuration");
  } catch (const sl::invalid_input& e) {
    CHECK_THAT(e.what(), Catch::Matchers::Contains("detector_window"));
  }
  // And the good state loads.
  target.restore(good);
  CHECK(target.save() == good);
}

TEST_CASE("Single policies save and restore too", "[stability][state]") {
  sl::EarlyStopper<float> stopper({.patience = 3});
  for (float x : {3.0f, 2.0f, 2.5f}) stopper.update(x);
  const std::string text = sl::save_state(stopper);
  sl::EarlyStopper<float> fresh({.patience = 3});
  sl::restore_state(fresh, text);
  CHECK(fresh.wait() == 1);
  CHECK(fresh.best() == 2.0f);
  CHECK(fresh.best_step() == 1);
  CHECK(fresh.update(2.4f).wait == 2);
  sl::EarlyStopper<float> wrong({.patience = 4});
  CHECK_THROWS_AS(sl::restore_state(wrong, text), sl::invalid_input);
  CHECK(wrong.wait() == 0);
}

namespace {
// Saved and restored at every step: each state loads, the chain of restored copies reports and
// saves exactly what a never-restored twin does. `feed(policy, x)` observes one value.
template <class Policy, class Feed>
void check_every_step_resumes(Policy reference, Feed feed, double (*stream)(int), int steps) {
  Policy chained = reference;
  for (int i = 0; i < steps; ++i) {
    const std::string text = sl::save_state(chained);
    Policy resumed = reference;
    try {
      sl::restore_state(resumed, text);
    } catch (const sl::invalid_input& e) {
      FAIL("step " << i << ": " << e.what() << "\n" << text);
    }
    REQUIRE(sl::save_state(resumed) == text);
    chained = resumed;
    const double x = stream(i);
    feed(reference, x);
    feed(chained, x);
    REQUIRE(sl::save_state(chained) == sl::save_state(reference));
  }
}
// Falls from 100 to 1e-3 by a factor 5 a step, again every 40 steps: the window's running mean
// keeps the rounding of 100 after 100 has left it. Rising: the same backwards.
double falling(int i) { return 100.0 * std::pow(0.2, i % 40) + 1e-3; }
double rising(int i) { return 100.0 * std::pow(0.2, 39 - i % 40) + 1e-3; }
double wide(int i) { return (i % 7 == 0 ? 1e6 : 1.0) * (1.0 + 0.37 * std::sin(i)) + (i % 40 < 3 ? 1e9 : 0.0); }
}  // namespace

TEST_CASE("Every state a windowed sum writes loads, even after large values left the window",
          "[stability][state][window]") {
  for (auto stream : {&falling, &rising, &wide}) {
    for (std::size_t window : {2u, 10u, 16u, 50u}) {
      INFO("window " << window);
      check_every_step_resumes(
          sl::StabilityMetrics<double>({.window = window}), [](auto& m, double x) { m.update(x, 1.0); }, stream,
          3000);
      auto dampen = [](auto& d, double x) { d.update(x, 1.0); };
      check_every_step_resumes(sl::SpikeDampener<double, sl::detect::mean_ratio>({.window = window}), dampen, stream,
                               3000);
      check_every_step_resumes(
          sl::SpikeDampener<double, sl::detect::zscore>({.window = window, .detector = {.sigma_factor = 3.0}}), dampen, stream,
          3000);
    }
  }
}
