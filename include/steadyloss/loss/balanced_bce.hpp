#pragma once
// Binary cross-entropy on logits with a positive-class weight p, as PyTorch's
// binary_cross_entropy_with_logits(pos_weight = p). For logit x and target y in [0, 1]:
//   l = -[p y log s(x) + (1 - y) log(1 - s(x))]
//     = (1 - y) softplus(x) + p y softplus(-x),  softplus(z) = max(z, 0) + log1p(exp(-|z|))
//   dl/dx = (1 - y) s(x) - p y (1 - s(x))            (= s(x) (1 + (p - 1) y) - p y)
// PyTorch's form, (1 - y) x + (1 + (p - 1) y) (log1p(exp(-|x|)) + max(-x, 0)), subtracts two
// numbers near |x| for a confident negative (x << 0, y = 0) and loses its small value in float
// (0 instead of 7e-8 at x = -16.5); the softplus form only adds non-negative numbers. Likewise
// s(x) and 1 - s(x) are each computed without subtraction, so the gradient of a confident
// positive keeps its relative accuracy. One exp(-|x|) serves value and gradient; both are
// vectorizable (detail/math.hpp). Finite for |x| up to 1e30 (in float, until p |x| overflows).

#include <concepts>
#include <string_view>

#include "../core/fwd.hpp"
#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/term.hpp"
#include "../detail/math.hpp"

namespace steadyloss {

template <std::floating_point T>
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
    const T negative_weight = T(1) - target, positive_weight = pos_weight * target;
    // softplus(x) and softplus(-x) share log1p(e) and differ in max(+-x, 0), which is |x| on the
    // side x lies: the loss is a sum of two non-negative products, so nothing cancels.
    const T value = (negative_weight + positive_weight) * detail::log1p_unit(e) +
                    detail::select_bits(negative, positive_weight, negative_weight) * magnitude;
    // (1 - y) s(x) - p y (1 - s(x)), with s(x) and 1 - s(x) each e or 1 over (1 + e).
    const T grad = (negative_weight * detail::select_bits(negative, e, T(1)) -
                    positive_weight * detail::select_bits(negative, T(1), e)) /
                   (T(1) + e);
    return {value, grad};
  }

  STEADYLOSS_HOST_DEVICE T value(T logit, T target) const noexcept {
    return value_and_grad(logit, target).value;
  }
  STEADYLOSS_HOST_DEVICE T grad(T logit, T target) const noexcept {
    return value_and_grad(logit, target).grad;
  }
};

}  // namespace steadyloss
