#pragma once
// The built-in spike detectors for SpikeDampener (each a SpikeDetector, spike_detector.hpp),
// each with a config of its own settings:
//
//   mean_ratio    x > threshold * mean(window)             (default; the original rule)
//   median_ratio  x > threshold * median(window)           (robust to one outlier in the window)
//   zscore        x > mean + k * sigma(window), k = 6      (OLMo-core's loss spike rule; sigma
//                                                           is the sample standard deviation)
//   mad_zscore    x > median + k * 1.4826 * MAD(window)    (Hampel's robust z-score; the
//                                                           calibrated choice of the presets)
//   ema_zscore    g > mu + z * sigma on the gradient norm  (ZClip: mu, sigma^2 are EMAs with
//                 alpha = 0.97, z = 2.5; mu_t = a mu + (1-a) g, s2_t = a s2 + (1-a)(g - mu_t)^2,
//                 initialized from the first `warmup` norms; a spike updates them with the
//                 clipped norm mu + z sigma, as ZClip does)
// Costs per step: O(1) for mean, zscore and ema_zscore (windowed_stats), O(log window) for
// median (window_median), O(window) for mad_zscore. No allocation after construction.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string_view>
#include <vector>

#include "../core/errors.hpp"
#include "spike_detector.hpp"
#include "state_io.hpp"
#include "window.hpp"

