// Loading a state: every decision-changing setting must match, every field must be in range and
// agree with the others (a valid checksum proves nothing about that), and a fuzzed state is
// either rejected whole or safe to run on.
#include <catch2/catch.hpp>

#include <climits>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <steadyloss/presets.hpp>
#include <steadyloss/stability/stability.hpp>
#include <steadyloss/steadyloss.hpp>

#include "state_helpers.hpp"

namespace sl = steadyloss;
using namespace state_helpers;

namespace {

template <class Pipeline>
std::string state_after(Pipeline guard, int steps) {
  loss_stream<double> stream;
  for (int i = 0; i < steps; ++i) {
    double g = 0;
    guard.update(stream.next(g), g);
  }
  return guard.save();
}

// Restoring `text` into `target` must throw invalid_input whose message contains `fragment`,
// and leave `target` as it was.
template <class Pipeline>
void check_rejects(Pipeline& target, const std::string& text, const std::string& fragment) {
  INFO("expecting a rejection mentioning '" << fragment << "'");
  REQUIRE(!text.empty());
  const std::string before = target.save();
  try {
    target.restore(text);
    FAIL("accepted");
  } catch (const sl::invalid_input& e) {
    CHECK_THAT(e.what(), Catch::Matchers::Contains(fragment));
  }
  CHECK(target.save() == before);
}

using Stable = sl::presets::stable_stabilizer_type<double>;
using Dwa = sl::AdaptiveWeight<2, double>;

template <class Detector>
using one_dampener = sl::Stabilizer<sl::SpikeDampener<double, Detector>>;

}  // namespace

TEST_CASE("A state from a pipeline with any other decision-changing setting is rejected, naming it",
          "[stability][state]") {
  const std::string saved = state_after(sl::presets::stable_stabilizer<double>(), 60);
  const auto spikes = [] {  // the stable pipeline's: the calibrated detector, skipping
    auto c = sl::presets::calibrated_spikes;
    c.mode = sl::presets::stable.spikes;
    return c;
  }();
  const Dwa::config weights{.lo = 0.7, .hi = 1.3};
  auto with_weights = [&](Dwa::config c) {
    auto guard = sl::presets::stable_stabilizer<double>();
    guard.get<Dwa>() = Dwa(c);
    return guard;
  };
  auto with_spikes = [&](sl::presets::calibrated_spike_dampener<double>::config c) {
    auto guard = sl::presets::stable_stabilizer<double>();
    guard.get<sl::presets::calibrated_spike_dampener<double>>() = sl::presets::calibrated_spike_dampener<double>(c);
    return guard;
  };
  struct variant {
    std::function<Stable()> make;
    const char* setting;
  };
  const std::vector<variant> variants{
      {[&] { auto c = weights; c.fast = 0.8; return with_weights(c); }, "fast_factor"},
      {[&] { auto c = weights; c.slow = 0.999; return with_weights(c); }, "slow_factor"},
      {[&] { auto c = weights; c.warmup = 20; return with_weights(c); }, "AdaptiveWeight was saved with warmup"},
      {[&] { auto c = weights; c.temperature = 1.0; return with_weights(c); }, "temperature"},
      {[&] { auto c = weights; c.rule = sl::weight_rule::dwa; return with_weights(c); }, "rule = share_and_rate"},
      {[&] { auto c = spikes; c.mode = sl::spike_mode::dampen; return with_spikes(c); }, "mode = skip, this one has dampen"},
      {[&] { auto c = spikes; c.warmup = 5; return with_spikes(c); }, "SpikeDampener was saved with warmup"},
      {[&] { auto c = spikes; c.level_shift_after = 30; return with_spikes(c); }, "level_shift_after"},
      {[&] { auto c = spikes; c.min_ratio = 2.5; return with_spikes(c); }, "min_ratio"},
      {[&] { auto c = spikes; c.min_excess = 0.01; return with_spikes(c); }, "min_excess"},
  };
  for (const auto& v : variants) {
    auto target = v.make();
    check_rejects(target, saved, v.setting);
  }

  // The detectors' own parameters, each saved in the detector's section.
  const std::string mean_state = state_after(one_dampener<sl::detect::mean_ratio>(), 40);
  one_dampener<sl::detect::mean_ratio> other_ratio(sl::SpikeDampener<double>({.detector = {.threshold = 3.0}}));
  check_rejects(other_ratio, mean_state, "mean_ratio was saved with threshold = 2, this one has 3");
  const std::string median_state = state_after(one_dampener<sl::detect::median_ratio>(), 40);
  one_dampener<sl::detect::median_ratio> other_median_ratio(
      sl::SpikeDampener<double, sl::detect::median_ratio>({.detector = {.threshold = 2.5}}));
  check_rejects(other_median_ratio, median_state, "median_ratio was saved with threshold = 2, this one has 2.5");
  const std::string zscore_state = state_after(one_dampener<sl::detect::zscore>(), 40);
  one_dampener<sl::detect::zscore> other_k(sl::SpikeDampener<double, sl::detect::zscore>({.detector = {.sigma_factor = 3.0}}));
  check_rejects(other_k, zscore_state, "sigma_factor");
  const std::string ema_state = state_after(one_dampener<sl::detect::ema_zscore>(), 40);
  one_dampener<sl::detect::ema_zscore> other_alpha(sl::SpikeDampener<double, sl::detect::ema_zscore>({.detector = {.alpha = 0.9}}));
  check_rejects(other_alpha, ema_state, "alpha");
  one_dampener<sl::detect::ema_zscore> other_z(sl::SpikeDampener<double, sl::detect::ema_zscore>({.detector = {.z_threshold = 3.0}}));
  check_rejects(other_z, ema_state, "z_threshold");
  const std::string mad_state = state_after(one_dampener<sl::detect::mad_zscore>(), 40);
  one_dampener<sl::detect::mad_zscore> other_mad_k(sl::SpikeDampener<double, sl::detect::mad_zscore>({.detector = {.sigma_factor = 3.0}}));
  check_rejects(other_mad_k, mad_state, "sigma_factor");

  // Two different doubles never print alike (shortest round-trip digits, not 6 significant).
  one_dampener<sl::detect::zscore> nearly_k(
      sl::SpikeDampener<double, sl::detect::zscore>({.detector = {.sigma_factor = std::nextafter(6.0, 7.0)}}));
  check_rejects(nearly_k, zscore_state, "saved with sigma_factor = 6, this one has 6.000000000000001");
}

