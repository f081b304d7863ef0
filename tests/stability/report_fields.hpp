#pragma once
// Shared by the multi-rank tests (MPI, c10d): every field of a step report as doubles, so that
// ranks can compare their reports bit for bit after one gather.

#include <cstddef>
#include <vector>

#include <steadyloss/stability/stability.hpp>

namespace report_fields {
namespace sl = steadyloss;

template <std::size_t N>
std::vector<double> flatten(const sl::step_report<double, N>& r) {
  std::vector<double> out{static_cast<double>(r.step), r.loss, r.grad_norm, r.scale, double(r.non_finite),
                          double(r.is_spike), double(r.level_shift), double(r.skipped), r.smoothed, double(r.should_stop),
                          double(r.improved), r.best, static_cast<double>(r.best_step),
                          static_cast<double>(r.wait), static_cast<double>(r.reason), r.stability_score,
                          r.loss_variance, r.grad_norm_ema, double(r.grad_explosion), r.progress};
  for (double w : r.weights) out.push_back(w);
  return out;
}

}  // namespace report_fields
