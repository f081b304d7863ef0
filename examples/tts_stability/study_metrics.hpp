#pragma once
// The study's metrics, measured the same way for every configuration (tested in
// tests/study/test_study_metrics.cpp against closed forms and published tables):
//
//   mean_ci95          mean and two-sided 95% Student-t interval, mean +- t(0.975, n-1) s / sqrt(n)
//   confusion          counts of a binary classifier; balanced_accuracy and f1 follow scikit-learn
//   steps_to_target    first step at which a series is <= target (-1: never)
//   variability        sample standard deviation of the log-ratios of consecutive values,
//                      log(v[k+1] / v[k]): the relative step-to-step jitter around the series' own
//                      trend. A steady exponential decrease scores 0 however fast it is (a mean of
//                      |log-ratio| would score the speed of descent, not the jitter), and
//                      multiplying the series by a constant changes nothing, so runs whose losses
//                      have different scales compare fairly; a plain variance would not.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>

namespace steadyloss::study {

/// Two-sided 95% quantile of Student's t with df degrees of freedom, t(0.975, df).
/// df 1..30 from the standard table; above, the Cornish-Fisher expansion around the normal
/// quantile (error < 1e-6 for df > 30). NaN for df < 1.
inline double t_quantile_975(long long df) {
  static constexpr double table[] = {
      12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252, 2.306004135,
      2.262157163,  2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688, 2.131449546, 2.119905299,
      2.109815578,  2.100922040, 2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.068657610, 2.063898562,
      2.059538553,  2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456};
  if (df < 1) return std::numeric_limits<double>::quiet_NaN();
  if (df <= 30) return table[df - 1];
  const double z = 1.959963984540054, v = static_cast<double>(df);
  const double z2 = z * z, z3 = z2 * z, z5 = z3 * z2, z7 = z5 * z2;
  return z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v) +
         (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * v * v * v);
}

/// A sample's mean and its 95% confidence interval [lo, hi] = mean -+ half_width.
struct interval {
  std::size_t n = 0;
  double mean = std::numeric_limits<double>::quiet_NaN();
  double half_width = std::numeric_limits<double>::quiet_NaN();  ///< NaN for n < 2
  double lo() const { return mean - half_width; }
  double hi() const { return mean + half_width; }
};

/// Mean and 95% Student-t interval of the finite values (NaN/Inf entries are left out and not
/// counted in n). n = 0: mean NaN; n = 1: half_width NaN; all values equal: half_width 0.
inline interval mean_ci95(std::span<const double> values) {
  interval r;
  double sum = 0;
  for (double x : values)
    if (std::isfinite(x)) {
      sum += x;
      ++r.n;
    }
  if (r.n == 0) return r;
  r.mean = sum / static_cast<double>(r.n);
  if (r.n < 2) return r;
  double squares = 0;  // two passes: no cancellation when the spread is small against the mean
  for (double x : values)
    if (std::isfinite(x)) squares += (x - r.mean) * (x - r.mean);
  const double sd = std::sqrt(squares / static_cast<double>(r.n - 1));
  r.half_width = t_quantile_975(static_cast<long long>(r.n) - 1) * sd / std::sqrt(static_cast<double>(r.n));
  return r;
}

/// Counts of a binary classifier's decisions.
struct confusion {
  long long tp = 0, fp = 0, tn = 0, fn = 0;
  void add(bool predicted_positive, bool actually_positive) {
    if (actually_positive) (predicted_positive ? tp : fn) += 1;
    else (predicted_positive ? fp : tn) += 1;
  }
};

/// (recall of positives + recall of negatives) / 2, averaged over the classes present in the truth
/// (scikit-learn's balanced_accuracy_score); NaN when there is no sample at all.
inline double balanced_accuracy(const confusion& c) {
  const long long positives = c.tp + c.fn, negatives = c.tn + c.fp;
  double sum = 0;
  int classes = 0;
  if (positives > 0) {
    sum += static_cast<double>(c.tp) / static_cast<double>(positives);
    ++classes;
  }
  if (negatives > 0) {
    sum += static_cast<double>(c.tn) / static_cast<double>(negatives);
    ++classes;
  }
  return classes == 0 ? std::numeric_limits<double>::quiet_NaN() : sum / classes;
}

/// F1 of the positive class, 2 tp / (2 tp + fp + fn); 0 when that is 0 / 0 (scikit-learn's
/// default zero_division).
inline double f1(const confusion& c) {
  const long long denominator = 2 * c.tp + c.fp + c.fn;
  return denominator == 0 ? 0.0 : 2.0 * static_cast<double>(c.tp) / static_cast<double>(denominator);
}

/// The first steps[k] with values[k] <= target (values in step order), or -1 if none. NaN never
/// reaches a target. The spans must have the same length (the shorter one bounds the search).
inline long long steps_to_target(std::span<const long long> steps, std::span<const double> values, double target) {
  const std::size_t n = std::min(steps.size(), values.size());
  for (std::size_t k = 0; k < n; ++k)
    if (values[k] <= target) return steps[k];
  return -1;
}

/// Sample standard deviation of log(v[k+1] / v[k]) over consecutive pairs. Pairs with a
/// non-positive or non-finite member are left out (a log-ratio is undefined there); NaN when
/// fewer than two pairs are left.
inline double variability(std::span<const double> values) {
  double mean = 0, m2 = 0;  // Welford: no cancellation when the jitter is small against the trend
  std::size_t pairs = 0;
  for (std::size_t k = 0; k + 1 < values.size(); ++k) {
    const double a = values[k], b = values[k + 1];
    if (!(a > 0) || !(b > 0) || !std::isfinite(a) || !std::isfinite(b)) continue;
    const double r = std::log(b / a), delta = r - mean;
    ++pairs;
    mean += delta / static_cast<double>(pairs);
    m2 += delta * (r - mean);
  }
  if (pairs < 2) return std::numeric_limits<double>::quiet_NaN();
  return std::sqrt(m2 / static_cast<double>(pairs - 1));
}

}  // namespace steadyloss::study
