#pragma once
// Shared by the EarlyStopper tests: the index of the first update that reports should_stop.
#include <cstddef>
#include <vector>

#include <steadyloss/stability/early_stopper.hpp>

namespace early_stopper_helpers {

/// Feeds the values in order; returns the index of the first update with should_stop (-1 if none).
template <class T>
long long stop_step(steadyloss::EarlyStopper<T>& stopper, const std::vector<double>& values) {
  for (std::size_t i = 0; i < values.size(); ++i)
    if (stopper.update(static_cast<T>(values[i])).should_stop) return static_cast<long long>(i);
  return -1;
}

}  // namespace early_stopper_helpers
