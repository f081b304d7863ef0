#pragma once
// The CUDA executor: any steadyloss term (the same structs as on the CPU; their value/grad are
// host+device) in one fused kernel that reads pred and target, writes the scaled gradient and
// reduces the loss. Needs nvcc (CUDA 12+, -std=c++20); depends on the CUDA runtime only, not
// LibTorch. The host-side types and the type-erased entry point are in executor.hpp; include this
// header (or builtin_terms.cuh) in one .cu file and instantiate the terms you use
// (STEADYLOSS_CUDA_INSTANTIATE, at the end).
//
//   double* slot = ...;  // device memory, workspace_doubles doubles per term evaluation
//   sl::cuda::launch_term(sl::Huber<float>{}, pred, target, grad, n, sl::cuda::term_weighting{},
//                         sl::reduction::mean, /*scale=*/1.0f, slot, stream);
//   double host[sl::cuda::workspace_doubles];
//   sl::cuda::copy_to_host(host, slot, sl::cuda::workspace_doubles, stream);   // synchronizes
//   auto report = sl::cuda::read_report(host);
//   sl::cuda::check_report(report, weighting, "Huber");  // throws steadyloss::invalid_input
//
// Storage types: float, double, and __half / __nv_bfloat16 for float terms (loaded into float,
// computed and accumulated in float, gradient rounded back to the storage type).
//
// Determinism: the same bits on every run, on every GPU. The grid size depends on n only
// (min(ceil(n / block_size), max_blocks)), so each thread always sees the same elements in the
// same order; each thread accumulates in the term's value_type (float or double), flushed into a
// double every 32 elements, then warps (shuffles) and blocks (shared memory) reduce in double in
// a fixed tree; each block writes its partial to the workspace, and a one-block kernel reduces
// the partials in a fixed order. No atomics anywhere.
//
// Mask weights are float32 on the device (the adapter converts masks to float32), for double
// terms too: weights such as 0.5 or 1 are exact, a weight like 0.1 is rounded to float.
//
// Validation mirrors the core: sizes, lengths and (without a mask) the gradient factor on the host
// before launching (they are known there; steadyloss::detail::check_gradient_scale, the CPU's
// check); mask weights (negative, subnormal, not finite), targets (BCE's [0, 1]) and a mask's
// gradient factor (its sum is on the device: the same largest_gradient_factor, against the same
// limit) are checked on the device and reported after the copy back (check_report throws; the
// gradient written meanwhile must then be discarded; an overflowing factor writes 0, never Inf).
// The kernel forms scale / denominator in T and multiplies the mask weight in T, for per-frame
// masks too (the CPU folds a frame's weight in double), so on CUDA scale / denominator itself must
// fit: tiny per-frame weights the CPU accepts can be refused here, with the same message.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include "../../core/checks.hpp"
#include "../../core/config.hpp"
#include "../../core/errors.hpp"
#include "../../core/inputs.hpp"
#include "../../core/reduction.hpp"
#include "../../core/term.hpp"
#include "executor.hpp"

namespace steadyloss::cuda {

namespace detail {

template <class T, class S>
__device__ inline T load(S x) {
  if constexpr (std::is_same_v<S, __half>) return static_cast<T>(__half2float(x));
  else if constexpr (std::is_same_v<S, __nv_bfloat16>) return static_cast<T>(__bfloat162float(x));
  else return static_cast<T>(x);
}

template <class S, class T>
__device__ inline S store(T x) {
  if constexpr (std::is_same_v<S, __half>) return __float2half_rn(static_cast<float>(x));
  else if constexpr (std::is_same_v<S, __nv_bfloat16>) return __float2bfloat16_rn(static_cast<float>(x));
  else return static_cast<S>(x);
}

/// Weighting in kernel form: the weight of element i (0 drops it).
struct device_weighting {
  weighting_kind kind = weighting_kind::none;
  const float* mask = nullptr;
  std::size_t frame_size = 1;  // elements per mask entry, or per frame for lengths
  const std::int64_t* lengths = nullptr;
  std::size_t sequence_size = 0;  // max_frames * frame_size

