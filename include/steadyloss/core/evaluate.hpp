#pragma once
// Evaluates one term on one set of inputs: validation, then the fused CPU pass (value and,
// when asked, the gradient w.r.t. pred in the same pass; no temporaries, no allocation).
//
// Errors (all derive from steadyloss::error, a std::invalid_argument):
//   invalid_parameter  a term parameter out of range (Huber delta <= 0, ...)
//   shape_mismatch     sizes that do not fit together (pred vs target, grad, mask, lengths)
//   invalid_input      empty tensors, targets outside a term's domain, an all-zero mask,
//                      negative or non-finite mask weights, lengths out of range, overlapping buffers
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

template <class T>
void check_mask(const tensor_view<T>& mask, std::size_t n, double& weight_sum) {
  if (mask.size == 0 || n % mask.size != 0)
    fail<shape_mismatch>("evaluate: mask has ", mask.size, " elements, pred ", n,
                         "; a mask holds one weight per element or per frame (pred size must be a "
                         "multiple of mask size)");
  double sum = 0;
  for (std::size_t i = 0; i < mask.size; ++i) {
    const T w = mask.data[i];
    if (!(w >= T(0)) || !std::isfinite(w))
      fail<invalid_input>("evaluate: mask[", i, "] = ", w, "; mask weights must be finite and >= 0");
    sum += w;
  }
  if (sum == 0) fail<invalid_input>("evaluate: the mask is all zero; there is nothing to average");
  weight_sum = sum;
}

template <class Int>
void check_lengths(const sequence_lengths<Int>& spec, std::size_t n, std::size_t& frame_size,
                   double& total_frames) {
  if (spec.batch == 0 || spec.max_frames == 0 || n % (spec.batch * spec.max_frames) != 0)
    fail<shape_mismatch>("evaluate: pred has ", n, " elements, which is not batch (", spec.batch,
                         " lengths) x max_frames (", spec.max_frames, ") x a whole frame size");
  frame_size = n / (spec.batch * spec.max_frames);
  double frames = 0;
  for (std::size_t b = 0; b < spec.batch; ++b) {
    const Int length = spec.lengths[b];
    bool negative = false;
    if constexpr (std::is_signed_v<Int>) negative = length < 0;
    if (negative || static_cast<std::size_t>(length) > spec.max_frames)
      fail<invalid_input>("evaluate: lengths[", b, "] = ", +length, ", outside [0, max_frames = ",
                          spec.max_frames, "]");
    frames += static_cast<double>(length);
  }
  if (frames == 0) fail<invalid_input>("evaluate: every sequence length is 0; there is nothing to average");
  total_frames = frames;
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
  std::size_t frame_size = 1; ///< elements per mask weight or per frame of a sequence
};

/// Checks a term, its inputs and its gradient output (nullopt: value only) and plans the pass.
/// Throws (invalid_parameter, shape_mismatch, invalid_input) before anything is written.
template <class Term, class Weighting>
term_plan plan_term(const Term& term, const term_inputs<typename Term::value_type, Weighting>& in,
                    const std::optional<mutable_tensor_view<typename Term::value_type>>& grad,
                    Reduction reduction) {
  using T = typename Term::value_type;
  validate(term);
  term_plan plan;
  plan.n = in.pred.size;
  const std::size_t n = plan.n;
  if (in.target.size != n)
    fail<shape_mismatch>("evaluate: pred has ", n, " elements, target ", in.target.size);
  if (n == 0) fail<invalid_input>("evaluate: pred and target are empty");
  plan.write_grad = grad.has_value();
  if (plan.write_grad) {
    if (grad->size != n) fail<shape_mismatch>("evaluate: grad has ", grad->size, " elements, pred ", n);
    if (overlaps<T>(grad->data, n, in.pred.data, n) || overlaps<T>(grad->data, n, in.target.data, n))
      fail<invalid_input>("evaluate: the gradient buffer overlaps pred or target");
  }
  const bool mean = reduction == Reduction::mean;
  if constexpr (std::is_same_v<Weighting, unweighted>) {
    if (mean) plan.denominator = static_cast<double>(n);
  } else if constexpr (std::is_same_v<Weighting, frame_mask<T>>) {
    const tensor_view<T>& mask = in.weighting.weights;
    double weight_sum = 0;
    check_mask(mask, n, weight_sum);
    if (plan.write_grad && overlaps<T>(grad->data, n, mask.data, mask.size))
      fail<invalid_input>("evaluate: the gradient buffer overlaps the mask");
    plan.frame_size = n / mask.size;
    if (mean) plan.denominator = weight_sum * static_cast<double>(plan.frame_size);
  } else {
    double total_frames = 0;
    check_lengths(in.weighting, n, plan.frame_size, total_frames);
    if (mean) plan.denominator = total_frames * static_cast<double>(plan.frame_size);
  }
  return plan;
}

/// Runs a planned term: the fused passes (through `executor`) and the target-domain check.
/// `g` is the gradient's storage when plan.write_grad; `scale` multiplies the gradient (a
/// composed loss passes its term weight).
template <class Term, class Weighting, class Executor>
term_result<typename Term::value_type> execute_term(const Term& term,
                                                    const term_inputs<typename Term::value_type, Weighting>& in,
                                                    const term_plan& plan, typename Term::value_type* g,
                                                    typename Term::value_type scale, const Executor& executor) {
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
  const std::size_t n = plan.n, frame_size = plan.frame_size;
  const T grad_scale = static_cast<T>(scale / plan.denominator);

  if constexpr (std::is_same_v<Weighting, unweighted>) {
    total = pass(in.pred.data, in.target.data, nullptr, g, n, grad_scale);
    check_targets([](std::size_t) { return true; });
  } else if constexpr (std::is_same_v<Weighting, frame_mask<T>>) {
    const tensor_view<T>& mask = in.weighting.weights;
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
                                    write_grad ? g + offset : nullptr, count, grad_scale * w);
          total.value += static_cast<double>(w) * run.value;
          total.out_of_domain += run.out_of_domain;
        }
        frame = end;
      }
    }
    check_targets([&](std::size_t i) { return mask.data[i / frame_size] != T(0); });
  } else {
    const auto& spec = in.weighting;
    const std::size_t sequence_size = spec.max_frames * frame_size;
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
  const term_plan plan = plan_term(term, in, grad, reduction);
  return execute_term(term, in, plan, grad ? grad->data : nullptr, scale, executor);
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
