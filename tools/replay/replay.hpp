#pragma once
// Replays a training log through a Stabilizer: what would the step policies have done?
//
// Each data row with a training loss is one step: Stabilizer::update(loss[, per-term losses],
// grad_norm) (grad_norm 0 when the log has none: the default detector watches the loss). Each row
// with a validation loss is one observation of the early stopper when it monitors the validation
// loss (the default when the log has a validation column, as Lightning's EarlyStopping monitors
// val_loss); else the step Stabilizer's EarlyStopper watches the smoothed training loss.
// Events (spikes with their scale, skipped non-finite steps, adaptive weight changes, the early
// stop with the best step and value) go to one stream as they happen, then a summary; the
// annotated CSV (one row per data row, streamed) and the plot are optional.

#include <steadyloss/stability/stability.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "log_reader.hpp"

namespace steadyloss::replay {

struct replay_options {
  int patience = 25;
  double min_delta = 0.0005;
  stop_mode mode = stop_mode::min;
  std::size_t spike_window = 10;
  double spike_threshold = 2.0;
  spike_mode spikes = spike_mode::dampen;
  std::size_t level_shift_after = 0;  ///< consecutive spikes taken as a new level; 0 = spike_window
  double smoothing = 0.1;
  double weight_lo = 0.7, weight_hi = 1.3;  ///< AdaptiveWeight bounds (used when term columns are given)
  enum class monitor_choice { automatic, loss, validation } monitor = monitor_choice::automatic;
  double weight_event_step = 0.05;  ///< print a weights event when a multiplier moved this much
  bool quiet = false;               ///< no per-event lines, only the summary
};

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
};

namespace detail {

template <std::size_t N>
struct guard_for {
  using type = Stabilizer<SpikeDampener<double>, EmaSmoother<double>, AdaptiveWeight<N, double>, EarlyStopper<double>,
                          StabilityMetrics<double>>;
};
template <>
struct guard_for<0> {
  using type = Stabilizer<SpikeDampener<double>, EmaSmoother<double>, EarlyStopper<double>, StabilityMetrics<double>>;
};

inline std::string number(double x) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.6g", x);
  return buffer;
}
inline std::string optional_number(const std::optional<double>& x) { return x ? number(*x) : std::string(); }

