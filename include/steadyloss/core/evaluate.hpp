#pragma once
// Evaluates one term on one set of inputs: validation, then the fused CPU pass (value and,
// when asked, the gradient w.r.t. pred in the same pass; no temporaries, no allocation).
//
// Errors (all derive from steadyloss::error, a std::invalid_argument):
//   invalid_parameter  a term parameter out of range (Huber delta <= 0, ...), a Reduction that is
//                      neither mean nor sum, a term weight (base x multiplier) that is not finite
//   shape_mismatch     sizes that do not fit together (pred vs target, grad; a mask's size x its
//                      frame size, or batch x max_frames x frame_size of lengths, not equal to
//                      pred's size or overflowing size_t), each message naming both numbers
//   invalid_input      empty tensors, null data, targets outside a term's domain, an all-zero mask
//                      or all-zero lengths with mean (with sum: an empty batch, value 0, gradient 0),
//                      negative, non-finite or subnormal mask weights (a nonzero weight below the
//                      smallest normal T would make w x loss underflow in T: the value would
//                      silently drop toward 0), lengths out of range, overlapping buffers, a
//                      gradient factor that overflows the term's value_type (see
//                      check_gradient_scale: only overflow; a factor that underflows toward 0,
//                      a term weight of 0 or 1e-44, is fine)
// Parameters, sizes, masks, lengths and buffer overlaps are checked before anything is written
// (for a composed loss: every term's, before the first term runs). Targets are checked inside
// the fused pass (a separate pass would cost a third more memory traffic), so when invalid_input
// reports a target, the gradient buffers have been written and must be discarded.
//
// NaN or Inf in pred propagate as IEEE arithmetic does (as in PyTorch): the value becomes NaN
// or Inf and so does the gradient at that element. SpikeDampener treats such a step as a skip.

#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <optional>
#include <type_traits>

#include "../detail/cpu_pass.hpp"
#include "config.hpp"
#include "errors.hpp"
#include "inputs.hpp"
#include "reduction.hpp"
#include "term.hpp"

