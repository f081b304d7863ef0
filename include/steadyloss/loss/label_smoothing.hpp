#pragma once
// Label smoothing over a binary classification term (Keras' rule): the wrapped term sees the
// target y (1 - eps) + eps / 2, so a hard 0/1 label becomes eps/2 or 1 - eps/2. eps in [0, 1).
// Targets are still checked against the wrapped term's domain before smoothing.

#include <concepts>
#include <string_view>

#include "../core/fwd.hpp"
#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/term.hpp"

namespace steadyloss {

template <class Inner>
struct LabelSmoothing {
  static_assert(LossTerm<Inner>,
                "steadyloss: LabelSmoothing<Inner> needs a loss term (value_type, value(pred, "
                "target) and grad(pred, target)) as Inner");
  static_assert(BoundedTargetTerm<Inner>,
                "steadyloss: LabelSmoothing wraps a binary classification term whose targets lie "
                "in [target_min, target_max], such as BalancedBCE; it has no meaning for regression");

  using value_type = typename Inner::value_type;
  static constexpr std::string_view name = "LabelSmoothing";
  static constexpr value_type target_min = Inner::target_min;
  static constexpr value_type target_max = Inner::target_max;

  Inner inner{};
  value_type eps = value_type(0.05);

  void validate() const {
    if (!(eps >= value_type(0) && eps < value_type(1)))
      detail::fail<invalid_parameter>("LabelSmoothing: eps must be in [0, 1), got ", eps);
    detail::validate(inner);
  }

  STEADYLOSS_HOST_DEVICE constexpr value_type smoothed(value_type target) const noexcept {
    return target * (value_type(1) - eps) + value_type(0.5) * eps;
  }

  STEADYLOSS_HOST_DEVICE value_grad<value_type> value_and_grad(value_type pred,
                                                               value_type target) const noexcept {
    return detail::value_and_grad(inner, pred, smoothed(target));
  }
  STEADYLOSS_HOST_DEVICE value_type value(value_type pred, value_type target) const noexcept {
    return inner.value(pred, smoothed(target));
  }
  STEADYLOSS_HOST_DEVICE value_type grad(value_type pred, value_type target) const noexcept {
    return inner.grad(pred, smoothed(target));
  }
};

// Lets `LabelSmoothing{BalancedBCE<float>{}, 0.05f}` deduce Inner (clang 14 lacks aggregate CTAD).
template <class Inner>
LabelSmoothing(Inner, typename Inner::value_type) -> LabelSmoothing<Inner>;
template <class Inner>
LabelSmoothing(Inner) -> LabelSmoothing<Inner>;

}  // namespace steadyloss
