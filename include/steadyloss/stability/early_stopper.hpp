#pragma once
// EarlyStopper: PyTorch Lightning's EarlyStopping rule, per step, with ignite's and Keras'
// options. Each observed value x goes through Lightning's checks in Lightning's order
// (EarlyStopping._evaluate_stopping_criteria):
//   1. stop_on_non_finite and x is NaN/Inf                      -> stop (non_finite)
//   2. stopping_threshold set and x better than it (strictly)   -> stop (stopping_threshold)
//   3. divergence_threshold set and x worse than it (strictly)  -> stop (divergence_threshold)
//   4. x improves on best by more than min_delta                -> best = x, wait = 0, improved
//   5. otherwise wait += 1; stop when wait >= patience          -> stop (patience)
// "Improves on r": min mode x + d < r, max mode x - d > r, with d = abs(min_delta): Lightning's
// expression (`current - min_delta` against best, min_delta negated in min mode), strict. The
// sign of min_delta is ignored, as Keras does (Lightning would let a negative one accept worse
// values).
//
// Precision: every comparison and the sum x + d are computed in T, the monitored value's type,
// with min_delta, the baseline and the thresholds rounded to T once, at construction. That is
// Lightning's arithmetic: it logs a Python float as a float32 tensor (float64 if that is torch's
// default dtype) and compares with torch ops in that dtype, a Python-float operand rounded to
// it. So EarlyStopper<float> decides ties as Lightning's float32 default does and
// EarlyStopper<double> as a float64 run. (ignite, in Python floats, compares x with best - d
// instead, which can differ from x + d < best by one rounding at an exact tie.) Inside a
// Stabilizer the monitored value is rounded to T first: the value the report shows is the value
// compared.
//
// Options, each against its peer:
// - baseline: by default the starting best, so the run stops unless it beats the baseline by
//   more than min_delta within patience observations. With baseline_gates_wait (Keras 3's
//   rule), best is tracked from the first value as without a baseline and an improvement resets
//   the wait count only if it also improves on the baseline; otherwise it adds one to it (Keras
//   counts every observation) without a patience check, and best/best_step still follow it, so
//   the weights to restore are the best seen even when none beat the baseline.
// - cumulative_delta (default true, Lightning's and Keras' rule, ignite's cumulative=True):
//   min_delta counts from the last value that counted as an improvement. With false (ignite's
//   default), a value better than best by no more than min_delta still becomes best (improved,
//   best_step) but the wait count goes on: min_delta then counts from the best value seen.
// - relative_min_delta: the margin scales with best (ignite's threshold_mode="rel"). Improving
//   on r means x < r * (1 - d) in min mode and x > r * (1 + d) in max mode for r >= 0, ignite's
//   expression with the factor rounded to T once; for r < 0 the factors swap (our rule: ignite's
//   would move the bar the wrong way, accepting worse values), so the margin is always
//   d * abs(r) toward better. While best is still infinite any better value improves on it.
// - start_from: observations before this step are ignored (Keras' start_from_epoch).
// `improved` means this step's value became best: save the model's weights now. The stop
// latches: once stopped, later updates change nothing and keep reporting should_stop.
// Inside a Stabilizer, a step an earlier policy skipped (a spike, a NaN) is not observed: one bad
// batch must not end the run. But with stop_on_non_finite, a run of non-finite steps in a row
// from start_from on stops it (non_finite), so a loss that stays NaN behind a SpikeDampener still
// ends. The run's length is its own setting, non_finite_patience (max(non_finite_patience, 1)
// steps; negative, the default: max(patience, 1), the rule before the setting existed), so that a
// per-step Stabilizer can stop on 10 NaN steps in a row while its patience is out of the way
// (patience = INT_MAX) because early stopping watches the validation loss
// (validation_stopper, validation.hpp). A non-finite value that is observed rather than skipped
// (no SpikeDampener before the stopper, or update(x) called directly) stops at once, as
// Lightning's check_finite does: non_finite_patience only counts skipped steps.

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <type_traits>
#include <utility>

#include "../fwd.hpp"
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

