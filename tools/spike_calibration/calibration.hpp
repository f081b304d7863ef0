#pragma once
// Spike-detector calibration: per-step loss streams whose bad batches are known, and how a
// detector setting scores on them (false alarms on clean steps, detections of bad ones).
// calibrate_spikes.cpp runs the grid and applies the selection rule; tests/calibration tests this.
//
// Streams:
//   clean      a loss decaying to a floor, times per-batch noise (log-normal, or Student-t with 3
//              degrees of freedom in log space: heavy-tailed, as per-batch losses near convergence are)
//   injected   a clean stream with bad batches at `multiple` x the clean level (single spikes,
//              short bursts) or NaN
//   study      the per-step training loss of examples/tts_stability (baseline, no spike handling)
//              with its corrupted batches marked, read from the study's steps.csv
//   log        any `step,loss` CSV (a real training log): every step counts as clean
// A detector runs through SpikeDampener in report mode (the flag only, so the stream is the same for
// every setting). A bad batch during the detector's warm-up counts as missed (it was not caught);
// clean warm-up steps count neither way (nothing can be flagged then).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <steadyloss/stability/spike_dampener.hpp>

namespace steadyloss::calibration {

/// One per-step loss stream; bad[i] marks a batch a detector should flag.
struct loss_stream {
  std::string family;           ///< what kind of stream ("lognormal 0.25", "single 10x", "study p=0.05")
  std::vector<double> loss;
  std::vector<unsigned char> bad;
  std::vector<double> level;    ///< the noise-free level (synthetic streams only)
};

enum class noise_shape { lognormal, student_t };

/// Per-batch noise in log space: lognormal multiplies by exp(width z - width^2 / 2) (mean one);
/// student_t by exp(width t_3) (median one, heavy tails).
struct batch_noise {
  noise_shape shape = noise_shape::lognormal;
  double width = 0.1;
  std::string label() const {
    std::ostringstream out;
    out << (shape == noise_shape::lognormal ? "lognormal " : "student-t ") << width;
    return out.str();
  }
};

/// The clean decay: level(t) = floor + (start - floor) exp(-t / decay_steps).
struct decay_curve {
  double start = 1.0;
  double floor = 0.05;
  double decay_steps = 300;
};

inline loss_stream clean_stream(const batch_noise& noise, std::size_t steps, std::uint64_t seed,
                                const decay_curve& curve = {}) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::student_t_distribution<double> student(3.0);
  loss_stream s;
  s.family = noise.label();
  s.loss.resize(steps);
  s.bad.assign(steps, 0);
  s.level.resize(steps);
  for (std::size_t t = 0; t < steps; ++t) {
    const double level = curve.floor + (curve.start - curve.floor) * std::exp(-double(t) / curve.decay_steps);
    const double log_noise = noise.shape == noise_shape::lognormal
                                 ? noise.width * normal(rng) - 0.5 * noise.width * noise.width
                                 : noise.width * student(rng);
    s.level[t] = level;
    s.loss[t] = level * std::exp(log_noise);
  }
  return s;
}

/// Bad batches injected into a synthetic clean stream: runs of `burst` steps at `multiple` x the
/// clean level (NaN multiple: non-finite losses), a run starting at each step with probability
/// `rate`, never two runs closer than `gap` steps (a detector is judged on separate events).
struct injection {
  std::string label;
  double multiple = 10;
  int burst = 1;
  double rate = 0.02;
  std::size_t gap = 20;
};

inline loss_stream inject(const loss_stream& clean, const injection& what, std::uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::bernoulli_distribution starts(what.rate);
  loss_stream s = clean;
  s.family = what.label;
  std::size_t next_allowed = what.gap;
  for (std::size_t t = 0; t < s.loss.size(); ++t) {
    if (t < next_allowed || !starts(rng)) continue;
    for (std::size_t i = t; i < std::min(s.loss.size(), t + std::size_t(what.burst)); ++i) {
      s.loss[i] = std::isnan(what.multiple) ? what.multiple : what.multiple * s.level[i];
      s.bad[i] = 1;
    }
    next_allowed = t + std::size_t(what.burst) + what.gap;
  }
  return s;
}

