// Writing your own spike detector (docs/extending.md): EmaRatio of user_detector.hpp, written
// against the public API only, decides through SpikeDampener, saves and restores its state, and
// is checked by the SpikeDetector concept.
#include <catch2/catch.hpp>

#include <limits>
#include <string>
#include <vector>

#include <steadyloss/stability/stability.hpp>

#include "user_detector.hpp"

namespace sl = steadyloss;
using Dampener = sl::SpikeDampener<double, user::EmaRatio>;

static_assert(sl::SpikeDetector<user::EmaRatio>);
static_assert(sl::SpikeDetector<sl::detect::mean_ratio>);
static_assert(sl::SpikeDetector<sl::detect::ema_zscore>);
static_assert(!sl::SpikeDetector<int>);
namespace {
struct no_limit {  // everything but limit(): not a detector
  struct config {};
  static constexpr std::string_view name = "no_limit";
  no_limit(const config&, std::size_t, std::size_t) {}
  bool ready() const { return true; }
  double reference() const { return 0; }
  void accept(double) {}
  void clear() {}
  void save(sl::state_writer&) const {}
  void load(sl::state_reader&) {}
};
}  // namespace
static_assert(!sl::SpikeDetector<no_limit>);

TEST_CASE("A user detector decides through SpikeDampener: ratio x the debiased EMA of accepted losses",
          "[stability][spike][user_detector]") {
  // [snippet user_detector_dampener]
  sl::SpikeDampener<double, user::EmaRatio> spikes({.window = 3, .detector = {.ratio = 2.0, .factor = 0.5}});
  // [end snippet]
  // Warm-up = window = 3 values: accepted, no decision.
  for (int i = 0; i < 3; ++i) CHECK(spikes.update(1.0).warming_up);
  // EMA of 1, 1, 1 debiased: exactly 1; limit 2. A loss of 3 is dampened to 2 (scale 2/3).
  auto d = spikes.update(3.0);
  CHECK(d.is_spike);
  CHECK(d.limit == 2.0);
  CHECK(d.scale == Approx(2.0 / 3.0));
  CHECK(d.effective == 2.0);
  // The spike did not enter the EMA: 1.5 is below 2 and is accepted.
  d = spikes.update(1.5);
  CHECK_FALSE(d.is_spike);
  CHECK(d.limit == 2.0);
  // EMA of 1, 1, 1, 1.5 (weights 1/2, 1/4, 1/8, 1/16 from the newest, debiased by 1 - 1/16):
  // (0.75 + 0.25 + 0.125 + 0.0625) / 0.9375 = 19/15; limit 38/15 = 2.533: 2.5 is accepted.
  d = spikes.update(2.5);
  CHECK_FALSE(d.is_spike);
  CHECK(d.limit == Approx(38.0 / 15.0));
  // Then (1.25 + 0.375 + 0.125 + 0.0625 + 0.03125) / 0.96875 = 59/31; limit 118/31 = 3.806.
  d = spikes.update(4.0);
  CHECK(d.is_spike);
  CHECK(d.limit == Approx(118.0 / 31.0));
  CHECK(d.scale == Approx(118.0 / 31.0 / 4.0));
  CHECK(spikes.spikes() == 2);
  // A non-finite loss is SpikeDampener's to skip; the detector never sees it.
  d = spikes.update(std::numeric_limits<double>::quiet_NaN());
  CHECK(d.skipped);
  CHECK(d.scale == 0.0);
  CHECK(spikes.update(3.9).limit == Approx(118.0 / 31.0));
}

TEST_CASE("A user detector's config is validated by its constructor", "[stability][spike][user_detector]") {
  CHECK_THROWS_WITH(Dampener({.detector = {.ratio = 1.0}}), "EmaRatio: ratio must be > 1");
  CHECK_THROWS_WITH(Dampener({.detector = {.factor = 1.0}}), "EmaRatio: factor must be in [0, 1)");
  // The shared settings are still SpikeDampener's to check.
  CHECK_THROWS_WITH(Dampener({.window = 0}), "SpikeDampener: window must be > 0, got 0");
}

TEST_CASE("A user detector's state round-trips: the resumed dampener takes the same decisions",
          "[stability][spike][user_detector][state]") {
  const Dampener::config config{.window = 4, .mode = sl::spike_mode::dampen, .detector = {.ratio = 1.5, .factor = 0.8}};
  const std::vector<double> stream = {1.0, 1.2, 0.9, 1.1, 3.0, 1.0, 1.3, 2.5, 0.8, 1.0, 1.1, 4.0, 1.2, 0.9, 1.0};
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    CAPTURE(cut);
    Dampener uninterrupted(config);
    for (std::size_t i = 0; i < cut; ++i) uninterrupted.update(stream[i]);
    const std::string state = sl::save_state(uninterrupted);
    REQUIRE(state.find("begin EmaRatio\n") != std::string::npos);
    Dampener resumed(config);
    sl::restore_state(resumed, state);
    CHECK(sl::save_state(resumed) == state);
    for (std::size_t i = cut; i < stream.size(); ++i) {
      const auto a = uninterrupted.update(stream[i]);
      const auto b = resumed.update(stream[i]);
      CHECK(a.scale == b.scale);  // bit for bit
      CHECK(a.limit == b.limit);
      CHECK(a.is_spike == b.is_spike);
    }
  }
  // A state from a differently configured detector is rejected, naming the setting.
  Dampener saved(config);
  for (double x : stream) saved.update(x);
  Dampener other({.window = 4, .detector = {.ratio = 3.0, .factor = 0.8}});
  const std::string before = sl::save_state(other);
  CHECK_THROWS_WITH(sl::restore_state(other, sl::save_state(saved)),
                    Catch::Contains("EmaRatio was saved with ratio = 1.5, this one has 3"));
  CHECK(sl::save_state(other) == before);  // never half-loaded
}