template <class T, class Monitor>
class EarlyStopper {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "steadyloss::EarlyStopper<T>: T must be float or double");

 public:
  using value_type = T;
  using kind = policy_kind::early_stopper;
  using depends_on = std::conditional_t<std::is_same_v<Monitor, monitor::smoothed>,
                                        type_list<policy_kind::ema_smoother>, type_list<>>;
  static constexpr std::string_view name = "EarlyStopper";

  struct config {
    int patience = 25;                          ///< >= 0
    /// Skipped non-finite steps in a row that stop the run (with stop_on_non_finite; 0 acts as 1);
    /// negative: max(patience, 1).
    int non_finite_patience = -1;
    double min_delta = 0.0005;                  ///< its sign is ignored
    stop_mode mode = stop_mode::min;
    // NaN = not set. (Plain doubles, not std::optional: GCC 12 warns maybe-uninitialized on
    // optionals inside aggregates, which would break users' -Werror builds.)
    double baseline = std::numeric_limits<double>::quiet_NaN();
    bool baseline_gates_wait = false;           ///< Keras 3's baseline rule (see above)
    double stopping_threshold = std::numeric_limits<double>::quiet_NaN();
    double divergence_threshold = std::numeric_limits<double>::quiet_NaN();
    bool stop_on_non_finite = true;             ///< Lightning's check_finite
    long long start_from = 0;                   ///< ignore observations before this step
    bool relative_min_delta = false;            ///< ignite's threshold_mode="rel"
    bool cumulative_delta = true;               ///< false: ignite's default (see above)
  };

  EarlyStopper() : EarlyStopper(config{}) {}
  explicit EarlyStopper(config c) : config_(c) {
    if (c.patience < 0) detail::fail<invalid_parameter>("EarlyStopper: patience must be >= 0, got ", c.patience);
    if (!std::isfinite(to_value(std::fabs(c.min_delta))))
      detail::fail<invalid_parameter>("EarlyStopper: min_delta must be finite in the value type, got ", c.min_delta);
    if (c.start_from < 0 || c.start_from > max_state_counter)
      detail::fail<invalid_parameter>("EarlyStopper: start_from must be in [0, ", max_state_counter, "], got ",
                                      c.start_from);
    check_optional("baseline", c.baseline);
    check_optional("stopping_threshold", c.stopping_threshold);
    check_optional("divergence_threshold", c.divergence_threshold);
    if (c.baseline_gates_wait && std::isnan(c.baseline))
      detail::fail<invalid_parameter>("EarlyStopper: baseline_gates_wait needs a baseline, got baseline = nan");
    min_delta_ = to_value(std::fabs(c.min_delta));
    grow_ = to_value(1.0 + std::fabs(c.min_delta));
    shrink_ = to_value(1.0 - std::fabs(c.min_delta));
    baseline_ = to_value(c.baseline);
    stopping_threshold_ = to_value(c.stopping_threshold);
    divergence_threshold_ = to_value(c.divergence_threshold);
    best_ = initial_best();
  }

  /// Observes one value (one step).
  stop_decision<T> update(T value) {
    observe(value);
    return decision();
  }
  /// Advances the step counter without observing (a skipped step).
  stop_decision<T> skip() {
    ++step_;
    improved_ = false;
    return decision();
  }

  bool should_stop() const { return stopped_; }
  T best() const { return best_; }
  long long best_step() const { return best_step_; }
  long long wait() const { return wait_; }
  long long stop_step() const { return stop_step_; }
  /// Steps counted so far: observations and skipped steps (the next one's index).
  long long steps() const { return step_; }
  /// The length of a run of skipped non-finite steps that stops (see non_finite_patience).
  long long non_finite_limit() const {
    return config_.non_finite_patience < 0 ? std::max(config_.patience, 1) : std::max(config_.non_finite_patience, 1);
  }
  stop_reason reason() const { return reason_; }
  const config& settings() const { return config_; }

  template <std::size_t N>
  void on_step(step_context<N>& ctx) {
    if (ctx.skipped) {
      const long long step = step_++;
      improved_ = false;
      if (step < config_.start_from) return;  // ignored, as observations are
      non_finite_run_ = ctx.finite ? 0 : non_finite_run_ + 1;
      if (!stopped_ && config_.stop_on_non_finite && non_finite_run_ >= non_finite_limit())
        stop(step, stop_reason::non_finite);
      return;
    }
    if constexpr (std::is_same_v<Monitor, monitor::loss>) observe(to_value(ctx.effective));
    else observe(to_value(ctx.has_smoothed ? ctx.smoothed : ctx.effective));
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

  // Every setting that changes a decision is saved and must match on load, the precision
  // included (a float stopper and a double one break ties differently).
  void save(state_writer& out) const {
    out.begin(name);
    out.put_int("value_digits", std::numeric_limits<T>::digits);
    out.put("patience", config_.patience);
    out.put_int("non_finite_patience", saved_non_finite_patience());
    out.put("min_delta", config_.min_delta);
    out.put_word("mode", mode_names[static_cast<int>(config_.mode)]);
    out.put("baseline", config_.baseline);
    out.put_bool("baseline_gates_wait", config_.baseline_gates_wait);
    out.put("stopping_threshold", config_.stopping_threshold);
    out.put("divergence_threshold", config_.divergence_threshold);
    out.put_bool("stop_on_non_finite", config_.stop_on_non_finite);
    out.put_int("start_from", config_.start_from);
    out.put_bool("relative_min_delta", config_.relative_min_delta);
    out.put_bool("cumulative_delta", config_.cumulative_delta);
    out.put_int("step", step_);
    out.put("best", static_cast<double>(best_));
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
    if (const long long digits = in.get_int("value_digits"); digits != std::numeric_limits<T>::digits)
      detail::fail<invalid_input>("steadyloss state: EarlyStopper was saved with value_digits = ", digits, " (",
                                  type_name(digits), "), this one has ", std::numeric_limits<T>::digits, " (",
                                  type_name(std::numeric_limits<T>::digits),
                                  "); restore into an EarlyStopper of the same value type");
    in.expect_config(name, "patience", config_.patience);
    in.expect_int(name, "non_finite_patience", saved_non_finite_patience());
    in.expect_config(name, "min_delta", config_.min_delta);
    in.expect_choice(name, "mode", static_cast<long long>(config_.mode), {mode_names[0], mode_names[1]});
    in.expect_config(name, "baseline", config_.baseline);
    in.expect_int(name, "baseline_gates_wait", config_.baseline_gates_wait);
    in.expect_config(name, "stopping_threshold", config_.stopping_threshold);
    in.expect_config(name, "divergence_threshold", config_.divergence_threshold);
    in.expect_int(name, "stop_on_non_finite", config_.stop_on_non_finite);
    in.expect_int(name, "start_from", config_.start_from);
    in.expect_int(name, "relative_min_delta", config_.relative_min_delta);
    in.expect_int(name, "cumulative_delta", config_.cumulative_delta);
    EarlyStopper s = *this;
    s.step_ = in.get_int("step");
    const double best = in.get("best");
    s.best_step_ = in.get_int("best_step");
    s.wait_ = in.get_int("wait");
    s.stopped_ = in.get_bool("stopped");
    s.improved_ = in.get_bool("improved");
    s.stop_step_ = in.get_int("stop_step");
    const long long reason = in.get_int("reason");
    s.non_finite_run_ = in.get_int("non_finite_run");
    s.best_ = to_value(best);
    if (!(static_cast<double>(s.best_) == best || (std::isnan(best) && std::isnan(s.best_))))
      in.fail_field("best", "= ", best, " is not a value of the stopper's value type");
    if (reason < 0 || reason > static_cast<long long>(stop_reason::patience))
      in.fail_field("reason", "= ", reason, " is not a stop_reason (0 to 4)");
    s.reason_ = static_cast<stop_reason>(reason);
    s.validate(in);
    in.end(name);
    *this = s;
  }
  /// Inside a Stabilizer: the EarlyStopper counts each of the pipeline's steps once.
  void check_step(state_reader& in, long long step) const {
    if (step_ > step)
      in.fail_field("step", "is ", step, " but EarlyStopper counted ", step_, " steps (at most one per step)");
  }

 private:
  static constexpr std::string_view mode_names[] = {"min", "max"};

  // double -> T, rounding to nearest and overflowing to +-inf as IEEE does (a plain cast of a
  // double beyond float's range is undefined behaviour).
  static T to_value(double v) {
    constexpr double largest = static_cast<double>(std::numeric_limits<T>::max());
    if (std::fabs(v) > largest) return v > 0 ? std::numeric_limits<T>::infinity() : -std::numeric_limits<T>::infinity();
    return static_cast<T>(v);
  }
  static void check_optional(std::string_view what, double value) {
    if (!std::isnan(value) && !std::isfinite(to_value(value)))
      detail::fail<invalid_parameter>("EarlyStopper: ", what, " must be finite in the value type (NaN = not set), got ",
                                      value);
  }
  static std::string_view type_name(long long digits) {
    return digits == std::numeric_limits<float>::digits    ? "float"
           : digits == std::numeric_limits<double>::digits ? "double"
                                                           : "an unknown type";
  }

  // Every negative value means the same rule: saved as -1, so they load into each other.
  long long saved_non_finite_patience() const { return std::max(config_.non_finite_patience, -1); }

  bool min_mode() const { return config_.mode == stop_mode::min; }
  bool better(T a, T b) const { return min_mode() ? a < b : a > b; }
  bool has(double setting) const { return !std::isnan(setting); }
  T initial_best() const {
    if (has(config_.baseline) && !config_.baseline_gates_wait) return baseline_;
    const T inf = std::numeric_limits<T>::infinity();
    return min_mode() ? inf : -inf;
  }
  // Whether x improves on the reference r by more than the margin (see the header comment).
  // Each intermediate is a named T so that it is rounded to T, as the comparison is.
  bool improves_on(T x, T r) const {
    if (!config_.relative_min_delta) {
      const T shifted = min_mode() ? x + min_delta_ : x - min_delta_;
      return better(shifted, r);
    }
    if (std::isinf(r)) return better(x, r);
    const bool toward_zero = min_mode() == (r >= 0);
    const T bar = r * (toward_zero ? shrink_ : grow_);
    return better(x, bar);
  }

  void observe(T x) {
    const long long step = step_++;
    improved_ = false;
    non_finite_run_ = 0;  // an observation ends a run of skipped non-finite steps
    if (stopped_ || step < config_.start_from) return;
    if (config_.stop_on_non_finite && !std::isfinite(x)) return stop(step, stop_reason::non_finite);
    if (has(config_.stopping_threshold) && better(x, stopping_threshold_))
      return stop(step, stop_reason::stopping_threshold);
    if (has(config_.divergence_threshold) && better(divergence_threshold_, x))
      return stop(step, stop_reason::divergence_threshold);
    if (improves_on(x, best_)) {
      set_best(x, step);
      if (!config_.baseline_gates_wait || improves_on(x, baseline_)) wait_ = 0;
      else ++wait_;  // Keras: counted, and no patience check on an improvement
      return;
    }
    if (!config_.cumulative_delta && better(x, best_)) set_best(x, step);
    ++wait_;
    if (wait_ >= config_.patience) stop(step, stop_reason::patience);
  }
  void set_best(T x, long long step) {
    best_ = x;
    best_step_ = step;
    improved_ = true;
  }
  void stop(long long step, stop_reason reason) {
    stopped_ = true;
    stop_step_ = step;
    reason_ = reason;
  }
  stop_decision<T> decision() const { return {stopped_, improved_, best_, best_step_, wait_, reason_}; }

  // The ranges and cross-field rules every state this class writes satisfies.
  void validate(state_reader& in) const {
    auto bad = [&in](std::string_view field, const auto& value, std::string_view rule) {
      in.fail_field(field, "= ", value, " ", rule);
    };
    const long long patience_stop = std::max<long long>(config_.patience, 1);
    if (step_ < 0 || step_ > max_state_counter) bad("step", step_, "must be in [0, 2^53]");
    // Observations (and skipped steps counted toward a non-finite run) start at start_from.
    const long long counted = std::max(step_ - config_.start_from, 0LL);
    if (best_step_ == -1) {
      if (!(best_ == initial_best()))
        bad("best", best_, "must be the starting best (infinity, or the baseline) while best_step = -1");
    } else {
      if (best_step_ < config_.start_from || best_step_ >= step_)
        bad("best_step", best_step_, "must be -1 or an observed step in [start_from, step)");
      // An improvement needs a value better than the starting best; -inf (min mode) only when
      // non-finite values are observed rather than stopped on.
      const T inf = std::numeric_limits<T>::infinity();
      if (std::isnan(best_) || !better(best_, initial_best()) ||
          (config_.stop_on_non_finite && best_ == (min_mode() ? -inf : inf)))
        bad("best", best_, "is not a value an observation could have set");
    }
    if (improved_ != (best_step_ >= 0 && best_step_ == step_ - 1))
      bad("improved", improved_, "must be 1 exactly when best_step is the last step");
    if (wait_ < 0 || wait_ > counted) bad("wait", wait_, "must be in [0, observed steps]");
    // With cumulative_delta on and baseline_gates_wait off, only an improvement sets best and it
    // resets the wait, which then grows by at most one a step. (Without cumulative_delta a value
    // can become best while the wait goes on; with baseline_gates_wait an improvement that misses
    // the baseline adds one: neither bound holds there.)
    if (config_.cumulative_delta && !config_.baseline_gates_wait && best_step_ >= 0) {
      if (improved_ && wait_ != 0)
        bad("wait", wait_, "must be 0 when improved = 1 (an improvement resets it; cumulative_delta is on)");
      const long long since_best = step_ - 1 - best_step_;
      if (wait_ > since_best)
        in.fail_field("wait", "= ", wait_, " must be at most step - 1 - best_step (", since_best,
                      "): it restarts from 0 at best_step (cumulative_delta is on)");
    }
    if (!config_.baseline_gates_wait && wait_ > patience_stop)
      bad("wait", wait_, "must be at most max(patience, 1)");
    if (stopped_ != (reason_ != stop_reason::none)) bad("stopped", stopped_, "must be 1 exactly when reason is set");
    if (reason_ == stop_reason::patience && wait_ < patience_stop)
      bad("wait", wait_, "is below max(patience, 1), yet the stop reason is patience");
    // Without Keras' rule, reaching max(patience, 1) is what stops, and nothing counts after it.
    if (!config_.baseline_gates_wait && wait_ == patience_stop && reason_ != stop_reason::patience)
      bad("wait", wait_, "reached max(patience, 1), yet the stop reason is not patience");
    if (reason_ == stop_reason::stopping_threshold && !has(config_.stopping_threshold))
      bad("reason", "stopping_threshold", "but no stopping_threshold is set");
    if (reason_ == stop_reason::divergence_threshold && !has(config_.divergence_threshold))
      bad("reason", "divergence_threshold", "but no divergence_threshold is set");
    if (reason_ == stop_reason::non_finite && !config_.stop_on_non_finite)
      bad("reason", "non_finite", "but stop_on_non_finite is off");
    if (stopped_ ? (stop_step_ < config_.start_from || stop_step_ >= step_ || stop_step_ < best_step_)
                 : stop_step_ != -1)
      bad("stop_step", stop_step_, "must be -1 before a stop, else a step in [max(start_from, best_step), step)");
    if (non_finite_run_ < 0 || non_finite_run_ > counted)
      bad("non_finite_run", non_finite_run_, "must be in [0, steps counted from start_from]");
    if (!stopped_ && config_.stop_on_non_finite && non_finite_run_ >= non_finite_limit())
      in.fail_field("non_finite_run", "= ", non_finite_run_, " reached the non-finite limit (", non_finite_limit(),
                    ") but the stopper has not stopped");
    // The run's steps were all skipped: none of them set best.
    if (best_step_ >= step_ - non_finite_run_)
      bad("non_finite_run", non_finite_run_, "covers best_step, but skipped steps are not observed");
  }

  config config_;
  T min_delta_{};
  T grow_{}, shrink_{};  // 1 + d and 1 - d, for relative_min_delta
  T baseline_{}, stopping_threshold_{}, divergence_threshold_{};
  long long step_ = 0;
  T best_{};
  long long best_step_ = -1;
  long long wait_ = 0;
  bool stopped_ = false;
  bool improved_ = false;
  long long stop_step_ = -1;
  stop_reason reason_ = stop_reason::none;
  long long non_finite_run_ = 0;  ///< skipped non-finite steps in a row (inside a Stabilizer)
};

}  // namespace steadyloss