namespace steadyloss {
namespace detail {

template <class T>
bool overlaps(const T* a, std::size_t a_size, const T* b, std::size_t b_size) {
  std::less<const T*> before;
  return before(a, b + b_size) && before(b, a + a_size);
}

template <class Term>
struct term_argument {
  static_assert(LossTerm<Term>,
                "steadyloss: this type is not a loss term; a term needs `using value_type = float "
                "or double`, `value_type value(value_type pred, value_type target) const` and "
                "`value_type grad(value_type pred, value_type target) const`");
  static constexpr bool ok = LossTerm<Term>;
};

/// a x b into `product`; false (product untouched) when it does not fit in size_t.
inline bool multiply_fits(std::size_t a, std::size_t b, std::size_t& product) {
  if (b != 0 && a > std::numeric_limits<std::size_t>::max() / b) return false;
  product = a * b;
  return true;
}

/// Rejects a Reduction that is neither mean nor sum (a cast integer), rather than reading it as sum.
inline void check_reduction(Reduction reduction, const char* function) {
  if (reduction != Reduction::mean && reduction != Reduction::sum)
    fail<invalid_parameter>(function, ": reduction must be Reduction::mean or Reduction::sum, got ",
                            static_cast<int>(reduction));
}

/// How a caller of check_mask_shape states a frame size, for its message: `before` frame_size
/// `after` for a known one, `general` otherwise.
struct frame_size_fix {
  const char* before;
  const char* after;
  const char* general;
};
/// sl::inputs(pred, target, mask) callers.
inline constexpr frame_size_fix per_frame_fix{"write sl::per_frame(mask, ", ")", "sl::per_frame(mask, frame_size)"};
/// Raw sl::cuda::launch_term callers, who describe the mask in a cuda::term_weighting.
inline constexpr frame_size_fix term_weighting_fix{"set term_weighting::frame_size = ", "",
                                                    "term_weighting::frame_size"};

/// The sizes a mask must have: count x frame_size = n (also the CUDA executor's check, whose
/// callers pass term_weighting_fix).
inline void check_mask_shape(std::size_t count, std::size_t frame_size, std::size_t n, const char* function,
                             const frame_size_fix& fix = per_frame_fix) {
  if (frame_size == 1 && count != n) {
    if (count != 0 && n % count == 0)
      fail<shape_mismatch>(function, ": mask has ", count, " elements, pred ", n,
                           "; a mask holds one weight per element; for one weight per frame of ", n / count,
                           " elements ", fix.before, n / count, fix.after);
    fail<shape_mismatch>(function, ": mask has ", count, " elements, pred ", n,
                         "; a mask holds one weight per element (or per frame: ", fix.general, ")");
  }
  std::size_t covered = 0;
  if (!multiply_fits(count, frame_size, covered))
    fail<shape_mismatch>(function, ": pred has ", n, " elements, but the mask's ", count, " frames x frame_size ",
                         frame_size, " overflow size_t");
  if (covered != n)
    fail<shape_mismatch>(function, ": pred has ", n, " elements, but the mask's ", count, " frames x frame_size ",
                         frame_size, " cover ", covered);
}

/// What check_mask found: sum(w) over the mask (not yet per element) and the largest weight.
struct mask_weights_summary {
  double sum = 0;
  double max = 0;
};

/// Checks the mask's sizes and weights. A nonzero weight must be a normal number: the fused pass
/// forms w x loss in T, and with a subnormal w (float's 1e-45) that product underflows to 0 for
/// every loss below 1, so the masked mean would come out 0 (or a few bits of it) instead of
/// sum(w l) / sum(w). A weight at or above the smallest normal keeps w x loss as accurate as
/// IEEE arithmetic (and PyTorch's `(w * l).sum() / w.sum()` in the same dtype) makes it. One rule
/// for both mask forms, and for the CUDA kernel, which forms w x loss in float for every mask.
template <class T>
mask_weights_summary check_mask(const frame_mask<T>& mask, std::size_t n, bool mean) {
  check_mask_shape(mask.weights.size, mask.frame_size, n, "evaluate");
  if (mask.weights.data == nullptr) fail<invalid_input>("evaluate: the mask's data pointer is null");
  mask_weights_summary summary;
  for (std::size_t i = 0; i < mask.weights.size; ++i) {
    const T w = mask.weights.data[i];
    if (!(w >= T(0)) || !std::isfinite(w))
      fail<invalid_input>("evaluate: mask[", i, "] = ", w, "; mask weights must be finite and >= 0");
    if (w != T(0) && w < std::numeric_limits<T>::min())
      fail<invalid_input>("evaluate: mask[", i, "] = ", w, " is subnormal; a nonzero mask weight must be at least ",
                          std::numeric_limits<T>::min(), " (the smallest normal value), or w x loss underflows; "
                          "scale the mask up (a masked mean does not change)");
    summary.sum += static_cast<double>(w);
    if (static_cast<double>(w) > summary.max) summary.max = static_cast<double>(w);
  }
  // With sum, an all-zero mask is an empty batch (value 0, gradient 0); a mean of nothing is undefined.
  if (mean && summary.sum == 0) fail<invalid_input>("evaluate: the mask is all zero; there is nothing to average");
  if (!std::isfinite(summary.sum))
    fail<invalid_input>("evaluate: the mask weights sum to ", summary.sum, ", which is not finite");
  return summary;
}

/// The largest factor a gradient is multiplied by, formed in double: term weight `scale` x mask
/// weight / `denominator` (mask weight 1 without a mask). When `weight_in_double` (the CPU's
/// per-frame path) each frame's factor scale x (w / denominator) is formed in double and then
/// converted to T; otherwise (every other path, and the CUDA kernel) scale / denominator is
/// converted to T first and multiplied by w in T, so both must fit.
STEADYLOSS_HOST_DEVICE inline double largest_gradient_factor(double scale, double denominator, double max_weight,
                                                             bool weight_in_double) {
  const double weighted = scale * (max_weight / denominator);
  if (weight_in_double) return weighted;
  const double unweighted = scale / denominator;
  return weighted > unweighted ? weighted : unweighted;
}

/// The message for a gradient factor that overflows T (shared with the CUDA executor's report).
[[noreturn]] inline void fail_gradient_scale(const char* function, double scale, double denominator,
                                             bool masked, double max_weight, double factor, double limit) {
  if (masked)
    fail<invalid_input>(function, ": the gradient scale, term weight ", scale, " x largest mask weight ", max_weight,
                        " / denominator ", denominator, " = ", factor, ", overflows the term's value_type (max ",
                        limit, "); rescale the mask or the term weight");
  fail<invalid_input>(function, ": the gradient scale, term weight ", scale, " / denominator ", denominator, " = ",
                      factor, ", overflows the term's value_type (max ", limit, "); rescale the term weight");
}

/// Rejects a gradient factor that would overflow T (Inf gradients, NaN where 0 x Inf). Compared
/// in double against T's largest value, so nothing out of T's range is ever converted to T. A
/// factor that underflows is not an error: the gradient then underflows toward 0, as IEEE
/// arithmetic would (a term weight of 0 gives an exactly zero gradient).
template <class T>
void check_gradient_scale(double scale, double denominator, bool masked, double max_weight, bool weight_in_double,
                          const char* function) {
  constexpr double limit = static_cast<double>(std::numeric_limits<T>::max());
  const double factor = largest_gradient_factor(scale, denominator, masked ? max_weight : 1.0, weight_in_double);
  if (!(factor <= limit)) fail_gradient_scale(function, scale, denominator, masked, max_weight, factor, limit);
}

/// A double that is a value of T's range, converted to T; beyond it, +-Inf (what IEEE arithmetic
/// in T would have produced), never an out-of-range conversion.
template <class T>
T to_value_type(double x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    constexpr double limit = static_cast<double>(std::numeric_limits<T>::max());
    if (x > limit) return std::numeric_limits<T>::infinity();
    if (x < -limit) return -std::numeric_limits<T>::infinity();
    return static_cast<T>(x);
  }
}

/// Checks the lengths against pred's size and [0, max_frames]; returns the number of valid frames.
template <class Int>
double check_lengths(const sequence_lengths<Int>& spec, std::size_t n, bool mean, const char* function) {
  std::size_t sequence_size = 0, covered = 0;
  if (!multiply_fits(spec.max_frames, spec.frame_size, sequence_size) ||
      !multiply_fits(spec.batch, sequence_size, covered))
    fail<shape_mismatch>(function, ": pred has ", n, " elements, but batch (", spec.batch, " lengths) x max_frames (",
                         spec.max_frames, ") x frame_size (", spec.frame_size, ") overflows size_t");
  if (covered != n)
    fail<shape_mismatch>(function, ": pred has ", n, " elements, but batch (", spec.batch, " lengths) x max_frames (",
                         spec.max_frames, ") x frame_size (", spec.frame_size, ") = ", covered);
  if (spec.lengths == nullptr) fail<invalid_input>(function, ": the lengths' data pointer is null");
  double frames = 0;
  for (std::size_t b = 0; b < spec.batch; ++b) {
    const Int length = spec.lengths[b];
    bool negative = false;
    if constexpr (std::is_signed_v<Int>) negative = length < 0;
    if (negative || static_cast<std::size_t>(length) > spec.max_frames)
      fail<invalid_input>(function, ": lengths[", b, "] = ", +length, ", outside [0, max_frames = ",
                          spec.max_frames, "]");
    frames += static_cast<double>(length);
  }
  // With sum, all-zero lengths are an empty batch (value 0, gradient 0); a mean of nothing is undefined.
  if (mean && frames == 0)
    fail<invalid_input>(function, ": every sequence length is 0; there is nothing to average");
  return frames;
}

/// Cold path: names the first kept target outside the term's domain.
template <class Term, class T, class IsKept>
[[noreturn]] void report_target_outside(const tensor_view<T>& target, std::size_t count,
                                        IsKept is_kept) {
  for (std::size_t i = 0; i < target.size; ++i) {
    if (is_kept(i) && !target_in_domain<Term>(target.data[i]))
      fail<invalid_input>("evaluate: ", name_of<Term>(), " targets must lie in [", +Term::target_min,
                          ", ", +Term::target_max, "]; target[", i, "] = ", target.data[i], " (",
                          count, " outside)");
  }
  fail<invalid_input>("evaluate: ", name_of<Term>(), " found ", count, " targets outside [",
                      +Term::target_min, ", ", +Term::target_max, "]");
}

/// Everything run_term checks before it writes anything, and what the checks computed.
struct term_plan {
  std::size_t n = 0;
  bool write_grad = false;
  double denominator = 1;     ///< what the reduced value is divided by
  double scale = 1;           ///< the term weight the gradient is multiplied by
  double grad_scale = 1;      ///< scale / denominator: the gradient's factor before mask weights
                              ///< (fits in T when write_grad, except on the per-frame path,
                              ///< which forms scale x (w / denominator) per frame instead)
};

template <class T>
void check_data(const T* data, std::size_t size, const char* what) {
  if (data == nullptr && size != 0)
    fail<invalid_input>("evaluate: ", what, " has ", size, " elements but a null data pointer");
}

/// Checks a term, its inputs and its gradient output (nullopt: value only) and plans the pass;
/// `scale` multiplies the gradient (a composed loss passes its term weight).
/// Throws (invalid_parameter, shape_mismatch, invalid_input) before anything is written.
template <class Term, class Weighting>
term_plan plan_term(const Term& term, const term_inputs<typename Term::value_type, Weighting>& in,
                    const std::optional<mutable_tensor_view<typename Term::value_type>>& grad,
                    Reduction reduction, typename Term::value_type scale = 1) {
  using T = typename Term::value_type;
  validate(term);
  check_reduction(reduction, "evaluate");
  term_plan plan;
  plan.n = in.pred.size;
  const std::size_t n = plan.n;
  if (in.target.size != n)
    fail<shape_mismatch>("evaluate: pred has ", n, " elements, target ", in.target.size);
  if (n == 0) fail<invalid_input>("evaluate: pred and target are empty");
  check_data(in.pred.data, n, "pred");
  check_data(in.target.data, n, "target");
  plan.write_grad = grad.has_value();
  if (plan.write_grad) {
    if (grad->size != n) fail<shape_mismatch>("evaluate: grad has ", grad->size, " elements, pred ", n);
    check_data(grad->data, n, "grad");
    if (overlaps<T>(grad->data, n, in.pred.data, n) || overlaps<T>(grad->data, n, in.target.data, n))
      fail<invalid_input>("evaluate: the gradient buffer overlaps pred or target");
  }
  const bool mean = reduction == Reduction::mean;
  double max_weight = 1;
  if constexpr (std::is_same_v<Weighting, unweighted>) {
    if (mean) plan.denominator = static_cast<double>(n);
  } else if constexpr (std::is_same_v<Weighting, frame_mask<T>>) {
    const frame_mask<T>& mask = in.weighting;
    const mask_weights_summary weights = check_mask(mask, n, mean);
    max_weight = weights.max;
    if (plan.write_grad && overlaps<T>(grad->data, n, mask.weights.data, mask.weights.size))
      fail<invalid_input>("evaluate: the gradient buffer overlaps the mask");
    if (mean) plan.denominator = weights.sum * static_cast<double>(mask.frame_size);
  } else {
    const double total_frames = check_lengths(in.weighting, n, mean, "evaluate");
    if (mean) plan.denominator = total_frames * static_cast<double>(in.weighting.frame_size);
  }
  // The normalizer is formed in double; what the gradient multiplies by must then fit in T: tiny
  // mask weights (a sum of 1e-37 under a term weight of 100) would make it overflow to Inf and the
  // gradient Inf or NaN.
  if (!(plan.denominator > 0) || !std::isfinite(plan.denominator))
    fail<invalid_input>("evaluate: the mean's denominator (the weight sum) is ", plan.denominator,
                        "; it must be finite and > 0");
  plan.scale = static_cast<double>(scale);
  plan.grad_scale = plan.scale / plan.denominator;
  if (plan.write_grad) {
    constexpr bool masked = std::is_same_v<Weighting, frame_mask<T>>;
    bool per_frame = false;
    if constexpr (masked) per_frame = in.weighting.frame_size != 1;
    check_gradient_scale<T>(plan.scale, plan.denominator, masked, max_weight, per_frame, "evaluate");
  }
  return plan;
}

/// Runs a planned term: the fused passes (through `executor`) and the target-domain check.
/// `g` is the gradient's storage when plan.write_grad.
template <class Term, class Weighting, class Executor>
term_result<typename Term::value_type> execute_term(const Term& term,
                                                    const term_inputs<typename Term::value_type, Weighting>& in,
                                                    const term_plan& plan, typename Term::value_type* g,
                                                    const Executor& executor) {
  using T = typename Term::value_type;
  const bool write_grad = plan.write_grad;
  auto pass = [&](const T* pred, const T* target, const T* weight, T* grad, std::size_t count,
                  T grad_scale) -> pass_sum {
    constexpr const T* no_weight = nullptr;
    if constexpr (std::is_same_v<Weighting, frame_mask<T>>) {
      if (weight != nullptr)
        return write_grad ? executor.template run<true, true>(term, pred, target, weight, grad, count, grad_scale)
                          : executor.template run<false, true>(term, pred, target, weight, grad, count, grad_scale);
    }
    return write_grad ? executor.template run<true, false>(term, pred, target, no_weight, grad, count, grad_scale)
                      : executor.template run<false, false>(term, pred, target, no_weight, grad, count, grad_scale);
  };
  pass_sum total;
  auto check_targets = [&](auto is_kept) {
    if constexpr (checks_target_domain<Term>)
      if (total.out_of_domain != 0) report_target_outside<Term>(in.target, total.out_of_domain, is_kept);
  };
  const std::size_t n = plan.n;
  // plan_term checked that it fits in T when a gradient is written; the value alone never uses it.
  const T grad_scale = write_grad ? static_cast<T>(plan.grad_scale) : T(0);

  if constexpr (std::is_same_v<Weighting, unweighted>) {
    total = pass(in.pred.data, in.target.data, nullptr, g, n, grad_scale);
    check_targets([](std::size_t) { return true; });
  } else if constexpr (std::is_same_v<Weighting, frame_mask<T>>) {
    const tensor_view<T>& mask = in.weighting.weights;
    const std::size_t frame_size = in.weighting.frame_size;
    if (frame_size == 1) {
      total = pass(in.pred.data, in.target.data, mask.data, g, n, grad_scale);
    } else {
      // Each frame's factor is formed in double as scale x (w / denominator), the form plan_term
      // checked against T's range (w / denominator <= 1 for a mean, so a mean's always fits).
      // Frames of equal weight (the valid part of a sequence, its padding) run as one contiguous
      // pass, so a frame mask costs no more than no mask.
      for (std::size_t frame = 0; frame < mask.size;) {
        const T w = mask.data[frame];
        std::size_t end = frame + 1;
        while (end < mask.size && mask.data[end] == w) ++end;
        const std::size_t offset = frame * frame_size, count = (end - frame) * frame_size;
        if (w == T(0)) {
          if (write_grad) fill_zero(g + offset, count);
        } else {
          const T frame_scale =
              write_grad ? static_cast<T>(plan.scale * (static_cast<double>(w) / plan.denominator)) : T(0);
          const pass_sum run = pass(in.pred.data + offset, in.target.data + offset, nullptr,
                                    write_grad ? g + offset : nullptr, count, frame_scale);
          total.value += static_cast<double>(w) * run.value;
          total.out_of_domain += run.out_of_domain;
        }
        frame = end;
      }
    }
    check_targets([&](std::size_t i) { return mask.data[i / frame_size] != T(0); });
  } else {
    const auto& spec = in.weighting;
    const std::size_t frame_size = spec.frame_size, sequence_size = spec.max_frames * frame_size;
    for (std::size_t b = 0; b < spec.batch; ++b) {
      const std::size_t offset = b * sequence_size;
      const std::size_t valid = static_cast<std::size_t>(spec.lengths[b]) * frame_size;
      if (valid != 0) {
        const pass_sum run = pass(in.pred.data + offset, in.target.data + offset, nullptr,
                                  write_grad ? g + offset : nullptr, valid, grad_scale);
        total.value += run.value;
        total.out_of_domain += run.out_of_domain;
      }
      if (write_grad) fill_zero(g + offset + valid, sequence_size - valid);
    }
    check_targets([&](std::size_t i) {
      return i % sequence_size < static_cast<std::size_t>(spec.lengths[i / sequence_size]) * frame_size;
    });
  }
  return {to_value_type<T>(total.value / plan.denominator), plan.denominator};
}

/// One term, checked then run. grad: nullopt for the value only.
template <class Term, class Weighting, class Executor = serial_executor>
term_result<typename Term::value_type> run_term(
    const Term& term, const term_inputs<typename Term::value_type, Weighting>& in,
    const std::optional<mutable_tensor_view<typename Term::value_type>>& grad, Reduction reduction,
    typename Term::value_type scale, const Executor& executor = Executor{}) {
  const term_plan plan = plan_term(term, in, grad, reduction, scale);
  return execute_term(term, in, plan, grad ? grad->data : nullptr, executor);
}

}  // namespace detail

