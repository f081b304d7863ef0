#pragma once
// AdaptiveHuber: a Huber loss whose transition point follows the data's error scale.
//
// With d = pred - target and delta = k x scale:
//   value = huber_delta(d) / delta = c (|d| - c / 2) / delta,  c = min(|d|, delta)
//   grad  = clamp(d, -delta, delta) / delta
// that is, PyTorch's smooth_l1_loss with beta = delta (Huber divided by delta). Dividing by delta
// keeps L1's units and its gradient bound of 1 whatever delta is: far from the target the term
// is |d| - delta / 2 (L1, robust to outliers), near it d^2 / (2 delta) (a gradient that shrinks
// with the error, where L1's stays at 1 and jitters). A drop-in for L1 at the same weight.
//
// `scale` is a runtime parameter a step policy sets between steps: ErrorScale tracks a debiased
// EMA of this term's own mean value and sl::apply(loss, report) copies it here. That makes the
// scale the fixed point s = E[huber_{k s}(d)] / (k s), that is E[huber_k(d / s)] = k (huber_k:
// Huber with delta k, not divided), an M-estimator of scale (Huber 1964,
// "Robust Estimation of a Location Parameter"; his Proposal 2 fixes the scale by the same kind
// of equation), gathered from the value every executor already reduces: no extra pass, nothing
// new in any backend, reduced across ranks with the other per-term values. For Gaussian errors
// of standard deviation sigma the fixed point is delta = 1.345 sigma (Huber's 95%-efficiency
// choice) at k = 3.88, where scale = 0.347 sigma (tested in tests/test_adaptive_huber.cpp). Barron (2019, "A General and
// Adaptive Robust Loss Function") adapts the shape and scale of a robust loss by gradient
// descent instead; related work, not what this does.

#include <concepts>
#include <limits>
#include <string_view>

#include "../core/fwd.hpp"
#include "../core/config.hpp"
#include "../core/errors.hpp"

namespace steadyloss {

template <std::floating_point T>
struct AdaptiveHuber {
  using value_type = T;
  static constexpr std::string_view name = "AdaptiveHuber";
  /// Tells sl::apply(loss, report) to copy ErrorScale's estimate for this term into `scale`.
  static constexpr bool follows_error_scale = true;

  T k = T(3.88);   ///< delta = k x scale; 3.88 gives Huber's 1.345 sigma for Gaussian errors
  T scale = T(1);  ///< the error scale; set by sl::apply from ErrorScale (1 before any step)

  STEADYLOSS_HOST_DEVICE constexpr T delta() const noexcept { return k * scale; }

  void validate() const {
    if (!(k > T(0)) || k - k != T(0))
      detail::fail<invalid_parameter>("AdaptiveHuber: k must be finite and > 0, got ", k);
    if (!(scale > T(0)) || scale - scale != T(0))
      detail::fail<invalid_parameter>("AdaptiveHuber: scale must be finite and > 0, got ", scale);
    // 1 / delta must be finite: a subnormal delta would make the gradient Inf.
    const T d = delta();
    if (!(d >= std::numeric_limits<T>::min()) || d - d != T(0))
      detail::fail<invalid_parameter>("AdaptiveHuber: delta = k x scale = ", k, " x ", scale, " = ", d,
                                      " must be a finite normal number");
  }

  // Branch-free like Huber (min/clamp selects), so the executor's loop vectorizes. Dividing by
  // delta is a multiply by its inverse, which the compiler hoists out of the loop, applied to the
  // factor bounded by 1 first: (c / delta) (|d| - c / 2) stays finite wherever |d| is, where
  // c (|d| - c / 2) / delta would overflow for delta > 1 near T's largest value.
  STEADYLOSS_HOST_DEVICE constexpr T value(T pred, T target) const noexcept {
    const T bound = delta();
    const T d = pred - target;
    const T magnitude = d < T(0) ? -d : d;
    const T inner = magnitude > bound ? bound : magnitude;  // NaN keeps NaN (comparison is false)
    return (inner * (T(1) / bound)) * (magnitude - T(0.5) * inner);
  }

  /// d / delta clamped to [-1, 1]: exactly +-1 beyond delta, as smooth_l1_loss (NaN stays NaN).
  STEADYLOSS_HOST_DEVICE constexpr T grad(T pred, T target) const noexcept {
    const T ratio = (pred - target) * (T(1) / delta());
    const T upper = ratio > T(1) ? T(1) : ratio;
    return upper < T(-1) ? T(-1) : upper;
  }
};

}  // namespace steadyloss
