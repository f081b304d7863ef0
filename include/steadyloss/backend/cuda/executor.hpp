#pragma once
// The host side of the CUDA executor: what any C++ compiler (g++, clang) may include. It
// declares launch_term_erased<Term>, whose definition (the kernels) lives in fused_kernel.cuh and
// is compiled by nvcc, once per program, in one .cu file:
//
//   // steadyloss_cuda.cu, compiled by nvcc -std=c++20 and linked into the program
//   #include <steadyloss/backend/cuda/builtin_terms.cuh>   // every built-in term, float and double
//   STEADYLOSS_CUDA_INSTANTIATE(my::Term)                   // and any term of your own
//
// Why split: a torch translation unit then stays a g++ one (LibTorch's headers are not
// guaranteed to compile under nvcc's front end in C++20 mode), and the kernels are compiled once,
// not in every translation unit that evaluates a loss. Forgetting the .cu file is a link error
// naming steadyloss::cuda::launch_term_erased<YourTerm>.
//
// Needs the CUDA runtime headers (cuda_runtime_api.h) and libcudart at link time.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "../../core/checks.hpp"
#include "../../core/errors.hpp"
#include "../../core/reduction.hpp"

namespace steadyloss::cuda {

inline constexpr int block_size = 256;   ///< threads per block (8 warps)
inline constexpr int max_blocks = 1024;  ///< the grid never exceeds this (fixed-size partial buffer)
inline constexpr int warp_size = 32;

/// Layout of one term's device slot (doubles): the report (read_report's fields, in order), then
/// the per-block partials.
inline constexpr std::size_t report_doubles = 16;
inline constexpr std::size_t workspace_doubles = report_doubles + 2 * static_cast<std::size_t>(max_blocks);

/// Element type of pred, target and grad in device memory. f16/bf16 need a float term: they are
/// loaded into float, computed and accumulated in float, and the gradient rounded back.
enum class storage_type { f32, f64, f16, bf16 };

enum class weighting_kind { none, mask, lengths };

/// How elements are weighted (see core/inputs.hpp): none; a float mask per element or per frame
/// (device memory); or per-sequence lengths over [batch, max_frames, ...] (host copy for
/// validation and the denominator, device copy for the kernel).
struct term_weighting {
  weighting_kind kind = weighting_kind::none;
  const float* mask = nullptr;  // device
  std::size_t mask_size = 0;
  const std::int64_t* lengths_host = nullptr;
  const std::int64_t* lengths_device = nullptr;
  std::size_t batch = 0;
  std::size_t max_frames = 0;
  std::size_t frame_size = 1;  // elements per mask weight, or per frame of a sequence
};

/// What one evaluation left in its slot, read back on the host.
struct term_report {
  double value = 0;        ///< reduced value (sum(w l) / denominator)
  double denominator = 1;  ///< as the core's term_result::denominator
  double outside = 0;      ///< kept targets outside the term's domain
  double bad_weights = 0;  ///< mask weights negative, subnormal or not finite
  double weight_sum = 0;   ///< sum of the mask weights (mask only)
  double max_weight = 0;   ///< the largest mask weight (mask only)
  double gradient_factor = 0;  ///< largest_gradient_factor (mask with a gradient only; else 0)
  double factor_overflows = 0; ///< 1 when gradient_factor exceeds factor_limit (the gradient was
                               ///< then written as 0, not Inf)
  double scale = 0;            ///< the term weight (mask only)
  double factor_limit = 0;     ///< the term's value_type's largest value (mask only)
};

/// Launches one term's evaluation on `stream`: the reduced value (and, when grad is not null,
/// the gradient times scale / denominator) into `slot` (device memory, workspace_doubles
/// doubles). Asynchronous: read the slot back with copy_to_host. Throws steadyloss::error for
/// bad parameters, sizes or lengths (checked on the host before anything is launched).
/// Defined in fused_kernel.cuh (nvcc); instantiated by STEADYLOSS_CUDA_INSTANTIATE.
template <class Term>
void launch_term_erased(const Term& term, storage_type storage, const void* pred, const void* target, void* grad,
                        std::size_t n, const term_weighting& weighting, reduction reduction,
                        typename Term::value_type scale, double* slot, cudaStream_t stream);

namespace detail {
inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("steadyloss::cuda: ") + what + ": " + cudaGetErrorString(status));
}
}  // namespace detail

/// Copies `count` doubles from the device and waits for `stream`.
inline void copy_to_host(double* host, const double* device, std::size_t count, cudaStream_t stream) {
  detail::check_cuda(cudaMemcpyAsync(host, device, count * sizeof(double), cudaMemcpyDeviceToHost, stream),
                     "copying the loss values to the host failed");
  detail::check_cuda(cudaStreamSynchronize(stream), "the loss kernels failed");
}

inline term_report read_report(const double* host_slot) {
  return {host_slot[0], host_slot[1], host_slot[2], host_slot[3], host_slot[4],
          host_slot[5], host_slot[6], host_slot[7], host_slot[8], host_slot[9]};
}

/// Throws steadyloss::invalid_input for what the device found, as the core would on the CPU.
/// A mask's sum is known only on the device, so the gradient-factor check the host runs before
/// launching (steadyloss::detail::check_gradient_scale) runs there for a mask, with the same
/// rule (the same largest_gradient_factor): the gradient is then written as 0 and this throws.
inline void check_report(const term_report& report, const term_weighting& weighting, std::string_view term_name,
                         double target_min = 0, double target_max = 1) {
  if (weighting.kind == weighting_kind::mask) {
    if (report.bad_weights != 0)
      steadyloss::detail::fail<invalid_input>("evaluate: the mask has ", report.bad_weights,
                                              " weights that are negative, subnormal or not finite; mask weights "
                                              "must be finite and either 0 or at least the smallest normal float");
    if (report.weight_sum == 0 && report.denominator == 0)  // a mean; with sum it is an empty batch
      steadyloss::detail::fail<invalid_input>("evaluate: the mask is all zero; there is nothing to average");
    if (report.factor_overflows != 0)
      steadyloss::detail::fail_gradient_scale("evaluate", report.scale, report.denominator, true, report.max_weight,
                                              report.gradient_factor, report.factor_limit);
  }
  if (report.outside != 0)
    steadyloss::detail::fail<invalid_input>("evaluate: ", term_name, " targets must lie in [", target_min, ", ",
                                            target_max, "]; ", report.outside, " targets outside");
}

}  // namespace steadyloss::cuda
