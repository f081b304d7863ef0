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
//                      negative or non-finite mask weights, lengths out of range, overlapping
//                      buffers, a gradient scale (weight / denominator, formed in double) that
//                      does not fit in the term's value_type
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

/// The sizes a mask must have: count x frame_size = n (also the CUDA executor's check).
inline void check_mask_shape(std::size_t count, std::size_t frame_size, std::size_t n, const char* function) {
  if (frame_size == 1 && count != n) {
    if (count != 0 && n % count == 0)
      fail<shape_mismatch>(function, ": mask has ", count, " elements, pred ", n,
                           "; a mask holds one weight per element; for one weight per frame of ", n / count,
                           " elements write sl::per_frame(mask, ", n / count, ")");
    fail<shape_mismatch>(function, ": mask has ", count, " elements, pred ", n,
                         "; a mask holds one weight per element (or per frame: sl::per_frame(mask, frame_size))");
  }
  std::size_t covered = 0;
  if (!multiply_fits(count, frame_size, covered))
    fail<shape_mismatch>(function, ": pred has ", n, " elements, but the mask's ", count, " frames x frame_size ",
                         frame_size, " overflow size_t");
  if (covered != n)
    fail<shape_mismatch>(function, ": pred has ", n, " elements, but the mask's ", count, " frames x frame_size ",
                         frame_size, " cover ", covered);
}

/// Checks the mask's sizes and weights; returns sum(w) over the mask (not yet per element).
template <class T>
double check_mask(const frame_mask<T>& mask, std::size_t n, bool mean) {
  check_mask_shape(mask.weights.size, mask.frame_size, n, "evaluate");
  if (mask.weights.data == nullptr) fail<invalid_input>("evaluate: the mask's data pointer is null");
  double sum = 0;
  for (std::size_t i = 0; i < mask.weights.size; ++i) {
    const T w = mask.weights.data[i];
    if (!(w >= T(0)) || !std::isfinite(w))
      fail<invalid_input>("evaluate: mask[", i, "] = ", w, "; mask weights must be finite and >= 0");
    sum += static_cast<double>(w);
  }
  // With sum, an all-zero mask is an empty batch (value 0, gradient 0); a mean of nothing is undefined.
  if (mean && sum == 0) fail<invalid_input>("evaluate: the mask is all zero; there is nothing to average");
  if (!std::isfinite(sum)) fail<invalid_input>("evaluate: the mask weights sum to ", sum, ", which is not finite");
  return sum;
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
  double grad_scale = 1;      ///< scale / denominator: the gradient's factor before mask weights
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
  if constexpr (std::is_same_v<Weighting, unweighted>) {
    if (mean) plan.denominator = static_cast<double>(n);
  } else if constexpr (std::is_same_v<Weighting, frame_mask<T>>) {
    const frame_mask<T>& mask = in.weighting;
    const double weight_sum = check_mask(mask, n, mean);
    if (plan.write_grad && overlaps<T>(grad->data, n, mask.weights.data, mask.weights.size))
      fail<invalid_input>("evaluate: the gradient buffer overlaps the mask");
    if (mean) plan.denominator = weight_sum * static_cast<double>(mask.frame_size);
  } else {
    const double total_frames = check_lengths(in.weighting, n, mean, "evaluate");
    if (mean) plan.denominator = total_frames * static_cast<double>(in.weighting.frame_size);
  }
  // The normalizer is formed in double; what the gradient multiplies by must then fit in T: tiny
  // mask weights (a sum of 1e-45) would make it overflow to Inf and the gradient Inf or NaN.
  if (!(plan.denominator > 0) || !std::isfinite(plan.denominator))
    fail<invalid_input>("evaluate: the mean's denominator (the weight sum) is ", plan.denominator,
                        "; it must be finite and > 0");
  plan.grad_scale = static_cast<double>(scale) / plan.denominator;
  if (plan.write_grad && scale != T(0)) {
    const T grad_scale = static_cast<T>(plan.grad_scale);
    if (!std::isfinite(grad_scale) || !(grad_scale > T(0)))
      fail<invalid_input>("evaluate: the gradient scale, term weight / denominator = ", scale, " / ",
                          plan.denominator, " = ", plan.grad_scale,
                          ", does not fit in the term's value_type; rescale the mask or term weights");
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
  const T grad_scale = static_cast<T>(plan.grad_scale);

  if constexpr (std::is_same_v<Weighting, unweighted>) {
    total = pass(in.pred.data, in.target.data, nullptr, g, n, grad_scale);
    check_targets([](std::size_t) { return true; });
  } else if constexpr (std::is_same_v<Weighting, frame_mask<T>>) {
    const tensor_view<T>& mask = in.weighting.weights;
    const std::size_t frame_size = in.weighting.frame_size;
    if (frame_size == 1) {
      total = pass(in.pred.data, in.target.data, mask.data, g, n, grad_scale);
    } else {
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
          const pass_sum run = pass(in.pred.data + offset, in.target.data + offset, nullptr,
                                    write_grad ? g + offset : nullptr, count,
                                    static_cast<T>(plan.grad_scale * static_cast<double>(w)));
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
  return {static_cast<T>(total.value / plan.denominator), plan.denominator};
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