TEST_CASE("Out-of-range fields with a valid checksum are rejected, naming the field", "[stability][state]") {
  const std::string good = state_after(sl::presets::stable_stabilizer<double>(), 60);
  auto target = sl::presets::stable_stabilizer<double>();
  target.update(2.0, std::vector<double>{1.0, 1.0}, 1.0);
  const std::string big = std::to_string(LLONG_MAX);
  const std::string nan_then_zeros = [] {  // 25 slots (the calibrated window), the first NaN
    std::string values = "25 nan";
    for (int i = 0; i < 24; ++i) values += " 0x0p+0";
    return values;
  }();
  struct edit {
    const char* key;
    std::string value;
    const char* section;  // the edit applies to the first `key` after this text
    const char* fragment;
  };
  const std::vector<edit> edits{
      {"step", big, "begin Stabilizer", "Stabilizer step must be in [0, 9007199254740992]"},
      {"step", "59", "begin Stabilizer", "Stabilizer step is 59 but"},
      {"steps", big, "begin EmaSmoother", "EmaSmoother steps must be in"},
      {"sum", "inf", "begin EmaSmoother", "EmaSmoother sum must be finite"},
      {"history_power", "0x1p-1", "begin EmaSmoother", "EmaSmoother history_power must be"},
      {"spikes", big, "begin SpikeDampener", "SpikeDampener spikes must be in"},
      {"skips", "-1", "begin SpikeDampener", "SpikeDampener skips must be in"},
      {"consecutive_skips", "1000", "begin SpikeDampener", "consecutive_skips must be in"},
      {"run_values", nan_then_zeros, "begin SpikeDampener", "run_values value 0 must be finite"},
      {"count", "26", "begin mad_zscore", "mad_zscore count must be in [0, 25]"},
      {"slots", nan_then_zeros, "begin mad_zscore", "mad_zscore slots value 0 must be finite"},
      {"steps", big, "begin AdaptiveWeight", "AdaptiveWeight steps must be in"},
      {"fast", "2 inf 0x1p+0", "begin AdaptiveWeight", "AdaptiveWeight fast value 0 must be finite"},
      {"fast_power", "0x1p-1", "begin AdaptiveWeight", "AdaptiveWeight fast_power must be"},
      {"multipliers", "2 0x1p+1 0x1p+0", "begin AdaptiveWeight", "AdaptiveWeight multipliers value 0 must be in"},
      {"grad_steps", big, "begin StabilityMetrics", "StabilityMetrics grad_steps must be in"},
      {"grad_sum", "-inf", "begin StabilityMetrics", "StabilityMetrics grad_sum must be finite"},
      {"m2", "nan", "begin StabilityMetrics", "StabilityMetrics m2 must be finite"},
  };
  for (const auto& e : edits) {
    INFO(e.section << ": " << e.key << " = " << e.value);
    check_rejects(target, with_value(good, e.key, e.value, e.section), e.fragment);
  }

  // Multipliers move only after the warm-up: a state that says otherwise is not one we wrote.
  const std::string early = state_after(sl::presets::stable_stabilizer<double>(), 5);
  check_rejects(target, with_value(early, "multipliers", "2 0x1.2p+0 0x1p+0", "begin AdaptiveWeight"),
                "must be 1 during the warm-up");

  // A running window's counters and sums (mean_ratio, zscore).
  const std::string mean_state = state_after(one_dampener<sl::detect::mean_ratio>(), 40);
  one_dampener<sl::detect::mean_ratio> mean;
  check_rejects(mean, with_value(mean_state, "count", "11"), "mean_ratio count must be in [0, 10]");
  check_rejects(mean, with_value(mean_state, "m2", "inf"), "mean_ratio m2 must be finite");
  check_rejects(mean, with_value(mean_state, "mean", "0x1p+20"), "mean_ratio mean must be the mean");
  check_rejects(mean, with_value(mean_state, "mean", "0x1p+20"), "got 1048576");
  // drift_scale bounds the rounding the running sums carry; it covers every value in the window.
  check_rejects(mean, with_value(mean_state, "drift_scale", "0x0p+0"), "mean_ratio drift_scale must be");
  check_rejects(mean, with_value(mean_state, "drift_scale", "inf"), "mean_ratio drift_scale must be");
  // An emptied window must not keep a mean.
  const std::string mean_early = state_after(one_dampener<sl::detect::mean_ratio>(), 5);
  const std::string zero_count = with_value(mean_early, "count", "0");
  check_rejects(mean, with_value(zero_count, "next", "0"), "mean_ratio mean must be the mean");

  // An ema_zscore whose count is past its warm-up.
  const std::string ema_state = state_after(one_dampener<sl::detect::ema_zscore>(), 40);
  one_dampener<sl::detect::ema_zscore> ema;
  check_rejects(ema, with_value(ema_state, "count", big), "ema_zscore count must be in [0, 10]");
  check_rejects(ema, with_value(ema_state, "variance", "inf"), "ema_zscore variance must be finite");
}

