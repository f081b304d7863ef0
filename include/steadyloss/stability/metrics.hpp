#pragma once
// StabilityMetrics: O(1) per step summaries of the last `window` accepted (effective) losses and
// of the gradient norm.
//   loss_variance    sample variance of the window (windowed Welford, see window.hpp)
//   stability_score  1 / (1 + cv), cv = sqrt(loss_variance) / |window mean|: 1 for a flat loss,
//                    0.5 when the spread equals the mean, -> 0 for wild swings; 1 before two
//                    values, 0 when the mean is 0 and the spread is not. Always in [0, 1].
//   grad_norm_ema    debiased EMA of finite gradient norms, history weight grad_alpha (0.9)
//   grad_explosion   grad_norm > explosion_ratio (5) * grad_norm_ema of the previous steps, or a
//                    non-finite gradient norm (checked once `window` norms were seen)
//   progress         clamp(1 - window mean / mean of the first full window, 0, 1): the share of
//                    the initial loss level removed so far (0 until the first window is full)

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string_view>

#include "../fwd.hpp"
#include "../core/errors.hpp"
#include "detectors.hpp"
#include "state_io.hpp"
#include "step.hpp"
#include "window.hpp"

namespace steadyloss {

template <class T>
class StabilityMetrics {
 public:
  using value_type = T;
  using kind = policy_kind::stability_metrics;
  using depends_on = type_list<>;
  static constexpr std::string_view name = "StabilityMetrics";

  struct config {
    std::size_t window = 10;
    double grad_alpha = 0.9;       ///< in [0, 1)
    double explosion_ratio = 5.0;  ///< > 1
  };

  StabilityMetrics() : StabilityMetrics(config{}) {}
  explicit StabilityMetrics(config c) : config_(c), stats_(c.window == 0 ? 1 : c.window) {
    if (c.window == 0) detail::fail<invalid_parameter>("StabilityMetrics: window must be > 0, got 0");
    if (!(c.grad_alpha >= 0.0 && c.grad_alpha < 1.0))
      detail::fail<invalid_parameter>("StabilityMetrics: grad_alpha must be in [0, 1), got ", c.grad_alpha);
    if (!(c.explosion_ratio > 1.0) || !std::isfinite(c.explosion_ratio))
      detail::fail<invalid_parameter>("StabilityMetrics: explosion_ratio must be finite and > 1, got ",
                                      c.explosion_ratio);
  }

  /// Observes one step (loss accepted into the window when finite).
  void update(T loss, T grad_norm) { observe(static_cast<double>(loss), static_cast<double>(grad_norm), true); }

  double stability_score() const {
    if (stats_.size() < 2) return 1.0;
    const double sigma = std::sqrt(stats_.sample_variance());
    const double mean = std::fabs(stats_.mean());
    if (sigma == 0.0) return 1.0;
    if (mean == 0.0) return 0.0;
    return 1.0 / (1.0 + sigma / mean);
  }
  double loss_variance() const { return stats_.sample_variance(); }
  double grad_norm_ema() const {
    if (grad_steps_ == 0) return 0.0;
    const double debias = 1.0 - grad_power_;
    return debias == 1.0 ? grad_sum_ : grad_sum_ / debias;
  }
  bool grad_explosion() const { return explosion_; }
  double progress() const {
    if (!(initial_mean_ > 0.0)) return 0.0;
    return std::clamp(1.0 - stats_.mean() / initial_mean_, 0.0, 1.0);
  }

  template <std::size_t N>
  void on_step(step_context<N>& ctx) {
    observe(ctx.effective, ctx.grad_norm, !ctx.skipped);
  }
  template <class Report>
  void fill(Report& r) const {
    using V = decltype(r.stability_score);
    r.stability_score = static_cast<V>(stability_score());
    r.loss_variance = static_cast<V>(loss_variance());
    r.grad_norm_ema = static_cast<V>(grad_norm_ema());
    r.grad_explosion = explosion_;
    r.progress = static_cast<V>(progress());
  }

  void save(state_writer& out) const {
    out.begin(name);
    out.put("metrics_window", static_cast<double>(config_.window));
    out.put("grad_alpha", config_.grad_alpha);
    out.put("explosion_ratio", config_.explosion_ratio);
    detail::save_window(out, stats_);
    out.put("initial_mean", initial_mean_);
    out.put_int("grad_steps", grad_steps_);
    out.put("grad_sum", grad_sum_);
    out.put("grad_power", grad_power_);
    out.put_bool("explosion", explosion_);
    out.end(name);
  }
  void load(state_reader& in) {
    in.begin(name);
    in.expect_config(name, "metrics_window", static_cast<double>(config_.window));
    in.expect_config(name, "grad_alpha", config_.grad_alpha);
    in.expect_config(name, "explosion_ratio", config_.explosion_ratio);
    detail::windowed_stats stats = stats_;
    detail::load_window(in, stats);
    const double initial = in.get_finite("initial_mean");
    const long long grad_steps = in.get_count("grad_steps");
    const double grad_sum = in.get_finite("grad_sum");
    const double grad_power = in.get("grad_power");
    detail::check_power(in, "grad_power", grad_power, config_.grad_alpha, grad_steps);
    const bool explosion = in.get_bool("explosion");
    if (explosion && grad_steps < static_cast<long long>(config_.window))
      in.fail_field("explosion", "must be 0 before ", config_.window, " gradient norms were seen, got 1 after ",
                    grad_steps);
    in.end(name);
    stats_ = stats;
    initial_mean_ = initial;
    grad_steps_ = grad_steps;
    grad_sum_ = grad_sum;
    grad_power_ = grad_power;
    explosion_ = explosion;
  }
  /// Inside a Stabilizer: at most one gradient norm per step.
  void check_step(state_reader& in, long long step) const {
    if (grad_steps_ > step)
      in.fail_field("step", "is ", step, " but StabilityMetrics observed ", grad_steps_,
                    " gradient norms (at most one per step)");
  }

 private:
  void observe(double loss, double grad_norm, bool accepted) {
    const bool grad_finite = std::isfinite(grad_norm);
    const bool warmed = grad_steps_ >= static_cast<long long>(config_.window);
    explosion_ = warmed && (!grad_finite || grad_norm > config_.explosion_ratio * grad_norm_ema());
    if (!accepted) return;
    if (grad_finite) {
      grad_sum_ = config_.grad_alpha * grad_sum_ + (1.0 - config_.grad_alpha) * grad_norm;
      grad_power_ *= config_.grad_alpha;
      if (grad_power_ < 0x1p-60) grad_power_ = 0;  // see EmaSmoother: no subnormal arithmetic
      ++grad_steps_;
    }
    if (std::isfinite(loss)) {
      stats_.push(loss);
      if (stats_.full() && initial_mean_ == 0.0) initial_mean_ = stats_.mean();
    }
  }

  config config_;
  detail::windowed_stats stats_;
  double initial_mean_ = 0;
  long long grad_steps_ = 0;
  double grad_sum_ = 0;
  double grad_power_ = 1;
  bool explosion_ = false;
};

}  // namespace steadyloss
