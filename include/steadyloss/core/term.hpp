#pragma once
// What a loss term is. A term is a small struct of parameters with, on scalars, marked host+device:
//   using value_type = float or double;
//   value_type value(value_type pred, value_type target) const;   elementwise loss
//   value_type grad(value_type pred, value_type target) const;    d value / d pred
// and, optionally (detected, never required):
//   value_grad<value_type> value_and_grad(pred, target) const;  when both share work (BCE's exp)
//   void validate() const;                           throws invalid_parameter for bad parameters
//   static constexpr value_type target_min, target_max;         targets outside are invalid_input
//   static constexpr std::string_view name;                     used in error messages
// Executors (CPU loop, CUDA kernel, torch autograd) are written once and run any term.

#include <concepts>
#include <string_view>

#include "config.hpp"

namespace steadyloss {

template <class T>
struct value_grad {
  T value;
  T grad;
};

template <class L>
concept LossTerm = requires { typename L::value_type; } &&
                   std::floating_point<typename L::value_type> &&
                   requires(const L& term, typename L::value_type x) {
                     { term.value(x, x) } -> std::convertible_to<typename L::value_type>;
                     { term.grad(x, x) } -> std::convertible_to<typename L::value_type>;
                   };

/// A term whose targets live in a bounded domain (BCE: [0, 1]); LabelSmoothing wraps only these.
template <class L>
concept BoundedTargetTerm = LossTerm<L> && requires {
  { L::target_min } -> std::convertible_to<typename L::value_type>;
  { L::target_max } -> std::convertible_to<typename L::value_type>;
};

namespace detail {

template <class Term>
STEADYLOSS_HOST_DEVICE inline value_grad<typename Term::value_type> value_and_grad(
    const Term& term, typename Term::value_type pred, typename Term::value_type target) noexcept {
  if constexpr (requires { term.value_and_grad(pred, target); }) {
    return term.value_and_grad(pred, target);
  } else {
    return {term.value(pred, target), term.grad(pred, target)};
  }
}

/// Whether an executor counts targets outside the term's [target_min, target_max] (every
/// executor does, CPU and CUDA, with the same test).
template <class Term>
inline constexpr bool checks_target_domain = BoundedTargetTerm<Term>;

template <class Term, class T>
STEADYLOSS_HOST_DEVICE constexpr bool target_in_domain(T target) noexcept {
  return (target >= Term::target_min) & (target <= Term::target_max);  // false for NaN
}

template <class Term>
void validate(const Term& term) {
  if constexpr (requires { term.validate(); }) term.validate();
}

template <class Term>
constexpr std::string_view name_of() {
  if constexpr (requires { Term::name; }) {
    return Term::name;
  } else {
    return "loss term";
  }
}

}  // namespace detail
}  // namespace steadyloss
