#pragma once
// Early stopping on the validation loss, and a keeper of the best weights.
//
//   sl::validation_stopper<float> stopper({.patience = 20, .min_delta = 1e-3});
//   sl::best_state<std::vector<float>> best;
//   for (long long step = 0; step < steps; ++step) {
//     ...train one step (a per-step Stabilizer handles spikes, weights, NaN runs)...
//     if ((step + 1) % every != 0) continue;
//     const auto r = stopper.check(validation_loss(model), step);
//     best.update(r, model.parameters);   // copies only when r.improved
//     if (r.should_stop) break;
//   }
//   best.restore(model.parameters);
//
// basic_validation_stopper is PyTorch Lightning's EarlyStopping(monitor="val_loss") run at each
// validation check: the EarlyStopper rule (early_stopper.hpp, Lightning's order of checks and its
// strict min_delta) observes one value per check, so patience, start_from and best_check count
// checks ("the patience parameter counts the number of validation checks with no improvement",
// Lightning's EarlyStopping documentation), while best_step reports the training step at which
// the best check ran. The per-step Stabilizer keeps its own EarlyStopper only for runs of
// non-finite steps (EarlyStopper's non_finite_patience).
//
// Smoothing (off by default, as Lightning has none): with factor f in (0, 1) the stopper watches
// the debiased EMA of the checks (EmaSmoother, TensorBoard's smoothing) instead of the raw values;
// `monitored` in the report is the value compared. A non-finite check never enters the EMA.
//
// Non-finite checks follow EarlyStopper's stop_on_non_finite (Lightning's check_finite, default
// on): the first NaN/Inf check stops (reason non_finite). With it off, a NaN check goes through
// Lightning's rule as Lightning would take it: no threshold fires, it is not an improvement, and
// it adds one to the wait (so patience non-finite checks in a row stop, reason patience). An
// infinity on the worse side (+inf in min mode) is passed on as it is, so a divergence_threshold
// stops on it as in Lightning. An infinity on the better side (-inf in min mode) is taken as a NaN:
// Lightning would call it an improvement and keep those weights; a validation loss of -inf is a
// broken evaluation, not a best model.
//
// Multi-rank: check(local_mean, count, step) combines the ranks' values through the Reducer as
// the Stabilizer combines per-term values, sum_r(mean_r * count_r) / sum_r(count_r), in double,
// so every rank takes the same decision. A NaN on any rank (or +inf on one and -inf on another)
// makes the check NaN everywhere, an infinity on a rank makes it that infinity: the value the
// mean over all ranks' samples would have. A rank with count 0 contributes nothing (its value,
// often 0/0, is ignored). check(value, step) is check(value, 1, step): the plain mean over ranks.
// Every rank must call check with the same step; errors (a step out of order, a bad count on any
// rank, no samples on any rank) are thrown on every rank alike, never on one rank only, so no rank
// is left waiting in the reduction.
//
// State: save()/restore() in the format of state_io.hpp (the EmaSmoother and EarlyStopper
// sections, their settings checked on load, plus the check count and the training steps of the
// last and the best check); restore into an identically configured stopper, which is left
// unchanged when the text is rejected. best_state's copy is not part of it: checkpoint the best
// weights beside the state.

#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "../fwd.hpp"
#include "../core/errors.hpp"
#include "reducer.hpp"
#include "early_stopper.hpp"
#include "ema_smoother.hpp"
#include "state_io.hpp"
#include "step.hpp"

namespace steadyloss {

/// One validation check's outcome: what the training loop acts on.
template <class T>
struct validation_report {
  long long check = 0;        ///< 0-based index of this check
  long long step = 0;         ///< the training step at which it ran (as passed to check())
  T value{};                  ///< the (global) raw validation value
  T monitored{};              ///< the value compared: smoothed, or value itself without smoothing
  bool improved = false;      ///< this check became best: keep the model's weights now (best_state)
  bool should_stop = false;   ///< latched: stays true once set
  stop_reason reason = stop_reason::none;
  T best{};                   ///< best monitored value so far (the baseline, or +-inf, before any)
  long long best_check = -1;  ///< index of the best check (-1: none yet)
  long long best_step = -1;   ///< training step of the best check (-1: none yet)
  long long wait = 0;         ///< checks since the last improvement, as EarlyStopper counts them
};

template <class T, Reducer R>
class basic_validation_stopper {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "steadyloss::basic_validation_stopper<T>: T must be float or double");