namespace steadyloss {

namespace detail {
// zscore and mad_zscore: their warm-up is at least 2 values (a spread needs two), so a window of
// 1 would never be ready and never decide.
inline void validate_spread_detector(std::string_view detector, double sigma_factor, std::size_t window) {
  if (window < 2)
    fail<invalid_parameter>("SpikeDampener: ", detector, " needs window >= 2 (a spread needs two values), got ",
                            window);
  if (!(sigma_factor > 0.0) || !std::isfinite(sigma_factor))
    fail<invalid_parameter>("SpikeDampener: sigma_factor must be finite and > 0, got ", sigma_factor);
}
inline void validate_ratio(double threshold) {
  if (!(threshold > 1.0) || !std::isfinite(threshold))
    fail<invalid_parameter>("SpikeDampener: threshold must be finite and > 1, got ", threshold);
}

inline void save_window(state_writer& out, const windowed_stats& w) {
  out.put_int("count", static_cast<long long>(w.size()));
  out.put_int("next", static_cast<long long>(w.next()));
  out.put_int("replacements", static_cast<long long>(w.replacements()));
  out.put("mean", w.mean());
  out.put("m2", w.m2());
  out.put("drift_scale", w.drift_scale());
  out.put_doubles("slots", w.slots());
}
inline void load_window(state_reader& in, windowed_stats& w) {
  const auto cap = static_cast<long long>(w.capacity());
  const long long count = in.get_count("count", 0, cap);
  const long long next = in.get_count("next", 0, cap - 1);
  const long long replacements = in.get_count("replacements", 0, cap - 1);
  const double mean = in.get_finite("mean");
  const double m2 = in.get("m2");
  if (!(m2 >= 0.0) || !std::isfinite(m2)) in.fail_field("m2", "must be finite and >= 0, got ", m2);
  const double drift_scale = in.get("drift_scale");
  const auto slots = in.get_finite_doubles("slots", w.capacity());
  if (count < cap && next != count) in.fail_field("next", "must equal count (", count, ") until the window is full, got ", next);
  if (count < cap && replacements != 0)
    in.fail_field("replacements", "must be 0 until the window is full, got ", replacements);
  double sum = 0, largest = 0;
  for (long long i = 0; i < count; ++i) {
    sum += slots[static_cast<std::size_t>(i)];
    largest = std::max(largest, std::fabs(slots[static_cast<std::size_t>(i)]));
  }
  if (!(drift_scale >= largest) || !std::isfinite(drift_scale))
    in.fail_field("drift_scale", "must be finite and >= the largest magnitude in the window (", largest, "), got ",
                  drift_scale);
  // mean and m2 are running sums. Since the last exact recompute (at most 2 count updates: a
  // fill, then count - 1 replacements) every value an update touched was at most S =
  // drift_scale in magnitude, so each update rounds the mean by about one ulp of S and m2 by
  // about (count + 17) ulps of S^2, and the mean's error e feeds m2 at most 2 e count (S / count)
  // per update; the recompute in window.hpp and the one here add count ulps each. Summed: the
  // mean within about (2 count + 6) ulps of S, m2 within about 10 count^2 ulps of S^2. The bounds
  // below are about twice those: a state this library wrote always passes, an edited mean or m2
  // (or one scaled to values no longer in the window without drift_scale saying so) does not.
  const double n = static_cast<double>(count);
  const double exact_mean = count > 0 ? sum / n : 0.0;
  double exact_m2 = 0;
  for (long long i = 0; i < count; ++i) {
    const double d = slots[static_cast<std::size_t>(i)] - exact_mean;
    exact_m2 += d * d;
  }
  // (n + 4) 2^-1070: the same count of roundings where S or S^2 is subnormal (absolute, not
  // relative, half-ulps of 2^-1074).
  constexpr double ulp = 0x1p-52;
  const double subnormal_floor = (n + 4.0) * 0x1p-1070;
  const double mean_tolerance = 4.0 * (n + 4.0) * ulp * drift_scale + subnormal_floor;
  const double m2_tolerance = 16.0 * (n + 4.0) * n * ulp * drift_scale * drift_scale + subnormal_floor;
  if (!(std::fabs(mean - exact_mean) <= mean_tolerance))
    in.fail_field("mean", "must be the mean of the window's ", count, " values (", exact_mean, ", within ",
                  mean_tolerance, "), got ", mean);
  if (!(std::fabs(m2 - exact_m2) <= m2_tolerance))
    in.fail_field("m2", "must be the sum of squared deviations of the window's ", count, " values (", exact_m2,
                  ", within ", m2_tolerance, "), got ", m2);
  w.set_state(slots, static_cast<std::size_t>(count), static_cast<std::size_t>(next),
              static_cast<std::size_t>(replacements), mean, m2, drift_scale);
}

// median_ratio and mad_zscore: the ring's slots; the heaps are rebuilt from them.
inline void save_median_window(state_writer& out, const window_median& w) {
  out.put_int("count", static_cast<long long>(w.size()));
  out.put_int("next", static_cast<long long>(w.next()));
  out.put_doubles("slots", w.slots());
}
inline void load_median_window(state_reader& in, window_median& w) {
  const auto cap = static_cast<long long>(w.capacity());
  const long long count = in.get_count("count", 0, cap);
  const long long next = in.get_count("next", 0, cap - 1);
  const auto slots = in.get_finite_doubles("slots", w.capacity());
  if (count < cap && next != count)
    in.fail_field("next", "must equal count (", count, ") until the window is full, got ", next);
  w.set_state(slots, static_cast<std::size_t>(count), static_cast<std::size_t>(next));
}
}  // namespace detail

namespace detect {

// Each detector: `config` (its own settings, with their defaults), `validate(config, window)`
// (throws steadyloss::invalid_parameter naming the setting; the constructor calls it), and the
// constructor from (config, window, warmup), warmup resolved by SpikeDampener (> 0).

struct mean_ratio {
  static constexpr std::string_view name = "mean_ratio";
  static constexpr bool watches_grad_norm = false;
  struct config {
    double threshold = 2.0;  ///< spike iff x > threshold * mean(window); finite, > 1
  };
  static void validate(const config& c, std::size_t /*window*/) { detail::validate_ratio(c.threshold); }
  mean_ratio(const config& c, std::size_t window, std::size_t warmup)
      : stats_(window), threshold_((validate(c, window), c.threshold)), warmup_(warmup) {}
  bool ready() const { return stats_.size() >= warmup_; }
  double reference() const { return stats_.mean(); }
  double limit() const { return threshold_ * stats_.mean(); }
  void accept(double x) { stats_.push(x); }
  void on_spike(double) {}
  void clear() { stats_.clear(); }
  void save(state_writer& out) const {
    out.put("threshold", threshold_);
    detail::save_window(out, stats_);
  }
  void load(state_reader& in) {
    in.expect_config(name, "threshold", threshold_);
    detail::load_window(in, stats_);
  }

