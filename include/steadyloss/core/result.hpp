#pragma once
// What one evaluation of a composed loss returns. Its own header so that the step policies
// (stability/) can take a result without pulling in the loss layer and its CPU pass.

#include <array>
#include <cstddef>

#include "fwd.hpp"

namespace steadyloss {

/// What one evaluation of an N-term loss returns.
template <class T, std::size_t N>
struct composed_result {
  std::array<T, N> values{};        ///< each term's reduced value, unweighted
  std::array<T, N> weights{};       ///< the weight each term was evaluated with
  std::array<double, N> denominators{};  ///< each term's count (see term_result)
  T total{};                        ///< sum of weights[i] * values[i]
};

}  // namespace steadyloss
