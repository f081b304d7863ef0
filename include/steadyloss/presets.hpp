#pragma once
// The baseline and stable configurations, as values.
//
// | setting           | baseline            | stable                                          |
// |-------------------|---------------------|-------------------------------------------------|
// | mel term          | L1, weight 45.0     | Huber (delta 1.0), weight 35.0                  |
// | stop term         | BCE, pos_weight 1   | BalancedBCE, pos_weight 5.0, label smoothing 0.05 |
// | adaptive weights  | off                 | on, bounds 0.7..1.3                             |
// | loss smoothing    | 0.0                 | 0.1                                             |
// | spike detection   | none                | calibrated: robust z-score, window 25, k 15     |
// | early stopping    | patience 20         | patience 25, min_delta 0.0005                   |
//
//   auto loss  = sl::presets::stable_loss<float>();
//   auto guard = sl::presets::stable_stabilizer<float>();
//   sl::presets::stable.patience  // 25: the table itself, as a constexpr value

#include <cstddef>

#include "loss/balanced_bce.hpp"
#include "loss/compose.hpp"
#include "loss/huber.hpp"
#include "loss/l1.hpp"
#include "loss/label_smoothing.hpp"
#include "stability/stability.hpp"

namespace steadyloss::presets {

/// One row of the table above per field.
struct preset_config {
  bool huber_mel = false;        ///< false: L1
  double huber_delta = 1.0;
  double mel_weight = 45.0;
  double stop_pos_weight = 1.0;
  double label_smoothing = 0.0;  ///< 0: none
  double stop_weight = 1.0;
  bool adaptive_weights = false;
  double weight_lo = 0.7, weight_hi = 1.3;
  double smoothing = 0.0;
  bool spike_detection = false;  ///< true: SpikeDampener with calibrated_spikes
  int patience = 20;
  double min_delta = 0.0;
};

/// The spike detector chosen by tools/spike_calibration (docs/spike-calibration.md), by a rule
/// applied to tuning streams and reported on others: false alarms <= 1% on every clean stream
/// (synthetic, bfloat16-rounded, heavy-tailed, and real per-step training logs) and >= 99% of
/// 10x spikes caught, then the most of the study's corrupted batches caught. Hampel's robust
/// z-score over the last 25 accepted losses, k = 15, deciding after 10 of them, never below 1.5x
/// the median (a spread of 0, as in a rounded log, would otherwise flag any rise); a run of 10
/// spikes is a new level. The original rule (2.0x the mean of the last 10) flagged half of a
/// converged classifier's steps.
using calibrated_spike_detector = detect::mad_zscore;
inline constexpr spike_config calibrated_spikes{
    .window = 25, .warmup = 10, .level_shift_after = 10, .sigma_factor = 15.0, .min_ratio = 1.5};
template <class T = float>
using calibrated_spike_dampener = SpikeDampener<T, calibrated_spike_detector>;

inline constexpr preset_config baseline{};
inline constexpr preset_config stable{.huber_mel = true, .huber_delta = 1.0, .mel_weight = 35.0,
                                      .stop_pos_weight = 5.0, .label_smoothing = 0.05, .stop_weight = 1.0,
                                      .adaptive_weights = true, .weight_lo = 0.7, .weight_hi = 1.3,
                                      .smoothing = 0.1, .spike_detection = true,
                                      .patience = 25, .min_delta = 0.0005};

/// Baseline loss: L1 mel (weight 45) + plain BCE stop (pos_weight 1, weight 1).
template <class T = float>
auto baseline_loss() {
  return compose(term(L1<T>{}, T(baseline.mel_weight)),
                 term(BalancedBCE<T>{.pos_weight = T(baseline.stop_pos_weight)}, T(baseline.stop_weight)));
}

/// Stable loss: Huber mel (delta 1, weight 35) + label-smoothed BalancedBCE stop (5, 0.05, weight 1).
template <class T = float>
auto stable_loss() {
  return compose(term(Huber<T>{.delta = T(stable.huber_delta)}, T(stable.mel_weight)),
                 term(LabelSmoothing<BalancedBCE<T>>{BalancedBCE<T>{.pos_weight = T(stable.stop_pos_weight)},
                                                      T(stable.label_smoothing)},
                      T(stable.stop_weight)));
}

template <class T = float>
using baseline_stabilizer_type = Stabilizer<EmaSmoother<T>, EarlyStopper<T>>;

/// Baseline step policies: no smoothing (factor 0), early stopping with patience 20, min_delta 0.
template <class T = float>
baseline_stabilizer_type<T> baseline_stabilizer() {
  return baseline_stabilizer_type<T>(
      EmaSmoother<T>({.factor = baseline.smoothing}),
      EarlyStopper<T>({.patience = baseline.patience, .min_delta = baseline.min_delta}));
}

template <class T = float>
using stable_stabilizer_type =
    Stabilizer<calibrated_spike_dampener<T>, EmaSmoother<T>, AdaptiveWeight<2, T>, EarlyStopper<T>, StabilityMetrics<T>>;

/// Stable step policies: spikes dampened (the calibrated detector), smoothing 0.1, adaptive weights in
/// [0.7, 1.3], early stopping with patience 25 and min_delta 0.0005, metrics.
template <class T = float>
stable_stabilizer_type<T> stable_stabilizer() {
  return stable_stabilizer_type<T>(
      calibrated_spike_dampener<T>(calibrated_spikes),
      EmaSmoother<T>({.factor = stable.smoothing}),
      AdaptiveWeight<2, T>({.lo = stable.weight_lo, .hi = stable.weight_hi}),
      EarlyStopper<T>({.patience = stable.patience, .min_delta = stable.min_delta}),
      StabilityMetrics<T>{});
}

}  // namespace steadyloss::presets
