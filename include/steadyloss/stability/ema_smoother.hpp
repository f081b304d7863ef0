#pragma once
// EmaSmoother: exponential moving average of the loss, debiased like TensorBoard's scalar
// smoothing. With f = factor (the weight of history; 0 = off) and t = number of finite inputs:
//   s_0 = 0,  s_t = f s_{t-1} + (1 - f) x_t,  smoothed_t = s_t / (1 - f^t).
// Without the 1 / (1 - f^t) debiasing the first values would be pulled towards 0.
// A non-finite x never enters the state; the report for it is x itself (as TensorBoard draws it).
// f^t is kept as a running product (one multiply per step instead of a pow call); it differs
// from pow(f, t) by at most t/2 ulps relative and stops mattering once f^t underflows to 0.

#include <cmath>
#include <string_view>

#include "../fwd.hpp"
#include "../core/errors.hpp"
#include "state_io.hpp"
#include "step.hpp"

namespace steadyloss {

template <class T>
class EmaSmoother {
 public:
  using value_type = T;
  using kind = policy_kind::ema_smoother;
  using depends_on = type_list<>;
  static constexpr std::string_view name = "EmaSmoother";

  struct config {
    double factor = 0.1;  ///< weight of history, in [0, 1); 0 = off (smoothed = x)
  };

  EmaSmoother() : EmaSmoother(config{}) {}
  explicit EmaSmoother(config c) : config_(c) {
    if (!(c.factor >= 0.0 && c.factor < 1.0))
      detail::fail<invalid_parameter>("EmaSmoother: factor must be in [0, 1), got ", c.factor);
  }

  /// Feeds one value; returns the debiased smoothed value (x itself when x is not finite).
  T update(T x) { return static_cast<T>(update_double(static_cast<double>(x))); }

  /// The current smoothed value; NaN before the first finite input.
  T value() const { return static_cast<T>(current()); }
  long long steps() const { return steps_; }
  const config& settings() const { return config_; }

  template <std::size_t N>
  void on_step(step_context<N>& ctx) {
    if (ctx.skipped) {
      ctx.smoothed = steps_ > 0 ? current() : ctx.effective;
    } else {
      ctx.smoothed = update_double(ctx.effective);
    }
    ctx.has_smoothed = true;
  }

  void save(state_writer& out) const {
    out.begin(name);
    out.put("factor", config_.factor);
    out.put_int("steps", steps_);
    out.put("sum", sum_);
    out.put("history_power", history_power_);
    out.end(name);
  }
  void load(state_reader& in) {
    in.begin(name);
    in.expect_config(name, "factor", config_.factor);
    const long long steps = in.get_count("steps");
    const double sum = in.get_finite("sum");
    const double power = in.get("history_power");
    detail::check_power(in, "history_power", power, config_.factor, steps);
    if (steps == 0 && sum != 0.0) in.fail_field("sum", "must be 0 before the first step, got ", sum);
    in.end(name);
    steps_ = steps;
    sum_ = sum;
    history_power_ = power;
  }
  /// Inside a Stabilizer: at most one observation per step.
  void check_step(state_reader& in, long long step) const {
    if (steps_ > step)
      in.fail_field("step", "is ", step, " but EmaSmoother observed ", steps_, " steps (at most one per step)");
  }

 private:
  double update_double(double x) {
    if (!std::isfinite(x)) return x;
    sum_ = config_.factor * sum_ + (1.0 - config_.factor) * x;
    history_power_ *= config_.factor;
    // f^t for f > 0.5 would get stuck at the smallest subnormal (f * 2^-1074 rounds back up),
    // and subnormal multiplies cost ~100 cycles each step. Below 2^-60, 1 - f^t is exactly 1
    // in double anyway, so flushing to 0 changes no result.
    if (history_power_ < 0x1p-60) history_power_ = 0;
    ++steps_;
    return current();
  }
  double current() const {
    if (steps_ == 0) return std::numeric_limits<double>::quiet_NaN();
    const double debias = 1.0 - history_power_;
    return debias == 1.0 ? sum_ : sum_ / debias;  // x / 1 == x: same bits, no divide
  }

  config config_;
  long long steps_ = 0;
  double sum_ = 0;            ///< s_t
  double history_power_ = 1;  ///< f^t
};

}  // namespace steadyloss