 public:
  using value_type = T;
  using reducer_type = R;
  using stop_config = typename EarlyStopper<T>::config;
  using report_type = validation_report<T>;
  static constexpr std::string_view name = "ValidationStopper";

  struct config {
    stop_config stop{};     ///< EarlyStopper's settings; patience and start_from count checks
    double smoothing = 0.0; ///< EmaSmoother's factor (weight of history) over checks; 0 = off
  };

  basic_validation_stopper()
    requires std::default_initializable<R>
      : basic_validation_stopper(config{}) {}
  /// validation_stopper<float> v({.stop = {.patience = 20, .min_delta = 1e-3}, .smoothing = 0.6});
  explicit basic_validation_stopper(config c)
    requires std::default_initializable<R>
      : basic_validation_stopper(R{}, c) {}
  /// validation_stopper<float> v({.patience = 20, .min_delta = 1e-3});  (smoothing off)
  explicit basic_validation_stopper(stop_config stop, double smoothing = 0.0)
    requires std::default_initializable<R>
      : basic_validation_stopper(R{}, config{stop, smoothing}) {}
  /// basic_validation_stopper<float, mpi_reducer> v(mpi_reducer{MPI_COMM_WORLD}, {.patience = 20});
  basic_validation_stopper(R reducer, stop_config stop, double smoothing = 0.0)
      : basic_validation_stopper(std::move(reducer), config{stop, smoothing}) {}
  basic_validation_stopper(R reducer, config c)
      : config_(checked(c)), reducer_(std::move(reducer)), smoother_({.factor = c.smoothing}), stopper_(c.stop) {}

  /// One check of this rank's value (across ranks: the mean over ranks, each counted once).
  report_type check(T value, long long step) { return check(value, 1.0, step); }
  /// One check from this rank's mean over `count` samples (count-weighted mean over ranks).
  report_type check(T local_mean, double count, long long step) {
    check_order(step);
    return observe(reduce(local_mean, count), step);
  }

  long long checks() const { return checks_; }
  long long last_step() const { return last_step_; }  ///< training step of the last check (-1: none)
  bool should_stop() const { return stopper_.should_stop(); }
  stop_reason reason() const { return stopper_.reason(); }
  T best() const { return stopper_.best(); }
  long long best_check() const { return stopper_.best_step(); }
  long long best_step() const { return best_step_; }
  long long wait() const { return stopper_.wait(); }
  long long stop_check() const { return stopper_.stop_step(); }  ///< index of the stopping check (-1: none)
  const config& settings() const { return config_; }
  const EarlyStopper<T>& stopper() const { return stopper_; }
  const EmaSmoother<T>& smoother() const { return smoother_; }
  R& reducer() { return reducer_; }

  /// The full state in the format of state_io.hpp.
  std::string save() const {
    state_writer out;
    save(out);
    return out.finish();
  }
  /// Restores what save() wrote into an identically configured stopper. Throws
  /// steadyloss::invalid_input on a corrupted, truncated, wrong-version or mismatched state and
  /// then leaves this stopper unchanged.
  void restore(std::string_view text) {
    state_reader in(text);
    loaded staged = read(in);
    in.finish();
    commit(std::move(staged));
  }
  /// As a section of a larger state (save_state / restore_state, or beside a Stabilizer's).
  void save(state_writer& out) const {
    out.begin(name);
    out.put_int("checks", checks_);
    out.put_int("last_step", last_step_);
    out.put_int("best_step", best_step_);
    smoother_.save(out);
    stopper_.save(out);
    out.end(name);
  }
  void load(state_reader& in) { commit(read(in)); }

