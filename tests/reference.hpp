#pragma once
// Independent references for the tests: the closed forms of DESIGN.md section 3, evaluated in
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

/// -[p y log s(x) + (1 - y) log(1 - s(x))], with log s(x) = -log1p(exp(-x)) written stably.
inline real bce(real x, real y, real pos_weight) {
  const real log_sigmoid = x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));
  const real log_one_minus_sigmoid = log_sigmoid - x;
  return -(pos_weight * y * log_sigmoid + (1 - y) * log_one_minus_sigmoid);
}
inline real bce_grad(real x, real y, real pos_weight) {
  return sigmoid(x) * (1 + (pos_weight - 1) * y) - pos_weight * y;
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
