#pragma once
// Replays a training log through a Stabilizer: what would the step policies have done?
//
// Each data row with a training loss is one step: Stabilizer::update(loss[, per-term losses],
// grad_norm) (grad_norm 0 when the log has none; the loss detectors never read it, ema_zscore
// needs the column). The spike detector is chosen at run time (spike_detector; default the
// stable preset's calibrated one, presets::calibrated_spike_detector with
// presets::calibrated_spikes) and dispatched once, at the top, to one generic run<Detector, N>,
// which builds the detector's spike_config<Detector> from the run-time spike_settings.
// Early stopping: when the log has a validation column it monitors the raw validation values, as
// Lightning's EarlyStopping(monitor="val_loss") does (Lightning does not smooth): each row with a
// validation value is one check, and patience counts checks. The EmaSmoother smooths the training
// loss only, unless smooth_validation asks for the validation values too. A non-finite validation
// value stops the run with stop_on_non_finite (Lightning's check_finite=True), else it is a check
// without improvement. Without a validation column the step Stabilizer's EarlyStopper watches the
// smoothed training loss (patience counts steps).
// Events (spikes with their scale, skipped non-finite steps, adaptive weight changes, the early
// stop with the best step and value) go to one stream as they happen, then a summary; the
// annotated CSV (one row per data row, streamed) and the plot are optional.
// The annotated CSV carries every decision at full precision (shortest round-trip text, so a
// value read back is bit-identical to the one the policies saw). A non-finite value never looks
// healthy: its row is marked (non_finite), the summary says when a run ends non-finite, and the
// plot marks such steps where a curve cannot show them.

#include <steadyloss/presets.hpp>
#include <steadyloss/stability/stability.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "log_reader.hpp"

