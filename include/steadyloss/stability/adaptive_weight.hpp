#pragma once
// AdaptiveWeight<N>: a multiplier per loss term, bounded to [lo, hi] (default [0.7, 1.3]) and
// changing by at most max_step per step, set from each term's magnitude share and convergence
// rate. The composed loss evaluates term i with base_weight_i * multiplier_i
// (apply_weights(loss, report) copies them in).
//
// Per accepted step with term values v_i and evaluated weights w_i (1 when unknown):
//   fast_i, slow_i = debiased EMAs of v_i with history weights fast (0.9) and slow (0.99)
// rule share_and_rate (default):
//   a_i   = w_i fast_i / mean_j(w_j fast_j)     magnitude share (> 1: above-average contribution)
//   r_i   = fast_i / slow_i                      convergence rate (< 1: falling)
//   rho_i = r_i / mean_j(r_j)                    (> 1: converging slower than the others)
//   target_i = rho_i / sqrt(a_i)
// so a term that dominates the total is turned down and a term that lags is turned up; sqrt
// damps the share signal, which the multiplier itself feeds back into.
// rule dwa (Dynamic Weight Average, Liu et al. 2019, temperature T = 2):
//   r_i = fast_i(t) / fast_i(t-1),  target_i = N exp(r_i / T) / sum_j exp(r_j / T)
// (the paper uses per-epoch mean losses at t-1 and t-2; here the fast EMA plays that role).
// Then, for both rules, after `warmup` accepted steps (before it multipliers stay 1):
//   m_i <- clamp(m_i + clamp(target_i - m_i, -max_step, max_step), lo, hi).
// Steps with a non-finite value, skipped or dampened steps are not observed.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "../fwd.hpp"
#include "../core/errors.hpp"
#include "../core/result.hpp"
#include "state_io.hpp"
#include "step.hpp"

namespace steadyloss {

enum class weight_rule { share_and_rate, dwa };

template <std::size_t N, class T>
class AdaptiveWeight {
  static_assert(N > 0, "steadyloss::AdaptiveWeight<N>: N (the number of loss terms) must be > 0");

 public:
  using value_type = T;
  using kind = policy_kind::adaptive_weight;
  using depends_on = type_list<>;
  static constexpr std::size_t terms = N;
  static constexpr std::string_view name = "AdaptiveWeight";

  struct config {
    double lo = 0.7;
    double hi = 1.3;
    double max_step = 0.01;   ///< largest change of a multiplier per step (> 0)
    double fast = 0.9;        ///< history weight of the fast EMA, in [0, 1)
    double slow = 0.99;       ///< history weight of the slow EMA, in [0, 1)
    long long warmup = 10;    ///< accepted steps before the multipliers move (>= 1)
    weight_rule rule = weight_rule::share_and_rate;
    double temperature = 2.0; ///< DWA's T (> 0)
  };

  AdaptiveWeight() : AdaptiveWeight(config{}) {}
  explicit AdaptiveWeight(config c) : config_(c) {
    if (!(c.lo >= 0.0) || !std::isfinite(c.lo) || !std::isfinite(c.hi))
      detail::fail<invalid_parameter>("AdaptiveWeight: bounds must be finite and lo >= 0, got lo = ", c.lo,
                                      ", hi = ", c.hi);
    if (c.lo > c.hi)
      detail::fail<invalid_parameter>("AdaptiveWeight: bounds must have lo <= hi, got lo = ", c.lo, ", hi = ", c.hi);
    if (!(c.max_step > 0.0) || !std::isfinite(c.max_step))
      detail::fail<invalid_parameter>("AdaptiveWeight: max_step must be finite and > 0, got ", c.max_step);
    if (!(c.fast >= 0.0 && c.fast < 1.0))
      detail::fail<invalid_parameter>("AdaptiveWeight: fast must be in [0, 1), got ", c.fast);
    if (!(c.slow >= 0.0 && c.slow < 1.0))
      detail::fail<invalid_parameter>("AdaptiveWeight: slow must be in [0, 1), got ", c.slow);
    if (c.warmup < 1) detail::fail<invalid_parameter>("AdaptiveWeight: warmup must be >= 1, got ", c.warmup);
    if (!(c.temperature > 0.0) || !std::isfinite(c.temperature))
      detail::fail<invalid_parameter>("AdaptiveWeight: temperature must be finite and > 0, got ", c.temperature);
    multipliers_.fill(std::clamp(1.0, c.lo, c.hi));
  }

