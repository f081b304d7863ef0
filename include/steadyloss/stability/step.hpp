#pragma once
// What flows through a Stabilizer in one step (step_context: public, user policies read and
// write it) and what it returns (step_report). Policies read and write the context in the
// order they are listed.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>

#include "../fwd.hpp"

namespace steadyloss {

/// Why an EarlyStopper stopped (or none).
enum class stop_reason : std::uint8_t { none, non_finite, stopping_threshold, divergence_threshold, patience };

inline std::string_view to_string(stop_reason reason) {
  switch (reason) {
    case stop_reason::none: return "none";
    case stop_reason::non_finite: return "non_finite";
    case stop_reason::stopping_threshold: return "stopping_threshold";
    case stop_reason::divergence_threshold: return "divergence_threshold";
    case stop_reason::patience: return "patience";
  }
  return "unknown";
}

/// Policy kinds, named in `depends_on` lists. A dependency on a kind is met by a policy of that
/// kind listed earlier in the Stabilizer.
namespace policy_kind {
struct ema_smoother {};
struct spike_dampener {};
struct adaptive_weight {};
struct early_stopper {};
struct stability_metrics {};
struct error_scale {};
}  // namespace policy_kind

template <class... Kinds>
struct type_list {};

/// One step's report: what the training loop acts on. Fields of absent policies keep the
/// neutral values below (scale 1, smoothed = loss, weights 1, error_scales NaN, should_stop false,
/// metrics 0/1).
template <class T, std::size_t N>
struct step_report {
  long long step = 0;       ///< 0-based index of this update
  T loss{};                 ///< the (global) total loss this step
  T grad_norm{};            ///< the (global) gradient norm this step
  T scale = T(1);           ///< multiply the gradients by this; 0 = skip the optimizer step
  bool non_finite = false;  ///< loss, a term value or the gradient norm was NaN/Inf (on any rank)
  bool is_spike = false;    ///< the detector flagged this step
  bool level_shift = false; ///< SpikeDampener: a run of spikes became the new reference level
  bool skipped = false;     ///< scale == 0: the step should not update the model
  T smoothed{};             ///< EmaSmoother's debiased value (the loss itself without one)
  std::array<T, N> weights{};  ///< AdaptiveWeight's multipliers for the next evaluation
  std::array<T, N> error_scales{};  ///< ErrorScale's scales for the next evaluation (NaN without one)
  bool should_stop = false;
  bool improved = false;    ///< this step set a new best: save the model's weights now
  T best{};                 ///< EarlyStopper's best monitored value so far
  long long best_step = -1; ///< step at which best was seen (-1: none yet)
  long long wait = 0;       ///< EarlyStopper's wait count
  stop_reason reason = stop_reason::none;
  T stability_score = T(1); ///< StabilityMetrics: 1 / (1 + cv) of the window, in [0, 1]
  T loss_variance{};        ///< StabilityMetrics: sample variance of the window
  T grad_norm_ema{};        ///< StabilityMetrics: debiased EMA of the gradient norm
  bool grad_explosion = false;  ///< StabilityMetrics: grad_norm > explosion_ratio * EMA
  T progress{};             ///< StabilityMetrics: 1 - window mean / first full window mean, in [0, 1]
};

/// What flows through a Stabilizer in one step: the step's inputs (already globalized over the
/// ranks) and what the policies listed so far decided. Each policy's on_step reads and writes
/// it in the order the policies are listed; the Stabilizer then turns it into the step_report.
/// N is the number of loss terms (0 without AdaptiveWeight<N> or ErrorScale<N>).
/// Writing your own policy: docs/extending.md.
template <std::size_t N>
struct step_context {
  // Inputs, set by the Stabilizer before the first policy runs.
  long long step = 0;               ///< 0-based index of this update
  double loss = 0;                  ///< the (global) total loss
  double grad_norm = 0;             ///< the (global) gradient norm
  std::array<double, N> values{};   ///< per-term values (meaningful when has_terms)
  std::array<double, N> weights{};  ///< weights the terms were evaluated with (1 if unknown)
  bool has_terms = false;           ///< values holds this step's per-term values
  bool finite = true;               ///< loss, every term value and grad_norm are finite (on every rank)

  // Decisions: neutral until a policy changes them.
  double scale = 1;                 ///< multiply the gradients by this; 0 = skip the step
  bool is_spike = false;            ///< a detector flagged this step
  bool level_shift = false;         ///< a run of spikes became the new reference level
  bool skipped = false;             ///< scale == 0: the model should not be updated
  double effective = 0;             ///< the loss the model trains on: loss, or the dampened limit
  bool has_smoothed = false;        ///< smoothed holds a smoothed value (an EmaSmoother ran)
  double smoothed = 0;              ///< the smoothed loss (the report shows effective without one)
};

}  // namespace steadyloss
