#pragma once
// Evaluates one term on one set of inputs: validation, then the fused CPU pass (value and,
// when asked, the gradient w.r.t. pred in the same pass; no temporaries, no allocation).
//
// Errors (all derive from steadyloss::error, a std::invalid_argument):
//   invalid_parameter  a term parameter out of range (Huber delta <= 0, ...), a reduction that is
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
#include <concepts>
#include <cstddef>
#include <functional>
#include <limits>
#include <optional>
#include <type_traits>

#include "../detail/cpu_pass.hpp"
#include "checks.hpp"
#include "config.hpp"
#include "errors.hpp"
#include "inputs.hpp"
#include "reduction.hpp"
#include "term.hpp"

namespace steadyloss {
namespace detail {

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
                    reduction reduction, typename Term::value_type scale = 1) {
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
  const bool mean = reduction == reduction::mean;
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
/// (Isa, here and in run_term: never given by users; cpu_isa.hpp says why it is there.)
template <class Isa = isa_tag, class Term, class Weighting, class Exec>
term_result<typename Term::value_type> execute_term(const Term& term,
                                                    const term_inputs<typename Term::value_type, Weighting>& in,
                                                    const term_plan& plan, typename Term::value_type* g,
                                                    const Exec& executor) {
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
template <class Isa = isa_tag, class Term, class Weighting, class Exec = serial_executor>
term_result<typename Term::value_type> run_term(
    const Term& term, const term_inputs<typename Term::value_type, Weighting>& in,
    const std::optional<mutable_tensor_view<typename Term::value_type>>& grad, reduction reduction,
    typename Term::value_type scale, const Exec& executor = Exec{}) {
  static_assert(Executor<Exec, Term>,
                "steadyloss: the executor has no run<WriteGrad, Weighted>(term, pred, target, weight, grad, n, "
                "grad_scale) returning sl::pass_sum for this term (see sl::Executor in core/executor.hpp)");
  const term_plan plan = plan_term(term, in, grad, reduction, scale);
  return execute_term<Isa>(term, in, plan, grad ? grad->data : nullptr, executor);
}

}  // namespace detail

namespace detail {
template <class T>
inline constexpr bool is_term_inputs = false;
template <class T, class Weighting>
inline constexpr bool is_term_inputs<term_inputs<T, Weighting>> = true;

template <class Grads>
struct grad_outputs_value {};
template <class T, std::size_t N>
struct grad_outputs_value<grad_outputs<T, N>> {
  using type = T;
};

/// The gradients (a grad_outputs) must have the terms' value_type; the mixes users write by
/// mistake (a float loss, double gradient buffers) get a message naming both types. False when
/// they differ, so that callers stop before the raw conversion error.
template <class TermValue, class Grads>
constexpr bool check_gradient_value_type() {
  using GradValue = typename grad_outputs_value<Grads>::type;
  constexpr bool float_terms_double_grads = std::same_as<TermValue, float> && std::same_as<GradValue, double>;
  constexpr bool double_terms_float_grads = std::same_as<TermValue, double> && std::same_as<GradValue, float>;
  static_assert(!float_terms_double_grads,
                "steadyloss: the loss is float but the gradients are double; a gradient has its term's "
                "value_type: pass float gradient buffers (std::vector<float>), or use double terms "
                "(Huber<double>) on double pred and target");
  static_assert(!double_terms_float_grads,
                "steadyloss: the loss is double but the gradients are float; a gradient has its term's "
                "value_type: pass double gradient buffers (std::vector<double>), or use float terms "
                "(Huber<float>) on float pred and target");
  static_assert(std::same_as<TermValue, GradValue> || float_terms_double_grads || double_terms_float_grads,
                "steadyloss: the gradients' value_type differs from the term's; pass gradient buffers "
                "of the term's value_type");
  return std::same_as<TermValue, GradValue>;
}

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
/// (Isa: never given; cpu_isa.hpp says why it is there.)
template <class Term, class Inputs, class Isa = detail::isa_tag>
auto value(const Term& term, const Inputs& in, reduction reduction = reduction::mean) {
  if constexpr (detail::check_term_and_inputs<Term, Inputs>()) {
    return detail::run_term<Isa>(term, in, std::nullopt, reduction, typename Term::value_type(1));
  }
}

/// Value of one term and its gradient w.r.t. pred, written into `grad` (overwritten), in one pass.
template <class Term, class Inputs, class Grad, class Isa = detail::isa_tag>
auto evaluate(const Term& term, const Inputs& in, Grad&& grad, reduction reduction = reduction::mean) {
  if constexpr (detail::check_term_and_inputs<Term, Inputs>()) {
    const auto out = grads(static_cast<Grad&&>(grad));
    if constexpr (detail::check_gradient_value_type<typename Term::value_type, std::remove_cvref_t<decltype(out)>>())
      return detail::run_term<Isa>(term, in, out.views[0], reduction, typename Term::value_type(1));
  }
}

}  // namespace steadyloss
