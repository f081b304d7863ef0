#pragma once
// Squared error (d^2, grad 2d), as PyTorch's mse_loss: a baseline to compare Huber against.

#include <concepts>
#include <string_view>

#include "../core/fwd.hpp"
#include "../core/config.hpp"

namespace steadyloss {

template <std::floating_point T>
struct MSE {
  using value_type = T;
  static constexpr std::string_view name = "MSE";

  STEADYLOSS_HOST_DEVICE constexpr T value(T pred, T target) const noexcept {
    const T d = pred - target;
    return d * d;
  }
  STEADYLOSS_HOST_DEVICE constexpr T grad(T pred, T target) const noexcept {
    return T(2) * (pred - target);
  }
};

}  // namespace steadyloss
