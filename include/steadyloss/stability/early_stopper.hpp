#pragma once
// EarlyStopper: PyTorch Lightning's EarlyStopping rule, per step. Each observed value x goes
// through Lightning's checks in Lightning's order (EarlyStopping._evaluate_stopping_criteria):
//   1. stop_on_non_finite and x is NaN/Inf                      -> stop (non_finite)
//   2. stopping_threshold set and x better than it (strictly)   -> stop (stopping_threshold)
//   3. divergence_threshold set and x worse than it (strictly)  -> stop (divergence_threshold)
//   4. improved: min mode x < best - |min_delta|, max mode x > best + |min_delta| (strict; the
//      sign of min_delta never matters)                         -> best = x, wait = 0, improved
//   5. otherwise wait += 1; stop when wait >= patience          -> stop (patience)
// best starts at +inf (min) / -inf (max), or at the baseline when one is given (then the run
// stops unless it beats the baseline within patience observations). With relative_min_delta the
// margin is |min_delta| * |best| (ignite's "rel" mode). Observations before step start_from are
// ignored (Keras' start_from_epoch). The stop latches: once stopped, later updates change
// nothing and keep reporting should_stop.
// Inside a Stabilizer, a step an earlier policy skipped (a spike, a NaN) is not observed: one bad
// batch must not end the run (with patience >= 2). But with stop_on_non_finite, max(patience, 1)
// non-finite steps in a row from start_from on stop it (non_finite), so a loss that stays NaN
// behind a SpikeDampener still ends.

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <string_view>

#include "../core/errors.hpp"
#include "state_io.hpp"
#include "step.hpp"

namespace steadyloss {

enum class stop_mode { min, max };

/// Which value the EarlyStopper watches inside a Stabilizer.
namespace monitor {
struct automatic {};  ///< the smoothed loss if an EmaSmoother precedes it, else the loss
struct loss {};       ///< the (dampened) loss
struct smoothed {};   ///< the smoothed loss; needs an EmaSmoother listed before the EarlyStopper
}  // namespace monitor

template <class T>
struct stop_decision {
  bool should_stop = false;
  bool improved = false;
  T best{};
  long long best_step = -1;
  long long wait = 0;
  stop_reason reason = stop_reason::none;
};

template <class T = float, class Monitor = monitor::automatic>
class EarlyStopper {
 public:
  using value_type = T;
  using kind = policy_kind::early_stopper;
  using depends_on = std::conditional_t<std::is_same_v<Monitor, monitor::smoothed>,
                                        type_list<policy_kind::ema_smoother>, type_list<>>;
  static constexpr std::string_view name = "EarlyStopper";

  struct config {
    int patience = 25;                          ///< >= 0
    double min_delta = 0.0005;                  ///< its sign is ignored
    stop_mode mode = stop_mode::min;
    // NaN = not set. (Plain doubles, not std::optional: GCC 12 warns maybe-uninitialized on
    // optionals inside aggregates, which would break users' -Werror builds.)
    double baseline = std::numeric_limits<double>::quiet_NaN();
    double stopping_threshold = std::numeric_limits<double>::quiet_NaN();
    double divergence_threshold = std::numeric_limits<double>::quiet_NaN();
    bool stop_on_non_finite = true;             ///< Lightning's check_finite
    long long start_from = 0;                   ///< ignore observations before this step
    bool relative_min_delta = false;
  };

  EarlyStopper() : EarlyStopper(config{}) {}
  explicit EarlyStopper(config c) : config_(c) {
    if (c.patience < 0) detail::fail<invalid_parameter>("EarlyStopper: patience must be >= 0, got ", c.patience);
    if (!std::isfinite(c.min_delta))
      detail::fail<invalid_parameter>("EarlyStopper: min_delta must be finite, got ", c.min_delta);
    if (c.start_from < 0)
      detail::fail<invalid_parameter>("EarlyStopper: start_from must be >= 0, got ", c.start_from);
    reset_best();
  }

  /// Observes one value (one step).
  stop_decision<T> update(T value) {
    observe(static_cast<double>(value));
    return decision();
  }
  /// Advances the step counter without observing (a skipped step).
  stop_decision<T> skip() {
    ++step_;
    improved_ = false;
    return decision();
  }

  bool should_stop() const { return stopped_; }
  T best() const { return static_cast<T>(best_); }
  long long best_step() const { return best_step_; }
  long long wait() const { return wait_; }
  long long stop_step() const { return stop_step_; }
  stop_reason reason() const { return reason_; }
  const config& settings() const { return config_; }

