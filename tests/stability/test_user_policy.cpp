// Writing your own step policy (docs/extending.md): GradNormClip and SkipHardClips of
// user_policy.hpp, written against the public API only, run inside a Stabilizer with the
// built-in policies, save and restore their state, and are checked by the Stabilizer's concept.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <steadyloss/stability/stability.hpp>

#include "user_policy.hpp"

namespace sl = steadyloss;

static_assert(sl::StepPolicy<user::GradNormClip>);
static_assert(sl::StepPolicy<user::GradNormClip, 3>);  // a template over N fits any pipeline
static_assert(sl::StepPolicy<user::SkipHardClips>);
static_assert(sl::StepPolicy<sl::EmaSmoother<>>);
static_assert(!sl::StepPolicy<int>);
namespace {
struct only_state {  // save/load, but no on_step: not a policy
  void save(sl::state_writer&) const {}
  void load(sl::state_reader&) {}
};
}  // namespace
static_assert(!sl::StepPolicy<only_state>);

TEST_CASE("A user policy clips the step to ratio x the running mean of the gradient norm",
          "[stability][user_policy]") {
  sl::Stabilizer<user::GradNormClip> guard{user::GradNormClip(2.0, 0.9)};
  // Ten norms of 1: the debiased EMA is exactly 1, nothing is clipped.
  for (int i = 0; i < 10; ++i) CHECK(guard.update(1.0f, 1.0f).scale == 1.0f);
  // A norm of 10 against a limit of 2 x 1: scale 2 / 10.
  CHECK(guard.update(1.0f, 10.0f).scale == Approx(0.2f));
  // The EMA followed the clipped norm (2, not 10): the bar rose to 2 x 1.1 / 1 only.
  const double ema = (0.9 * (1.0 - 0.9 * 0.9 * 0.9 * 0.9 * 0.9 * 0.9 * 0.9 * 0.9 * 0.9 * 0.9) + 0.1 * 2.0) /
                     (1.0 - std::pow(0.9, 11));
  CHECK(guard.update(1.0f, 10.0f).scale == Approx(2.0 * ema / 10.0));
  CHECK(std::string(guard.get<0>().name) == "GradNormClip");  // Catch2 2.13 prints no string_view under clang
}

TEST_CASE("A stateless user policy depends on a user kind and skips hard clips", "[stability][user_policy]") {
  sl::Stabilizer<user::GradNormClip, user::SkipHardClips> guard{user::GradNormClip(2.0), user::SkipHardClips{0.5}};
  for (int i = 0; i < 5; ++i) guard.update(1.0f, 1.0f);
  const auto soft = guard.update(1.0f, 3.0f);  // limit 2: scale 2/3, kept
  CHECK_FALSE(soft.skipped);
  CHECK(soft.scale == Approx(2.0 / 3.0));
  const auto hard = guard.update(1.0f, 40.0f);  // scale about 1/20 < 0.5: skipped
  CHECK(hard.skipped);
  CHECK(hard.scale == 0.0f);
  // Stateless: it writes nothing; the state holds GradNormClip's section only.
  const std::string state = guard.save();
  CHECK(state.find("GradNormClip") != std::string::npos);
  CHECK(state.find("SkipHardClips") == std::string::npos);
  const auto& const_guard = guard;
  CHECK(const_guard.get<1>().min_scale == 0.5);
  CHECK(const_guard.get<user::SkipHardClips>().min_scale == 0.5);
}

TEST_CASE("User and built-in policies in one pipeline resume bit-identically", "[stability][user_policy][state]") {
  using guard_type = sl::Stabilizer<sl::SpikeDampener<double>, user::GradNormClip, user::SkipHardClips,
                                    sl::EmaSmoother<double>, sl::EarlyStopper<double>>;
  auto make = [] {
    return guard_type{sl::SpikeDampener<double>{}, user::GradNormClip(1.5), user::SkipHardClips{0.1},
                      sl::EmaSmoother<double>{}, sl::EarlyStopper<double>({.patience = 50})};
  };
  auto loss_at = [](int step) { return 2.0 / (1.0 + 0.05 * step) + (step % 37 == 0 ? 5.0 : 0.0); };
  auto norm_at = [](int step) { return 1.0 + 0.1 * (step % 7) + (step % 23 == 0 ? 30.0 : 0.0); };
  auto same = [](const auto& a, const auto& b) {
    return std::bit_cast<std::uint64_t>(a.scale) == std::bit_cast<std::uint64_t>(b.scale) &&
           std::bit_cast<std::uint64_t>(a.smoothed) == std::bit_cast<std::uint64_t>(b.smoothed) &&
           a.skipped == b.skipped && a.is_spike == b.is_spike && a.should_stop == b.should_stop &&
           a.wait == b.wait;
  };

  guard_type original = make();
  int clipped = 0;
  for (int step = 0; step < 120; ++step) {
    const auto r = original.update(loss_at(step), norm_at(step));
    clipped += r.scale > 0.0 && r.scale < 1.0;
  }
  CHECK(clipped > 0);
  const std::string state = original.save();
  guard_type resumed = make();
  resumed.restore(state);
  CHECK(resumed.save() == state);
  for (int step = 120; step < 240; ++step) {
    INFO("step " << step);
    REQUIRE(same(original.update(loss_at(step), norm_at(step)), resumed.update(loss_at(step), norm_at(step))));
  }

  // A state from another GradNormClip configuration is refused, and nothing changes.
  guard_type other{sl::SpikeDampener<double>{}, user::GradNormClip(3.0), user::SkipHardClips{0.1},
                   sl::EmaSmoother<double>{}, sl::EarlyStopper<double>({.patience = 50})};
  const std::string before = other.save();
  CHECK_THROWS_AS(other.restore(state), sl::invalid_input);
  CHECK(other.save() == before);
}

TEST_CASE("The pipeline docs/extending.md shows compiles and clips", "[stability][user_policy]") {
  const double loss = 1.0, grad_norm = 1.0;
  // [snippet user_policy_pipeline]
  sl::Stabilizer<sl::SpikeDampener<double>, user::GradNormClip, user::SkipHardClips,
                 sl::EmaSmoother<double>, sl::EarlyStopper<double>> guard;
  auto report = guard.update(loss, grad_norm);  // report.scale includes the clip
  std::string state = guard.save();             // GradNormClip's section; SkipHardClips saves nothing
  // [end snippet]
  CHECK(report.scale == 1.0);
  CHECK(state.find("GradNormClip") != std::string::npos);
  CHECK(state.find("SkipHardClips") == std::string::npos);
  for (int i = 0; i < 20; ++i) guard.update(loss, grad_norm);
  CHECK(guard.update(loss, 4.0).scale == Approx(0.5));  // limit 2 x 1 against a norm of 4
}