  /// Observes per-term values (and the weights they were evaluated with; empty = all 1).
  /// Returns the multipliers for the next evaluation.
  std::array<T, N> update(std::span<const T> values, std::span<const T> weights = {}) {
    if (values.size() != N)
      detail::fail<shape_mismatch>("AdaptiveWeight: values must have ", N, " entries, got ", values.size());
    if (!weights.empty() && weights.size() != N)
      detail::fail<shape_mismatch>("AdaptiveWeight: weights must have ", N, " entries, got ", weights.size());
    std::array<double, N> v{}, w{};
    for (std::size_t i = 0; i < N; ++i) {
      v[i] = static_cast<double>(values[i]);
      w[i] = weights.empty() ? 1.0 : static_cast<double>(weights[i]);
    }
    observe(v, w);
    return multipliers();
  }
  /// Observes one evaluation of a composed loss.
  std::array<T, N> update(const composed_result<T, N>& result) {
    return update(std::span<const T>(result.values), std::span<const T>(result.weights));
  }

  std::array<T, N> multipliers() const {
    std::array<T, N> out{};
    for (std::size_t i = 0; i < N; ++i) out[i] = static_cast<T>(multipliers_[i]);
    return out;
  }
  long long steps() const { return steps_; }
  const config& settings() const { return config_; }

  template <std::size_t M>
  void on_step(step_context<M>& ctx) {
    static_assert(M == N, "steadyloss::Stabilizer: AdaptiveWeight<N> needs N per-term values");
    if (!ctx.skipped && ctx.scale == 1.0 && ctx.finite) observe(ctx.values, ctx.weights);
  }
  template <class Report>
  void fill(Report& r) const { r.weights = multipliers(); }

  void save(state_writer& out) const {
    out.begin(name);
    out.put("terms", static_cast<double>(N));
    out.put("lo", config_.lo);
    out.put("hi", config_.hi);
    out.put("max_step", config_.max_step);
    out.put("fast_factor", config_.fast);
    out.put("slow_factor", config_.slow);
    out.put("warmup", static_cast<double>(config_.warmup));
    out.put_word("rule", rule_names[static_cast<std::size_t>(config_.rule)]);
    out.put("temperature", config_.temperature);
    out.put_int("steps", steps_);
    out.put_doubles("fast", fast_);
    out.put_doubles("slow", slow_);
    out.put_doubles("previous_fast", previous_fast_);
    out.put("fast_power", fast_power_);
    out.put("slow_power", slow_power_);
    out.put_doubles("multipliers", multipliers_);
    out.end(name);
  }
  void load(state_reader& in) {
    in.begin(name);
    in.expect_config(name, "terms", static_cast<double>(N));
    in.expect_config(name, "lo", config_.lo);
    in.expect_config(name, "hi", config_.hi);
    in.expect_config(name, "max_step", config_.max_step);
    in.expect_config(name, "fast_factor", config_.fast);
    in.expect_config(name, "slow_factor", config_.slow);
    in.expect_config(name, "warmup", static_cast<double>(config_.warmup));
    in.expect_choice(name, "rule", static_cast<long long>(config_.rule), {rule_names[0], rule_names[1]});
    in.expect_config(name, "temperature", config_.temperature);
    const long long steps = in.get_count("steps");
    const auto fast = in.get_finite_doubles("fast", N);
    const auto slow = in.get_finite_doubles("slow", N);
    const auto previous = in.get_finite_doubles("previous_fast", N);
    const double fast_power = in.get("fast_power");
    detail::check_power(in, "fast_power", fast_power, config_.fast, steps);
    const double slow_power = in.get("slow_power");
    detail::check_power(in, "slow_power", slow_power, config_.slow, steps);
    const auto multipliers = in.get_doubles("multipliers", N);
    const double initial = std::clamp(1.0, config_.lo, config_.hi);
    for (std::size_t i = 0; i < N; ++i) {
      if (!(multipliers[i] >= config_.lo && multipliers[i] <= config_.hi))
        in.fail_field("multipliers", "value ", i, " must be in [lo, hi] = [", config_.lo, ", ", config_.hi,
                      "], got ", multipliers[i]);
      // Before the warm-up ends the multipliers stay where the constructor put them.
      if (steps <= config_.warmup && multipliers[i] != initial)
        in.fail_field("multipliers", "value ", i, " must be ", initial, " during the warm-up (", steps, " of ",
                      config_.warmup, " steps), got ", multipliers[i]);
    }
    in.end(name);
    steps_ = steps;
    std::copy(fast.begin(), fast.end(), fast_.begin());
    std::copy(slow.begin(), slow.end(), slow_.begin());
    std::copy(previous.begin(), previous.end(), previous_fast_.begin());
    fast_power_ = fast_power;
    slow_power_ = slow_power;
    std::copy(multipliers.begin(), multipliers.end(), multipliers_.begin());
  }
  /// Inside a Stabilizer: at most one observation per step.
  void check_step(state_reader& in, long long step) const {
    if (steps_ > step)
      in.fail_field("step", "is ", step, " but AdaptiveWeight observed ", steps_, " steps (at most one per step)");
  }