/// A new level (a data phase, a loss term switched on): from step `at` on, every loss is `factor`
/// times higher. Every step stays clean: flagging the new level is a false alarm.
inline loss_stream level_shift(const loss_stream& clean, std::size_t at, double factor) {
  loss_stream s = clean;
  std::ostringstream label;
  label << "level shift " << factor << "x";
  s.family = label.str();
  for (std::size_t t = at; t < s.loss.size(); ++t) {
    s.loss[t] *= factor;
    s.level[t] *= factor;
  }
  return s;
}

/// The same stream as a log with few digits shows it (a loss printed to `digits` significant
/// digits): many equal values, so a spread estimate can be 0.
inline loss_stream rounded(const loss_stream& clean, int digits) {
  loss_stream s = clean;
  std::ostringstream label;
  label << clean.family << " rounded to " << digits << " digits";
  s.family = label.str();
  for (double& x : s.loss) {
    const double unit = std::pow(10.0, std::floor(std::log10(x)) - (digits - 1));
    x = std::round(x / unit) * unit;
  }
  return s;
}

/// The same stream stored in bfloat16 (8 significant bits, as a loss logged from a bf16 tensor):
/// consecutive values are often equal, so a spread estimate can be 0.
inline loss_stream in_bfloat16(const loss_stream& clean) {
  loss_stream s = clean;
  s.family = clean.family + " in bfloat16";
  for (double& x : s.loss) {
    int exponent = 0;
    const double mantissa = std::frexp(x, &exponent);  // in [0.5, 1): 8 bits keep steps of 2^-8
    x = std::ldexp(std::round(mantissa * 256.0) / 256.0, exponent);
  }
  return s;
}

/// The first and second halves of a stream (a real log tunes on one half, reports on the other).
inline std::pair<loss_stream, loss_stream> halves(const loss_stream& s) {
  const std::size_t mid = s.loss.size() / 2;
  const auto part = [&](std::size_t begin, std::size_t end) {
    loss_stream h{s.family, {s.loss.begin() + begin, s.loss.begin() + end}, {s.bad.begin() + begin, s.bad.begin() + end}, {}};
    if (!s.level.empty()) h.level.assign(s.level.begin() + begin, s.level.begin() + end);
    return h;
  };
  return {part(0, mid), part(mid, s.loss.size())};
}

namespace detail {
inline std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) cells.push_back(cell);
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}
inline std::size_t column(const std::vector<std::string>& header, const std::string& name, const std::string& path) {
  for (std::size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return i;
  throw std::runtime_error(path + ": no column '" + name + "'");
}
inline double number(const std::string& cell) {
  if (cell == "nan" || cell == "NaN") return std::numeric_limits<double>::quiet_NaN();
  if (cell == "inf") return std::numeric_limits<double>::infinity();
  return std::stod(cell);
}
}  // namespace detail

/// The study's streams: one per seed of `config` in examples/tts_stability's steps.csv (the
/// weighted training loss the Stabilizer sees, and whether the batch was bad: its `batch` column
/// is not "clean", or, in a file of the first study, its `corrupted` flag is 1). One scenario per file.
inline std::vector<loss_stream> read_study(const std::string& path, const std::string& family,
                                           const std::string& config = "baseline") {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::string line;
  std::getline(in, line);
  const auto header = detail::split_csv(line);
  const std::size_t config_at = detail::column(header, "config", path), seed_at = detail::column(header, "seed", path),
                    loss_at = detail::column(header, "train_loss_weighted", path),
                    kind_at = std::find(header.begin(), header.end(), "batch") != header.end()
                                  ? detail::column(header, "batch", path)
                                  : detail::column(header, "corrupted", path);
  const bool has_kind = header[kind_at] == "batch";
  std::vector<loss_stream> streams;
  std::string seed;
  while (std::getline(in, line)) {
    const auto cells = detail::split_csv(line);
    if (cells.size() <= std::max({config_at, seed_at, loss_at, kind_at}) || cells[config_at] != config) continue;
    if (streams.empty() || cells[seed_at] != seed) {
      streams.push_back({family, {}, {}, {}});
      seed = cells[seed_at];
    }
    streams.back().loss.push_back(detail::number(cells[loss_at]));
    streams.back().bad.push_back(has_kind ? cells[kind_at] != "clean" : cells[kind_at] == "1");
  }
  if (streams.empty()) throw std::runtime_error(path + ": no rows of configuration '" + config + "'");
  return streams;
}

