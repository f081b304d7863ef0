// loss/*.hpp: each term's value and gradient against the closed forms (long double), against
// central finite differences of its own value (double), at extreme inputs, and its parameter checks.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include <steadyloss/steadyloss.hpp>

#include "reference.hpp"

namespace sl = steadyloss;
using Catch::Matchers::Contains;

namespace {

template <class T, class Term, class Value, class Grad>
void check_against_reference(const Term& term, Value want_value, Grad want_grad, T lo, T hi) {
  const auto preds = reference::uniform<T>(4000, lo, hi, 1);
  const auto targets = reference::uniform<T>(4000, T(0), T(1), 2);
  const double tol = reference::tolerance<T>();
  for (std::size_t i = 0; i < preds.size(); ++i) {
    const T p = preds[i], y = targets[i];
    const auto v = want_value(p, y), g = want_grad(p, y);
    INFO("pred " << p << " target " << y);
    REQUIRE(std::fabs(term.value(p, y) - v) <= tol * (1 + std::fabs(v)));
    REQUIRE(std::fabs(term.grad(p, y) - g) <= tol * (1 + std::fabs(g)));
    const auto fused = sl::detail::value_and_grad(term, p, y);
    REQUIRE(fused.value == term.value(p, y));
    REQUIRE(fused.grad == term.grad(p, y));
  }
}

/// d value / d pred by central differences, in double, away from kinks.
template <class Term>
void check_finite_differences(const Term& term, double lo, double hi) {
  const auto preds = reference::uniform<double>(500, lo, hi, 3);
  const auto targets = reference::uniform<double>(500, 0.0, 1.0, 4);
  const double h = 1e-6;
  for (std::size_t i = 0; i < preds.size(); ++i) {
    const double p = preds[i], y = targets[i];
    const double numeric = (term.value(p + h, y) - term.value(p - h, y)) / (2 * h);
    INFO("pred " << p << " target " << y);
    REQUIRE(term.grad(p, y) == Approx(numeric).epsilon(1e-6).margin(1e-8));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("Huber matches PyTorch's huber_loss formula", "[terms]", float, double) {
  using T = TestType;
  for (T delta : {T(0.25), T(1), T(3)}) {
    const sl::Huber<T> term{.delta = delta};
    check_against_reference<T>(
        term, [&](T p, T y) { return reference::huber(p, y, delta); },
        [&](T p, T y) { return reference::huber_grad(p, y, delta); }, T(-6), T(6));
  }
  const sl::Huber<T> unit{};
  CHECK(unit.value(T(0.5), T(0)) == T(0.125));   // 0.5 d^2
  CHECK(unit.value(T(3), T(0)) == T(2.5));       // delta (|d| - delta / 2)
  CHECK(unit.grad(T(-3), T(0)) == T(-1));
  CHECK(unit.grad(T(1), T(0)) == T(1));          // the kink: both branches agree
}

TEMPLATE_TEST_CASE("BalancedBCE matches binary_cross_entropy_with_logits(pos_weight)", "[terms]",
                   float, double) {
  using T = TestType;
  for (T pos_weight : {T(1), T(5), T(0.3)}) {
    const sl::BalancedBCE<T> term{.pos_weight = pos_weight};
    check_against_reference<T>(
        term, [&](T x, T y) { return reference::bce(x, y, pos_weight); },
        [&](T x, T y) { return reference::bce_grad(x, y, pos_weight); }, T(-30), T(30));
  }
  // Worked by hand: at x = 0, s = 1/2, l = (1 + (p - 1) y) log 2; grad = (1 + (p - 1) y)/2 - p y.
  const sl::BalancedBCE<T> five{};
  CHECK(five.value(T(0), T(1)) == Approx(5 * std::log(2.0)).epsilon(1e-6));
  CHECK(five.grad(T(0), T(1)) == Approx(-2.5).epsilon(1e-6));
  CHECK(five.grad(T(0), T(0)) == Approx(0.5).epsilon(1e-6));
}

TEMPLATE_TEST_CASE("LabelSmoothing feeds y(1 - eps) + eps/2 to the wrapped term", "[terms]", float,
                   double) {
  using T = TestType;
  const sl::LabelSmoothing term{sl::BalancedBCE<T>{.pos_weight = T(5)}, T(0.05)};
  check_against_reference<T>(
      term, [](T x, T y) { return reference::bce(x, y * T(0.95) + T(0.025), 5); },
      [](T x, T y) { return reference::bce_grad(x, y * T(0.95) + T(0.025), 5); }, T(-20), T(20));
  CHECK(term.smoothed(T(1)) == Approx(0.975));
  CHECK(term.smoothed(T(0)) == Approx(0.025));
  const sl::LabelSmoothing off{sl::BalancedBCE<T>{}, T(0)};
  CHECK(off.value(T(0.7), T(1)) == sl::BalancedBCE<T>{}.value(T(0.7), T(1)));
  static_assert(std::is_same_v<decltype(term), const sl::LabelSmoothing<sl::BalancedBCE<T>>>);
}

TEMPLATE_TEST_CASE("L1 and MSE match their closed forms", "[terms]", float, double) {
  using T = TestType;
  check_against_reference<T>(
      sl::L1<T>{}, [](T p, T y) { return std::fabs(p - y); },
      [](T p, T y) { return p > y ? T(1) : (p < y ? T(-1) : T(0)); }, T(-5), T(5));
  check_against_reference<T>(
      sl::MSE<T>{}, [](T p, T y) { return (p - y) * (p - y); }, [](T p, T y) { return 2 * (p - y); },
      T(-5), T(5));
  CHECK(sl::L1<T>{}.grad(T(2), T(2)) == T(0));  // PyTorch: sign(0) = 0
}

TEST_CASE("Every term's gradient is the derivative of its value (finite differences)", "[terms]") {
  check_finite_differences(sl::Huber<double>{.delta = 0.7}, -4, 4);
  check_finite_differences(sl::BalancedBCE<double>{.pos_weight = 5}, -15, 15);
  check_finite_differences(sl::LabelSmoothing{sl::BalancedBCE<double>{.pos_weight = 2}, 0.1}, -15, 15);
  check_finite_differences(sl::MSE<double>{}, -4, 4);
  check_finite_differences(sl::L1<double>{}, -4, 4);
}

TEMPLATE_TEST_CASE("BalancedBCE stays finite and exact at extreme logits", "[terms][extreme]", float,
                   double) {
  using T = TestType;
  const sl::BalancedBCE<T> term{.pos_weight = T(5)};
  for (T magnitude : {T(1e4), T(1e30)}) {
    // Confident and right: loss 0, gradient 0. Confident and wrong: loss linear in |x|.
    CHECK(term.value(magnitude, T(1)) == T(0));
    CHECK(term.grad(magnitude, T(1)) == T(0));
    CHECK(term.value(-magnitude, T(0)) == T(0));
    CHECK(term.grad(-magnitude, T(0)) == T(0));
    CHECK(term.value(magnitude, T(0)) == Approx(magnitude).epsilon(1e-6));
    CHECK(term.grad(magnitude, T(0)) == T(1));
    CHECK(term.value(-magnitude, T(1)) == Approx(5 * magnitude).epsilon(1e-6));
    CHECK(term.grad(-magnitude, T(1)) == T(-5));
    CHECK(std::isfinite(term.value(magnitude, T(0.3))));
  }
  // Subnormal logits behave like 0.
  const T tiny = std::numeric_limits<T>::denorm_min();
  CHECK(term.value(tiny, T(1)) == Approx(5 * std::log(2.0)).epsilon(1e-6));
  CHECK(term.grad(-tiny, T(0)) == Approx(0.5).epsilon(1e-6));
  // Large-but-finite logits on the far side of the exp flush stay accurate.
  CHECK(term.grad(T(-80), T(0)) == Approx(std::exp(-80.0)).epsilon(1e-5));
}

TEMPLATE_TEST_CASE("BalancedBCE keeps its relative accuracy over the whole range of logits", "[terms][extreme]",
                   float, double) {
  // (1 - y) x + ... (PyTorch's form) cancels for confident negatives: in float it gave 0 instead
  // of ~7e-8 for logits in [-17, -16] with y = 0, and 5% off at x = -13.9.
  using T = TestType;
  using limits = std::numeric_limits<T>;
  const double relative = sizeof(T) == 4 ? 1e-6 : 1e-14;  // a few ulp of T
  // exp results below the smallest normal flush to 0 (an error below min() per unit of weight).
  const double floor = 6 * double(limits::min());
  std::vector<T> logits{T(0), limits::denorm_min(), limits::max(), T(-16.5), T(-13.9), T(-17)};
  for (int exponent = limits::min_exponent - limits::digits; exponent <= limits::max_exponent; ++exponent)
    for (double mantissa : {0.5, 0.61, 0.77, 0.93})
      logits.push_back(static_cast<T>(std::ldexp(mantissa, exponent)));
  for (T x = T(-120); x <= T(120); x += T(0.37)) logits.push_back(x);
  const std::size_t positive = logits.size();
  for (std::size_t i = 0; i < positive; ++i) logits.push_back(-logits[i]);

  for (const T pos_weight : {T(1), T(5)}) {
    for (const T eps : {T(0), T(0.05)}) {
      const sl::LabelSmoothing term{sl::BalancedBCE<T>{.pos_weight = pos_weight}, eps};
      for (const T label : {T(0), T(1), T(0.3)}) {
        const reference::real y = reference::smooth(label, eps);
        int checked = 0;
        for (const T x : logits) {
          const reference::real want = reference::bce(x, y, pos_weight);
          const auto got = sl::detail::value_and_grad(term, x, label);
          INFO("logit " << x << " label " << label << " eps " << eps << " pos_weight " << pos_weight);
          // A smoothed target is rounded to T (|dy| <= epsilon), which moves the value by up to
          // dy (softplus(x) + p softplus(-x)) and the gradient by dy (s(x) + p s(-x)), whatever
          // the formula.
          const double dy = eps == T(0) ? 0.0 : double(limits::epsilon());
          if (want <= reference::real(limits::max())) {  // else p |x| overflows T, as documented
            const double moved =
                dy == 0 ? 0.0 : dy * double(-reference::log_sigmoid(-x) - pos_weight * reference::log_sigmoid(x));
            CHECK(std::fabs(double(got.value) - double(want)) <= relative * double(want) + moved + floor);
            ++checked;
          }
          const reference::real want_grad = reference::bce_grad(x, y, pos_weight);
          const double scale = double(reference::bce_grad_scale(x, y, pos_weight));
          const double moved = dy == 0 ? 0.0 : dy * double(reference::sigmoid(x) + pos_weight * reference::sigmoid(-x));
          CHECK(std::fabs(double(got.grad) - double(want_grad)) <= relative * scale + moved + floor);
        }
        CHECK(checked > 500);
      }
    }
  }

  // The fused pass keeps it: confident negatives average to ~7e-8, not 0.
  const auto negatives = reference::uniform<T>(1000, T(-17), T(-16), 21);
  const std::vector<T> zeros(negatives.size(), T(0));
  reference::real want = 0;
  for (const T x : negatives) want += reference::bce(x, 0, 5);
  want /= negatives.size();
  CHECK(sl::value(sl::BalancedBCE<T>{}, sl::inputs(negatives, zeros)).value ==
        Approx(double(want)).epsilon(relative));
}

TEMPLATE_TEST_CASE("NaN and Inf predictions propagate as documented", "[terms][extreme]", float,
                   double) {
  using T = TestType;
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
  CHECK(std::isnan(sl::Huber<T>{}.value(nan, T(0))));
  CHECK(std::isnan(sl::Huber<T>{}.grad(nan, T(0))));
  CHECK(std::isnan(sl::BalancedBCE<T>{}.value(nan, T(1))));
  CHECK(std::isnan(sl::BalancedBCE<T>{}.grad(nan, T(1))));
  CHECK(std::isnan(sl::L1<T>{}.grad(nan, T(0))));
  CHECK(std::isnan(sl::MSE<T>{}.value(nan, T(0))));
  // Huber of an infinite error: infinite value, bounded gradient (as PyTorch).
  CHECK(sl::Huber<T>{}.value(inf, T(0)) == inf);
  CHECK(sl::Huber<T>{}.grad(-inf, T(0)) == T(-1));
  // BCE at +-Inf: infinite where the loss diverges, NaN where the formula reads 0 * Inf (a loss
  // of 0 * Inf: right with certainty, and wrong with weight 0).
  CHECK(sl::BalancedBCE<T>{}.value(inf, T(0)) == inf);
  CHECK(sl::BalancedBCE<T>{}.value(-inf, T(1)) == inf);
  CHECK(std::isnan(sl::BalancedBCE<T>{}.value(inf, T(1))));
  CHECK(std::isnan(sl::BalancedBCE<T>{}.value(-inf, T(0))));
  CHECK(sl::BalancedBCE<T>{}.grad(inf, T(0)) == T(1));
  CHECK(sl::BalancedBCE<T>{}.grad(-inf, T(1)) == T(-5));
}

TEMPLATE_TEST_CASE("Out-of-range parameters are rejected with the parameter and value named",
                   "[terms][errors]", float, double) {
  using T = TestType;
  const std::vector<T> pred{T(0.1), T(0.2)}, target{T(0), T(1)};
  const auto in = sl::inputs(pred, target);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  CHECK_THROWS_AS(sl::value(sl::Huber<T>{.delta = T(-1)}, in), sl::invalid_parameter);
  CHECK_THROWS_WITH(sl::value(sl::Huber<T>{.delta = T(-1)}, in), Contains("delta") && Contains("-1"));
  CHECK_THROWS_AS(sl::value(sl::Huber<T>{.delta = T(0)}, in), sl::invalid_parameter);
  CHECK_THROWS_AS(sl::value(sl::Huber<T>{.delta = nan}, in), sl::invalid_parameter);
  CHECK_THROWS_WITH(sl::value(sl::BalancedBCE<T>{.pos_weight = T(0)}, in),
                    Contains("pos_weight") && Contains("got 0"));
  CHECK_THROWS_AS(sl::value(sl::BalancedBCE<T>{.pos_weight = -std::numeric_limits<T>::infinity()}, in),
                  sl::invalid_parameter);
  CHECK_THROWS_WITH(sl::value(sl::LabelSmoothing{sl::BalancedBCE<T>{}, T(1)}, in),
                    Contains("eps") && Contains("[0, 1)") && Contains("got 1"));
  CHECK_THROWS_AS(sl::value(sl::LabelSmoothing{sl::BalancedBCE<T>{}, T(-0.1)}, in), sl::invalid_parameter);
  CHECK_THROWS_AS(sl::value(sl::LabelSmoothing{sl::BalancedBCE<T>{.pos_weight = T(-2)}, T(0.1)}, in),
                  sl::invalid_parameter);
  CHECK_NOTHROW(sl::value(sl::LabelSmoothing{sl::BalancedBCE<T>{}, T(0)}, in));
}

TEMPLATE_TEST_CASE("BCE targets outside 0..1 are rejected, naming the first one", "[terms][errors]",
                   float, double) {
  using T = TestType;
  std::vector<T> logits(100, T(0.5)), targets(100, T(1)), grad(100);
  targets[37] = T(1.5);
  targets[80] = T(-1);
  CHECK_THROWS_AS(sl::evaluate(sl::BalancedBCE<T>{}, sl::inputs(logits, targets), grad), sl::invalid_input);
  CHECK_THROWS_WITH(sl::value(sl::BalancedBCE<T>{}, sl::inputs(logits, targets)),
                    Contains("target[37] = 1.5") && Contains("[0, 1]") && Contains("2 outside"));
  targets[37] = targets[80] = std::numeric_limits<T>::quiet_NaN();
  CHECK_THROWS_AS(sl::value(sl::LabelSmoothing{sl::BalancedBCE<T>{}, T(0.1)}, sl::inputs(logits, targets)),
                  sl::invalid_input);
  targets[37] = T(0);
  targets[80] = T(1);
  CHECK_NOTHROW(sl::value(sl::BalancedBCE<T>{}, sl::inputs(logits, targets)));
}