 private:
  static constexpr std::string_view rule_names[] = {"share_and_rate", "dwa"};

  void observe(const std::array<double, N>& values, const std::array<double, N>& weights) {
    for (std::size_t i = 0; i < N; ++i)
      if (!std::isfinite(values[i]) || !std::isfinite(weights[i])) return;
    previous_fast_ = fast_;
    for (std::size_t i = 0; i < N; ++i) {
      fast_[i] = config_.fast * fast_[i] + (1.0 - config_.fast) * values[i];
      slow_[i] = config_.slow * slow_[i] + (1.0 - config_.slow) * values[i];
    }
    const double previous_debias = 1.0 - fast_power_;
    fast_power_ *= config_.fast;
    slow_power_ *= config_.slow;
    if (fast_power_ < 0x1p-60) fast_power_ = 0;  // see EmaSmoother: no subnormal arithmetic
    if (slow_power_ < 0x1p-60) slow_power_ = 0;
    ++steps_;
    if (steps_ <= config_.warmup) return;
    // Once f^t drops below 2^-53 the debias factor is exactly 1; multiplying by its inverse
    // then changes nothing, and the common case needs no divide.
    const double fast_debias = 1.0 - fast_power_, slow_debias = 1.0 - slow_power_;
    const double fast_scale = fast_debias == 1.0 ? 1.0 : 1.0 / fast_debias;
    const double slow_scale = slow_debias == 1.0 ? 1.0 : 1.0 / slow_debias;

    std::array<double, N> target{};
    if (config_.rule == weight_rule::share_and_rate) {
      std::array<double, N> share{}, rate{};
      double share_sum = 0, rate_sum = 0;
      for (std::size_t i = 0; i < N; ++i) {
        const double f = fast_[i] * fast_scale, s = slow_[i] * slow_scale;
        share[i] = weights[i] * f;
        rate[i] = s != 0.0 ? f / s : 1.0;
        share_sum += share[i];
        rate_sum += rate[i];
      }
      // rho_i / sqrt(a_i) = (r_i / mean r) * sqrt(mean c / c_i)
      const double inverse_rate_mean = rate_sum > 0.0 ? static_cast<double>(N) / rate_sum : 0.0;
      const double share_mean = share_sum / static_cast<double>(N);
      for (std::size_t i = 0; i < N; ++i) {
        const double rho = rate_sum > 0.0 ? rate[i] * inverse_rate_mean : 1.0;
        if (!(share_mean > 0.0)) target[i] = rho;
        else target[i] = share[i] > 0.0 ? rho * std::sqrt(share_mean / share[i]) : config_.hi;
      }
    } else {
      std::array<double, N> e{};
      double sum = 0;
      for (std::size_t i = 0; i < N; ++i) {
        const double now = fast_[i] * fast_scale, before = previous_fast_[i] / previous_debias;
        const double r = before != 0.0 ? now / before : 1.0;
        e[i] = std::exp(r / config_.temperature);
        sum += e[i];
      }
      for (std::size_t i = 0; i < N; ++i) target[i] = static_cast<double>(N) * e[i] / sum;
    }
    for (std::size_t i = 0; i < N; ++i) {
      const double t = std::isfinite(target[i]) ? target[i] : multipliers_[i];
      const double moved = multipliers_[i] + std::clamp(t - multipliers_[i], -config_.max_step, config_.max_step);
      multipliers_[i] = std::clamp(moved, config_.lo, config_.hi);
    }
  }

  config config_;
  long long steps_ = 0;
  std::array<double, N> fast_{}, slow_{}, previous_fast_{}, multipliers_{};
  double fast_power_ = 1, slow_power_ = 1;
};

/// Copies a report's multipliers into a composed loss, so the next evaluation uses them.
template <class Loss, class Report>
  requires requires(const Report& r) { r.weights; }
void apply_weights(Loss& loss, const Report& report) {
  static_assert(std::tuple_size_v<std::remove_cvref_t<decltype(report.weights)>> > 0,
                "steadyloss::apply_weights(loss, report): this report comes from a Stabilizer without AdaptiveWeight "
                "(it holds no multipliers); use sl::apply(loss, report), which sets whatever the report holds");
  loss.set_multipliers(std::span<const typename Loss::value_type>(report.weights));
}
/// Copies AdaptiveWeight's current multipliers into a composed loss (also after a restore).
template <class Loss, std::size_t N, class T>
void apply_weights(Loss& loss, const AdaptiveWeight<N, T>& weights) {
  static_assert(Loss::size == N, "steadyloss::apply_weights: AdaptiveWeight<N> and the composed loss have different "
                                 "numbers of terms");
  const auto multipliers = weights.multipliers();
  loss.set_multipliers(std::span<const typename Loss::value_type>(multipliers));
}

}  // namespace steadyloss
