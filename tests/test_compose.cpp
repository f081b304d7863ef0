// loss/compose.hpp: a composed loss equals its terms evaluated one by one, weighted; weights and
// multipliers are runtime values; misuse is rejected.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <steadyloss/steadyloss.hpp>

#include "reference.hpp"

namespace sl = steadyloss;
using Catch::Matchers::Contains;

namespace {
template <class T>
auto tts_loss() {
  return sl::compose(sl::term(sl::Huber<T>{.delta = T(1)}, T(35)),
                     sl::term(sl::LabelSmoothing{sl::BalancedBCE<T>{.pos_weight = T(5)}, T(0.05)}, T(1)));
}
}  // namespace

TEMPLATE_TEST_CASE("a composed loss is its terms, weighted, in one call", "[compose]", float, double) {
  using T = TestType;
  const std::size_t frames = 2 * 50, bins = 8;  // [batch 2, time 50, mel 8]
  const auto mel_pred = reference::uniform<T>(frames * bins, T(-2), T(2), 1);
  const auto mel_target = reference::uniform<T>(frames * bins, T(-2), T(2), 2);
  const auto stop_logits = reference::uniform<T>(frames, T(-6), T(6), 3);
  const auto stop_target = reference::bernoulli<T>(frames, 0.05, 4);
  const std::vector<int> lengths{50, 31};
  std::vector<T> d_mel(frames * bins), d_stop(frames), want_mel(frames * bins), want_stop(frames);

  auto loss = tts_loss<T>();
  static_assert(std::is_same_v<decltype(loss),
                               sl::composed_loss<sl::Huber<T>, sl::LabelSmoothing<sl::BalancedBCE<T>>>>);
  static_assert(decltype(loss)::size == 2);

  const auto mel_in = sl::inputs(mel_pred, mel_target, sl::lengths(lengths, 50, bins));
  const auto stop_in = sl::inputs(stop_logits, stop_target, sl::lengths(lengths, 50, 1));
  const auto r = loss.evaluate(mel_in, stop_in, sl::grads(d_mel, d_stop));
  const auto mel = sl::evaluate(loss.template term<0>(), mel_in, want_mel);
  const auto stop = sl::evaluate(loss.template term<1>(), stop_in, want_stop);

  CHECK(r.values[0] == mel.value);
  CHECK(r.values[1] == stop.value);
  CHECK(r.weights == std::array<T, 2>{T(35), T(1)});
  CHECK(r.total == Approx(35 * static_cast<double>(mel.value) + stop.value).epsilon(reference::tolerance<T>()));
  CHECK(r.denominators[0] == 81 * bins);
  CHECK(r.denominators[1] == 81);
  for (std::size_t i = 0; i < d_mel.size(); ++i) REQUIRE(d_mel[i] == Approx(35 * want_mel[i]));
  for (std::size_t i = 0; i < d_stop.size(); ++i) REQUIRE(d_stop[i] == Approx(want_stop[i]));

  const auto values_only = loss.evaluate(mel_in, stop_in);
  CHECK(values_only.total == r.total);
}

TEMPLATE_TEST_CASE("weights change at run time through multipliers and base weights", "[compose]",
                   float, double) {
  using T = TestType;
  const auto p = reference::uniform<T>(64, T(-1), T(1), 7), y = reference::uniform<T>(64, T(-1), T(1), 8);
  std::vector<T> g0(64), g1(64), base0(64);
  auto loss = sl::compose(sl::term(sl::MSE<T>{}, T(2)), sl::L1<T>{});  // a bare term has weight 1
  CHECK(loss.base_weights() == std::array<T, 2>{T(2), T(1)});
  const auto before = loss.evaluate(sl::inputs(p, y), sl::inputs(p, y), sl::grads(base0, g1));

  const std::array<T, 2> multipliers{T(1.3), T(0.7)};
  loss.set_multipliers(multipliers);
  CHECK(loss.weights() == std::array<T, 2>{T(2) * T(1.3), T(1) * T(0.7)});
  const auto after = loss.evaluate(sl::inputs(p, y), sl::inputs(p, y), sl::grads(g0, g1));
  CHECK(after.values == before.values);  // values are unweighted
  CHECK(after.total == Approx(2 * 1.3 * static_cast<double>(after.values[0]) + 0.7 * after.values[1]));
  for (std::size_t i = 0; i < 64; ++i) REQUIRE(g0[i] == Approx(1.3 * base0[i]));

  const std::array<T, 2> bases{T(4), T(0)};
  loss.set_base_weights(bases);
  CHECK(loss.weights() == std::array<T, 2>{T(4) * T(1.3), T(0)});
}

