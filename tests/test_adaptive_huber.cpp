// loss/adaptive_huber.hpp: AdaptiveHuber's value and gradient against long double references of
// its formula (Huber / delta) and of PyTorch's smooth_l1_loss(beta = delta), written here apart;
// finite differences; its parameter checks; the fused pass in every ISA variant; and the header's
// claim about the scale it settles at for Gaussian errors, against the closed form.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <vector>

#include <steadyloss/cpu_isa.hpp>
#include <steadyloss/steadyloss.hpp>

#include "reference.hpp"

namespace sl = steadyloss;
using Catch::Matchers::Contains;
using reference::real;

namespace {

/// Huber with delta, divided by delta, from the definition (the README's Huber, then / delta).
real adaptive_value(real d, real delta) { return reference::huber(d, 0, delta) / delta; }
real adaptive_grad(real d, real delta) { return reference::huber_grad(d, 0, delta) / delta; }

/// PyTorch's documented smooth_l1_loss, beta = delta: 0.5 x^2 / beta if |x| < beta, else |x| - 0.5 beta;
/// its gradient x / beta inside, sign(x) outside.
real smooth_l1(real x, real beta) { return std::fabs(x) < beta ? 0.5L * x * x / beta : std::fabs(x) - 0.5L * beta; }
real smooth_l1_grad(real x, real beta) { return std::fabs(x) < beta ? x / beta : (x > 0 ? 1.0L : -1.0L); }

/// The errors every grid check runs over, for one delta: 0, +-delta exactly, just inside and
/// outside, a sweep of [-6 delta, 6 delta], and huge ones.
template <class T>
std::vector<T> error_grid(T delta) {
  std::vector<T> out{T(0), delta, -delta, std::nextafter(delta, T(0)), std::nextafter(delta, T(2) * delta),
                     -std::nextafter(delta, T(0)), -std::nextafter(delta, T(2) * delta),
                     std::numeric_limits<T>::denorm_min(), std::numeric_limits<T>::min(),
                     T(1e30), T(-1e30)};
  for (int i = -600; i <= 600; ++i) out.push_back(delta * T(i) / T(100));
  for (T x : reference::uniform<T>(2000, T(-6), T(6), 5)) out.push_back(x * delta);
  return out;
}

std::vector<sl::cpu_isa> runnable_variants() {
  std::vector<sl::cpu_isa> out;
  for (const auto isa : {sl::cpu_isa::baseline, sl::cpu_isa::avx2, sl::cpu_isa::avx512})
    if (isa <= sl::detected_cpu_isa() && isa >= sl::build_cpu_isa) out.push_back(isa);
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("AdaptiveHuber is Huber / delta with delta = k x scale", "[terms][adaptive_huber]", float,
                   double) {
  using T = TestType;
  const double tol = reference::tolerance<T>();
  const real floor = std::numeric_limits<T>::min();
  // (k, scale) pairs: products exact in T, the default k, a tiny and a large delta.
  const std::array<std::array<T, 2>, 6> parameters{{{T(4), T(0.25)},
                                                    {T(3.88), T(1)},
                                                    {T(3.88), T(0.347)},
                                                    {T(2), T(1e-3)},
                                                    {T(0.5), T(2e3)},
                                                    {T(1.345), T(3)}}};
  for (const auto& [k, scale] : parameters) {
    const sl::AdaptiveHuber<T> term{.k = k, .scale = scale};
    REQUIRE_NOTHROW(term.validate());
    const T delta_t = k * scale;  // the definition, rounded to T once
    const real delta = delta_t;
    for (const T d : error_grid(delta_t)) {
      INFO("k " << k << " scale " << scale << " d " << d);
      // Written as (pred, target) pairs: d = pred - 0 exactly, and d = (d + 1) - 1 where that is exact.
      const T value = term.value(d, T(0)), grad = term.grad(d, T(0));
      const real want_value = adaptive_value(d, delta), want_grad = adaptive_grad(d, delta);
      // Every operation is a multiply, a min or |d| - c/2 >= |d|/2: relative accuracy everywhere
      // (down to T's smallest normal number: d = min() gives a value that underflows to 0).
      REQUIRE(std::fabs(real(value) - want_value) <= tol * want_value + floor);
      REQUIRE(std::fabs(real(grad) - want_grad) <= tol * std::fabs(want_grad) + floor);
      // The gradient is bounded by 1 whatever delta is (L1's bound), and never has the wrong sign
      // (d / delta may underflow to 0 for a subnormal d).
      REQUIRE(std::fabs(grad) <= T(1));
      REQUIRE((d > 0 ? grad >= 0 : d < 0 ? grad <= 0 : grad == 0));
      // PyTorch's smooth_l1_loss with beta = delta, from its own documented formula.
      REQUIRE(std::fabs(real(value) - smooth_l1(d, delta)) <= tol * smooth_l1(d, delta) + floor);
      REQUIRE(std::fabs(real(grad) - smooth_l1_grad(d, delta)) <= tol * std::fabs(smooth_l1_grad(d, delta)) + floor);
      // Beyond delta it is L1 shifted down by delta / 2, with L1's gradient.
      if (std::fabs(d) >= delta_t) {
        const real l1 = std::fabs(real(d)) - delta / 2;
        REQUIRE(std::fabs(real(value) - l1) <= tol * l1);
        REQUIRE(std::fabs(real(grad) - (d > 0 ? 1 : -1)) <= tol);
      }
      // The fused pass computes the same.
      const auto fused = sl::detail::value_and_grad(term, d, T(0));
      REQUIRE(fused.value == value);
      REQUIRE(fused.grad == grad);
    }
    // Worked by hand: d = 0 gives 0; |d| = delta is where both branches give delta / 2 and slope 1.
    CHECK(term.value(T(0), T(0)) == T(0));
    CHECK(term.grad(T(0), T(0)) == T(0));
    CHECK(term.value(delta_t, T(0)) == Approx(delta_t / 2).epsilon(tol));
    CHECK(term.grad(-delta_t, T(0)) == Approx(-1).epsilon(tol));
    // A shifted target gives the same as its difference.
    CHECK(term.value(T(1.5) + delta_t, T(1.5)) == Approx(double(adaptive_value(real(T(1.5) + delta_t) - 1.5L, delta)))
                                                       .epsilon(tol));
  }
  // The defaults: k 3.88, scale 1 (before any ErrorScale step).
  const sl::AdaptiveHuber<T> defaults{};
  CHECK(defaults.k == T(3.88));
  CHECK(defaults.scale == T(1));
  CHECK(defaults.delta() == T(3.88));
  static_assert(sl::AdaptiveHuber<T>::follows_error_scale);
}

TEMPLATE_TEST_CASE("AdaptiveHuber at infinite and NaN errors", "[terms][adaptive_huber][extreme]", float, double) {
  using T = TestType;
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
  const sl::AdaptiveHuber<T> term{.k = T(2), .scale = T(0.5)};
  CHECK(std::isnan(term.value(nan, T(0))));
  CHECK(std::isnan(term.grad(nan, T(0))));
  CHECK(std::isnan(term.value(T(0), nan)));
  CHECK(std::isnan(term.grad(T(0), nan)));
  // As PyTorch's smooth_l1_loss: an infinite error has an infinite value and a bounded gradient.
  CHECK(term.value(inf, T(0)) == inf);
  CHECK(term.value(-inf, T(0)) == inf);
  CHECK(term.grad(inf, T(0)) == T(1));
  CHECK(term.grad(-inf, T(0)) == T(-1));
  // The fused pass's mean carries a NaN through.
  const std::vector<T> pred{T(0.5), nan, T(2)}, target(3, T(0));
  std::vector<T> grad(3);
  CHECK(std::isnan(sl::evaluate(term, sl::inputs(pred, target), grad).value));
}

TEMPLATE_TEST_CASE("AdaptiveHuber's value is finite wherever smooth_l1's is, up to T's largest errors",
                   "[terms][adaptive_huber][extreme]", float, double) {
  // Regression: c (|d| - c / 2) formed before the division by delta overflowed for delta > 1 once
  // |d| > max / delta, where the value |d| - delta / 2 (and PyTorch's smooth_l1_loss) is finite.
  using T = TestType;
  const T huge = std::numeric_limits<T>::max() / T(4);
  for (const T delta : {T(10), T(1000)}) {
    const sl::AdaptiveHuber<T> term{.k = T(1), .scale = delta};
    INFO("delta " << delta);
    CHECK(std::isfinite(term.value(huge, T(0))));
    CHECK(term.value(-huge, T(0)) == Approx(double(smooth_l1(huge, delta))).epsilon(reference::tolerance<T>()));
    CHECK(term.grad(huge, T(0)) == T(1));
  }
}

TEST_CASE("AdaptiveHuber's gradient is the derivative of its value (finite differences)",
          "[terms][adaptive_huber]") {
  const double h = 1e-6;
  const std::array<std::array<double, 2>, 3> parameters{{{3.88, 0.2}, {1.0, 1.0}, {2.5, 3.0}}};
  for (const auto& [k, scale] : parameters) {
    const sl::AdaptiveHuber<double> term{.k = k, .scale = scale};
    const double delta = k * scale;
    const auto preds = reference::uniform<double>(2000, -4 * delta, 4 * delta, 3);
    const auto targets = reference::uniform<double>(2000, -delta, delta, 4);
    int checked = 0;
    for (std::size_t i = 0; i < preds.size(); ++i) {
      const double p = preds[i], y = targets[i];
      if (std::fabs(std::fabs(p - y) - delta) < 10 * h) continue;  // the kink: no derivative of the second order
      const double numeric = (term.value(p + h, y) - term.value(p - h, y)) / (2 * h);
      INFO("k " << k << " scale " << scale << " pred " << p << " target " << y);
      REQUIRE(term.grad(p, y) == Approx(numeric).epsilon(1e-6).margin(1e-8));
      ++checked;
    }
    CHECK(checked > 1900);
    // At the kink the derivative is continuous: one-sided differences agree with grad = +-1.
    const double left = (term.value(delta, 0.0) - term.value(delta - h, 0.0)) / h;
    const double right = (term.value(delta + h, 0.0) - term.value(delta, 0.0)) / h;
    CHECK(left == Approx(1).epsilon(1e-5));
    CHECK(right == Approx(1).epsilon(1e-5));
  }
}

TEMPLATE_TEST_CASE("AdaptiveHuber rejects a k, scale or delta that is not a positive finite normal number",
                   "[terms][adaptive_huber][errors]", float, double) {
  using T = TestType;
  using limits = std::numeric_limits<T>;
  const std::vector<T> pred{T(0.1), T(0.2)}, target{T(0), T(1)};
  const auto in = sl::inputs(pred, target);
  for (const T bad : {T(0), T(-1), -limits::min(), limits::quiet_NaN(), limits::infinity(), -limits::infinity()}) {
    INFO("bad value " << bad);
    CHECK_THROWS_AS((sl::AdaptiveHuber<T>{.k = bad}.validate()), sl::invalid_parameter);
    CHECK_THROWS_AS((sl::AdaptiveHuber<T>{.scale = bad}.validate()), sl::invalid_parameter);
    CHECK_THROWS_AS(sl::value(sl::AdaptiveHuber<T>{.k = bad}, in), sl::invalid_parameter);
    CHECK_THROWS_AS(sl::value(sl::AdaptiveHuber<T>{.scale = bad}, in), sl::invalid_parameter);
  }
  CHECK_THROWS_WITH((sl::AdaptiveHuber<T>{.k = T(-1)}.validate()), Contains("k must be finite and > 0") && Contains("-1"));
  CHECK_THROWS_WITH((sl::AdaptiveHuber<T>{.scale = T(0)}.validate()),
                    Contains("scale must be finite and > 0") && Contains("got 0"));
  // k and scale each fine, their product subnormal: 1 / delta would overflow the gradient.
  const sl::AdaptiveHuber<T> subnormal{.k = T(0.5), .scale = limits::min()};
  REQUIRE(subnormal.delta() < limits::min());
  REQUIRE(subnormal.delta() > T(0));
  CHECK_THROWS_AS(subnormal.validate(), sl::invalid_parameter);
  CHECK_THROWS_WITH(subnormal.validate(), Contains("delta = k x scale") && Contains("finite normal number"));
  std::vector<T> grad(2);
  CHECK_THROWS_AS(sl::evaluate(subnormal, in, grad), sl::invalid_parameter);
  // A subnormal scale with k = 1: the same.
  CHECK_THROWS_AS((sl::AdaptiveHuber<T>{.k = T(1), .scale = limits::denorm_min()}.validate()), sl::invalid_parameter);
  // The product overflows to Inf.
  CHECK_THROWS_AS((sl::AdaptiveHuber<T>{.k = limits::max(), .scale = T(4)}.validate()), sl::invalid_parameter);
  // The smallest normal delta is accepted, and its gradient is finite.
  const sl::AdaptiveHuber<T> smallest{.k = T(1), .scale = limits::min()};
  CHECK_NOTHROW(smallest.validate());
  CHECK(smallest.grad(T(1), T(0)) == T(1));
  CHECK(std::isfinite(smallest.grad(limits::min() / T(2), T(0))));
  // The composed loss checks its terms too, before writing any gradient.
  const auto composed = sl::compose(sl::term(sl::AdaptiveHuber<T>{.scale = T(-2)}, T(1)));
  grad.assign(2, T(-7));
  CHECK_THROWS_AS(composed.evaluate(in, sl::grads(grad)), sl::invalid_parameter);
  CHECK(grad == std::vector<T>(2, T(-7)));
}

TEMPLATE_TEST_CASE("AdaptiveHuber in a composed loss matches the reference in every ISA variant, with masks and lengths",
                   "[terms][adaptive_huber][isa][compose]", float, double) {
  using T = TestType;
  // [batch 3, time 347, bins 5] mel with per-sequence lengths; a second AdaptiveHuber term over
  // [batch x time] frames with a frame mask (zeros, halves and ones).
  const std::size_t batch = 3, frames = 347, bins = 5, count = batch * frames * bins, frame_count = batch * frames;
  const auto mel_pred = reference::uniform<T>(count, T(-3), T(3), 41);
  const auto mel_target = reference::uniform<T>(count, T(-1), T(1), 42);
  const auto frame_pred = reference::uniform<T>(frame_count, T(-8), T(8), 43);
  const auto frame_target = reference::uniform<T>(frame_count, T(-2), T(2), 44);
  const std::vector<int> lengths{347, 200, 13};
  std::vector<T> mask(frame_count);
  for (std::size_t i = 0; i < frame_count; ++i) mask[i] = T(int(i % 4)) / T(2) * T(i % 7 != 0);  // 0, 0.5, 1, 1.5
  const T mel_weight = T(45), frame_weight = T(2);
  const sl::AdaptiveHuber<T> mel_term{.k = T(3.88), .scale = T(0.3)}, frame_term{.k = T(2), .scale = T(1.25)};
  const real mel_delta = T(T(3.88) * T(0.3)), frame_delta = T(T(2) * T(1.25));

  // The reference: sum(w l) / sum(w), gradient weight x w g / sum(w), in long double.
  real mel_sum = 0, mel_count = 0, frame_sum = 0, frame_weights = 0;
  std::vector<real> mel_grad(count), frame_grad(frame_count);
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t t = 0; t < frames; ++t)
      for (std::size_t f = 0; f < bins; ++f) {
        const std::size_t i = (b * frames + t) * bins + f;
        const real w = t < std::size_t(lengths[b]) ? 1 : 0;
        const real d = real(mel_pred[i]) - real(mel_target[i]);
        mel_sum += w * adaptive_value(d, mel_delta);
        mel_count += w;
        mel_grad[i] = w * adaptive_grad(d, mel_delta);
      }
  for (std::size_t i = 0; i < frame_count; ++i) {
    const real d = real(frame_pred[i]) - real(frame_target[i]);
    frame_sum += mask[i] * adaptive_value(d, frame_delta);
    frame_weights += mask[i];
    frame_grad[i] = mask[i] * adaptive_grad(d, frame_delta);
  }
  const real mel_mean = mel_sum / mel_count, frame_mean = frame_sum / frame_weights;
  const double tolerance = 20 * reference::tolerance<T>();

  auto loss = sl::compose(sl::term(mel_term, mel_weight), sl::term(frame_term, frame_weight));
  std::vector<T> first_mel_grad, first_frame_grad;
  for (const auto isa : runnable_variants()) {
    const sl::scoped_cpu_isa_limit cap(isa);
    INFO("variant " << sl::to_string(isa));
    REQUIRE(sl::active_cpu_isa() == isa);
    std::vector<T> d_mel(count, T(-7)), d_frame(frame_count, T(-7));
    const auto r = loss.evaluate(sl::inputs(mel_pred, mel_target, sl::lengths(lengths, frames, bins)),
                                 sl::inputs(frame_pred, frame_target, mask), sl::grads(d_mel, d_frame));
    CHECK(r.values[0] == Approx(double(mel_mean)).epsilon(tolerance));
    CHECK(r.values[1] == Approx(double(frame_mean)).epsilon(tolerance));
    CHECK(r.denominators[0] == Approx(double(mel_count)));
    CHECK(r.total == Approx(double(mel_weight * mel_mean + frame_weight * frame_mean)).epsilon(tolerance));
    int bad = 0;
    for (std::size_t i = 0; i < count; ++i) {
      const real want = mel_weight * mel_grad[i] / mel_count;
      bad += !(std::fabs(real(d_mel[i]) - want) <= tolerance * std::fabs(want));  // padding: exactly 0
    }
    for (std::size_t i = 0; i < frame_count; ++i) {
      const real want = frame_weight * frame_grad[i] / frame_weights;
      bad += !(std::fabs(real(d_frame[i]) - want) <= tolerance * std::fabs(want));
    }
    CHECK(bad == 0);
    // A gradient is a clamp and multiplies: the same bits in every variant.
    if (first_mel_grad.empty()) {
      first_mel_grad = d_mel;
      first_frame_grad = d_frame;
    } else {
      CHECK(d_mel == first_mel_grad);
      CHECK(d_frame == first_frame_grad);
    }
    // sl::evaluate of the single term, unweighted and with reduction::sum, agrees.
    std::vector<T> g(frame_count);
    const auto single = sl::evaluate(frame_term, sl::inputs(frame_pred, frame_target, mask), g);
    CHECK(single.value == Approx(double(frame_mean)).epsilon(tolerance));
    const auto summed = sl::evaluate(frame_term, sl::inputs(frame_pred, frame_target, mask), g, sl::reduction::sum);
    CHECK(summed.value == Approx(double(frame_sum)).epsilon(tolerance));
    bad = 0;
    for (std::size_t i = 0; i < frame_count; ++i)
      bad += !(std::fabs(real(g[i]) - frame_grad[i]) <= tolerance * std::fabs(frame_grad[i]));
    CHECK(bad == 0);
  }
}

namespace {

// The header's claim, worked independently. For d ~ N(0, sigma^2) and delta = c sigma,
//   E[huber_delta(d) / delta] = sigma E[huber_c(z)] / c,   z ~ N(0, 1),
//   E[huber_c(z)] = (2 Phi(c) - 1 - 2 c phi(c)) / 2 + 2 c phi(c) - c^2 (1 - Phi(c))
// (z^2 / 2 inside [-c, c]; c |z| - c^2 / 2 outside). ErrorScale's scale s settles where the mean
// value equals s: s / sigma = E[huber_c(z)] / c, and k = delta / s = c^2 / E[huber_c(z)].
real standard_normal_pdf(real z) { return std::exp(-z * z / 2) / std::sqrt(2 * std::acos(real(-1))); }
real standard_normal_cdf(real z) { return std::erfc(-z / std::sqrt(real(2))) / 2; }
real expected_huber(real c) {
  const real Phi = standard_normal_cdf(c), phi = standard_normal_pdf(c);
  return (2 * Phi - 1 - 2 * c * phi) / 2 + 2 * c * phi - c * c * (1 - Phi);
}
/// c = delta / sigma at which k = c^2 / E[huber_c(z)] (increasing in c), by bisection.
real gaussian_c_for_k(real k) {
  real lo = 0.01L, hi = 20;
  for (int i = 0; i < 200; ++i) {
    const real mid = (lo + hi) / 2;
    (mid * mid / expected_huber(mid) < k ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

/// The sample's own fixed point: mean_i huber_{k s}(d_i) / (k s) = s (the mean value falls as s
/// grows, so one root), by bisection in long double, and its standard error as an M-estimator,
/// sd(v_i - s) / (1 - dV/ds) / sqrt(n) (the sandwich formula, V the mean value as a function of s).
struct sample_fixed_point {
  real scale;
  real standard_error;
};
template <class T>
real mean_value(const std::vector<T>& errors, real k, real s) {
  real sum = 0;
  for (const T d : errors) sum += adaptive_value(d, k * s);
  return sum / real(errors.size());
}
template <class T>
sample_fixed_point solve_sample(const std::vector<T>& errors, real k, real lo, real hi) {
  for (int i = 0; i < 64; ++i) {
    const real mid = (lo + hi) / 2;
    (mean_value(errors, k, mid) > mid ? lo : hi) = mid;
  }
  const real s = (lo + hi) / 2;
  real squares = 0;
  for (const T d : errors) squares += (adaptive_value(d, k * s) - s) * (adaptive_value(d, k * s) - s);
  const real h = s * 1e-4L;
  const real slope = (mean_value(errors, k, s + h) - mean_value(errors, k, s - h)) / (2 * h);
  const real n = real(errors.size());
  return {s, std::sqrt(squares / n / n) / (1 - slope)};
}

}  // namespace

TEST_CASE("The header's Gaussian numbers: k = 3.88 gives delta = 1.345 sigma and scale = 0.347 sigma (closed form)",
          "[adaptive_huber][scale]") {
  // Huber's 95%-efficiency point c = 1.345 needs k = c^2 / E[huber_c(z)] = 3.8796 (3.88 to three
  // figures), and k = 3.88 gives c = 1.34508, s / sigma = E[huber_c(z)] / c = 0.34667.
  const real at_1345 = 1.345L * 1.345L / expected_huber(1.345L);
  CHECK(double(at_1345) == Approx(3.88).margin(5e-3));
  const real c = gaussian_c_for_k(3.88L);
  CHECK(double(c) == Approx(1.345).margin(5e-4));
  CHECK(double(expected_huber(c) / c) == Approx(0.347).margin(5e-4));
  CHECK(double(c / (expected_huber(c) / c)) == Approx(3.88).epsilon(1e-12));  // consistent: k = delta / s
  // The closed form of E[huber_c(z)] against a plain midpoint rule of its integral.
  for (const real at : {0.5L, 1.345L, 3.0L}) {
    real integral = 0;
    const real dz = 1e-4L;
    for (real z = -12 + dz / 2; z < 12; z += dz) integral += reference::huber(z, 0, at) * standard_normal_pdf(z) * dz;
    CHECK(double(expected_huber(at)) == Approx(double(integral)).epsilon(1e-9));
  }
}

TEMPLATE_TEST_CASE("ErrorScale + apply settle AdaptiveHuber at the Gaussian fixed point: delta = 1.345 sigma",
                   "[adaptive_huber][scale][error_scale]", float, double) {
  using T = TestType;
  // 2^20 errors of a fixed seed, the same batch every step, as a model whose errors no longer move.
  const double sigma = 0.8;
  const std::size_t n = std::size_t{1} << 20;
  std::mt19937_64 engine(2024);
  std::normal_distribution<double> normal(0.0, sigma);
  std::vector<T> pred(n), target(n, T(0));
  for (T& x : pred) x = static_cast<T>(normal(engine));

  const real k = T(3.88);
  const auto sample = solve_sample(pred, k, 0.01L * sigma, 10.0L * sigma);
  const real c = gaussian_c_for_k(k);
  const real population_scale = expected_huber(c) / c * sigma;
  // The sample's fixed point is within a few standard errors of the population's (about
  // 0.25 sigma / sqrt(n) = 2e-4 sigma here; the seed is fixed, 5 of them never fail by chance).
  INFO("sample fixed point " << double(sample.scale) << " +- " << double(sample.standard_error) << ", population "
                             << double(population_scale));
  REQUIRE(double(sample.standard_error) > 0);
  REQUIRE(double(sample.standard_error) < 3e-4 * sigma);
  CHECK(std::fabs(double(sample.scale - population_scale)) <= 5 * double(sample.standard_error));

  // The pipeline: evaluate, update, apply, for as long as the scale still moves.
  auto loss = sl::compose(sl::term(sl::AdaptiveHuber<T>{}, T(1)));
  sl::Stabilizer<sl::ErrorScale<1, T>> guard;
  T previous = loss.template term<0>().scale;
  int steps = 0;
  for (; steps < 1000; ++steps) {
    const auto r = loss.evaluate(sl::inputs(pred, target));
    const auto report = guard.update(r, T(1));
    sl::apply(loss, report);
    REQUIRE(loss.template term<0>().scale == report.error_scales[0]);
    if (steps > 400 && loss.template term<0>().scale == previous) break;
    previous = loss.template term<0>().scale;
  }
  const double scale = double(loss.template term<0>().scale), delta = double(loss.template term<0>().delta());
  INFO("settled after " << steps << " steps at scale " << scale << ", delta " << delta);
  // At the sample's fixed point, to the precision of T's sums (the map's slope there is -0.76, so
  // an error e in the mean value moves the fixed point by e / 1.76).
  CHECK(scale == Approx(double(sample.scale)).epsilon(sizeof(T) == 4 ? 2e-5 : 1e-11));
  // The header's numbers, within 5 standard errors plus the rounding of the stated figures.
  const double se = double(sample.standard_error) / sigma;
  CHECK(std::fabs(scale / sigma - 0.347) <= 5 * se + 5e-4);
  CHECK(std::fabs(delta / sigma - 1.345) <= 5 * double(k) * se + 5e-4);
  CHECK(std::fabs(scale - double(population_scale)) <= 5 * double(sample.standard_error) + 2e-5 * scale);
}