 private:
  detail::windowed_stats stats_;
  double threshold_;
  std::size_t warmup_;
};

struct median_ratio {
  static constexpr std::string_view name = "median_ratio";
  static constexpr bool watches_grad_norm = false;
  struct config {
    double threshold = 2.0;  ///< spike iff x > threshold * median(window); finite, > 1
  };
  static void validate(const config& c, std::size_t /*window*/) { detail::validate_ratio(c.threshold); }
  median_ratio(const config& c, std::size_t window, std::size_t warmup)
      : window_(window), threshold_((validate(c, window), c.threshold)), warmup_(warmup) {}
  bool ready() const { return window_.size() >= warmup_; }
  double reference() const { return window_.median(); }
  double limit() const { return threshold_ * window_.median(); }
  void accept(double x) { window_.push(x); }
  void on_spike(double) {}
  void clear() { window_.clear(); }
  void save(state_writer& out) const {
    out.put("threshold", threshold_);
    detail::save_median_window(out, window_);
  }
  void load(state_reader& in) {
    in.expect_config(name, "threshold", threshold_);
    detail::load_median_window(in, window_);
  }

 private:
  detail::window_median window_;
  double threshold_;
  std::size_t warmup_;
};

struct zscore {
  static constexpr std::string_view name = "zscore";
  static constexpr bool watches_grad_norm = false;
  struct config {
    double sigma_factor = 6.0;  ///< k: spike iff x > mean + k * sigma(window); finite, > 0
  };
  static void validate(const config& c, std::size_t window) {
    detail::validate_spread_detector(name, c.sigma_factor, window);
  }
  zscore(const config& c, std::size_t window, std::size_t warmup)
      : stats_(window), k_((validate(c, window), c.sigma_factor)), warmup_(std::max<std::size_t>(2, warmup)) {}
  bool ready() const { return stats_.size() >= warmup_; }
  double reference() const { return stats_.mean(); }
  double limit() const { return stats_.mean() + k_ * std::sqrt(stats_.sample_variance()); }
  void accept(double x) { stats_.push(x); }
  void on_spike(double) {}
  void clear() { stats_.clear(); }
  void save(state_writer& out) const {
    out.put("sigma_factor", k_);
    detail::save_window(out, stats_);
  }
  void load(state_reader& in) {
    in.expect_config(name, "sigma_factor", k_);
    detail::load_window(in, stats_);
  }

 private:
  detail::windowed_stats stats_;
  double k_;
  std::size_t warmup_;
};

/// Robust z-score (Hampel's identifier): x > median + k * 1.4826 * MAD over the window, MAD the
/// median absolute deviation (1.4826 MAD estimates sigma for normal data). A few outliers in the
/// window (a bad batch during warm-up, one the detector missed) barely move the limit, and the
/// limit follows the stream's own spread: wide on the heavy-tailed per-batch losses of a
/// converged classifier, tight on a smooth loss. O(window) per step (two nth_element over a
/// scratch copy allocated at construction).
struct mad_zscore {
  static constexpr std::string_view name = "mad_zscore";
  static constexpr bool watches_grad_norm = false;
  struct config {
    double sigma_factor = 6.0;  ///< k: spike iff x > median + k * 1.4826 * MAD(window); finite, > 0
  };
  static void validate(const config& c, std::size_t window) {
    detail::validate_spread_detector(name, c.sigma_factor, window);
  }
  mad_zscore(const config& c, std::size_t window, std::size_t warmup)
      : window_(window), deviations_(window), k_((validate(c, window), c.sigma_factor)),
        warmup_(std::max<std::size_t>(2, warmup)) {}
  bool ready() const { return window_.size() >= warmup_; }
  double reference() const { return window_.median(); }
  double limit() const {
    const double median = window_.median();
    const std::size_t n = window_.size();
    const auto& slots = window_.slots();  // the first n slots hold the values (all, once full)
    for (std::size_t i = 0; i < n; ++i) deviations_[i] = std::fabs(slots[i] - median);
    return median + k_ * 1.4826 * median_of(deviations_.data(), n);
  }
  void accept(double x) { window_.push(x); }
  void on_spike(double) {}
  void clear() { window_.clear(); }
  void save(state_writer& out) const {
    out.put("sigma_factor", k_);
    detail::save_median_window(out, window_);
  }
  void load(state_reader& in) {
    in.expect_config(name, "sigma_factor", k_);
    detail::load_median_window(in, window_);
  }