namespace steadyloss::replay {

/// The spike detectors of stability/detectors.hpp, as a run-time choice.
enum class spike_detector { mean_ratio, median_ratio, zscore, mad_zscore, ema_zscore };

/// Calls f(std::type_identity<Detector>{}) for the detector type of `d`: the one switch from the
/// run-time choice to the compile-time Stabilizer type.
template <class F>
decltype(auto) with_detector(spike_detector d, F&& f) {
  switch (d) {
    case spike_detector::mean_ratio: return f(std::type_identity<detect::mean_ratio>{});
    case spike_detector::median_ratio: return f(std::type_identity<detect::median_ratio>{});
    case spike_detector::zscore: return f(std::type_identity<detect::zscore>{});
    case spike_detector::mad_zscore: return f(std::type_identity<detect::mad_zscore>{});
    case spike_detector::ema_zscore: return f(std::type_identity<detect::ema_zscore>{});
  }
  throw std::logic_error("replay: unknown spike_detector");
}

inline constexpr auto spike_detectors =
    std::to_array({spike_detector::mean_ratio, spike_detector::median_ratio, spike_detector::zscore,
                   spike_detector::mad_zscore, spike_detector::ema_zscore});

/// The detector's name, as detectors.hpp spells it (Detector::name).
inline std::string_view to_string(spike_detector d) {
  return with_detector(d, []<class D>(std::type_identity<D>) { return D::name; });
}
inline std::optional<spike_detector> parse_spike_detector(std::string_view name) {
  for (const auto d : spike_detectors)
    if (to_string(d) == name) return d;
  return std::nullopt;
}

template <class Detector>
constexpr spike_detector detector_of() {
  if constexpr (std::is_same_v<Detector, detect::mean_ratio>) return spike_detector::mean_ratio;
  else if constexpr (std::is_same_v<Detector, detect::median_ratio>) return spike_detector::median_ratio;
  else if constexpr (std::is_same_v<Detector, detect::zscore>) return spike_detector::zscore;
  else if constexpr (std::is_same_v<Detector, detect::mad_zscore>) return spike_detector::mad_zscore;
  else if constexpr (std::is_same_v<Detector, detect::ema_zscore>) return spike_detector::ema_zscore;
  else static_assert(sizeof(Detector) == 0, "steadyloss-replay: add this detector to spike_detector and with_detector");
}

/// The default: the stable preset's calibrated detector, found from its type so the two cannot drift.
inline constexpr spike_detector default_spike_detector = detector_of<presets::calibrated_spike_detector>();

/// The one setting of each detector that --spike-threshold sets: the ratio (mean_ratio,
/// median_ratio), k (zscore, mad_zscore), z (ema_zscore). The detectors' other settings
/// (ema_zscore's alpha) keep their defaults.
inline double& threshold_of(detect::mean_ratio::config& c) { return c.threshold; }
inline double& threshold_of(detect::median_ratio::config& c) { return c.threshold; }
inline double& threshold_of(detect::zscore::config& c) { return c.sigma_factor; }
inline double& threshold_of(detect::mad_zscore::config& c) { return c.sigma_factor; }
inline double& threshold_of(detect::ema_zscore::config& c) { return c.z_threshold; }

/// The spike settings as the command line sees them, for any detector: the settings every
/// detector shares, and `threshold` (threshold_of: the number the detector reads its own way).
struct spike_settings {
  std::size_t window = 10, warmup = 0, level_shift_after = 0;
  double threshold = 2.0;
  double min_ratio = 0, min_excess = 0;
  spike_mode mode = spike_mode::dampen;
};

/// SpikeDampener's config for Detector from the run-time settings.
template <class Detector>
spike_config<Detector> to_config(const spike_settings& s) {
  spike_config<Detector> c{.window = s.window, .mode = s.mode, .warmup = s.warmup,
                           .level_shift_after = s.level_shift_after, .min_ratio = s.min_ratio,
                           .min_excess = s.min_excess};
  threshold_of(c.detector) = s.threshold;
  return c;
}
template <class Detector>
spike_settings from_config(spike_config<Detector> c) {
  return {.window = c.window, .warmup = c.warmup, .level_shift_after = c.level_shift_after,
          .threshold = threshold_of(c.detector), .min_ratio = c.min_ratio, .min_excess = c.min_excess,
          .mode = c.mode};
}

/// A detector's starting settings: presets::calibrated_spikes for the calibrated detector, else
/// spike_config<Detector>{}'s defaults (window 10; threshold 2.0, k 6, z 2.5): those were chosen
/// for the other detectors, the calibrated values for this one.
inline spike_settings default_spike_settings(spike_detector d) {
  if (d == default_spike_detector) return from_config(presets::calibrated_spikes);
  return with_detector(d, []<class D>(std::type_identity<D>) { return from_config(spike_config<D>{}); });
}

/// What the spike flags set, each optional: given ones override the detector's defaults,
/// whatever their order on the command line.
struct spike_flags {
  std::optional<spike_detector> detector;
  std::optional<std::size_t> window, warmup, level_shift_after;
  std::optional<double> threshold;  ///< the ratio (mean/median_ratio), k (zscore, mad_zscore), z (ema_zscore)
  std::optional<double> min_ratio, min_excess;
  std::optional<spike_mode> mode;
};

/// The detector's defaults with the given flags applied.
inline spike_settings apply_spike_flags(spike_detector d, const spike_flags& f) {
  spike_settings c = default_spike_settings(d);
  if (f.window) c.window = *f.window;
  if (f.warmup) c.warmup = *f.warmup;
  if (f.level_shift_after) c.level_shift_after = *f.level_shift_after;
  if (f.threshold) c.threshold = *f.threshold;
  if (f.min_ratio) c.min_ratio = *f.min_ratio;
  if (f.min_excess) c.min_excess = *f.min_excess;
  if (f.mode) c.mode = *f.mode;
  return c;
}

struct replay_options {
  int patience = 25;
  double min_delta = 0.0005;
  stop_mode mode = stop_mode::min;
  spike_detector detector = default_spike_detector;
  spike_settings spikes = default_spike_settings(default_spike_detector);  ///< read by `detector`
  double smoothing = 0.1;
  double weight_lo = 0.7, weight_hi = 1.3;  ///< AdaptiveWeight bounds (used when term columns are given)
  enum class monitor_choice { automatic, loss, validation } monitor = monitor_choice::automatic;
  /// Monitoring the validation loss: smooth it with the EmaSmoother (`smoothing`) first. Off by
  /// default: Lightning's EarlyStopping compares the raw values.
  bool smooth_validation = false;
  /// Monitoring the validation loss: stop at the first non-finite monitored value (reason
  /// non_finite), Lightning's check_finite=True. Off: such a value is a check without improvement.
  bool stop_on_non_finite = false;
  double weight_event_step = 0.05;  ///< print a weights event when a multiplier moved this much
  bool quiet = false;               ///< no per-event lines, only the summary

  /// `detector` with its defaults and the given flags (apply_spike_flags).
  void set_spikes(spike_detector d, const spike_flags& f = {}) {
    detector = d;
    spikes = apply_spike_flags(d, f);
  }
};

namespace detail {
/// For event lines and the summary: six significant digits, as people read them.
inline std::string number(double x) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.6g", x);
  return buffer;
}
}  // namespace detail

/// "mad_zscore (window 50, warm-up 10, k 10, level shift after 10 spikes, dampen)": the detector
/// and the settings it reads (level_shift_after and warm-up resolved as SpikeDampener does).
template <class Detector>
std::string describe(const spike_config<Detector>& c) {
  using detail::number;
  const std::size_t warmup = c.warmup == 0 ? c.window : c.warmup;
  const std::size_t level = c.level_shift_after == 0 ? std::max<std::size_t>(2, c.window) : c.level_shift_after;
  std::string text = std::string(Detector::name) + " (";
  if constexpr (std::is_same_v<Detector, detect::ema_zscore>)
    text += "gradient norm, alpha " + number(c.detector.alpha) + ", z " + number(c.detector.z_threshold) +
            ", warm-up " + std::to_string(std::max<std::size_t>(2, warmup));
  else if constexpr (std::is_same_v<Detector, detect::mean_ratio> || std::is_same_v<Detector, detect::median_ratio>)
    text += "window " + std::to_string(c.window) + ", warm-up " + std::to_string(warmup) + ", threshold " +
            number(c.detector.threshold) + "x the " +
            (std::is_same_v<Detector, detect::mean_ratio> ? "mean" : "median");
  else  // zscore, mad_zscore
    text += "window " + std::to_string(c.window) + ", warm-up " + std::to_string(std::max<std::size_t>(2, warmup)) +
            ", k " + number(c.detector.sigma_factor);
  text += ", level shift after ";
  text += level == std::numeric_limits<std::size_t>::max() ? std::string("never") : std::to_string(level) + " spikes";
  if (c.min_ratio > 0) text += ", min ratio " + number(c.min_ratio);
  if (c.min_excess > 0) text += ", min excess " + number(c.min_excess);
  constexpr std::string_view modes[] = {"dampen", "skip", "report"};
  text += ", ";
  text += modes[static_cast<std::size_t>(c.mode) % 3];
  return text + ")";
}
inline std::string describe(spike_detector d, const spike_settings& s) {
  return with_detector(d, [&]<class D>(std::type_identity<D>) { return describe(to_config<D>(s)); });
}

