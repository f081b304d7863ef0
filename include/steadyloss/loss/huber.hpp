#pragma once
// Huber loss, as PyTorch's huber_loss: with d = pred - target,
//   0.5 d^2 if |d| <= delta, else delta (|d| - 0.5 delta);   grad d or delta sign(d).
// Written without branches (c = min(|d|, delta); value = c (|d| - c / 2); grad = clamp(d)) so the
// executor's loop vectorizes.

#include <concepts>
#include <string_view>

#include "../core/fwd.hpp"
#include "../core/config.hpp"
#include "../core/errors.hpp"

namespace steadyloss {

template <std::floating_point T>
struct Huber {
  using value_type = T;
  static constexpr std::string_view name = "Huber";

  T delta = T(1);

  void validate() const {
    if (!(delta > T(0)) || delta - delta != T(0))
      detail::fail<invalid_parameter>("Huber: delta must be finite and > 0, got ", delta);
  }

  STEADYLOSS_HOST_DEVICE constexpr T value(T pred, T target) const noexcept {
    const T d = pred - target;
    const T magnitude = d < T(0) ? -d : d;
    const T inner = magnitude > delta ? delta : magnitude;  // NaN keeps NaN (comparison is false)
    return inner * (magnitude - T(0.5) * inner);
  }

  STEADYLOSS_HOST_DEVICE constexpr T grad(T pred, T target) const noexcept {
    const T d = pred - target;
    const T upper = d > delta ? delta : d;
    return upper < -delta ? -delta : upper;
  }
};

}  // namespace steadyloss
