#pragma once
// Binary cross-entropy on logits with a positive-class weight p, as PyTorch's
// binary_cross_entropy_with_logits(pos_weight = p). For logit x and target y in [0, 1]:
//   l = -[p y log s(x) + (1 - y) log(1 - s(x))]
//     = (1 - y) x + (1 + (p - 1) y) (log1p(exp(-|x|)) + max(-x, 0))    (finite for |x| <= 1e30)
//   dl/dx = s(x) (1 + (p - 1) y) - p y
// One exp(-|x|) serves both the value and the sigmoid; both are vectorizable (detail/math.hpp).

#include <concepts>
#include <string_view>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/term.hpp"
#include "../detail/math.hpp"

namespace steadyloss {

template <std::floating_point T = float>
struct BalancedBCE {
  using value_type = T;
  static constexpr std::string_view name = "BalancedBCE";
  static constexpr T target_min = T(0);
  static constexpr T target_max = T(1);

  T pos_weight = T(5);

  void validate() const {
    if (!(pos_weight > T(0)) || pos_weight - pos_weight != T(0))
      detail::fail<invalid_parameter>("BalancedBCE: pos_weight must be finite and > 0, got ", pos_weight);
  }

  STEADYLOSS_HOST_DEVICE value_grad<T> value_and_grad(T logit, T target) const noexcept {
    // Selects as bit masks on purpose: see detail/math.hpp.
    const T magnitude = detail::abs(logit);
    const T e = detail::exp_nonpositive(-magnitude);  // in [0, 1]
    const bool negative = logit < T(0);
    const T log_weight = T(1) + (pos_weight - T(1)) * target;
    const T softplus_neg = detail::log1p_unit(e) + detail::zero_unless(negative, magnitude);  // log(1 + e^-x)
    const T sigmoid = detail::select_bits(negative, e, T(1)) / (T(1) + e);
    return {(T(1) - target) * logit + log_weight * softplus_neg,
            sigmoid * log_weight - pos_weight * target};
  }

  STEADYLOSS_HOST_DEVICE T value(T logit, T target) const noexcept {
    return value_and_grad(logit, target).value;
  }
  STEADYLOSS_HOST_DEVICE T grad(T logit, T target) const noexcept {
    return value_and_grad(logit, target).grad;
  }
};

}  // namespace steadyloss
