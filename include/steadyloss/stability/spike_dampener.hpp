#pragma once
// SpikeDampener: flags a step whose loss (or gradient norm, for detect::ema_zscore) is above the
// detector's limit L (see detectors.hpp; default: L = threshold * mean of the last `window`
// accepted losses, threshold 2.0, window 10) and tells the loop what to do with it:
//   dampen  scale = L / x, so the effective loss x * scale is L (the gradient norm is clipped to
//           L for ema_zscore)
//   skip    scale = 0
//   report  scale = 1, only the flag is set
// A non-finite loss or gradient norm always gives scale 0 (skip). Spikes and non-finite values
// never enter the reference window. Warm-up is explicit: no step is flagged before the detector
// holds `warmup` accepted values (default: window); until then every finite value is accepted.
// A level shift is not a spike: after `level_shift_after` consecutive spikes (default: window, at
// least 2; non-finite steps neither extend nor break the run) the reference restarts from the
// run's last `window` values (a one-off O(window) step; with fewer than `warmup` values it warms
// up again) and that step is accepted with scale 1 and `level_shift` set. Otherwise a loss
// that settles above threshold x its old level (a new data phase, a loss term switched on) would
// be scaled, or in skip mode frozen, forever.
// Guards (spike_config::min_ratio, min_excess; off by default) raise the limit to at least
// min_ratio x the reference and the reference + min_excess, for every detector.
// The detector is any SpikeDetector (spike_detector.hpp): spike_config<Detector> holds the
// settings every detector shares and, in `detector`, the detector's own config.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string_view>
#include <vector>

#include "../core/errors.hpp"
#include "../fwd.hpp"
#include "detectors.hpp"
#include "spike_detector.hpp"
#include "state_io.hpp"
#include "step.hpp"

namespace steadyloss {

enum class spike_mode { dampen, skip, report };

/// Settings of SpikeDampener<T, Detector>: the ones every detector shares, and the detector's own
/// in `detector` (e.g. `.detector = {.threshold = 2.0}` for detect::mean_ratio).
template <class Detector>
struct spike_config {
  std::size_t window = 10;  ///< accepted values in the reference window (> 0)
  spike_mode mode = spike_mode::dampen;
  std::size_t warmup = 0;   ///< accepted values before any decision; 0 = window
  /// A run of this many consecutive spikes is a new level, not a spike: the reference restarts
  /// from the run's values (the last `window` of them) and the step is accepted. 0 = window (at
  /// least 2); otherwise >= 2; SIZE_MAX never. Without it a loss that settles above threshold x
  /// its old level would be scaled forever.
  std::size_t level_shift_after = 0;
  // Guards, for every detector: a value above the limit is a spike only if it also exceeds
  // min_ratio x the reference (the window's mean or median, the EMA mean) and exceeds the
  // reference by more than min_excess (in the loss's units). A z-score limit collapses onto the
  // mean on a smooth stream, where a 1.2x batch would be "13 sigma": min_ratio keeps it a batch.
  double min_ratio = 0;     ///< >= 0; 0 = off
  double min_excess = 0;    ///< >= 0; 0 = off
  typename Detector::config detector{};  ///< the detector's own settings
};

/// What SpikeDampener decided for one step.
template <class T>
struct spike_decision {
  T scale = T(1);           ///< multiply the gradients by this
  bool is_spike = false;
  bool skipped = false;     ///< scale == 0
  bool non_finite = false;
  bool warming_up = false;  ///< the detector could not decide yet
  bool level_shift = false; ///< a run of spikes became the new reference level (scale 1)
  T limit{};                ///< the detector's limit this step (0 during warm-up)
  T effective{};            ///< the loss after dampening
};

template <class T, class Detector>
class SpikeDampener {
  static_assert(SpikeDetector<Detector>,
                "steadyloss: SpikeDampener<T, Detector>: Detector is not a SpikeDetector; it needs a default-"
                "constructible `config`, a constructor from (const config&, std::size_t window, std::size_t "
                "warmup), `static constexpr std::string_view name`, ready(), limit(), reference(), accept(double), "
                "clear(), save(state_writer&) const and load(state_reader&) (see stability/spike_detector.hpp)");

 public:
  using value_type = T;
  using detector_type = Detector;
  using kind = policy_kind::spike_dampener;
  using depends_on = type_list<>;
  static constexpr std::string_view name = "SpikeDampener";

  using config = spike_config<Detector>;

