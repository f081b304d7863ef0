// The study's scenarios and per-step decisions (examples/tts_stability/scenarios.hpp). Expected
// values are worked by hand from the documented rules, never taken from the code under test.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <vector>

#include "scenarios.hpp"

namespace st = steadyloss::study;

TEST_CASE("scenario names parse to their probabilities", "[study][scenario]") {
  const auto p = st::parse_scenario("p0.05");
  CHECK(p.name == "p0.05");
  CHECK(p.corrupt_probability == 0.05);
  CHECK(p.non_finite_probability == 0.0);
  CHECK(st::parse_scenario("p0").corrupt_probability == 0.0);
  CHECK(st::parse_scenario("p1").corrupt_probability == 1.0);
  const auto nf = st::parse_scenario("nonfinite");  // documented: the default corruption plus 1%
  CHECK(nf.corrupt_probability == 0.05);
  CHECK(nf.non_finite_probability == 0.01);
  const auto both = st::parse_scenario("p0.1+nf0.02");
  CHECK(both.corrupt_probability == 0.1);
  CHECK(both.non_finite_probability == 0.02);
  CHECK(st::parse_scenario("p0+nf0.01").corrupt_probability == 0.0);
}

TEST_CASE("bad scenario names are rejected with the name in the message", "[study][scenario]") {
  for (const char* bad : {"", "p", "q0.1", "p-0.1", "p1.5", "p0.1x", "p0.1+nf", "p0.1+nf2", "nonfinite2", "pnan"}) {
    INFO(bad);
    CHECK_THROWS_AS(st::parse_scenario(bad), std::invalid_argument);
  }
  CHECK_THROWS_WITH(st::parse_scenario("p0.1x"), Catch::Contains("p0.1x"));
}

TEST_CASE("scenario lists keep their order and refuse duplicates", "[study][scenario]") {
  const auto list = st::parse_scenarios("p0,p0.05,p0.1,p0.2,nonfinite");
  REQUIRE(list.size() == 5);
  CHECK(list[0].name == "p0");
  CHECK(list[3].corrupt_probability == 0.2);
  CHECK(list[4].name == "nonfinite");
  CHECK(st::default_scenarios().size() == 5);
  CHECK_THROWS_AS(st::parse_scenarios("p0,p0"), std::invalid_argument);
  CHECK_THROWS_AS(st::parse_scenarios("p0,"), std::invalid_argument);  // an empty name
}

TEST_CASE("batch kinds: non-finite first, then corrupted, from fixed uniforms", "[study][scenario]") {
  const auto s = st::parse_scenario("p0.1+nf0.02");
  CHECK(st::kind_of(0.5, 0.5, s) == st::batch_kind::clean);
  CHECK(st::kind_of(0.05, 0.5, s) == st::batch_kind::corrupted);
  CHECK(st::kind_of(0.5, 0.01, s) == st::batch_kind::non_finite);
  CHECK(st::kind_of(0.05, 0.01, s) == st::batch_kind::non_finite);  // both drawn: the batch is broken
  CHECK(st::kind_of(0.1, 0.5, s) == st::batch_kind::clean);          // strict: u < P
  CHECK(st::kind_of(0.0, 0.0, st::parse_scenario("p0")) == st::batch_kind::clean);
}

TEST_CASE("the schedules of two corruption rates nest", "[study][scenario]") {
  // Every batch corrupted at p = 0.05 is corrupted at p = 0.1, from the same uniforms.
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const auto low = st::parse_scenario("p0.05"), high = st::parse_scenario("p0.1");
  int at_low = 0, at_high = 0;
  for (int step = 0; step < 10000; ++step) {
    const double a = u(rng), b = u(rng);
    const bool l = st::kind_of(a, b, low) == st::batch_kind::corrupted, h = st::kind_of(a, b, high) == st::batch_kind::corrupted;
    at_low += l;
    at_high += h;
    if (l) CHECK(h);
  }
  // Binomial(10000, p): within 5 standard deviations of the mean.
  CHECK(std::abs(at_low - 500) < 5 * std::sqrt(10000 * 0.05 * 0.95));
  CHECK(std::abs(at_high - 1000) < 5 * std::sqrt(10000 * 0.1 * 0.9));
}

TEST_CASE("poison writes the NaN and the one Inf at distinct positions, nothing else", "[study][scenario]") {
  std::vector<float> values(80 * 60);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = float(i) * 0.5f;
  std::mt19937_64 rng(3);
  const auto positions = st::poison(std::span<float>(values), 3, rng);
  REQUIRE(positions.size() == 4);
  int nans = 0, infs = 0, untouched = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (std::isnan(values[i])) ++nans;
    else if (std::isinf(values[i])) {
      ++infs;
      CHECK(values[i] > 0);
      CHECK(i == positions.back());
    } else if (values[i] == float(i) * 0.5f) ++untouched;
  }
  CHECK(nans == 3);
  CHECK(infs == 1);
  CHECK(untouched == int(values.size()) - 4);
  // The smallest span that can hold them: every element is hit.
  std::vector<double> four(4, 1.0);
  st::poison(std::span<double>(four), 3, rng);
  int bad = 0;
  for (double v : four) bad += !std::isfinite(v);
  CHECK(bad == 4);
  std::vector<float> three(3);
  CHECK_THROWS_AS(st::poison(std::span<float>(three), 3, rng), std::invalid_argument);
}

TEST_CASE("optimizer scale: plain takes every step, the oracle skips the bad ones", "[study][scenario]") {
  using st::batch_kind;
  using st::step_rule;
  // Plain: a loop without the library updates on every batch, even with a report that says skip.
  CHECK(st::optimizer_scale(step_rule::plain, batch_kind::non_finite, 0.0f) == 1.0f);
  CHECK(st::optimizer_scale(step_rule::plain, batch_kind::corrupted, 0.3f) == 1.0f);
  // Oracle: skips exactly the corrupted and non-finite batches, whatever the report says.
  CHECK(st::optimizer_scale(step_rule::oracle, batch_kind::clean, 0.0f) == 1.0f);
  CHECK(st::optimizer_scale(step_rule::oracle, batch_kind::corrupted, 1.0f) == 0.0f);
  CHECK(st::optimizer_scale(step_rule::oracle, batch_kind::non_finite, 1.0f) == 0.0f);
  // Stabilizer: the report's scale, whatever the batch was.
  CHECK(st::optimizer_scale(step_rule::stabilizer, batch_kind::clean, 0.25f) == 0.25f);
  CHECK(st::optimizer_scale(step_rule::stabilizer, batch_kind::corrupted, 1.0f) == 1.0f);
  CHECK(st::optimizer_scale(step_rule::stabilizer, batch_kind::non_finite, 0.0f) == 0.0f);
}
