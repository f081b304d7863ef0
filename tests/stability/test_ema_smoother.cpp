// EmaSmoother against TensorBoard's debiased smoothing, worked by hand:
//   last = f * last + (1 - f) * x;  smoothed = last / (1 - f^t)  (t = finite points so far).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <steadyloss/stability/ema_smoother.hpp>

namespace sl = steadyloss;

TEMPLATE_TEST_CASE("EmaSmoother follows TensorBoard's debiased EMA", "[stability][ema]", float, double) {
  sl::EmaSmoother<TestType> ema({.factor = 0.5});
  // t=1: s = 0.5;   0.5 / 0.5    = 1
  // t=2: s = 1.25;  1.25 / 0.75  = 5/3
  // t=3: s = 2.125; 2.125 / 0.875 = 17/7
  CHECK(ema.update(TestType(1)) == Approx(1.0));
  CHECK(ema.update(TestType(2)) == Approx(5.0 / 3.0));
  CHECK(ema.update(TestType(3)) == Approx(17.0 / 7.0));
  // A NaN is reported as itself (TensorBoard draws it) and never enters the state.
  CHECK(std::isnan(ema.update(std::numeric_limits<TestType>::quiet_NaN())));
  CHECK(std::isinf(ema.update(std::numeric_limits<TestType>::infinity())));
  CHECK(ema.steps() == 3);
  // t=4: s = 1.0625 + 2 = 3.0625; 3.0625 / (1 - 1/16) = 49/15
  CHECK(ema.update(TestType(4)) == Approx(49.0 / 15.0));
  CHECK(ema.value() == Approx(49.0 / 15.0));
}

TEMPLATE_TEST_CASE("EmaSmoother defaults and edge cases", "[stability][ema]", float, double) {
  sl::EmaSmoother<TestType> ema;
  CHECK(ema.settings().factor == 0.1);
  CHECK(std::isnan(ema.value()));                 // nothing seen yet
  CHECK(ema.update(TestType(10)) == Approx(10));  // debiasing: the first value comes back unchanged
  // t=2 with f = 0.1: s = 0.1*0.9*10 + 0.9*20 = 18.9; / (1 - 0.01) = 19.0909...
  CHECK(ema.update(TestType(20)) == Approx(18.9 / 0.99));

  sl::EmaSmoother<TestType> off({.factor = 0.0});
  for (TestType x : {TestType(3), TestType(-1), TestType(7.5)}) CHECK(off.update(x) == x);

  sl::EmaSmoother<TestType> slow({.factor = 0.99});
  for (int i = 0; i < 2000; ++i) CHECK(slow.update(TestType(4)) == Approx(4).epsilon(1e-6));
}

TEST_CASE("EmaSmoother rejects a factor outside 0 <= f < 1", "[stability][ema][errors]") {
  CHECK_THROWS_AS(sl::EmaSmoother<double>({.factor = 1.0}), sl::invalid_parameter);
  CHECK_THROWS_AS(sl::EmaSmoother<double>({.factor = -0.1}), sl::invalid_parameter);
  CHECK_THROWS_AS(sl::EmaSmoother<double>({.factor = std::nan("")}), sl::invalid_parameter);
  CHECK_THROWS_WITH(sl::EmaSmoother<double>({.factor = 1.5}), "EmaSmoother: factor must be in [0, 1), got 1.5");
}