struct replay_summary {
  long long rows = 0, train_steps = 0, validation_points = 0;
  long long spikes = 0, skipped = 0, non_finite = 0, dampened = 0, level_shifts = 0;
  double mean_dampened_scale = 0;
  bool stopped = false;
  double stop_step = 0;
  long long stop_line = 0;
  std::string reason = "none";
  bool has_best = false;
  double best = 0, best_step = 0;
  long long best_line = 0;
  long long wait = 0;
  long long rows_after_stop = 0;
  double final_smoothed = std::nan("");
  double stability_score = 1;
  std::vector<double> weights;
  bool monitors_validation = false;
  bool smooths_validation = false;      ///< the monitored validation values were smoothed
  std::string monitored;                ///< the series early stopping watched, as the summary names it
  std::string spike_detector;           ///< describe(detector, settings), as the summary prints it
  bool limit_on_grad_norm = false;      ///< the limit is on the gradient norm (ema_zscore): not drawn with the loss

  // Non-finite values: a run that ends in NaN must not read as healthy.
  long long validation_non_finite = 0;  ///< validation values that were NaN/Inf
  long long trailing_non_finite = 0;    ///< non-finite training steps at the end of the log, in a row
  double trailing_non_finite_step = 0;  ///< the first of them
  long long trailing_non_finite_line = 0;
  bool last_validation_non_finite = false;
  bool has_last_finite_step = false;    ///< the smoothed value and score come from this step
  double last_finite_step = 0;
  long long last_finite_line = 0;
  bool ends_non_finite() const { return trailing_non_finite > 0 || last_validation_non_finite; }

  // What the plot needs: the range of the finite values drawn (loss, smoothed, limit, validation).
  double finite_min = std::numeric_limits<double>::infinity();
  double finite_max = -std::numeric_limits<double>::infinity();
  double positive_min = std::numeric_limits<double>::infinity();  ///< the smallest drawn value > 0
  bool any_non_positive = false;        ///< a drawn value <= 0: no automatic log scale
  double first_step = 0, last_step = 0; ///< the x range
  long long skipped_spikes = 0;         ///< spikes with scale 0 (skip mode, or no limit yet)
};

/// The annotated CSV's columns, in order; the per-term multipliers follow as multiplier_<term>.
inline constexpr auto annotated_columns = std::to_array<std::string_view>({
    "line",      "step",           "loss",     "validation_loss", "grad_norm", "limit", "scale",
    "spike",     "level_shift",    "non_finite", "skipped",       "smoothed",  "stability_score",
    "improved",  "best",           "wait",     "should_stop",     "reason",    "monitored", "monitored_value"});

/// 1-based position of an annotated column (as gnuplot and awk count them).
constexpr int annotated_column(std::string_view name) {
  for (std::size_t i = 0; i < annotated_columns.size(); ++i)
    if (annotated_columns[i] == name) return int(i) + 1;
  throw std::logic_error("replay: no annotated column of that name");
}

namespace detail {

template <class Detector, std::size_t N>
struct guard_for {
  using type = Stabilizer<SpikeDampener<double, Detector>, EmaSmoother<double>, AdaptiveWeight<N, double>,
                          EarlyStopper<double>, StabilityMetrics<double>>;
};
template <class Detector>
struct guard_for<Detector, 0> {
  using type =
      Stabilizer<SpikeDampener<double, Detector>, EmaSmoother<double>, EarlyStopper<double>, StabilityMetrics<double>>;
};

/// For the annotated CSV: the shortest text that reads back to the same double (std::to_chars),
/// "nan", "inf" or "-inf" for non-finite values, as log_reader reads them.
inline std::string exact(double x) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, x);
  return std::string(buffer, result.ptr);
}
inline std::string optional_exact(const std::optional<double>& x) { return x ? exact(*x) : std::string(); }

inline void track_range(replay_summary& s, double x) {
  if (!std::isfinite(x)) return;
  s.finite_min = std::min(s.finite_min, x);
  s.finite_max = std::max(s.finite_max, x);
  if (x <= 0) s.any_non_positive = true;
  else s.positive_min = std::min(s.positive_min, x);
}

