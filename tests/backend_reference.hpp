#pragma once
// Shared by the backend tests (Eigen, xtensor): an independent reference (long double, closed
// forms of the README's semantics table; never the code under test), the reduction it implies, tolerances, and the
// test data every backend object is filled with, in memory order.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <type_traits>
#include <vector>

#include <steadyloss/steadyloss.hpp>

namespace backend_reference {

namespace sl = steadyloss;

// ---------------------------------------------------------------------------------------------
// Independent reference (long double, closed forms; never the code under test)

struct value_and_slope {
  long double value;
  long double grad;
};

inline value_and_slope huber_reference(long double pred, long double target, long double delta) {
  const long double d = pred - target;
  if (std::fabs(d) <= delta) return {0.5L * d * d, d};
  return {delta * (std::fabs(d) - 0.5L * delta), d > 0 ? delta : -delta};
}

inline value_and_slope bce_reference(long double logit, long double target, long double pos_weight) {
  const long double log_weight = 1 + (pos_weight - 1) * target;
  const long double value = (1 - target) * logit +
                            log_weight * (std::log1p(std::exp(-std::fabs(logit))) + std::max(-logit, 0.0L));
  const long double sigmoid = 1 / (1 + std::exp(-logit));
  return {value, sigmoid * log_weight - pos_weight * target};
}

inline value_and_slope l1_reference(long double pred, long double target) {
  const long double d = pred - target;
  return {std::fabs(d), d > 0 ? 1.0L : (d < 0 ? -1.0L : 0.0L)};
}

inline value_and_slope mse_reference(long double pred, long double target) {
  const long double d = pred - target;
  return {d * d, 2 * d};
}

struct reduced_reference {
  long double value = 0;
  std::vector<long double> grad;
};

/// sum(w l) / sum(w) (mean) or sum(w l) (sum), and the matching gradient w g / sum(w) or w g.
template <class T, class Elementwise>
reduced_reference reduce_reference(Elementwise elementwise, const std::vector<T>& pred,
                                   const std::vector<T>& target,
                                   const std::vector<long double>& weights, sl::reduction reduction) {
  long double weighted_sum = 0, weight_sum = 0;
  reduced_reference out;
  out.grad.resize(pred.size());
  for (std::size_t i = 0; i < pred.size(); ++i) {
    const value_and_slope e = elementwise(pred[i], target[i]);
    weighted_sum += weights[i] * e.value;
    weight_sum += weights[i];
    out.grad[i] = weights[i] * e.grad;
  }
  const long double denominator = reduction == sl::reduction::mean ? weight_sum : 1.0L;
  out.value = weighted_sum / denominator;
  for (long double& g : out.grad) g /= denominator;
  return out;
}

template <class T>
constexpr long double tolerance = std::is_same_v<T, float> ? 2e-5L : 1e-12L;

/// Relative closeness with an absolute floor of `scale` (a mean's gradients are ~1/n of the sum's):
/// BCE's gradient s (1 + (p-1) y) - p y cancels terms of size ~p, so a float result near 0 is
/// only as accurate as those terms are.
template <class T>
bool close(T actual, long double expected, long double scale = 1) {
  return std::fabs(static_cast<long double>(actual) - expected) <=
         tolerance<T> * (std::fabs(expected) + scale);
}

template <class T>
std::size_t count_mismatches(const T* actual, const std::vector<long double>& expected,
                             long double scale) {
  std::size_t bad = 0;
  for (std::size_t i = 0; i < expected.size(); ++i)
    if (!close(actual[i], expected[i], scale)) {
      if (bad == 0) UNSCOPED_INFO("first mismatch at " << i << ": " << actual[i] << " vs " << static_cast<double>(expected[i]));
      ++bad;
    }
  return bad;
}

// ---------------------------------------------------------------------------------------------
// Test data in memory order: what every backend object holds, whatever its type or layout.

template <class T>
struct fixture {
  std::vector<T> pred, regression_target, binary_target, grad;
  explicit fixture(std::size_t n, unsigned seed = 7) : grad(n, T(-99)) {
    std::mt19937 engine(seed);
    std::uniform_real_distribution<double> wide(-3.0, 3.0), unit(0.0, 1.0);
    for (std::size_t i = 0; i < n; ++i) {
      pred.push_back(static_cast<T>(2 * wide(engine)));  // logits in [-6, 6] for BCE
      regression_target.push_back(static_cast<T>(wide(engine)));
      // hard labels and soft ones, as a stop-token target and a smoothed one look
      binary_target.push_back(i % 3 == 0 ? T(0) : i % 3 == 1 ? T(1) : static_cast<T>(unit(engine)));
    }
  }
};

inline std::vector<long double> ones(std::size_t n) { return std::vector<long double>(n, 1.0L); }

/// Calls check(name, term, elementwise reference, uses binary targets) for every shipped term.
template <class T, class Check>
void for_each_term(Check check) {
  check("Huber delta 1", sl::Huber<T>{.delta = T(1)},
        [](long double p, long double t) { return huber_reference(p, t, 1.0L); }, false);
  check("Huber delta 0.5", sl::Huber<T>{.delta = T(0.5)},
        [](long double p, long double t) { return huber_reference(p, t, 0.5L); }, false);
  check("BalancedBCE", sl::BalancedBCE<T>{.pos_weight = T(5)},
        [](long double p, long double t) { return bce_reference(p, t, 5.0L); }, true);
  const T eps = T(0.05);
  const long double eps_exact = eps;
  check("LabelSmoothing(BalancedBCE)", sl::LabelSmoothing{sl::BalancedBCE<T>{.pos_weight = T(5)}, eps},
        [eps_exact](long double p, long double t) {
          return bce_reference(p, t * (1 - eps_exact) + eps_exact / 2, 5.0L);
        },
        true);
  check("L1", sl::L1<T>{}, [](long double p, long double t) { return l1_reference(p, t); }, false);
  check("MSE", sl::MSE<T>{}, [](long double p, long double t) { return mse_reference(p, t); }, false);
}

/// Evaluates every term on (pred, regression or binary target) through sl::evaluate and
/// sl::value, for both reductions, and compares with the reference. `grad_memory` is where the
/// gradient object's elements live, in memory order.
template <class T, class Pred, class Regression, class Binary, class Grad, class MakeInputs>
void check_all_terms(const Pred& pred, const Regression& regression, const Binary& binary,
                     Grad& grad, const T* grad_memory, const fixture<T>& fx,
                     const std::vector<long double>& weights, MakeInputs make_inputs) {
  for (const sl::reduction reduction : {sl::reduction::mean, sl::reduction::sum}) {
    for_each_term<T>([&](const char* name, const auto& term, auto elementwise, bool binary_targets) {
      INFO(name << (reduction == sl::reduction::mean ? ", mean" : ", sum"));
      const std::vector<T>& target_values = binary_targets ? fx.binary_target : fx.regression_target;
      const reduced_reference expected =
          reduce_reference(elementwise, fx.pred, target_values, weights, reduction);
      const long double scale = reduction == sl::reduction::mean ? 1.0L / static_cast<long double>(fx.pred.size()) : 1.0L;
      auto check_with = [&](const auto& in) {
        const auto result = sl::evaluate(term, in, grad, reduction);
        CHECK(close(result.value, expected.value));
        CHECK(count_mismatches(grad_memory, expected.grad, scale) == 0);
        CHECK(close(sl::value(term, in, reduction).value, expected.value));
      };
      if (binary_targets)
        check_with(make_inputs(pred, binary));
      else
        check_with(make_inputs(pred, regression));
    });
  }
}

template <class T, class Pred, class Regression, class Binary, class Grad>
void check_all_terms(const Pred& pred, const Regression& regression, const Binary& binary,
                     Grad& grad, const T* grad_memory, const fixture<T>& fx) {
  check_all_terms(pred, regression, binary, grad, grad_memory, fx, ones(fx.pred.size()),
                  [](const auto& p, const auto& t) { return sl::inputs(p, t); });
}

// ---------------------------------------------------------------------------------------------
// AdaptiveHuber through a backend: a [batch 2, time 5, features 3] mel with lengths {5, 2}, and a
// [batch x time] frame term with a mask, alone (both reductions), composed and weighted, and one
// ErrorScale step through sl::apply. Each backend builds its objects from the fixtures (mel: seed
// 21, frame: seed 22) in memory order and calls this.

namespace adaptive_huber_case {
inline constexpr std::size_t batch = 2, max_frames = 5, features = 3;
inline constexpr std::size_t count = batch * max_frames * features, frames = batch * max_frames;
/// The frame mask, in memory order.
inline constexpr double mask[frames] = {1, 0.5, 0, 1, 1, 1, 1, 0, 0.25, 1};
inline const std::vector<int> lengths{5, 2};
}  // namespace adaptive_huber_case

template <class T, class Mel, class Frame, class Mask, class MelGrad, class FrameGrad>
void check_adaptive_huber(const fixture<T>& mel, const fixture<T>& frame, const Mel& mel_pred, const Mel& mel_target,
                          const Frame& frame_pred, const Frame& frame_target, const Mask& mask, MelGrad& d_mel,
                          FrameGrad& d_frame) {
  using namespace adaptive_huber_case;
  const sl::AdaptiveHuber<T> mel_term{.k = T(1.5), .scale = T(0.5)}, frame_term{.k = T(3.88), .scale = T(0.75)};
  const long double mel_delta = T(T(1.5) * T(0.5)), frame_delta = T(T(3.88) * T(0.75));
  const auto adaptive = [](long double delta) {
    return [delta](long double p, long double t) {
      const value_and_slope huber = huber_reference(p, t, delta);
      return value_and_slope{huber.value / delta, huber.grad / delta};
    };
  };
  std::vector<long double> mel_weights(count, 0.0L), frame_weights(frames);
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t t = 0; t < static_cast<std::size_t>(lengths[b]); ++t)
      for (std::size_t f = 0; f < features; ++f) mel_weights[(b * max_frames + t) * features + f] = 1;
  for (std::size_t i = 0; i < frames; ++i) frame_weights[i] = mask.data()[i];