 private:
  static double median_of(double* values, std::size_t n) {
    double* middle = values + n / 2;
    std::nth_element(values, middle, values + n);
    if (n % 2 == 1) return *middle;
    return 0.5 * (*middle + *std::max_element(values, middle));
  }

  detail::window_median window_;
  mutable std::vector<double> deviations_;
  double k_;
  std::size_t warmup_;
};

struct ema_zscore {
  static constexpr std::string_view name = "ema_zscore";
  static constexpr bool watches_grad_norm = true;
  struct config {
    double alpha = 0.97;       ///< EMA weight of history, in (0, 1)
    double z_threshold = 2.5;  ///< z: spike iff g > mu + z * sigma; finite, > 0
  };
  static void validate(const config& c, std::size_t /*window*/) {
    if (!(c.alpha > 0.0 && c.alpha < 1.0))
      detail::fail<invalid_parameter>("SpikeDampener: alpha must be in (0, 1), got ", c.alpha);
    if (!(c.z_threshold > 0.0) || !std::isfinite(c.z_threshold))
      detail::fail<invalid_parameter>("SpikeDampener: z_threshold must be finite and > 0, got ", c.z_threshold);
  }
  // The window only bounds the warm-up of the loss detectors: the EMAs have no window.
  ema_zscore(const config& c, std::size_t window, std::size_t warmup)
      : alpha_((validate(c, window), c.alpha)), z_(c.z_threshold), warmup_(std::max<std::size_t>(2, warmup)) {}
  bool ready() const { return count_ >= warmup_; }
  double reference() const { return mean_; }
  double limit() const { return mean_ + z_ * std::sqrt(variance_); }
  void accept(double g) {
    if (count_ < warmup_) {  // Welford over the warm-up norms, then switch to the EMAs
      ++count_;
      const double delta = g - mean_;
      mean_ += delta / static_cast<double>(count_);
      variance_ += delta * (g - mean_);
      if (count_ == warmup_) variance_ /= static_cast<double>(count_);
      return;
    }
    mean_ = alpha_ * mean_ + (1.0 - alpha_) * g;
    variance_ = alpha_ * variance_ + (1.0 - alpha_) * (g - mean_) * (g - mean_);
  }
  void on_spike(double) { accept(limit()); }
  void clear() {
    count_ = 0;
    mean_ = variance_ = 0;
  }
  void save(state_writer& out) const {
    out.put("alpha", alpha_);
    out.put("z_threshold", z_);
    out.put_int("count", static_cast<long long>(count_));
    out.put("mean", mean_);
    out.put("variance", variance_);
  }
  void load(state_reader& in) {
    in.expect_config(name, "alpha", alpha_);
    in.expect_config(name, "z_threshold", z_);
    const long long count = in.get_count("count", 0, static_cast<long long>(warmup_));
    const double mean = in.get_finite("mean");
    const double variance = in.get("variance");
    if (!(variance >= 0.0) || !std::isfinite(variance))
      in.fail_field("variance", "must be finite and >= 0, got ", variance);
    if (count == 0 && (mean != 0.0 || variance != 0.0))
      in.fail_field("mean", "and variance must be 0 before the first value, got ", mean, " and ", variance);
    count_ = static_cast<std::size_t>(count);
    mean_ = mean;
    variance_ = variance;
  }

 private:
  double alpha_, z_;
  std::size_t warmup_;
  std::size_t count_ = 0;
  double mean_ = 0;
  double variance_ = 0;  ///< M2 during warm-up, the EMA variance after
};

}  // namespace detect
}  // namespace steadyloss