template <std::size_t N>
replay_summary run(log_reader& reader, const replay_options& o, std::ostream& events, std::ostream* annotated) {
  const bool monitor_validation =
      o.monitor == replay_options::monitor_choice::validation ||
      (o.monitor == replay_options::monitor_choice::automatic && !reader.validation_column().empty());
  if (monitor_validation && reader.validation_column().empty())
    throw log_error(reader.file(), 1, "--monitor validation needs a validation loss column; the log has none");
  const EarlyStopper<double> stopper({.patience = o.patience, .min_delta = o.min_delta, .mode = o.mode});
  const EarlyStopper<double> inactive({.patience = std::numeric_limits<int>::max(), .min_delta = o.min_delta,
                                       .mode = o.mode, .stop_on_non_finite = false});
  const SpikeDampener<double> dampener({.window = o.spike_window, .threshold = o.spike_threshold, .mode = o.spikes,
                                           .level_shift_after = o.level_shift_after});
  const EmaSmoother<double> smoother({.factor = o.smoothing});
  using guard_type = typename guard_for<N>::type;
  guard_type guard = [&] {
    if constexpr (N == 0) return guard_type(dampener, smoother, monitor_validation ? inactive : stopper, {});
    else
      return guard_type(dampener, smoother, AdaptiveWeight<N, double>({.lo = o.weight_lo, .hi = o.weight_hi}),
                        monitor_validation ? inactive : stopper, {});
  }();
  Stabilizer<EmaSmoother<double>, EarlyStopper<double>> validation_guard(smoother, stopper);

  const std::string loss_name = reader.loss_column(), validation_name = reader.validation_column();
  const std::string monitored = monitor_validation ? validation_name : "smoothed " + loss_name;
  if (annotated) {
    *annotated << "line,step,loss,validation_loss,grad_norm,scale,spike,skipped,smoothed,stability_score";
    for (std::size_t i = 0; i < N; ++i) *annotated << ",multiplier_" << reader.term_column(i);
    *annotated << ",best,wait,should_stop\n";
  }

  replay_summary s;
  s.monitors_validation = monitor_validation;
  s.weights.assign(N, 1.0);
  std::array<double, N> printed_weights;
  printed_weights.fill(1.0);
  double scale_sum = 0, last_step = -1;
  std::array<double, N> values{};
  log_row row;
  while (reader.next(row)) {
    ++s.rows;
    // Rows without a step column count training steps; with one, a row's step is the log's.
    const double step = row.step ? *row.step : double(s.train_steps);
    last_step = step;
    const std::string where = "step " + number(step) + " (line " + std::to_string(row.line) + ")";
    std::optional<step_report<double, N>> report;
    if (row.loss) {
      ++s.train_steps;
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
      if (r.non_finite) {
        ++s.non_finite;
        if (!o.quiet) events << "skip        " << where << ": non-finite " << loss_name << " " << number(*row.loss)
                             << (row.grad_norm ? " or gradient norm " + number(*row.grad_norm) : std::string())
                             << ", step skipped\n";
      } else if (r.is_spike) {
        ++s.spikes;
        if (!o.quiet) {
          events << "spike       " << where << ": " << loss_name << " " << number(*row.loss);
          if (o.spikes == spike_mode::dampen && r.scale > 0)
            events << " > limit " << number(r.scale * *row.loss) << ", scale " << number(r.scale) << "\n";
          else if (r.skipped) events << ", step skipped (scale 0)\n";
          else events << ", reported (scale 1)\n";
        }
      } else if (r.level_shift) {
        ++s.level_shifts;
        if (!o.quiet)
          events << "level shift " << where << ": " << loss_name << " " << number(*row.loss) << " after "
                 << dampener.settings().level_shift_after - 1 << " spikes in a row: the new reference level\n";
      }
      if (r.skipped) ++s.skipped;
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
      s.final_smoothed = r.smoothed;
      s.stability_score = r.stability_score;
    }
    std::optional<step_report<double, 0>> vreport;
    if (row.validation) {
      ++s.validation_points;
      if (monitor_validation) vreport = validation_guard.update(*row.validation, 0.0);
    }
    // The stopper's view this row: the validation guard's, or the step guard's.
    bool improved = false, should_stop = false;
    double best = 0;
    long long wait = 0;
    stop_reason reason = stop_reason::none;
    bool observed = false;
    if (monitor_validation && vreport) {
      improved = vreport->improved, should_stop = vreport->should_stop, best = vreport->best, wait = vreport->wait;
      reason = vreport->reason;
      observed = true;
    } else if (!monitor_validation && report) {
      improved = report->improved, should_stop = report->should_stop, best = report->best, wait = report->wait;
      reason = report->reason;
      observed = true;
    }
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
    }
    if (annotated) {
      *annotated << row.line << "," << number(step) << "," << optional_number(row.loss) << ","
                 << optional_number(row.validation) << "," << optional_number(row.grad_norm) << ",";
      if (report) {
        *annotated << number(report->scale) << "," << int(report->is_spike) << "," << int(report->skipped) << ","
                   << number(report->smoothed) << "," << number(report->stability_score);
        for (std::size_t i = 0; i < N; ++i) *annotated << "," << number(report->weights[i]);
      } else {
        *annotated << ",,,,";
        for (std::size_t i = 0; i < N; ++i) *annotated << ",";
      }
      *annotated << "," << (observed && std::isfinite(best) ? number(best) : std::string()) << ","
                 << (observed ? std::to_string(wait) : std::string()) << "," << int(s.stopped) << "\n";
    }
  }
  (void)last_step;
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
  events << "  spikes: " << s.spikes << " (" << s.dampened << " dampened, mean scale " << number(s.mean_dampened_scale)
         << "), skipped steps: " << s.skipped << " (" << s.non_finite << " non-finite)";
  if (s.level_shifts > 0) events << ", level shifts: " << s.level_shifts;
  events << "\n";
  if (s.stopped) {
    events << "  early stop: step " << number(s.stop_step) << " (line " << s.stop_line << "), " << s.reason << ", on "
           << monitored << "; " << s.rows_after_stop << " later rows would not have been trained";
  } else {
    events << "  no early stop (" << monitored << ", patience " << o.patience << ", wait " << s.wait << " at the end)";
  }
  if (s.has_best) events << "; best " << number(s.best) << " at step " << number(s.best_step) << " (line " << s.best_line << ")";
  events << "\n";
  if (s.train_steps > 0)
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

/// Replays `reader`'s rows; at most 4 term columns (AdaptiveWeight<N> is sized at compile time).
inline replay_summary run_replay(log_reader& reader, const replay_options& options, std::ostream& events,
                                 std::ostream* annotated = nullptr) {
  switch (reader.term_count()) {
    case 0: return detail::run<0>(reader, options, events, annotated);
    case 1: return detail::run<1>(reader, options, events, annotated);
    case 2: return detail::run<2>(reader, options, events, annotated);
    case 3: return detail::run<3>(reader, options, events, annotated);
    case 4: return detail::run<4>(reader, options, events, annotated);
    default:
      throw log_error(reader.file(), 1, "at most 4 term columns, got " + std::to_string(reader.term_count()));
  }
}

}  // namespace steadyloss::replay
