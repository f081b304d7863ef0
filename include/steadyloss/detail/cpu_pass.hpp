#pragma once
// The CPU kernel that runs any term in one pass over memory: reads pred and target (and an optional
// per-element weight), writes the scaled gradient, and returns the sum of the losses.
//
// Why the loop has this shape: without -ffast-math a compiler may not reorder a float sum, so a
// plain `sum += v` loop stays scalar. Here `lanes` independent accumulators are updated in a
// fixed-trip inner loop (which vectorizes: one AVX-512 register of floats, two AVX2, four SSE2),
// and every `block_rows` rows they are flushed into a double total. Each float partial then sums
// at most block_rows values, so the total keeps float32 precision over any n at no measurable cost
// (Kahan compensation would cost ~3x). On x86-64 the pass is compiled once per ISA (the build's
// flags, AVX2, AVX-512) and fused_pass runs the widest this CPU has (cpu_isa.hpp).

#include <cstddef>
#include <cstring>

#include "../core/config.hpp"
#include "../core/executor.hpp"
#include "../core/term.hpp"
#include "../cpu_isa.hpp"
#include "math.hpp"

namespace steadyloss::detail {

inline constexpr std::size_t lanes = 16;
inline constexpr std::size_t block_rows = 16;

// Everything below whose body the translation unit's flags change (the row kernels, the pass
// variants, fused_pass and the serial executor that calls it) lives in the flags' inline namespace
// (cpu_isa.hpp says why), as pass_sum does (core/executor.hpp).
inline namespace STEADYLOSS_ISA_NAMESPACE {

// The row loop, written once and compiled into each ISA variant below. The term comes by value: a
// reference's parameters could alias the gradient stores, and gcc's -O2 vectorizer will not emit
// the runtime alias check that would take.
template <bool WriteGrad, bool Weighted, class Term, class T>
[[gnu::always_inline]] inline void rows_body(const Term term, const T* STEADYLOSS_RESTRICT pred,
                                             const T* STEADYLOSS_RESTRICT target,
                                             const T* STEADYLOSS_RESTRICT weight, T* STEADYLOSS_RESTRICT grad,
                                             T grad_scale, std::size_t rows, T* STEADYLOSS_RESTRICT value_acc,
                                             T* STEADYLOSS_RESTRICT outside_acc) {
  for (std::size_t row = 0; row < rows; ++row) {
    const std::size_t base = row * lanes;
    for (std::size_t j = 0; j < lanes; ++j) {
      const T p = pred[base + j];
      const T y = target[base + j];
      const value_grad<T> vg = value_and_grad(term, p, y);
      if constexpr (Weighted) {
        // A zero weight masks the element out entirely: padding may hold NaN, which 0 * NaN
        // would let through.
        // Bit-mask selects, not ?: (see detail/math.hpp), or the loop stays scalar.
        const T w = weight[base + j];
        const bool kept = w != T(0);
        value_acc[j] += zero_unless(kept, w * vg.value);
        if constexpr (WriteGrad) grad[base + j] = zero_unless(kept, vg.grad * (w * grad_scale));
        if constexpr (checks_target_domain<Term>)
          outside_acc[j] += (kept & !target_in_domain<Term>(y)) ? T(1) : T(0);
      } else {
        value_acc[j] += vg.value;
        if constexpr (WriteGrad) grad[base + j] = vg.grad * grad_scale;
        if constexpr (checks_target_domain<Term>)
          outside_acc[j] += target_in_domain<Term>(y) ? T(0) : T(1);
      }
    }
  }
}

// The whole pass, also written once: blocks of rows through `Rows`, then the remainder.
template <auto Rows, bool WriteGrad, bool Weighted, class Term, class T>
[[gnu::always_inline]] inline pass_sum pass_body(const Term& term, const T* pred, const T* target, const T* weight,
                                                 T* grad, std::size_t n, T grad_scale) {
  pass_sum total;
  std::size_t i = 0;
  while (n - i >= lanes) {
    const std::size_t rows = (n - i) / lanes < block_rows ? (n - i) / lanes : block_rows;
    T value_acc[lanes] = {};
    T outside_acc[lanes] = {};
    Rows(term, pred + i, target + i, Weighted ? weight + i : nullptr, WriteGrad ? grad + i : nullptr, grad_scale,
         rows, value_acc, outside_acc);
    double block_value = 0;
    double block_outside = 0;
    for (std::size_t j = 0; j < lanes; ++j) {
      block_value += value_acc[j];
      block_outside += outside_acc[j];
    }
    total.value += block_value;
    total.out_of_domain += static_cast<std::size_t>(block_outside);
    i += rows * lanes;
  }
  for (; i < n; ++i) {
    const value_grad<T> vg = value_and_grad(term, pred[i], target[i]);
    const T w = Weighted ? weight[i] : T(1);
    const bool kept = w != T(0);
    if (kept) total.value += static_cast<double>(w * vg.value);
    if constexpr (WriteGrad) grad[i] = kept ? vg.grad * (w * grad_scale) : T(0);
    if constexpr (checks_target_domain<Term>)
      total.out_of_domain += (kept && !target_in_domain<Term>(target[i])) ? 1 : 0;
  }
  return total;
}

// Each ISA variant is a noinline row kernel plus the pass that calls it, both compiled for that
// ISA (cpu_isa.hpp). The row kernel stays a function of its own: its restrict parameters are what
// lets gcc vectorize it without runtime alias checks.
#define STEADYLOSS_ROWS_PARAMS                                                                          \
  const Term term, const T *STEADYLOSS_RESTRICT pred, const T *STEADYLOSS_RESTRICT target,              \
      const T *STEADYLOSS_RESTRICT weight, T *STEADYLOSS_RESTRICT grad, T grad_scale, std::size_t rows, \
      T *STEADYLOSS_RESTRICT value_acc, T *STEADYLOSS_RESTRICT outside_acc
#define STEADYLOSS_ROWS_ARGS term, pred, target, weight, grad, grad_scale, rows, value_acc, outside_acc
#define STEADYLOSS_PASS_PARAMS \
  const Term &term, const T *pred, const T *target, const T *weight, T *grad, std::size_t n, T grad_scale
#define STEADYLOSS_PASS_ARGS term, pred, target, weight, grad, n, grad_scale
#define STEADYLOSS_ISA_VARIANT(suffix, attributes)                                                     \
  template <bool WriteGrad, bool Weighted, class Term, class T>                                        \
  [[gnu::noinline, attributes]] void accumulate_rows##suffix(STEADYLOSS_ROWS_PARAMS) {                   \
    rows_body<WriteGrad, Weighted>(STEADYLOSS_ROWS_ARGS);                                              \
  }                                                                                                    \
  template <bool WriteGrad, bool Weighted, class Term, class T>                                        \
  [[attributes]] pass_sum fused_pass##suffix(STEADYLOSS_PASS_PARAMS) {                                   \
    return pass_body<&accumulate_rows##suffix<WriteGrad, Weighted, Term, T>, WriteGrad, Weighted>(      \
        STEADYLOSS_PASS_ARGS);                                                                         \
  }

