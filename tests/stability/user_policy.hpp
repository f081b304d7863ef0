#pragma once
// Two step policies written the way a user writes one: against the public API only
// (steadyloss::step_context, state_writer/state_reader, type_list), nothing from detail::.
// docs/extending.md shows the marked region (scripts/check_doc_snippets.py keeps the two equal);
// test_user_policy.cpp and compile_fail/ use it.
#include <cmath>
#include <cstddef>
#include <string_view>

#include <steadyloss/stability/stability.hpp>

// [snippet user_policy]
namespace user {
namespace sl = steadyloss;

/// Scales the step down when the gradient norm exceeds `ratio` times its running mean (a
/// debiased EMA), so that the step's gradient norm is at most ratio x that mean. The EMA follows
/// the clipped norm, so one explosion does not raise the bar for the next.
class GradNormClip {
 public:
  // No value_type: the policy fits a float or a double pipeline. No kind: its kind is its type.
  static constexpr std::string_view name = "GradNormClip";

  explicit GradNormClip(double ratio = 2.0, double factor = 0.9) : ratio_(ratio), factor_(factor) {}

  template <std::size_t N>
  void on_step(sl::step_context<N>& ctx) {
    if (!ctx.finite || ctx.skipped) return;  // nothing to learn from a step the model skips
    double norm = ctx.grad_norm;
    if (steps_ > 0) {
      const double limit = ratio_ * sum_ / (1.0 - power_);
      if (norm > limit) {
        ctx.scale *= limit / norm;
        norm = limit;
      }
    }
    sum_ = factor_ * sum_ + (1.0 - factor_) * norm;
    power_ *= factor_;
    ++steps_;
  }

  // State: what a resumed run needs to take the same next decision. The configuration is saved
  // too, and checked on load, so a state is never restored into a differently configured policy.
  void save(sl::state_writer& out) const {
    out.begin(name);
    out.put("ratio", ratio_);
    out.put("factor", factor_);
    out.put_int("steps", steps_);
    out.put("sum", sum_);
    out.put("power", power_);
    out.end(name);
  }
  void load(sl::state_reader& in) {
    in.begin(name);
    in.expect_config(name, "ratio", ratio_);
    in.expect_config(name, "factor", factor_);
    const long long steps = in.get_count("steps");
    const double sum = in.get_finite("sum");
    const double power = in.get_in("power", 0.0, 1.0);
    in.end(name);
    steps_ = steps;  // assign only after everything was read: a bad state changes nothing
    sum_ = sum;
    power_ = power;
  }

 private:
  double ratio_, factor_;
  long long steps_ = 0;
  double sum_ = 0, power_ = 1;
};

/// Skips the step outright when GradNormClip had to scale it below `min_scale`. Stateless: no
/// save/load, nothing in the saved state. It reads what GradNormClip wrote, so it says so.
struct SkipHardClips {
  using depends_on = sl::type_list<GradNormClip>;
  double min_scale = 0.25;

  template <std::size_t N>
  void on_step(sl::step_context<N>& ctx) const {
    if (ctx.scale < min_scale) {
      ctx.scale = 0;
      ctx.skipped = true;
    }
  }
};

}  // namespace user
// [end snippet]