 private:
  static config checked(config c) {
    if (!(c.smoothing >= 0.0 && c.smoothing < 1.0))
      detail::fail<invalid_parameter>("validation_stopper: smoothing must be in [0, 1), got ", c.smoothing);
    return c;
  }

  void check_order(long long step) const {
    if (step < 0 || step > max_state_counter)
      detail::fail<invalid_input>("validation_stopper::check: step must be in [0, 2^53], got ", step);
    if (checks_ > 0 && step <= last_step_)
      detail::fail<invalid_input>("validation_stopper::check: step ", step, " is not after the previous check's step ",
                                  last_step_, "; pass the training step at which each check runs");
  }

  // The global value, the same on every rank (see the header comment for the rules).
  double reduce(T local_mean, double count) {
    enum : std::size_t { bad_count, has_nan, has_plus_inf, has_minus_inf, weighted_sum, count_sum, size };
    std::array<double, size> buffer{};
    const double x = static_cast<double>(local_mean);
    if (!(std::isfinite(count) && count >= 0.0)) {
      buffer[bad_count] = 1;
    } else if (count > 0.0) {
      if (std::isnan(x)) buffer[has_nan] = 1;
      else if (std::isinf(x)) buffer[x > 0 ? has_plus_inf : has_minus_inf] = 1;
      else buffer[weighted_sum] = x * count;
      buffer[count_sum] = count;
    }
    reducer_.sum(std::span<double>(buffer));
    if (buffer[bad_count] != 0.0)
      detail::fail<invalid_input>("validation_stopper::check: count must be finite and >= 0 on every rank; ",
                                  buffer[bad_count], " rank(s) passed another (this rank: ", count, ")");
    if (!(buffer[count_sum] > 0.0))
      detail::fail<invalid_input>("validation_stopper::check: count is 0 on every rank: no validation samples");
    // One rank: its own value, exactly (x * count / count can be an ulp away, e.g. 0.1 * 3 / 3).
    if (reducer_.size() == 1) return x;
    const bool plus = buffer[has_plus_inf] != 0.0, minus = buffer[has_minus_inf] != 0.0;
    if (buffer[has_nan] != 0.0 || (plus && minus)) return std::numeric_limits<double>::quiet_NaN();
    if (plus || minus) return plus ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
    return buffer[weighted_sum] / buffer[count_sum];
  }

  report_type observe(double global, long long step) {
    const T value = to_value(global);
    const T monitored = smoother_.update(value);
    const bool min_mode = config_.stop.mode == stop_mode::min;
    const bool better_infinity = std::isinf(monitored) && ((monitored < 0) == min_mode);
    const auto d = stopper_.update(better_infinity ? std::numeric_limits<T>::quiet_NaN() : monitored);
    if (d.improved) best_step_ = step;
    report_type r;
    r.check = checks_++;
    r.step = step;
    r.value = value;
    r.monitored = monitored;
    r.improved = d.improved;
    r.should_stop = d.should_stop;
    r.reason = d.reason;
    r.best = d.best;
    r.best_check = d.best_step;
    r.best_step = best_step_;
    r.wait = d.wait;
    last_step_ = step;
    return r;
  }

  // double -> T, overflowing to +-inf as IEEE rounding does (a plain cast of a double beyond
  // float's range is undefined behaviour).
  static T to_value(double v) {
    if constexpr (std::is_same_v<T, double>) {
      return v;
    } else {
      constexpr double overflow = 0x1.ffffffp127;  // FLT_MAX + half an ulp: rounds to infinity
      if (std::isfinite(v) && std::fabs(v) >= overflow)
        return v > 0 ? std::numeric_limits<T>::infinity() : -std::numeric_limits<T>::infinity();
      return static_cast<T>(v);
    }
  }

  struct loaded {
    EmaSmoother<T> smoother;
    EarlyStopper<T> stopper;
    long long checks, last_step, best_step;
  };