/// A plain training log: a CSV with a header and a loss column; every step counts as clean.
inline loss_stream read_log(const std::string& path, const std::string& family, const std::string& loss_column = "loss") {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::string line;
  std::getline(in, line);
  const std::size_t loss_at = detail::column(detail::split_csv(line), loss_column, path);
  loss_stream s{family, {}, {}, {}};
  while (std::getline(in, line)) {
    const auto cells = detail::split_csv(line);
    if (cells.size() <= loss_at || cells[loss_at].empty()) continue;
    s.loss.push_back(detail::number(cells[loss_at]));
    s.bad.push_back(0);
  }
  return s;
}

/// One detector setting of the grid.
struct detector_setting {
  std::string detector = "mean_ratio";  ///< mean_ratio | median_ratio | zscore | mad_zscore | ema_zscore
  std::size_t window = 10;
  std::size_t warmup = 0;  ///< accepted values before any decision (0 = window)
  double threshold = 2.0;  ///< the ratio (mean/median), k (zscore, mad_zscore) or z (ema_zscore)
  double min_ratio = 0;    ///< guard: a spike must also exceed min_ratio x the reference (0 = off)
  std::size_t level_shift_after = 10;  ///< the same for every setting: a new level costs at most 10 flags

  /// SpikeDampener's config for Detector (named by `detector`): `threshold` is the setting the
  /// detector reads as its ratio, k or z.
  template <class Detector>
  spike_config<Detector> config() const {
    spike_config<Detector> c{.window = window, .mode = spike_mode::report, .warmup = warmup,
                             .level_shift_after = level_shift_after, .min_ratio = min_ratio};
    if constexpr (std::is_same_v<Detector, detect::zscore> || std::is_same_v<Detector, detect::mad_zscore>)
      c.detector.sigma_factor = threshold;
    else if constexpr (std::is_same_v<Detector, detect::ema_zscore>) c.detector.z_threshold = threshold;
    else c.detector.threshold = threshold;  // mean_ratio, median_ratio
    return c;
  }
  std::string label() const {
    std::ostringstream out;
    out << detector << " w" << window;
    if (warmup != 0 && warmup != window) out << " warmup " << warmup;
    out << " t" << threshold;
    if (min_ratio > 0) out << " r" << min_ratio;
    return out.str();
  }
};

/// Counts on one stream (or pooled over several).
struct tally {
  long long clean = 0, false_alarms = 0, bad = 0, detected = 0;
  tally& operator+=(const tally& o) {
    clean += o.clean;
    false_alarms += o.false_alarms;
    bad += o.bad;
    detected += o.detected;
    return *this;
  }
  double false_alarm_rate() const { return clean ? double(false_alarms) / double(clean) : 0.0; }
  double detection_rate() const { return bad ? double(detected) / double(bad) : 1.0; }
};

template <class Detector>
tally score_with(const spike_config<Detector>& config, const loss_stream& s) {
  SpikeDampener<double, Detector> dampener(config);
  tally t;
  for (std::size_t i = 0; i < s.loss.size(); ++i) {
    const double x = s.loss[i];
    // ema_zscore watches the gradient norm; here it watches the loss stream instead.
    const auto d = dampener.update(x, Detector::watches_grad_norm ? x : 0.0);
    const bool flagged = d.is_spike || d.non_finite;
    if (d.warming_up && !s.bad[i]) continue;
    if (s.bad[i]) {
      ++t.bad;
      t.detected += flagged;
    } else {
      ++t.clean;
      t.false_alarms += flagged;
    }
  }
  return t;
}

inline tally score(const detector_setting& setting, const loss_stream& s) {
  if (setting.detector == "mean_ratio") return score_with(setting.config<detect::mean_ratio>(), s);
  if (setting.detector == "median_ratio") return score_with(setting.config<detect::median_ratio>(), s);
  if (setting.detector == "zscore") return score_with(setting.config<detect::zscore>(), s);
  if (setting.detector == "mad_zscore") return score_with(setting.config<detect::mad_zscore>(), s);
  if (setting.detector == "ema_zscore") return score_with(setting.config<detect::ema_zscore>(), s);
  throw std::invalid_argument("unknown detector '" + setting.detector + "'");
}

}  // namespace steadyloss::calibration