template <class Detector, std::size_t N>
replay_summary run(log_reader& reader, const replay_options& o, std::ostream& events, std::ostream* annotated) {
  constexpr bool on_grad_norm = Detector::watches_grad_norm;
  if (on_grad_norm && reader.grad_norm_column().empty())
    throw log_error(reader.file(), 1, "--spike-detector " + std::string(Detector::name) +
                                          " watches the gradient norm; the log has no gradient norm column "
                                          "(name it with --grad-norm-column)");
  const bool monitor_validation =
      o.monitor == replay_options::monitor_choice::validation ||
      (o.monitor == replay_options::monitor_choice::automatic && !reader.validation_column().empty());
  if (monitor_validation && reader.validation_column().empty())
    throw log_error(reader.file(), 1, "--monitor validation needs a validation loss column; the log has none");
  const EarlyStopper<double> stopper({.patience = o.patience, .min_delta = o.min_delta, .mode = o.mode});
  const EarlyStopper<double> inactive({.patience = std::numeric_limits<int>::max(), .min_delta = o.min_delta,
                                       .mode = o.mode, .stop_on_non_finite = false});
  const SpikeDampener<double, Detector> dampener(to_config<Detector>(o.spikes));
  const EmaSmoother<double> smoother({.factor = o.smoothing});
  using guard_type = typename guard_for<Detector, N>::type;
  guard_type guard = [&] {
    if constexpr (N == 0) return guard_type(dampener, smoother, monitor_validation ? inactive : stopper, {});
    else
      return guard_type(dampener, smoother, AdaptiveWeight<N, double>({.lo = o.weight_lo, .hi = o.weight_hi}),
                        monitor_validation ? inactive : stopper, {});
  }();
  // The validation monitor: the library's EarlyStopper, one update per validation row, its
  // stop_on_non_finite being Lightning's check_finite; an EmaSmoother in front only when asked.
  const bool smooth_validation = monitor_validation && o.smooth_validation;
  EarlyStopper<double> validation_stopper(
      {.patience = o.patience, .min_delta = o.min_delta, .mode = o.mode, .stop_on_non_finite = o.stop_on_non_finite});
  EmaSmoother<double> validation_smoother(smoother.settings());
  // The Stabilizer reports a spike's scale, not the detector's limit: a second dampener with the
  // same detector and settings, fed the same steps, gives the limit of every step (the two are
  // checked to agree).
  SpikeDampener<double, Detector> limit_probe(dampener.settings());

  const std::string loss_name = reader.loss_column(), validation_name = reader.validation_column();
  const std::string monitored = !monitor_validation ? "smoothed " + loss_name
                                : smooth_validation  ? "smoothed " + validation_name
                                                     : validation_name;
  // The annotated CSV's `monitored` cell: the series by role, free of the log's column names
  // (which may hold commas).
  const std::string_view monitored_role = !monitor_validation ? "smoothed_loss"
                                          : smooth_validation  ? "smoothed_validation"
                                                               : "validation";
  if (annotated) {
    for (std::size_t i = 0; i < annotated_columns.size(); ++i) *annotated << (i ? "," : "") << annotated_columns[i];
    for (std::size_t i = 0; i < N; ++i) *annotated << ",multiplier_" << reader.term_column(i);
    *annotated << "\n";
  }

  replay_summary s;
  s.monitors_validation = monitor_validation;
  s.smooths_validation = smooth_validation;
  s.monitored = monitored;
  s.spike_detector = describe(dampener.settings());
  s.limit_on_grad_norm = on_grad_norm;
  s.weights.assign(N, 1.0);
  std::array<double, N> printed_weights;
  printed_weights.fill(1.0);
  double scale_sum = 0;
  std::array<double, N> values{};
  log_row row;
  while (reader.next(row)) {
    ++s.rows;
    // Rows without a step column count training steps; with one, a row's step is the log's.
    const double step = row.step ? *row.step : double(s.train_steps);
    if (s.rows == 1) s.first_step = step;
    s.last_step = step;
    const std::string where = "step " + number(step) + " (line " + std::to_string(row.line) + ")";
    std::optional<step_report<double, N>> report;
    std::optional<spike_decision<double>> probe;
    if (row.loss) {
      ++s.train_steps;
      // An empty cell is not a norm of 0: fed to a gradient-norm detector it would drag its mean down.
      if (on_grad_norm && !row.grad_norm)
        throw log_error(reader.file(), row.line, "column '" + reader.grad_norm_column() +
                                                     "' is empty on a row with a training loss (--spike-detector " +
                                                     std::string(Detector::name) + " needs it on every one)");
      const double grad_norm = row.grad_norm.value_or(0.0);
      if constexpr (N == 0) {
        report = guard.update(*row.loss, grad_norm);
      } else {
        for (std::size_t i = 0; i < N; ++i) {
          if (!row.terms[i])
            throw log_error(reader.file(), row.line, "column '" + reader.term_column(i) +
                                                         "' is empty on a row with a training loss");
          values[i] = *row.terms[i];
        }
        report = guard.update(*row.loss, std::span<const double>(values), grad_norm);
      }
      const auto& r = *report;
      probe = limit_probe.update(r.non_finite ? std::numeric_limits<double>::quiet_NaN() : *row.loss, grad_norm);
      if (probe->scale != r.scale || probe->is_spike != r.is_spike || probe->level_shift != r.level_shift)
        throw std::logic_error("steadyloss-replay: the limit probe disagrees with the Stabilizer's dampener");
      if (r.non_finite) {
        ++s.non_finite;
        if (s.trailing_non_finite++ == 0) {
          s.trailing_non_finite_step = step;
          s.trailing_non_finite_line = row.line;
        }
        if (!o.quiet) events << "skip        " << where << ": non-finite " << loss_name << " " << number(*row.loss)
                             << (row.grad_norm ? " or gradient norm " + number(*row.grad_norm) : std::string())
                             << ", step skipped\n";
      } else if (r.is_spike) {
        ++s.spikes;
        if (!o.quiet) {
          events << "spike       " << where << ": ";
          if constexpr (on_grad_norm)
            events << "gradient norm " << number(grad_norm) << " > limit " << number(probe->limit);
          else events << loss_name << " " << number(*row.loss);
          if (o.spikes.mode == spike_mode::dampen && r.scale > 0)
            events << (on_grad_norm ? std::string() : " > limit " + number(probe->limit)) << ", scale "
                   << number(r.scale) << "\n";
          else if (r.skipped) events << ", step skipped (scale 0)\n";
          else events << ", reported (scale 1)\n";
        }
      } else if (r.level_shift) {
        ++s.level_shifts;
        if (!o.quiet)
          events << "level shift " << where << ": "
                 << (on_grad_norm ? "gradient norm " + number(grad_norm) : loss_name + " " + number(*row.loss))
                 << " after "
                 << dampener.settings().level_shift_after - 1 << " spikes in a row: the new reference level\n";
      }
      if (!r.non_finite) {
        s.trailing_non_finite = 0;
        s.has_last_finite_step = true;
        s.last_finite_step = step;
        s.last_finite_line = row.line;
        s.final_smoothed = r.smoothed;
        s.stability_score = r.stability_score;
        track_range(s, *row.loss);
        track_range(s, r.smoothed);
        if (!on_grad_norm && !probe->warming_up && probe->limit > 0) track_range(s, probe->limit);
      }
      if (r.skipped) ++s.skipped;
      if (r.is_spike && r.skipped) ++s.skipped_spikes;
      if (r.scale > 0 && r.scale < 1) {
        ++s.dampened;
        scale_sum += r.scale;
      }
      if constexpr (N > 0) {
        bool moved = false;
        for (std::size_t i = 0; i < N; ++i) moved = moved || std::fabs(r.weights[i] - printed_weights[i]) >= o.weight_event_step;
        if (moved) {
          if (!o.quiet) {
            events << "weights     " << where << ":";
            for (std::size_t i = 0; i < N; ++i) events << " " << reader.term_column(i) << " " << number(r.weights[i]);
            events << "\n";
          }
          for (std::size_t i = 0; i < N; ++i) printed_weights[i] = r.weights[i];
        }
        for (std::size_t i = 0; i < N; ++i) s.weights[i] = r.weights[i];
      }
    }
    std::optional<stop_decision<double>> vdecision;
    std::optional<double> monitored_value;  ///< the value the stopper compared this row
    if (row.validation) {
      ++s.validation_points;
      s.last_validation_non_finite = !std::isfinite(*row.validation);
      if (s.last_validation_non_finite) ++s.validation_non_finite;
      track_range(s, *row.validation);
      if (monitor_validation) {
        const double value = smooth_validation ? validation_smoother.update(*row.validation) : *row.validation;
        // A non-finite value reaches the stopper as NaN, which no comparison holds for: with
        // stop_on_non_finite it stops, else it is a check without improvement. (-inf itself
        // would become the best value in min mode, as in Lightning with check_finite=False.)
        monitored_value = std::isfinite(value) ? value : std::numeric_limits<double>::quiet_NaN();
        vdecision = validation_stopper.update(*monitored_value);
      }
    }
    // The stopper's view this row: the validation stopper's, or the step guard's.
    bool improved = false, should_stop = false;
    double best = 0;
    long long wait = 0;
    stop_reason reason = stop_reason::none;
    bool observed = false;
    if (monitor_validation && vdecision) {
      improved = vdecision->improved, should_stop = vdecision->should_stop, best = vdecision->best;
      wait = vdecision->wait, reason = vdecision->reason;
      observed = true;
    } else if (!monitor_validation && report) {
      improved = report->improved, should_stop = report->should_stop, best = report->best, wait = report->wait;
      reason = report->reason;
      observed = true;
      // A skipped step (a spike in skip mode, a non-finite loss) is not compared.
      if (!report->skipped) monitored_value = report->smoothed;
    }
    const bool stopped_before = s.stopped;
    if (s.stopped) ++s.rows_after_stop;
    if (observed) {
      if (improved) {
        s.has_best = true;
        s.best = best;
        s.best_step = step;
        s.best_line = row.line;
      }
      s.wait = wait;
      if (should_stop && !s.stopped) {
        s.stopped = true;
        s.stop_step = step;
        s.stop_line = row.line;
        s.reason = std::string(to_string(reason));
        if (!o.quiet) {
          events << "early stop  " << where << ": " << s.reason << " (" << monitored << ")";
          if (s.has_best)
            events << "; best " << number(s.best) << " at step " << number(s.best_step) << " (line " << s.best_line
                   << "): restore that checkpoint";
          events << "\n";
        }
      }
      if (monitor_validation && !std::isfinite(*row.validation) && !stopped_before && !s.stopped && !o.quiet)
        events << "non-finite  " << where << ": " << validation_name << " " << number(*row.validation)
               << ", a check without improvement (wait " << wait << " of " << o.patience << ")\n";
    }
    if (annotated) {
      // Empty cells: not applicable on this row (no training loss, detector warming up, no
      // stopper observation), never 0.
      const bool row_non_finite =
          (report && report->non_finite) || (row.validation && !std::isfinite(*row.validation));
      *annotated << row.line << "," << exact(step) << "," << optional_exact(row.loss) << ","
                 << optional_exact(row.validation) << "," << optional_exact(row.grad_norm) << ",";
      if (report) {
        const bool has_limit = !probe->warming_up && !report->non_finite;
        *annotated << (has_limit ? exact(probe->limit) : std::string()) << "," << exact(report->scale) << ","
                   << int(report->is_spike) << "," << int(report->level_shift) << "," << int(row_non_finite) << ","
                   << int(report->skipped) << "," << exact(report->smoothed) << ","
                   << exact(report->stability_score);
      } else {
        *annotated << ",,,," << int(row_non_finite) << ",,,";
      }
      *annotated << "," << (observed ? std::to_string(int(improved)) : std::string()) << ","
                 << (observed && std::isfinite(best) ? exact(best) : std::string()) << ","
                 << (observed ? std::to_string(wait) : std::string()) << "," << int(s.stopped) << ","
                 << (observed ? std::string(to_string(reason)) : std::string()) << ","
                 << (observed ? monitored_role : std::string_view()) << "," << optional_exact(monitored_value);
      for (std::size_t i = 0; i < N; ++i) *annotated << "," << (report ? exact(report->weights[i]) : std::string());
      *annotated << "\n";
    }
  }
  s.mean_dampened_scale = s.dampened > 0 ? scale_sum / double(s.dampened) : 0.0;

  events << "summary: " << s.rows << " rows, " << s.train_steps << " training steps";
  if (!validation_name.empty()) events << ", " << s.validation_points << " validation values";
  events << " (" << reader.file() << ")\n";
  events << "  columns: loss '" << loss_name << "'"
         << (validation_name.empty() ? std::string() : ", validation '" + validation_name + "'")
         << (reader.grad_norm_column().empty() ? std::string() : ", gradient norm '" + reader.grad_norm_column() + "'")
         << (reader.step_column().empty() ? std::string(", steps counted") : ", step '" + reader.step_column() + "'");
  for (std::size_t i = 0; i < N; ++i) events << (i ? ", '" : ", terms '") << reader.term_column(i) << "'";
  events << "\n";
  events << "  spike detector: " << s.spike_detector << "\n";
  events << "  early stopping: on " << monitored;
  if (monitor_validation) {
    events << " (" << (smooth_validation ? "EMA factor " + number(o.smoothing) : std::string("raw values"))
           << "; one check per validation row, patience " << o.patience << " checks; a non-finite value "
           << (o.stop_on_non_finite ? "stops (--stop-on-non-finite)" : "is a check without improvement") << ")\n";
  } else {
    events << " (EMA factor " << number(o.smoothing) << "; one check per training step, patience " << o.patience
           << " steps; " << std::max(o.patience, 1) << " non-finite steps in a row stop)\n";
  }
  events << "  spikes: " << s.spikes << " (" << s.dampened << " dampened, mean scale " << number(s.mean_dampened_scale)
         << "), skipped steps: " << s.skipped << " (" << s.non_finite << " non-finite)";
  if (s.validation_non_finite > 0) events << ", non-finite validation values: " << s.validation_non_finite;
  if (s.level_shifts > 0) events << ", level shifts: " << s.level_shifts;
  events << "\n";
  if (s.ends_non_finite()) {
    events << "  NON-FINITE AT THE END: the run diverged:";
    if (s.trailing_non_finite > 0)
      events << " the last " << s.trailing_non_finite << " training step" << (s.trailing_non_finite > 1 ? "s" : "")
             << " (from step " << number(s.trailing_non_finite_step) << ", line " << s.trailing_non_finite_line
             << ") " << (s.trailing_non_finite > 1 ? "are" : "is") << " non-finite";
    if (s.trailing_non_finite > 0 && s.last_validation_non_finite) events << ";";
    if (s.last_validation_non_finite) events << " the last validation value is non-finite";
    events << "\n";
  }
  if (s.stopped) {
    events << "  early stop: step " << number(s.stop_step) << " (line " << s.stop_line << "), " << s.reason << ", on "
           << monitored << "; " << s.rows_after_stop << " later rows would not have been trained";
  } else {
    events << "  no early stop (" << monitored << ", patience " << o.patience << ", wait " << s.wait << " at the end)";
  }
  if (s.has_best) events << "; best " << number(s.best) << " at step " << number(s.best_step) << " (line " << s.best_line << ")";
  events << "\n";
  if (s.trailing_non_finite > 0 && s.has_last_finite_step)
    events << "  smoothed " << loss_name << " at the end: non-finite (" << number(s.final_smoothed)
           << " at step " << number(s.last_finite_step) << " (line " << s.last_finite_line
           << "), the last finite step), stability score " << number(s.stability_score) << " (finite steps only)\n";
  else if (s.trailing_non_finite > 0)
    events << "  smoothed " << loss_name << " at the end: non-finite (no finite training loss in the log)\n";
  else if (s.train_steps > 0)
    events << "  smoothed " << loss_name << " at the end " << number(s.final_smoothed) << ", stability score "
           << number(s.stability_score) << "\n";
  if constexpr (N > 0) {
    events << "  final multipliers:";
    for (std::size_t i = 0; i < N; ++i) events << " " << reader.term_column(i) << " " << number(s.weights[i]);
    events << "\n";
  }
  return s;
}

}  // namespace detail

