#pragma once
// Independent references for the tests: the closed forms of the README's semantics table, evaluated in
// long double straight from their textbook definitions (no shared code with the library).

#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

namespace reference {

using real = long double;

inline real huber(real pred, real target, real delta) {
  const real d = pred - target;
  return std::fabs(d) <= delta ? 0.5L * d * d : delta * (std::fabs(d) - 0.5L * delta);
}
inline real huber_grad(real pred, real target, real delta) {
  const real d = pred - target;
  return std::fabs(d) <= delta ? d : (d > 0 ? delta : -delta);
}

inline real sigmoid(real x) { return 1.0L / (1.0L + std::exp(-x)); }

/// log s(x) = -log(1 + exp(-x)), from the definition; beyond long double's exp range (e^11356)
/// log(1 + exp(-x)) is -x to every digit.
inline real log_sigmoid(real x) { return -x > 11000 ? x : -std::log1p(std::exp(-x)); }

/// -[p y log s(x) + (1 - y) log(1 - s(x))], with log(1 - s(x)) = log s(-x): each log is taken of
/// its own sigmoid, so nothing cancels, even for confident logits.
inline real bce(real x, real y, real pos_weight) {
  return -(pos_weight * y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x));
}
/// d/dx of bce: (1 - y) s(x) - p y (1 - s(x)), with 1 - s(x) = s(-x).
inline real bce_grad(real x, real y, real pos_weight) {
  return (1 - y) * sigmoid(x) - pos_weight * y * sigmoid(-x);
}
/// The size of the two terms bce_grad subtracts: the scale its rounding error is relative to.
inline real bce_grad_scale(real x, real y, real pos_weight) {
  return (1 - y) * sigmoid(x) + pos_weight * y * sigmoid(-x);
}
inline real smooth(real y, real eps) { return y * (1 - eps) + eps / 2; }

template <class T>
std::vector<T> uniform(std::size_t n, T lo, T hi, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(rng));
  return v;
}

template <class T>
std::vector<T> bernoulli(std::size_t n, double p, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution dist(p);
  std::vector<T> v(n);
  for (auto& x : v) x = dist(rng) ? T(1) : T(0);
  return v;
}

/// Relative tolerance for a quantity computed in T with a handful of roundings.
template <class T>
constexpr double tolerance() {
  return sizeof(T) == 4 ? 2e-6 : 1e-13;
}

}  // namespace reference