  __device__ float weight(std::size_t i) const {
    switch (kind) {
      case weighting_kind::mask: return mask[i / frame_size];
      case weighting_kind::lengths: {
        const std::size_t sequence = i / sequence_size;
        const std::size_t position = i - sequence * sequence_size;
        return position < static_cast<std::size_t>(lengths[sequence]) * frame_size ? 1.0f : 0.0f;
      }
      default: return 1.0f;
    }
  }
};

/// Combines v over the block in a fixed tree (shuffles within warps, then warp 0 over the warps'
/// results); the result is valid in thread 0. Deterministic: the tree does not depend on timing.
/// `identity` fills the slots of absent warps.
template <class Combine>
__device__ inline double block_reduce(double v, double* shared, double identity, Combine combine) {
  for (int offset = warp_size / 2; offset > 0; offset /= 2) v = combine(v, __shfl_down_sync(0xffffffffu, v, offset));
  const int lane = static_cast<int>(threadIdx.x) % warp_size, warp = static_cast<int>(threadIdx.x) / warp_size;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  constexpr int warps = block_size / warp_size;
  if (warp == 0) {
    v = lane < warps ? shared[lane] : identity;
    for (int offset = warp_size / 2; offset > 0; offset /= 2) v = combine(v, __shfl_down_sync(0xffffffffu, v, offset));
  }
  __syncthreads();  // shared is reused by the next call
  return v;
}

struct add_op {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct max_op {
  __device__ double operator()(double a, double b) const { return fmax(a, b); }
};

/// Sums v over the block (valid in thread 0).
__device__ inline double block_sum(double v, double* shared) { return block_reduce(v, shared, 0.0, add_op{}); }

/// The largest of v over the block (valid in thread 0); order does not matter for a maximum.
__device__ inline double block_max(double v, double* shared) { return block_reduce(v, shared, 0.0, max_op{}); }

/// The fused pass: each block writes its partial sums of w*l and of out-of-domain targets.
/// mask_report: the slot's report as mask_sum_kernel left it (mask only, else null); without a
/// mask the host checked the gradient factor before launching.
template <class Term, class S>
__global__ void __launch_bounds__(block_size)
    fused_partials_kernel(Term term, const S* __restrict__ pred, const S* __restrict__ target, S* __restrict__ grad,
                          std::size_t n, device_weighting weighting, double host_denominator,
                          const double* __restrict__ mask_report, double scale, double* __restrict__ slot) {
  using T = typename Term::value_type;
  __shared__ double shared[block_size / warp_size];
  const double denominator = mask_report != nullptr ? mask_report[1] : host_denominator;
  // Never convert an out-of-range double to T: an overflowing factor writes 0 and is reported.
  const bool factor_fits = mask_report == nullptr || mask_report[7] == 0.0;
  const T grad_scale = factor_fits ? static_cast<T>(scale / denominator) : T(0);
  // Each thread sums up to flush_every values in T (float math at full rate), then flushes them
  // into a double, so its partial keeps float precision however large n grows.
  constexpr int flush_every = 32;
  T value_acc = T(0);
  double value_total = 0, outside_total = 0;
  int pending = 0;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * block_size;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * block_size + threadIdx.x; i < n; i += stride) {
    const T p = load<T>(pred[i]);
    const T y = load<T>(target[i]);
    const T w = static_cast<T>(weighting.weight(i));
    const bool kept = w != T(0);  // a dropped element may hold NaN padding: select, never multiply
    const value_grad<T> vg = steadyloss::detail::value_and_grad(term, p, y);
    if (kept) {
      value_acc += w * vg.value;
      if constexpr (steadyloss::detail::checks_target_domain<Term>)
        outside_total += steadyloss::detail::target_in_domain<Term>(y) ? 0.0 : 1.0;
    }
    if (grad != nullptr) grad[i] = store<S>(kept ? vg.grad * (w * grad_scale) : T(0));
    if (++pending == flush_every) {
      value_total += static_cast<double>(value_acc);
      value_acc = T(0);
      pending = 0;
    }
  }
  value_total += static_cast<double>(value_acc);
  const double block_value = block_sum(value_total, shared);
  const double block_outside = block_sum(outside_total, shared);
  if (threadIdx.x == 0) {
    slot[report_doubles + blockIdx.x] = block_value;
    slot[report_doubles + max_blocks + blockIdx.x] = block_outside;
  }
}

/// One block: the mask's weight sum, its bad weights (negative, subnormal, not finite: the
/// core's check_mask rule), its largest weight, the denominator (for mean) and, when a gradient
/// is written, its largest factor against T's largest value (`factor_limit`).
__global__ void __launch_bounds__(block_size)
    mask_sum_kernel(const float* __restrict__ mask, std::size_t mask_size, double elements_per_weight, bool mean,
                    bool write_grad, double scale, double factor_limit, double* __restrict__ slot) {
  __shared__ double shared[block_size / warp_size];
  double sum = 0, bad = 0, largest = 0;
  for (std::size_t i = threadIdx.x; i < mask_size; i += block_size) {
    const float w = mask[i];
    const bool ok = w == 0.0f || (w >= FLT_MIN && isfinite(w));
    sum += ok ? static_cast<double>(w) : 0.0;
    bad += ok ? 0.0 : 1.0;
    largest = ok ? fmax(largest, static_cast<double>(w)) : largest;
  }
  sum = block_sum(sum, shared);
  bad = block_sum(bad, shared);
  largest = block_max(largest, shared);
  if (threadIdx.x == 0) {
    const double denominator = mean ? sum * elements_per_weight : 1.0;
    // An all-zero mask with mean (denominator 0) is reported as such; its factor is not formed.
    const double factor = write_grad && denominator > 0
                              ? steadyloss::detail::largest_gradient_factor(scale, denominator, largest, false)
                              : 0.0;
    slot[1] = denominator;
    slot[3] = bad;
    slot[4] = sum;
    slot[5] = largest;
    slot[6] = factor;
    slot[7] = factor <= factor_limit ? 0.0 : 1.0;
    slot[8] = scale;
    slot[9] = factor_limit;
  }
}

/// One block: reduces the grid's partials in a fixed order and writes the report.
__global__ void __launch_bounds__(block_size)
    finalize_kernel(int blocks, double host_denominator, bool denominator_on_device, double* __restrict__ slot) {
  __shared__ double shared[block_size / warp_size];
  double value = 0, outside = 0;
  for (int b = static_cast<int>(threadIdx.x); b < blocks; b += block_size) {
    value += slot[report_doubles + b];
    outside += slot[report_doubles + max_blocks + b];
  }
  value = block_sum(value, shared);
  outside = block_sum(outside, shared);
  if (threadIdx.x == 0) {
    const double denominator = denominator_on_device ? slot[1] : host_denominator;
    slot[0] = value / denominator;
    slot[1] = denominator;
    slot[2] = outside;
  }
}

}  // namespace detail

/// Launches one term's evaluation on `stream`: value (and, when grad is not null, the gradient
/// times scale / denominator) into `slot` (device, workspace_doubles doubles). Asynchronous:
/// read the slot back with copy_to_host. Throws steadyloss::error for bad sizes or lengths.
template <class Term, class S>
void launch_term(const Term& term, const S* pred, const S* target, S* grad, std::size_t n,
                 const term_weighting& weighting, reduction reduction, typename Term::value_type scale, double* slot,
                 cudaStream_t stream) {
  using T = typename Term::value_type;
  static_assert(std::is_same_v<S, T> || (std::is_same_v<T, float> && (std::is_same_v<S, __half> ||
                                                                       std::is_same_v<S, __nv_bfloat16>)),
                "steadyloss::cuda::launch_term: storage must be the term's value_type, or __half / "
                "__nv_bfloat16 for a float term");
  steadyloss::detail::validate(term);
  steadyloss::detail::check_reduction(reduction, "cuda::launch_term");
  if (n == 0) steadyloss::detail::fail<invalid_input>("cuda::launch_term: pred and target are empty");
  const bool mean = reduction == reduction::mean;
  constexpr double factor_limit = static_cast<double>(std::numeric_limits<T>::max());
  detail::device_weighting w;
  w.kind = weighting.kind;
  double host_denominator = mean ? static_cast<double>(n) : 1.0;
  bool denominator_on_device = false;
  if (weighting.kind == weighting_kind::mask) {
    steadyloss::detail::check_mask_shape(weighting.mask_size, weighting.frame_size, n, "cuda::launch_term",
                                         steadyloss::detail::term_weighting_fix);
    w.mask = weighting.mask;
    w.frame_size = weighting.frame_size;
    detail::mask_sum_kernel<<<1, block_size, 0, stream>>>(weighting.mask, weighting.mask_size,
                                                          static_cast<double>(w.frame_size), mean, grad != nullptr,
                                                          static_cast<double>(scale), factor_limit, slot);
    denominator_on_device = true;
  } else if (weighting.kind == weighting_kind::lengths) {
    const sequence_lengths<std::int64_t> spec{weighting.lengths_host, weighting.batch, weighting.max_frames,
                                              weighting.frame_size};
    const double total_frames =  // the core's checks and messages
        steadyloss::detail::check_lengths(spec, n, mean, "cuda::launch_term");
    const std::size_t frame_size = weighting.frame_size;
    w.lengths = weighting.lengths_device;
    w.frame_size = frame_size;
    w.sequence_size = weighting.max_frames * frame_size;
    if (mean) host_denominator = total_frames * static_cast<double>(frame_size);
  }
  if (!denominator_on_device && grad != nullptr)  // the CPU path's check, before anything is launched
    steadyloss::detail::check_gradient_scale<T>(static_cast<double>(scale), host_denominator, false, 1.0, false,
                                                "cuda::launch_term");
  const std::size_t wanted = (n + block_size - 1) / block_size;
  const int blocks = static_cast<int>(wanted < static_cast<std::size_t>(max_blocks) ? wanted : max_blocks);
  detail::fused_partials_kernel<<<blocks, block_size, 0, stream>>>(
      term, pred, target, grad, n, w, host_denominator, denominator_on_device ? slot : nullptr,
      static_cast<double>(scale), slot);
  detail::finalize_kernel<<<1, block_size, 0, stream>>>(blocks, host_denominator, denominator_on_device, slot);
  detail::check_cuda(cudaGetLastError(), "kernel launch failed");
}

/// The type-erased entry point declared in executor.hpp: dispatches on the storage type.
template <class Term>
void launch_term_erased(const Term& term, storage_type storage, const void* pred, const void* target, void* grad,
                        std::size_t n, const term_weighting& weighting, reduction reduction,
                        typename Term::value_type scale, double* slot, cudaStream_t stream) {
  using T = typename Term::value_type;
  auto launch = [&](auto* typed) {
    using S = std::remove_pointer_t<decltype(typed)>;
    launch_term(term, static_cast<const S*>(pred), static_cast<const S*>(target), static_cast<S*>(grad), n,
                weighting, reduction, scale, slot, stream);
  };
  if constexpr (std::is_same_v<T, float>) {
    switch (storage) {
      case storage_type::f32: return launch(static_cast<float*>(nullptr));
      case storage_type::f16: return launch(static_cast<__half*>(nullptr));
      case storage_type::bf16: return launch(static_cast<__nv_bfloat16*>(nullptr));
      default: break;
    }
  } else {
    if (storage == storage_type::f64) return launch(static_cast<double*>(nullptr));
  }
  steadyloss::detail::fail<invalid_input>("cuda::launch_term: ", steadyloss::detail::name_of<Term>(),
                                          " cannot run on this storage type (float16/bfloat16 need a float term, "
                                          "float64 a double term)");
}

}  // namespace steadyloss::cuda

/// Instantiates the CUDA executor for a term type, in the one .cu file nvcc compiles:
///   STEADYLOSS_CUDA_INSTANTIATE(sl::Huber<float>)
#define STEADYLOSS_CUDA_INSTANTIATE(...)                                                                   \
  template void steadyloss::cuda::launch_term_erased<__VA_ARGS__>(                                         \
      const __VA_ARGS__&, steadyloss::cuda::storage_type, const void*, const void*, void*, std::size_t,      \
      const steadyloss::cuda::term_weighting&, steadyloss::reduction, typename __VA_ARGS__::value_type, double*, \
      cudaStream_t);