STEADYLOSS_ISA_VARIANT(_baseline, )
#if STEADYLOSS_ISA_DISPATCH
STEADYLOSS_ISA_VARIANT(_avx2, gnu::target("avx2,fma"))
STEADYLOSS_ISA_VARIANT(_avx512, gnu::target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))
#endif
#undef STEADYLOSS_ISA_VARIANT
#undef STEADYLOSS_ROWS_PARAMS
#undef STEADYLOSS_ROWS_ARGS
#undef STEADYLOSS_PASS_PARAMS
#undef STEADYLOSS_PASS_ARGS

/// One fused pass over n elements. grad is written only when WriteGrad; weight is read only when
/// Weighted (a zero weight drops the element: value 0, gradient 0, target not checked). Runs the
/// widest ISA variant the CPU has (cpu_isa.hpp); variants the build's flags already cover are
/// not instantiated.
template <bool WriteGrad, bool Weighted, class Term, class T>
pass_sum fused_pass(const Term& term, const T* pred, const T* target, const T* weight, T* grad,
                    std::size_t n, T grad_scale) {
#if STEADYLOSS_ISA_DISPATCH
  const cpu_isa isa = active_cpu_isa();
  if constexpr (build_cpu_isa < cpu_isa::avx512)
    if (isa == cpu_isa::avx512)
      return fused_pass_avx512<WriteGrad, Weighted>(term, pred, target, weight, grad, n, grad_scale);
  if constexpr (build_cpu_isa < cpu_isa::avx2)
    if (isa == cpu_isa::avx2) return fused_pass_avx2<WriteGrad, Weighted>(term, pred, target, weight, grad, n, grad_scale);
#endif
  return fused_pass_baseline<WriteGrad, Weighted>(term, pred, target, weight, grad, n, grad_scale);
}

/// Runs each fused pass on the calling thread (sl::serial_executor; core/executor.hpp says what
/// an executor is).
struct serial_executor {
  template <bool WriteGrad, bool Weighted, class Term, class T>
  pass_sum run(const Term& term, const T* pred, const T* target, const T* weight, T* grad,
               std::size_t n, T grad_scale) const {
    return fused_pass<WriteGrad, Weighted>(term, pred, target, weight, grad, n, grad_scale);
  }
};

}  // inline namespace STEADYLOSS_ISA_NAMESPACE

template <class T>
void fill_zero(T* data, std::size_t n) {
  if (n != 0) std::memset(data, 0, n * sizeof(T));  // all-zero bits is +0.0 for IEEE float/double
}

}  // namespace steadyloss::detail

namespace steadyloss {
/// Runs every stretch on the calling thread: the executor evaluate uses when given none.
using serial_executor = detail::serial_executor;
}  // namespace steadyloss
