#pragma once
// ErrorScale<N>: the error scale each term's AdaptiveHuber follows, as a debiased EMA of the
// term's own mean value (see loss/adaptive_huber.hpp for why that is a scale estimate):
//   e_t = f e_{t-1} + (1 - f) v_t,   scale = e_t / (1 - f^t)      (f = factor, weight of history)
// sl::apply(loss, report) copies report.error_scales into every term that follows an error
// scale; other terms ignore theirs. Before the first observation the scale is `initial`.
//
// Only clean steps are observed, as AdaptiveWeight observes them: a step with a non-finite value,
// a skipped step or a dampened spike (list a SpikeDampener before ErrorScale) leaves the scale
// alone, so a corrupted batch cannot widen delta for the steps after it. The values come from
// the Stabilizer, so with a reducer every rank observes the same global values and every rank's
// loss gets the same delta.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <string_view>

#include "../fwd.hpp"
#include "../core/errors.hpp"
#include "state_io.hpp"
#include "step.hpp"

namespace steadyloss {

template <std::size_t N, class T>
class ErrorScale {
  static_assert(N > 0, "steadyloss::ErrorScale<N>: N (the number of loss terms) must be > 0");

 public:
  using value_type = T;
  using kind = policy_kind::error_scale;
  using depends_on = type_list<>;
  static constexpr std::size_t terms = N;
  static constexpr std::string_view name = "ErrorScale";

  struct config {
    double factor = 0.9;   ///< weight of history, in [0, 1)
    double initial = 1.0;  ///< the scale before the first observation (finite, > 0)
  };

  ErrorScale() : ErrorScale(config{}) {}
  explicit ErrorScale(config c) : config_(c) {
    if (!(c.factor >= 0.0 && c.factor < 1.0))
      detail::fail<invalid_parameter>("ErrorScale: factor must be in [0, 1), got ", c.factor);
    if (!(c.initial > 0.0) || !std::isfinite(c.initial))
      detail::fail<invalid_parameter>("ErrorScale: initial must be finite and > 0, got ", c.initial);
  }

  /// Observes per-term mean values (all finite and >= 0, or the step is not observed); returns
  /// the scales for the next evaluation.
  std::array<T, N> update(std::span<const T> values) {
    if (values.size() != N)
      detail::fail<shape_mismatch>("ErrorScale: values must have ", N, " entries, got ", values.size());
    std::array<double, N> v{};
    for (std::size_t i = 0; i < N; ++i) v[i] = static_cast<double>(values[i]);
    observe(v);
    return scales();
  }

  /// The current scales: `initial` before the first observation. A scale whose estimate is 0
  /// (a term that was exactly 0 on every observed step) stays at `initial`.
  std::array<T, N> scales() const {
    std::array<T, N> out{};
    const double debias = 1.0 - power_;
    for (std::size_t i = 0; i < N; ++i) {
      const double estimate = steps_ == 0 ? 0.0 : (debias == 1.0 ? sum_[i] : sum_[i] / debias);
      out[i] = static_cast<T>(estimate > 0.0 ? estimate : config_.initial);
    }
    return out;
  }
  long long steps() const { return steps_; }
  const config& settings() const { return config_; }

  template <std::size_t M>
  void on_step(step_context<M>& ctx) {
    static_assert(M == N, "steadyloss::Stabilizer: ErrorScale<N> needs N per-term values");
    if (ctx.has_terms && !ctx.skipped && ctx.scale == 1.0 && ctx.finite) observe(ctx.values);
  }
  template <class Report>
  void fill(Report& r) const { r.error_scales = scales(); }

  void save(state_writer& out) const {
    out.begin(name);
    out.put("terms", static_cast<double>(N));
    out.put("factor", config_.factor);
    out.put("initial", config_.initial);
    out.put_int("steps", steps_);
    out.put_doubles("sum", sum_);
    out.put("history_power", power_);
    out.end(name);
  }
  void load(state_reader& in) {
    in.begin(name);
    in.expect_config(name, "terms", static_cast<double>(N));
    in.expect_config(name, "factor", config_.factor);
    in.expect_config(name, "initial", config_.initial);
    const long long steps = in.get_count("steps");
    const auto sum = in.get_finite_doubles("sum", N);
    const double power = in.get("history_power");
    detail::check_power(in, "history_power", power, config_.factor, steps);
    for (std::size_t i = 0; i < N; ++i) {
      if (!(sum[i] >= 0.0)) in.fail_field("sum", "value ", i, " must be >= 0 (a mean of losses), got ", sum[i]);
      if (steps == 0 && sum[i] != 0.0) in.fail_field("sum", "value ", i, " must be 0 before the first step");
    }
    in.end(name);
    steps_ = steps;
    std::copy(sum.begin(), sum.end(), sum_.begin());
    power_ = power;
  }
  /// Inside a Stabilizer: at most one observation per step.
  void check_step(state_reader& in, long long step) const {
    if (steps_ > step)
      in.fail_field("step", "is ", step, " but ErrorScale observed ", steps_, " steps (at most one per step)");
  }

 private:
  void observe(const std::array<double, N>& values) {
    for (double v : values)
      if (!std::isfinite(v) || v < 0.0) return;
    for (std::size_t i = 0; i < N; ++i) sum_[i] = config_.factor * sum_[i] + (1.0 - config_.factor) * values[i];
    power_ *= config_.factor;
    if (power_ < 0x1p-60) power_ = 0;  // see EmaSmoother: no subnormal arithmetic
    ++steps_;
  }

  config config_;
  long long steps_ = 0;
  std::array<double, N> sum_{};
  double power_ = 1;
};

}  // namespace steadyloss