namespace detail {
template <class T>
inline constexpr bool is_term_inputs = false;
template <class T, class Weighting>
inline constexpr bool is_term_inputs<term_inputs<T, Weighting>> = true;

template <class Term, class Inputs>
constexpr bool check_term_and_inputs() {
  if constexpr (term_argument<Term>::ok) {
    static_assert(is_term_inputs<Inputs>, "steadyloss: evaluate the term on sl::inputs(pred, target[, mask])");
    if constexpr (is_term_inputs<Inputs>)
      static_assert(std::same_as<typename Inputs::value_type, typename Term::value_type>,
                    "steadyloss: the tensors' value_type differs from the term's (Huber<float> "
                    "needs float tensors, Huber<double> double tensors)");
    if constexpr (is_term_inputs<Inputs>)
      return std::same_as<typename Inputs::value_type, typename Term::value_type>;
  }
  return false;
}
}  // namespace detail

/// Value of one term, reduced (mean by default). No gradient is computed.
template <class Term, class Inputs>
auto value(const Term& term, const Inputs& in, Reduction reduction = Reduction::mean) {
  if constexpr (detail::check_term_and_inputs<Term, Inputs>()) {
    return detail::run_term(term, in, std::nullopt, reduction, typename Term::value_type(1));
  }
}

/// Value of one term and its gradient w.r.t. pred, written into `grad` (overwritten), in one pass.
template <class Term, class Inputs, class Grad>
auto evaluate(const Term& term, const Inputs& in, Grad&& grad, Reduction reduction = Reduction::mean) {
  if constexpr (detail::check_term_and_inputs<Term, Inputs>()) {
    const auto out = grads(static_cast<Grad&&>(grad));
    static_assert(std::same_as<typename decltype(out.views)::value_type,
                               mutable_tensor_view<typename Term::value_type>>,
                  "steadyloss::evaluate: the gradient must have the term's value_type");
    return detail::run_term(term, in, out.views[0], reduction, typename Term::value_type(1));
  }
}

}  // namespace steadyloss
