#pragma once
// A loss term written the way a user writes one: a struct, nothing to register.
// docs/terms.md shows the marked region (scripts/check_doc_snippets.py keeps the two equal);
// test_user_term.cpp checks it against long double closed forms and finite differences.
#include <cmath>
#include <string_view>

#include <steadyloss/steadyloss.hpp>

// [snippet user_term]
namespace user {

/// log(cosh(pred - target)): quadratic near 0, linear in the tails, smooth everywhere.
/// Written as |d| + log1p(exp(-2|d|)) - log 2, which never overflows (cosh does past |d| ~ 89
/// in float).
template <class T>
struct LogCosh {
  using value_type = T;
  static constexpr std::string_view name = "LogCosh";  // optional: named in error messages

  T value(T pred, T target) const {
    const T a = std::fabs(pred - target);
    return a + std::log1p(std::exp(T(-2) * a)) - T(0.6931471805599453);
  }
  T grad(T pred, T target) const { return std::tanh(pred - target); }
};

}  // namespace user
// [end snippet]