  SpikeDampener() : SpikeDampener(config{}) {}
  explicit SpikeDampener(config c)
      : config_(validated(c)), detector_(config_.detector, config_.window, effective_warmup(config_)),
        run_values_(config_.window) {}

  /// One step: the loss and, for gradient-norm detectors, the gradient norm.
  spike_decision<T> update(T loss, T grad_norm = T(0)) {
    const auto d = decide(static_cast<double>(loss), static_cast<double>(grad_norm),
                          std::isfinite(loss) && std::isfinite(grad_norm));
    return {static_cast<T>(d.scale), d.is_spike, d.skipped, d.non_finite, d.warming_up, d.level_shift,
            static_cast<T>(d.limit), static_cast<T>(d.effective)};
  }

  long long spikes() const { return spikes_; }
  long long skips() const { return skips_; }
  long long consecutive_skips() const { return consecutive_skips_; }
  long long consecutive_spikes() const { return consecutive_spikes_; }
  long long level_shifts() const { return level_shifts_; }
  const config& settings() const { return config_; }

  template <std::size_t N>
  void on_step(step_context<N>& ctx) {
    if (ctx.skipped) return;  // an earlier policy already dropped this step
    const auto d = decide(ctx.effective, ctx.grad_norm, ctx.finite);
    ctx.scale *= d.scale;
    ctx.is_spike = ctx.is_spike || d.is_spike;
    ctx.level_shift = ctx.level_shift || d.level_shift;
    ctx.skipped = d.skipped;
    ctx.effective = d.effective;
  }

  void save(state_writer& out) const {
    out.begin(name);
    out.put("detector_window", static_cast<double>(config_.window));
    out.put_word("mode", mode_names[static_cast<std::size_t>(config_.mode)]);
    out.put("warmup", static_cast<double>(effective_warmup(config_)));
    out.put("level_shift_after", static_cast<double>(config_.level_shift_after));
    out.put("min_ratio", config_.min_ratio);
    out.put("min_excess", config_.min_excess);
    out.put_int("spikes", spikes_);
    out.put_int("skips", skips_);
    out.put_int("consecutive_skips", consecutive_skips_);
    out.put_int("consecutive_spikes", consecutive_spikes_);
    out.put_int("level_shifts", level_shifts_);
    out.put_doubles("run_values", run_values_);
    out.begin(Detector::name);
    detector_.save(out);
    out.end(Detector::name);
    out.end(name);
  }
  void load(state_reader& in) {
    in.begin(name);
    in.expect_config(name, "detector_window", static_cast<double>(config_.window));
    in.expect_choice(name, "mode", static_cast<long long>(config_.mode), {mode_names[0], mode_names[1], mode_names[2]});
    in.expect_config(name, "warmup", static_cast<double>(effective_warmup(config_)));
    in.expect_config(name, "level_shift_after", static_cast<double>(config_.level_shift_after));
    in.expect_config(name, "min_ratio", config_.min_ratio);
    in.expect_config(name, "min_excess", config_.min_excess);
    const long long spikes = in.get_count("spikes");
    const long long skips = in.get_count("skips");
    const long long consecutive = in.get_count("consecutive_skips", 0, skips);
    // A run shorter than level_shift_after (SIZE_MAX: never) that consists of counted spikes.
    const long long longest_run = config_.level_shift_after - 1 < static_cast<std::size_t>(spikes)
                                      ? static_cast<long long>(config_.level_shift_after - 1)
                                      : spikes;
    const long long run = in.get_count("consecutive_spikes", 0, longest_run);
    const long long shifts = in.get_count("level_shifts");
    auto run_values = in.get_finite_doubles("run_values", run_values_.size());
    in.begin(Detector::name);
    Detector detector = detector_;
    detector.load(in);
    in.end(Detector::name);
    if (run > 0 && !detector.ready())
      in.fail_field("consecutive_spikes", "must be 0 while the detector warms up, got ", run);
    in.end(name);
    spikes_ = spikes;
    skips_ = skips;
    consecutive_skips_ = consecutive;
    consecutive_spikes_ = run;
    level_shifts_ = shifts;
    run_values_.swap(run_values);
    detector_ = detector;
  }
  /// Inside a Stabilizer: at most one spike, skip or level shift per step.
  void check_step(state_reader& in, long long step) const {
    if (spikes_ + level_shifts_ > step || skips_ > step)
      in.fail_field("step", "is ", step, " but SpikeDampener counted ", spikes_, " spikes and ", level_shifts_,
                    " level shifts and ", skips_, " skips (at most one of each per step)");
  }

