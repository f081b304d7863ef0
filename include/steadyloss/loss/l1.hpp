#pragma once
// Absolute error (|d|, grad sign(d) with sign(0) = 0), as PyTorch's l1_loss: the baseline preset's
// mel term.

#include <concepts>
#include <string_view>

#include "../core/fwd.hpp"
#include "../core/config.hpp"
#include "../detail/math.hpp"

namespace steadyloss {

template <std::floating_point T>
struct L1 {
  using value_type = T;
  static constexpr std::string_view name = "L1";

  STEADYLOSS_HOST_DEVICE constexpr T value(T pred, T target) const noexcept {
    const T d = pred - target;
    return d < T(0) ? -d : d;
  }
  STEADYLOSS_HOST_DEVICE T grad(T pred, T target) const noexcept {
    const T d = pred - target;
    return detail::select_bits(d > T(0), T(1), detail::select_bits(d < T(0), T(-1), d));  // 0, NaN pass
  }
};

}  // namespace steadyloss