/// Replays `reader`'s rows with `options.detector`; at most 4 term columns (AdaptiveWeight<N> is
/// sized at compile time).
inline replay_summary run_replay(log_reader& reader, const replay_options& options, std::ostream& events,
                                 std::ostream* annotated = nullptr) {
  return with_detector(options.detector, [&]<class D>(std::type_identity<D>) {
    switch (reader.term_count()) {
      case 0: return detail::run<D, 0>(reader, options, events, annotated);
      case 1: return detail::run<D, 1>(reader, options, events, annotated);
      case 2: return detail::run<D, 2>(reader, options, events, annotated);
      case 3: return detail::run<D, 3>(reader, options, events, annotated);
      case 4: return detail::run<D, 4>(reader, options, events, annotated);
      default:
        throw log_error(reader.file(), 1, "at most 4 term columns, got " + std::to_string(reader.term_count()));
    }
  });
}

enum class plot_scale { automatic, linear, log };

/// A plot of an annotated CSV (written by run_replay) with gnuplot.
struct plot_request {
  std::string png;    ///< the image to write
  std::string data;   ///< the annotated CSV
  std::string title;
  plot_scale scale = plot_scale::automatic;
};

/// Whether the loss axis is logarithmic: as asked (when some drawn value is > 0; values <= 0 are
/// then not drawn), or (automatic) when every drawn value is > 0 and they span more than 3
/// decades, where a linear axis flattens everything but the first steps.
inline bool log_scale(const replay_summary& s, plot_scale scale) {
  if (scale != plot_scale::automatic) return scale == plot_scale::log && s.positive_min <= s.finite_max;
  return !s.any_non_positive && s.finite_min > 0 && s.finite_max / s.finite_min > 1e3;
}