  loaded read(state_reader& in) const {
    in.begin(name);
    const long long checks = in.get_count("checks");
    const long long last_step = in.get_count("last_step", -1);
    const long long best_step = in.get_count("best_step", -1);
    loaded l{smoother_, stopper_, checks, last_step, best_step};
    l.smoother.load(in);
    l.stopper.load(in);
    // The fields that depend on each other: one observation per check, steps strictly increasing.
    if (l.stopper.steps() != checks)
      in.fail_field("checks", "= ", checks, " but its EarlyStopper observed ", l.stopper.steps(),
                    " values (one per check)");
    if (l.smoother.steps() > checks)
      in.fail_field("checks", "= ", checks, " but its EmaSmoother took ", l.smoother.steps(),
                    " values (at most one per check)");
    if (checks == 0 ? last_step != -1 : last_step < checks - 1)
      in.fail_field("last_step", "= ", last_step, " must be -1 before the first check, else at least checks - 1 (",
                    checks - 1, "): each check comes at a later step");
    const long long best_check = l.stopper.best_step();
    if (best_check == -1) {
      if (best_step != -1) in.fail_field("best_step", "= ", best_step, " must be -1 while no check was best");
    } else if (best_step < best_check || best_step > last_step - (checks - 1 - best_check)) {
      in.fail_field("best_step", "= ", best_step, " must be in [", best_check, ", ", last_step - (checks - 1 - best_check),
                    "]: the step of check ", best_check, " of ", checks, " with the last at step ", last_step);
    }
    in.end(name);
    return l;
  }
  void commit(loaded l) {
    smoother_ = std::move(l.smoother);
    stopper_ = std::move(l.stopper);
    checks_ = l.checks;
    last_step_ = l.last_step;
    best_step_ = l.best_step;
  }

  config config_;
  [[no_unique_address]] R reducer_;
  EmaSmoother<T> smoother_;
  EarlyStopper<T> stopper_;
  long long checks_ = 0;
  long long last_step_ = -1;  ///< training step of the last check
  long long best_step_ = -1;  ///< training step of the best check
};

// validation_stopper<T> (single process) is defined in fwd.hpp, beside its declaration.

/// Keeps a copy of the state (the model's weights) of the best validation check.
///   best.update(report, weights);  // copies only when report.improved
///   best.restore(weights);         // after the loop: back to the best check's weights
/// Any copyable State: a std::vector<float>, a struct of Eigen matrices. Copies reuse the kept
/// object's storage (copy assignment) after the first.
template <class State>
class best_state {
  static_assert(std::copy_constructible<State> && std::is_copy_assignable_v<State>,
                "steadyloss::best_state<State>: State must be copy-constructible and copy-assignable (keep a "
                "copyable snapshot of the weights, e.g. a std::vector or a struct of matrices)");

 public:
  using state_type = State;

  /// Copies current when the check improved; returns whether it copied.
  template <class T>
  bool update(const validation_report<T>& report, const State& current) {
    if (!report.improved) return false;
    if (kept_) *kept_ = current;
    else kept_.emplace(current);
    step_ = report.step;
    check_ = report.check;
    return true;
  }
  /// Copies the kept state into `into`; returns false (into untouched) when none is kept.
  bool restore(State& into) const {
    if (!kept_) return false;
    into = *kept_;
    return true;
  }
  bool has_value() const noexcept { return kept_.has_value(); }
  long long step() const noexcept { return step_; }    ///< training step of the kept state (-1: none)
  long long check() const noexcept { return check_; }  ///< check index of the kept state (-1: none)
  /// The kept state (nullptr when none).
  const State* get() const noexcept { return kept_ ? &*kept_ : nullptr; }
  void reset() noexcept {
    kept_.reset();
    step_ = check_ = -1;
  }

 private:
  std::optional<State> kept_;
  long long step_ = -1;
  long long check_ = -1;
};

}  // namespace steadyloss