  template <std::size_t N>
  void on_step(detail::step_context<N>& ctx) {
    if (ctx.skipped) {
      const long long step = step_++;
      improved_ = false;
      if (step < config_.start_from) return;  // ignored, as observations are
      non_finite_run_ = ctx.finite ? 0 : non_finite_run_ + 1;
      if (!stopped_ && config_.stop_on_non_finite && non_finite_run_ >= std::max(config_.patience, 1))
        stop(step, stop_reason::non_finite);
      return;
    }
    non_finite_run_ = 0;
    if constexpr (std::is_same_v<Monitor, monitor::loss>) observe(ctx.effective);
    else observe(ctx.has_smoothed ? ctx.smoothed : ctx.effective);
  }
  template <class Report>
  void fill(Report& r) const {
    r.should_stop = stopped_;
    r.improved = improved_;
    r.best = static_cast<decltype(r.best)>(best_);
    r.best_step = best_step_;
    r.wait = wait_;
    r.reason = reason_;
  }

  void save(state_writer& out) const {
    out.begin(name);
    out.put("patience", config_.patience);
    out.put("min_delta", config_.min_delta);
    out.put("mode", static_cast<double>(config_.mode));
    out.put_int("step", step_);
    out.put("best", best_);
    out.put_int("best_step", best_step_);
    out.put_int("wait", wait_);
    out.put_bool("stopped", stopped_);
    out.put_bool("improved", improved_);
    out.put_int("stop_step", stop_step_);
    out.put_int("reason", static_cast<long long>(reason_));
    out.put_int("non_finite_run", non_finite_run_);
    out.end(name);
  }
  void load(state_reader& in) {
    in.begin(name);
    in.expect_config(name, "patience", config_.patience);
    in.expect_config(name, "min_delta", config_.min_delta);
    in.expect_config(name, "mode", static_cast<double>(config_.mode));
    const long long step = in.get_int("step");
    const double best = in.get("best");
    const long long best_step = in.get_int("best_step");
    const long long wait = in.get_int("wait");
    const bool stopped = in.get_bool("stopped");
    const bool improved = in.get_bool("improved");
    const long long stop_step = in.get_int("stop_step");
    const long long reason = in.get_int("reason");
    const long long non_finite_run = in.get_int("non_finite_run");
    in.end(name);
    if (step < 0 || best_step < -1 || best_step >= step || wait < 0 || std::isnan(best) || reason < 0 ||
        reason > static_cast<long long>(stop_reason::patience) || stopped != (reason != 0) || non_finite_run < 0 ||
        non_finite_run > step)
      detail::fail<invalid_input>("steadyloss state: EarlyStopper values are inconsistent");
    step_ = step;
    best_ = best;
    best_step_ = best_step;
    wait_ = wait;
    stopped_ = stopped;
    improved_ = improved;
    stop_step_ = stop_step;
    reason_ = static_cast<stop_reason>(reason);
    non_finite_run_ = non_finite_run;
  }

 private:
  bool better(double a, double b) const { return config_.mode == stop_mode::min ? a < b : a > b; }

  void reset_best() {
    const double inf = std::numeric_limits<double>::infinity();
    best_ = !std::isnan(config_.baseline) ? config_.baseline : (config_.mode == stop_mode::min ? inf : -inf);
  }

  void observe(double x) {
    const long long step = step_++;
    improved_ = false;
    if (stopped_ || step < config_.start_from) return;
    if (config_.stop_on_non_finite && !std::isfinite(x)) return stop(step, stop_reason::non_finite);
    if (!std::isnan(config_.stopping_threshold) && better(x, config_.stopping_threshold))
      return stop(step, stop_reason::stopping_threshold);
    if (!std::isnan(config_.divergence_threshold) && better(config_.divergence_threshold, x))
      return stop(step, stop_reason::divergence_threshold);
    double margin = std::fabs(config_.min_delta);
    if (config_.relative_min_delta) margin = std::isinf(best_) ? 0.0 : margin * std::fabs(best_);
    const double bar = config_.mode == stop_mode::min ? best_ - margin : best_ + margin;
    if (better(x, bar)) {
      best_ = x;
      best_step_ = step;
      wait_ = 0;
      improved_ = true;
      return;
    }
    ++wait_;
    if (wait_ >= config_.patience) stop(step, stop_reason::patience);
  }
  void stop(long long step, stop_reason reason) {
    stopped_ = true;
    stop_step_ = step;
    reason_ = reason;
  }
  stop_decision<T> decision() const {
    return {stopped_, improved_, static_cast<T>(best_), best_step_, wait_, reason_};
  }

  config config_;
  long long step_ = 0;
  double best_ = 0;
  long long best_step_ = -1;
  long long wait_ = 0;
  bool stopped_ = false;
  bool improved_ = false;
  long long stop_step_ = -1;
  stop_reason reason_ = stop_reason::none;
  long long non_finite_run_ = 0;  ///< skipped non-finite steps in a row (inside a Stabilizer)
};

}  // namespace steadyloss
