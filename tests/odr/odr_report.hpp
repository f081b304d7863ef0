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

// Each runs under sl::scoped_cpu_isa_limit(cap). The avx2-flags ones run AVX2 instructions
// anywhere in them: call them only on a CPU with AVX2 and FMA.
tu_report report_default_flags(steadyloss::cpu_isa cap);
tu_report report_avx2_flags(steadyloss::cpu_isa cap);
// grad_evaluate and grad_pass receive n gradients each (evaluate's is the mean's, divided by n).
huber_result huber_default_flags(const float* pred, const float* target, std::size_t n, float delta,
                                 float* grad_evaluate, float* grad_pass, steadyloss::cpu_isa cap);
huber_result huber_avx2_flags(const float* pred, const float* target, std::size_t n, float delta,
                              float* grad_evaluate, float* grad_pass, steadyloss::cpu_isa cap);

}  // namespace odr_test