 private:
  static constexpr std::string_view mode_names[] = {"dampen", "skip", "report"};
  static constexpr bool watches_grad_norm = detail::watches_grad_norm<Detector>();

  static std::size_t effective_warmup(const config& c) { return c.warmup == 0 ? c.window : c.warmup; }

  struct raw_decision {
    double scale = 1;
    bool is_spike = false, skipped = false, non_finite = false, warming_up = false, level_shift = false;
    double limit = 0, effective = 0;
  };

  static config validated(config c) {
    if (c.window == 0) detail::fail<invalid_parameter>("SpikeDampener: window must be > 0, got 0");
    if (c.level_shift_after == 1)
      detail::fail<invalid_parameter>("SpikeDampener: level_shift_after must be 0 (= window) or >= 2, got 1 "
                                      "(every spike would be taken as a new level)");
    if (c.level_shift_after == 0) c.level_shift_after = c.window < 2 ? 2 : c.window;
    if (c.warmup > c.window && !watches_grad_norm)
      detail::fail<invalid_parameter>("SpikeDampener: warmup must be <= window (", c.window, "), got ", c.warmup);
    if (c.mode != spike_mode::dampen && c.mode != spike_mode::skip && c.mode != spike_mode::report)
      detail::fail<invalid_parameter>("SpikeDampener: mode must be dampen, skip or report, got ",
                                      static_cast<int>(c.mode));
    if (!(c.min_ratio >= 0.0) || !std::isfinite(c.min_ratio))
      detail::fail<invalid_parameter>("SpikeDampener: min_ratio must be finite and >= 0, got ", c.min_ratio);
    if (!(c.min_excess >= 0.0) || !std::isfinite(c.min_excess))
      detail::fail<invalid_parameter>("SpikeDampener: min_excess must be finite and >= 0, got ", c.min_excess);
    return c;  // the detector's own settings: its constructor validates them
  }

  raw_decision decide(double loss, double grad_norm, bool finite) {
    raw_decision d;
    d.effective = loss;
    if (!finite) {
      d.non_finite = d.skipped = true;
      d.scale = 0;
    } else {
      const double x = watches_grad_norm ? grad_norm : loss;
      if (!detector_.ready()) {
        d.warming_up = true;
        detector_.accept(x);
        consecutive_spikes_ = 0;
      } else {
        d.limit = guarded_limit();
        if (x <= d.limit) {
          detector_.accept(x);
          consecutive_spikes_ = 0;
        } else if (remember_spike(x)) {  // the run is long enough: its level is the new normal
          d.level_shift = true;
          ++level_shifts_;
          restart_from_run();
        } else {
          d.is_spike = true;
          ++spikes_;
          if (config_.mode == spike_mode::skip || (config_.mode == spike_mode::dampen && !(d.limit > 0))) {
            d.scale = 0;
            d.skipped = true;
          } else if (config_.mode == spike_mode::dampen) {
            d.scale = d.limit / x;
            if (!watches_grad_norm) d.effective = d.limit;
          }
          detail::notify_spike(detector_, x);
        }
      }
    }
    if (d.skipped) {
      ++skips_;
      ++consecutive_skips_;
    } else {
      consecutive_skips_ = 0;
    }
    return d;
  }

  // The detector's limit, raised by the guards: a spike must clear all three.
  double guarded_limit() const {
    const double reference = detector_.reference();
    return std::max({detector_.limit(), config_.min_ratio * reference, reference + config_.min_excess});
  }
  // Keeps x in the ring of the current run's values; true when the run reaches level_shift_after.
  bool remember_spike(double x) {
    run_values_[static_cast<std::size_t>(consecutive_spikes_) % run_values_.size()] = x;
    return static_cast<std::size_t>(++consecutive_spikes_) >= config_.level_shift_after;
  }
  // The reference restarts from the run's last `window` values, oldest first.
  void restart_from_run() {
    const auto size = run_values_.size();
    const auto run = static_cast<std::size_t>(consecutive_spikes_);
    const std::size_t kept = std::min(run, size);
    detector_.clear();
    for (std::size_t i = run - kept; i < run; ++i) detector_.accept(run_values_[i % size]);
    consecutive_spikes_ = 0;
  }

  config config_;
  Detector detector_;
  std::vector<double> run_values_;  ///< ring of the current run of spikes (window slots)
  long long spikes_ = 0;
  long long skips_ = 0;
  long long consecutive_skips_ = 0;
  long long consecutive_spikes_ = 0;
  long long level_shifts_ = 0;
};

}  // namespace steadyloss
