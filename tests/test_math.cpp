// detail/math.hpp: the vectorizable exp and log1p against long double, over their whole ranges.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <steadyloss/detail/math.hpp>

namespace sd = steadyloss::detail;

TEMPLATE_TEST_CASE("exp_nonpositive matches exp to a few ulp down to the smallest normal", "[math]",
                   float, double) {
  using T = TestType;
  const T eps = std::numeric_limits<T>::epsilon();
  const T lowest = sd::exp_constants<T>::lowest;
  double worst = 0;
  for (int i = 0; i <= 200000; ++i) {
    const T x = lowest * static_cast<T>(i) / T(200000);
    const long double want = std::exp(static_cast<long double>(x));
    const double rel = static_cast<double>(std::fabs((sd::exp_nonpositive(x) - want) / want));
    worst = rel > worst ? rel : worst;
  }
  INFO("worst relative error " << worst << " = " << worst / eps << " ulp");
  CHECK(worst <= 4 * eps);
}

TEMPLATE_TEST_CASE("exp_nonpositive flushes below the normal range and propagates NaN", "[math]",
                   float, double) {
  using T = TestType;
  const T lowest = sd::exp_constants<T>::lowest;
  CHECK(sd::exp_nonpositive(T(0)) == T(1));
  CHECK(sd::exp_nonpositive(lowest * T(1.0001)) == T(0));
  CHECK(sd::exp_nonpositive(T(-1e30)) == T(0));
  CHECK(sd::exp_nonpositive(-std::numeric_limits<T>::infinity()) == T(0));
  CHECK(std::isnan(sd::exp_nonpositive(std::numeric_limits<T>::quiet_NaN())));
  CHECK(sd::exp_nonpositive(-std::numeric_limits<T>::denorm_min()) == T(1));
}

TEMPLATE_TEST_CASE("log1p_unit matches log1p on 0..1, tiny arguments included", "[math]", float,
                   double) {
  using T = TestType;
  const T eps = std::numeric_limits<T>::epsilon();
  double worst = 0;
  auto check = [&](T e) {
    const long double want = std::log1p(static_cast<long double>(e));
    const double rel = static_cast<double>(std::fabs((sd::log1p_unit(e) - want) / want));
    worst = rel > worst ? rel : worst;
  };
  for (int i = 1; i <= 100000; ++i) check(static_cast<T>(i) / T(100000));
  for (T e = T(1e-3); e > std::numeric_limits<T>::min(); e *= T(0.37)) check(e);
  check(std::numeric_limits<T>::denorm_min() * 8);
  INFO("worst relative error " << worst << " = " << worst / eps << " ulp");
  CHECK(worst <= 4 * eps);
  CHECK(sd::log1p_unit(T(0)) == T(0));
}

TEMPLATE_TEST_CASE("bit-mask selects behave as ?: including for NaN and signed zero", "[math]",
                   float, double) {
  using T = TestType;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  CHECK(sd::select_bits(true, T(2), T(3)) == T(2));
  CHECK(sd::select_bits(false, T(2), T(3)) == T(3));
  CHECK(std::isnan(sd::select_bits(true, nan, T(3))));
  CHECK(sd::zero_unless(false, nan) == T(0));
  CHECK(std::signbit(sd::select_bits(true, T(-0.0), T(1))));
}