namespace detail {
// A gnuplot single-quoted string: a quote inside is written twice.
inline std::string gnuplot_quoted(const std::string& text) {
  std::string q = "'";
  for (const char c : text) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}
}  // namespace detail

/// Writes the gnuplot script: loss, smoothed loss, the spike limit, validation loss, and markers
/// for spikes, skipped spikes, level shifts, non-finite steps (drawn in a band above the curves,
/// since NaN has no height), the best value and the early stop; a run that ends non-finite gets a
/// shaded tail.
inline void write_plot_script(std::ostream& gp, const plot_request& p, const replay_summary& s) {
  const bool log = log_scale(s, p.scale);
  // Axis range from the finite values, with room above them for the non-finite markers; clamped,
  // so values near the double range (1e308) still give gnuplot finite numbers.
  constexpr double largest = std::numeric_limits<double>::max(), smallest = std::numeric_limits<double>::min();
  const auto clamp = [&](double x) { return std::clamp(x, -largest, largest); };
  double lo = 0, hi = 1, marker_y = 0.9;
  if (s.finite_min <= s.finite_max) {
    if (log) {
      const double decades = std::max(1.0, std::log10(s.finite_max) - std::log10(s.positive_min));
      lo = std::max(smallest, s.positive_min / std::pow(10.0, 0.05 * decades));
      marker_y = clamp(s.finite_max * std::pow(10.0, 0.06 * decades));
      hi = clamp(s.finite_max * std::pow(10.0, 0.12 * decades));
    } else {
      const double span = s.finite_max > s.finite_min ? clamp(s.finite_max - s.finite_min)
                                                       : std::max(std::fabs(s.finite_max), 1.0);
      lo = clamp(s.finite_min >= 0 ? std::max(0.0, s.finite_min - 0.05 * span) : s.finite_min - 0.05 * span);
      marker_y = clamp(s.finite_max + 0.06 * span);
      hi = clamp(s.finite_max + 0.12 * span);
    }
    if (!(hi > lo)) hi = lo + std::max(std::fabs(lo), 1.0);  // all at the top of the range
  }
  const auto column = [](std::string_view name) {
    std::string ref(1, '$');  // appended, not "$" + ...: g++ 12 warns a false -Wrestrict on that
    ref += std::to_string(annotated_column(name));
    return ref;
  };
  const std::string x = std::to_string(annotated_column("step"));
  gp << "set terminal pngcairo size 1100,550 font ',10'\nset output " << detail::gnuplot_quoted(p.png) << "\n"
     << "set datafile separator ','\nset key outside right top\nset grid\nset xlabel 'step'\n"
     << "set title "
     << detail::gnuplot_quoted("steadyloss-replay: " + p.title +
                               (s.monitored.empty() ? std::string() : ", early stopping on " + s.monitored))
     << " noenhanced\n"
     << (log ? "set logscale y\nset ylabel 'loss (log scale)'\n" : "set ylabel 'loss'\n")
     << "set yrange [" << detail::exact(lo) << ":" << detail::exact(hi) << "]\n";
  // A step column may itself hold NaN/Inf: such steps get no vertical mark.
  if (s.trailing_non_finite > 0 && std::isfinite(s.trailing_non_finite_step))
    gp << "set object 1 rect from first " << detail::exact(s.trailing_non_finite_step)
       << ", graph 0 to graph 1, graph 1 behind fc rgb '#fbe3e0' fs solid 1.0 noborder\n"
       << "set label 1 'non-finite to the end' at first " << detail::exact(s.trailing_non_finite_step)
       << ", graph 0.04 right offset -0.5,0 tc rgb '#a93226'\n";
  if (s.stopped && std::isfinite(s.stop_step))
    gp << "set arrow 1 from first " << detail::exact(s.stop_step) << ", graph 0 to first " << detail::exact(s.stop_step)
       << ", graph 1 nohead lc rgb 'black' dt 2\nset label 2 'early stop (" << s.reason << ")' at first "
       << detail::exact(s.stop_step) << ", graph 0.88 "
       // In the last quarter the label goes left of the line, inside the plot.
       << (s.stop_step > s.first_step + 0.75 * (s.last_step - s.first_step) ? "right offset -0.5,0" : "offset 0.5,0")
       << " noenhanced\n";
  std::vector<std::string> plots;
  const std::string data = detail::gnuplot_quoted(p.data);
  const auto add = [&](const std::string& y, const std::string& style, const std::string& title) {
    plots.push_back((plots.empty() ? data : std::string("''")) + " every ::1 using " + x + ":(" + y + ") " + style +
                    " title " + detail::gnuplot_quoted(title));
  };
  if (s.train_steps > 0) {
    add(column("loss"), "with lines lc rgb '#b0b0b0'", "loss");
    // A non-finite step leaves the smoothed value where it was; drawn on, it would look healthy.
    add(column("non_finite") + " == 1 ? 1/0 : " + column("smoothed"), "with lines lw 2 lc rgb '#1f5fa8'",
        s.monitors_validation ? "smoothed" : "smoothed (monitored)");
    if (!s.limit_on_grad_norm) add(column("limit"), "with lines dt 3 lc rgb '#e67e22'", "spike limit");
  }
  if (s.validation_points > s.validation_non_finite) {
    add(column("validation_loss"), "with linespoints pt 6 ps 0.6 lc rgb '#27ae60'",
        s.monitors_validation && !s.smooths_validation ? "validation (monitored)" : "validation");
    if (s.smooths_validation)
      add(column("monitored_value"), "with linespoints pt 7 ps 0.4 lw 2 lc rgb '#145a32'",
          "validation, smoothed (monitored)");
  }
  if (s.spikes > s.skipped_spikes)
    add(column("spike") + " == 1 && " + column("skipped") + " == 0 ? " + column("loss") + " : 1/0",
        "with points pt 7 ps 0.8 lc rgb '#c0392b'", "spike");
  if (s.skipped_spikes > 0)
    add(column("spike") + " == 1 && " + column("skipped") + " == 1 ? " + column("loss") + " : 1/0",
        "with points pt 4 ps 1.0 lw 2 lc rgb '#c0392b'", "spike, step skipped");
  if (s.level_shifts > 0)
    add(column("level_shift") + " == 1 ? " + column("loss") + " : 1/0", "with points pt 9 ps 1.4 lc rgb '#8e44ad'",
        "level shift");
  if (s.non_finite + s.validation_non_finite > 0)
    add(column("non_finite") + " == 1 ? " + detail::exact(marker_y) + " : 1/0",
        "with points pt 2 ps 1.0 lw 2 lc rgb '#a93226'", "non-finite (skipped)");
  if (s.has_best && std::isfinite(s.best) && std::isfinite(s.best_step))
    plots.push_back("'+' using (" + detail::exact(s.best_step) + "):(" + detail::exact(s.best) +
                    ") every ::0::0 with points pt 8 ps 1.6 lw 2 lc rgb 'black' title 'best (restore)'");
  if (plots.empty()) plots.push_back(data + " every ::1 using " + x + ":(1/0) notitle");
  gp << "plot ";
  for (std::size_t i = 0; i < plots.size(); ++i) gp << (i ? ", \\\n     " : "") << plots[i];
  gp << "\n";
}

}  // namespace steadyloss::replay