TEST_CASE("composed loss misuse is rejected with a clear message", "[compose][errors]") {
  const std::vector<float> p(16, 0.5f), y(16, 0.25f);
  std::vector<float> g(16);
  auto loss = tts_loss<float>();
  const std::array<float, 3> three{1, 1, 1};
  CHECK_THROWS_AS(loss.set_multipliers(three), sl::shape_mismatch);
  CHECK_THROWS_WITH(loss.set_multipliers(three), Contains("expects 2 values, got 3"));
  const std::array<float, 2> negative{1, -0.5f};
  CHECK_THROWS_AS(loss.set_multipliers(negative), sl::invalid_parameter);
  CHECK_THROWS_WITH(loss.set_base_weights(negative), Contains("value 1") && Contains("-0.5"));
  CHECK_THROWS_AS(sl::compose(sl::term(sl::Huber<float>{}, -1.0f)), sl::invalid_parameter);
  CHECK_THROWS_WITH(loss.evaluate(sl::inputs(p, y), sl::inputs(p, y), sl::grads(g, g)),
                    Contains("gradients of terms 0 and 1 overlap"));
  CHECK(loss.multipliers() == std::array<float, 2>{1, 1});  // failed setters changed nothing
}

TEMPLATE_TEST_CASE("one check of base weight x multiplier, one message, for setters and evaluate", "[compose][errors]",
                   float, double) {
  // The setters and evaluate's defensive re-check share detail::checked_weight_product.
  using T = TestType;
  const T big = std::sqrt(std::numeric_limits<T>::max()) * T(4);
  CHECK(sl::detail::checked_weight_product("evaluate", 2, T(3), T(0.5)) == T(1.5));
  CHECK_THROWS_AS(sl::detail::checked_weight_product("evaluate", 2, big, big), sl::invalid_parameter);
  const std::string expected =
      sl::detail::message("composed_loss::evaluate: term 2's weight, base weight ", big, " x multiplier ", big,
                          ", is not finite");
  CHECK_THROWS_WITH(sl::detail::checked_weight_product("evaluate", 2, big, big), expected);
  auto loss = sl::compose(sl::term(sl::L1<T>{}, T(1)), sl::term(sl::L1<T>{}, big));
  const std::array<T, 2> multipliers{T(1), big};
  CHECK_THROWS_WITH(loss.set_multipliers(multipliers),
                    sl::detail::message("composed_loss::set_multipliers: term 1's weight, base weight ", big,
                                        " x multiplier ", big, ", is not finite"));
}

TEST_CASE("a composed loss checks every term before writing any gradient", "[compose][errors]") {
  std::vector<float> p0(16, 3.0f), y0(16, 0.0f), p1(16, 0.5f), y1(16, 0.0f), short_target(15);
  std::vector<float> g0(16, -7.0f), g1(16, -7.0f);
  auto loss = sl::compose(sl::MSE<float>{}, sl::MSE<float>{});
  // Term 1 has a bad size: term 0's gradient must still be untouched.
  CHECK_THROWS_AS(loss.evaluate(sl::inputs(p0, y0), sl::inputs(p1, short_target), sl::grads(g0, g1)),
                  sl::shape_mismatch);
  for (float g : g0) REQUIRE(g == -7.0f);
  // Term 0's gradient is term 1's prediction: writing it would corrupt term 1's input.
  CHECK_THROWS_WITH(loss.evaluate(sl::inputs(p0, y0), sl::inputs(g0, y1), sl::grads(g0, g1)),
                    Contains("the gradient of term 0 overlaps the inputs of term 1"));
  for (float g : g0) REQUIRE(g == -7.0f);
  std::vector<float> unsized;
  CHECK_THROWS_AS(loss.evaluate(sl::inputs(p0, y0), sl::inputs(p1, y1), sl::grads(g0, unsized)),
                  sl::shape_mismatch);
}

namespace {
// A user's term that happens to have a member named `reduction` (its own setting, unrelated to
// the composed loss's): compose must still take it as a bare term, weight 1 and mean.
struct term_with_reduction_member {
  using value_type = double;
  sl::reduction reduction = sl::reduction::sum;
  double weight = 10;
  double value(double pred, double target) const { return std::fabs(pred - target); }
  double grad(double pred, double target) const { return pred > target ? 1.0 : (pred < target ? -1.0 : 0.0); }
};
}  // namespace

TEST_CASE("a user term with a member named reduction composes as a bare term", "[compose]") {
  auto loss = sl::compose(term_with_reduction_member{}, sl::term(sl::L1<double>{}, 2.0));
  static_assert(std::is_same_v<decltype(loss), sl::composed_loss<term_with_reduction_member, sl::L1<double>>>);
  CHECK(loss.base_weights() == std::array<double, 2>{1.0, 2.0});
  CHECK(loss.reduction<0>() == sl::reduction::mean);
  CHECK(loss.term<0>().reduction == sl::reduction::sum);  // the user's member, kept as it was
  const std::vector<double> pred{1, -2, 3, 0}, target{0, 0, 0, 0};
  std::vector<double> g0(4), g1(4);
  const auto r = loss.evaluate(sl::inputs(pred, target), sl::inputs(pred, target), sl::grads(g0, g1));
  CHECK(r.values[0] == Approx(6.0 / 4));  // the mean of |pred - target|, not the sum
  CHECK(r.weights[0] == 1.0);
  CHECK(r.total == Approx(6.0 / 4 + 2 * 6.0 / 4));
  CHECK(g0 == std::vector<double>{0.25, -0.25, 0.25, 0.0});
}