TEST_CASE("A CRLF-converted state says so and another version line names the version", "[stability][state]") {
  const std::string good = state_after(sl::presets::stable_stabilizer<double>(), 20);
  auto target = sl::presets::stable_stabilizer<double>();
  std::string crlf;
  for (char c : good) {
    if (c == '\n') crlf.push_back('\r');
    crlf.push_back(c);
  }
  check_rejects(target, crlf, "CRLF");
  // The version line edited by hand (checksum not recomputed): the version is what is wrong.
  std::string edited = good;
  edited.replace(0, 18, "steadyloss-state 6");
  check_rejects(target, edited, "unsupported version '6', this build reads version 5");
}

TEST_CASE("apply_weights takes an AdaptiveWeight or a Stabilizer", "[stability][state]") {
  auto loss = sl::presets::stable_loss<double>();
  Dwa weights({.lo = 0.5, .hi = 2.0, .max_step = 0.5, .warmup = 1});
  for (int i = 0; i < 5; ++i) weights.update(std::vector<double>{1.0, 0.01});
  const auto m = weights.multipliers();
  REQUIRE(m[0] != 1.0);
  sl::apply_weights(loss, weights);
  CHECK(loss.multipliers() == m);

  auto guard = sl::presets::stable_stabilizer<double>();
  guard.get<Dwa>() = weights;
  auto fresh = sl::presets::stable_loss<double>();
  sl::apply_weights(fresh, guard);
  CHECK(fresh.multipliers() == m);
}

