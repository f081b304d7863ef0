#pragma once
// A spike detector written the way a user writes one: against the public API only
// (steadyloss::SpikeDetector, state_writer/state_reader), nothing from detail::.
// docs/extending.md shows the marked region (scripts/check_doc_snippets.py keeps them equal); test_user_detector.cpp uses it.
#include <cstddef>
#include <string_view>

#include <steadyloss/stability/stability.hpp>

// [snippet user_detector]
namespace user {
namespace sl = steadyloss;

/// A spike is a loss above `ratio` times the debiased EMA of the accepted losses. Unlike
/// detect::mean_ratio it keeps no window: O(1) memory, and old values fade instead of dropping
/// out all at once.
class EmaRatio {
 public:
  static constexpr std::string_view name = "EmaRatio";  // the section of its state

  struct config {
    double ratio = 2.0;   ///< spike iff x > ratio * EMA; > 1
    double factor = 0.9;  ///< the EMA's weight of history, in [0, 1)
  };

  // SpikeDampener passes its window (unused here) and the warm-up, resolved (> 0).
  EmaRatio(const config& c, std::size_t /*window*/, std::size_t warmup)
      : config_(c), warmup_(static_cast<long long>(warmup)) {
    if (!(c.ratio > 1.0)) throw sl::invalid_parameter("EmaRatio: ratio must be > 1");
    if (!(c.factor >= 0.0 && c.factor < 1.0)) throw sl::invalid_parameter("EmaRatio: factor must be in [0, 1)");
  }

  bool ready() const { return count_ >= warmup_; }
  // Debiased as Adam's moments are: the first values are not pulled towards the initial 0.
  double reference() const { return sum_ / (1.0 - power_); }
  double limit() const { return config_.ratio * reference(); }
  void accept(double x) {
    sum_ = config_.factor * sum_ + (1.0 - config_.factor) * x;
    power_ *= config_.factor;
    ++count_;
  }
  void clear() {
    sum_ = 0;
    power_ = 1;
    count_ = 0;
  }
  // No on_spike: a spike never enters the EMA. No watches_grad_norm: it watches the loss.

  // Inside the section SpikeDampener opens for it. The config is saved too, and checked on load,
  // so a state is never restored into a differently configured detector.
  void save(sl::state_writer& out) const {
    out.put("ratio", config_.ratio);
    out.put("factor", config_.factor);
    out.put_int("count", count_);
    out.put("sum", sum_);
    out.put("power", power_);
  }
  void load(sl::state_reader& in) {
    in.expect_config(name, "ratio", config_.ratio);
    in.expect_config(name, "factor", config_.factor);
    const long long count = in.get_count("count");
    const double sum = in.get_finite("sum");
    const double power = in.get_in("power", 0.0, 1.0);
    count_ = count;  // assigned only after every field was read and checked
    sum_ = sum;
    power_ = power;
  }

 private:
  config config_;
  long long warmup_;
  long long count_ = 0;
  double sum_ = 0;    ///< the EMA before debiasing
  double power_ = 1;  ///< factor^count: 1 - power_ debiases the EMA
};

}  // namespace user
// [end snippet]
