#pragma once
// What runs a term's fused pass on the CPU: an executor. The core plans each term (checks sizes,
// masks, lengths and the reduction's denominator) and hands the executor every contiguous
// stretch of elements to run: a whole tensor, a run of equally weighted frames, one sequence's
// valid frames. The executor returns the stretch's sum of losses and how many targets were
// outside the term's domain; the core combines the stretches and reduces.
//
//   sl::serial_executor    every stretch on the calling thread (the default of evaluate)
//   sl::parallel_executor  large stretches split over a thread pool (parallel.hpp)
//   your own               any type modelling sl::Executor (docs/extending.md has one)
//
// LibTorch's CPU tensors run on one of these (sl::libtorch::evaluate_on takes any); CUDA tensors
// run on the CUDA executor (backend/cuda), which plans on the device and has no per-stretch
// interface: its masks and lengths live in device memory.

#include <concepts>
#include <cstddef>

#include "../cpu_isa.hpp"
#include "term.hpp"

namespace steadyloss {
namespace detail {
// In the build flags' inline namespace (cpu_isa.hpp says why): a function template's symbol
// spells its return type, so every executor's `run` returning it, a user's too, gets a symbol of
// its own per ISA.
inline namespace STEADYLOSS_ISA_NAMESPACE {
struct pass_sum {
  double value = 0;               ///< sum of the (weighted) elementwise losses
  std::size_t out_of_domain = 0;  ///< targets outside the term's [target_min, target_max]
};
}  // inline namespace STEADYLOSS_ISA_NAMESPACE
}  // namespace detail

/// What an executor's run returns for one stretch of elements.
using pass_sum = detail::pass_sum;

/// An executor for Term: `run<WriteGrad, Weighted>(term, pred, target, weight, grad, n,
/// grad_scale)` computes, over the n elements of one stretch, the sum of the term's losses (each
/// times weight[i] when Weighted; a zero weight drops the element) and, when WriteGrad, writes
/// grad[i] = grad_scale x weight[i] x d loss / d pred. `weight` is null unless Weighted, `grad`
/// unless WriteGrad. Run the stretch's elements through sl::serial_executor (any split of it:
/// the gradient of an element does not depend on its neighbours) and add the partial pass_sums
/// in a fixed order, so that a run is reproducible bit for bit.
template <class E, class Term>
concept Executor =
    LossTerm<Term> && requires(const E& executor, const Term& term, const typename Term::value_type* in,
                               typename Term::value_type* out, std::size_t n, typename Term::value_type scale) {
      { executor.template run<true, true>(term, in, in, in, out, n, scale) } -> std::same_as<pass_sum>;
      { executor.template run<true, false>(term, in, in, in, out, n, scale) } -> std::same_as<pass_sum>;
      { executor.template run<false, true>(term, in, in, in, out, n, scale) } -> std::same_as<pass_sum>;
      { executor.template run<false, false>(term, in, in, in, out, n, scale) } -> std::same_as<pass_sum>;
    };

}  // namespace steadyloss