  // Alone, both reductions.
  for (const sl::reduction reduction : {sl::reduction::mean, sl::reduction::sum}) {
    const auto expected = reduce_reference(adaptive(frame_delta), frame.pred, frame.regression_target, frame_weights,
                                           reduction);
    const auto result = sl::evaluate(frame_term, sl::inputs(frame_pred, frame_target, mask), d_frame, reduction);
    CHECK(close(result.value, expected.value));
    CHECK(count_mismatches(d_frame.data(), expected.grad, reduction == sl::reduction::mean ? 1.0L / 8 : 1.0L) == 0);
  }

  // Composed, weighted.
  auto loss = sl::compose(sl::term(mel_term, T(45)), sl::term(frame_term, T(2)));
  const auto evaluate = [&] {
    return loss.evaluate(sl::inputs(mel_pred, mel_target, sl::lengths(lengths, max_frames, features)),
                         sl::inputs(frame_pred, frame_target, mask), sl::grads(d_mel, d_frame));
  };
  const auto r = evaluate();
  auto mel_expected = reduce_reference(adaptive(mel_delta), mel.pred, mel.regression_target, mel_weights,
                                       sl::reduction::mean);
  auto frame_expected = reduce_reference(adaptive(frame_delta), frame.pred, frame.regression_target, frame_weights,
                                         sl::reduction::mean);
  CHECK(close(r.values[0], mel_expected.value));
  CHECK(close(r.values[1], frame_expected.value));
  CHECK(close(r.total, 45 * mel_expected.value + 2 * frame_expected.value, 45));
  for (long double& g : mel_expected.grad) g *= 45;
  for (long double& g : frame_expected.grad) g *= 2;
  CHECK(count_mismatches(d_mel.data(), mel_expected.grad, 45.0L / 21) == 0);
  // The padding, sequence 1's frames 2-4, gets a zero gradient.
  const T* padding = d_mel.data() + (max_frames + 2) * features;
  CHECK(std::all_of(padding, padding + 3 * features, [](T g) { return g == T(0); }));
  CHECK(count_mismatches(d_frame.data(), frame_expected.grad, 2.0L / 6.75L) == 0);

  // One ErrorScale step: the scale becomes each term's mean value (debiased EMA of one value), and
  // the next evaluation runs with delta = k x that value.
  sl::Stabilizer<sl::ErrorScale<2, T>> guard;
  sl::apply(loss, guard.update(r, T(1)));
  CHECK(close(loss.template term<0>().scale, mel_expected.value));
  CHECK(close(loss.template term<1>().scale, frame_expected.value));
  const long double next_mel_delta = T(T(1.5) * loss.template term<0>().scale);
  const auto next = evaluate();
  CHECK(close(next.values[0], reduce_reference(adaptive(next_mel_delta), mel.pred, mel.regression_target, mel_weights,
                                               sl::reduction::mean).value));
}

}  // namespace backend_reference