// Seeded fuzz of the loader: edits that keep the checksum valid (so they reach the field checks)
// must either be rejected whole or load a state on which the next updates run without undefined
// behaviour (this test runs under ASan + UBSan in CI) and with sane reports.
template <class Pipeline>
void fuzz_loader(const std::function<Pipeline()>& make, int iterations, std::uint64_t seed) {
  const std::string good = state_after(make(), 230);
  std::vector<std::string> lines;
  for (std::size_t start = 0; start < good.size();) {
    const auto end = good.find('\n', start);
    lines.push_back(good.substr(start, end - start));
    start = end + 1;
  }
  lines.pop_back();  // the checksum line: reseal writes it
  const std::vector<std::string> values{
      "0", "1", "-1", "2", "9", "10", "11", std::to_string(LLONG_MAX), std::to_string(LLONG_MIN),
      std::to_string(LLONG_MAX - 1), "9007199254740992", "9007199254740993", "nan", "inf", "-inf", "0x0p+0",
      "-0x0p+0", "0x1p+0", "0x1p+1023", "0x1p-1074", "-0x1p+0", "0x1.fffffffffffffp+1023", "0x1p-60", "0x1p-61",
      "dampen", "skip", "dwa", "1 0x1p+0", "2 0x1p+0 nan", "10"};
  lcg random{seed};
  int accepted = 0;
  for (int iteration = 0; iteration < iterations; ++iteration) {
    std::vector<std::string> edited = lines;
    const int edits = 1 + static_cast<int>(random.below(3));
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = 1 + random.below(edited.size() - 1);
      std::string& line = edited[at];
      switch (random.below(6)) {
        case 0:
        case 1:
        case 2: {  // replace one word of the value
          std::vector<std::size_t> spaces;
          for (std::size_t i = 0; i < line.size(); ++i)
            if (line[i] == ' ') spaces.push_back(i);
          if (spaces.empty()) break;
          const std::size_t word = spaces[random.below(spaces.size())] + 1;
          const std::size_t end = line.find(' ', word);
          line.replace(word, end == std::string::npos ? std::string::npos : end - word,
                       values[random.below(values.size())]);
          break;
        }
        case 3:  // nudge a number by one ulp or one unit
          if (const auto space = line.rfind(' '); space != std::string::npos && space + 1 < line.size()) {
            char& last = line.back();
            if (last >= '0' && last <= '8') ++last;
            else if (last == '9') last = '0';
          }
          break;
        case 4: edited.erase(edited.begin() + static_cast<std::ptrdiff_t>(at)); break;
        default: edited.insert(edited.begin() + static_cast<std::ptrdiff_t>(at), line); break;
      }
    }
    std::string text;
    for (const auto& l : edited) text += l + "\n";
    text = reseal(text);

    Pipeline target = make();
    target.update(2.0, std::vector<double>{1.0, 1.0}, 1.0);
    const std::string before = target.save();
    bool loaded = false;
    try {
      target.restore(text);
      loaded = true;
    } catch (const sl::invalid_input&) {
      if (target.save() != before) FAIL("a rejected state changed the pipeline:\n" << text);
    }
    if (!loaded) continue;
    ++accepted;
    loss_stream<double> stream;
    for (int i = 0; i < 300; ++i) {
      double g = 0;
      const auto r = target.update(stream.next(g), g);
      if (!(r.scale >= 0.0 && r.scale <= 1.0) || !(r.stability_score >= 0.0 && r.stability_score <= 1.0) ||
          r.step < 0)
        FAIL("an accepted state led to an impossible report at step " << i << ":\n" << text);
      for (double w : r.weights)
        if (!(w >= 0.7 && w <= 1.3)) FAIL("multiplier " << w << " out of bounds after loading:\n" << text);
    }
  }
  INFO("accepted " << accepted << " of " << iterations);
  CHECK(accepted > 0);  // some edits (a stale slot, a last digit) are harmless and must load
}

TEST_CASE("Fuzzed states with valid checksums are rejected whole or run safely", "[stability][state][fuzz]") {
  using Median = sl::Stabilizer<sl::SpikeDampener<double, sl::detect::median_ratio>,
                                sl::SpikeDampener<double, sl::detect::ema_zscore>, sl::EmaSmoother<double>,
                                sl::AdaptiveWeight<2, double>, sl::EarlyStopper<double>, sl::StabilityMetrics<double>>;
  using Zscore = sl::Stabilizer<sl::SpikeDampener<double, sl::detect::zscore>,
                                sl::SpikeDampener<double, sl::detect::mad_zscore>, sl::AdaptiveWeight<2, double>,
                                sl::EarlyStopper<double>>;
  fuzz_loader<Stable>([] { return sl::presets::stable_stabilizer<double>(); }, 1500, 1);
  fuzz_loader<Median>([] { return Median{}; }, 800, 2);
  fuzz_loader<Zscore>([] { return Zscore{}; }, 800, 3);
}
