#pragma once
// How elementwise losses become one number. With a mask or lengths, mean is the weighted mean
// sum(w l) / sum(w) (sum(w) counted per element), and sum is sum(w l); gradients match.

#include <cstddef>

#include "fwd.hpp"

namespace steadyloss {

enum class reduction {
  mean,  ///< sum(w l) / sum(w); w = 1 without a mask (PyTorch's reduction='mean')
  sum,   ///< sum(w l)            (PyTorch's reduction='sum')
};

/// One term's reduced value and what it was divided by (its "count"), so callers can combine
/// results across batches or ranks: global mean = sum(value * denominator) / sum(denominator).
template <class T>
struct term_result {
  T value;
  double denominator;  ///< number of (weighted) elements for mean; 1 for sum
};

}  // namespace steadyloss
