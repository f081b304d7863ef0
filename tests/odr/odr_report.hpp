#pragma once
// What each translation unit of the ODR test reports about the steadyloss kernels it compiled:
// odr_default_flags.cpp is built with the build's flags, odr_avx2_flags.cpp with -mavx2 -mfma.
// Only plain types cross between them: a steadyloss type whose symbol spells the ISA namespace
// (detail::pass_sum) would name a different type in each file.

#include <cstddef>
#include <cstdint>

#include <steadyloss/cpu_isa.hpp>

namespace odr_test {

struct tu_report {
  const char* isa_namespace;              // steadyloss::detail::isa_namespace_name
  steadyloss::cpu_isa build_isa;          // steadyloss::build_cpu_isa as this file sees it
  steadyloss::cpu_isa active_isa;         // active_cpu_isa() under the cap given
  std::uintptr_t fused_pass_address;      // &fused_pass<true, false, Huber<float>, float>
};

struct huber_result {
  double evaluate_value;   // sl::evaluate(Huber<float>{.delta = delta}, ...).value, mean
  double fused_pass_sum;   // detail::fused_pass<true, false>(...).value, the plain sum
};

// The entry points above the kernels, as this file's code calls them: sl::value and a composed
// loss's evaluate. Both files are built with -O0, so these are real calls to weak symbols: each
// file must have its own (their template parameter Isa = detail::isa_tag spells the ISA
// namespace); one shared copy would run one file's kernels from both.
struct entry_points {
  std::uintptr_t value_address;              // &sl::value<Huber<float>, inputs>
  std::uintptr_t composed_evaluate_address;  // &composed_loss<Huber<float>, L1<float>>::evaluate<...>
  double value;                              // sl::value(Huber<float>{.delta = delta}, ...).value
  double composed_total;                     // compose(Huber{delta}, L1)'s evaluate(...).total
};

// Each runs under sl::scoped_cpu_isa_limit(cap). The avx2-flags ones run AVX2 instructions
// anywhere in them: call them only on a CPU with AVX2 and FMA.
tu_report report_default_flags(steadyloss::cpu_isa cap);
tu_report report_avx2_flags(steadyloss::cpu_isa cap);
// grad_evaluate and grad_pass receive n gradients each (evaluate's is the mean's, divided by n).
huber_result huber_default_flags(const float* pred, const float* target, std::size_t n, float delta,
                                 float* grad_evaluate, float* grad_pass, steadyloss::cpu_isa cap);
huber_result huber_avx2_flags(const float* pred, const float* target, std::size_t n, float delta,
                              float* grad_evaluate, float* grad_pass, steadyloss::cpu_isa cap);
// grad_huber and grad_l1 receive n gradients each (the composed loss's).
entry_points entry_points_default_flags(const float* pred, const float* target, std::size_t n, float delta,
                                        float* grad_huber, float* grad_l1, steadyloss::cpu_isa cap);
entry_points entry_points_avx2_flags(const float* pred, const float* target, std::size_t n, float delta,
                                     float* grad_huber, float* grad_l1, steadyloss::cpu_isa cap);

}  // namespace odr_test
