// Compiled (not run) in CI wherever nvcc exists: the CUDA executor must compile for every built-in
// term and every storage type the torch adapter dispatches to (float and, for float terms, __half
// and __nv_bfloat16; double for double terms), as the one .cu file a program links
// (builtin_terms.cuh), plus a term of the user's own through STEADYLOSS_CUDA_INSTANTIATE.
// Running the kernels needs a GPU: tests/gpu/run.sh.
#include <steadyloss/backend/cuda/builtin_terms.cuh>

namespace user {
// A term written the way the house rule asks (host+device value/grad), unknown to steadyloss.
struct LogCosh {
  using value_type = float;
  STEADYLOSS_HOST_DEVICE float value(float pred, float target) const noexcept {
    const float d = pred - target;
    return d * d / (1.0f + (d < 0 ? -d : d));  // a smooth stand-in; only compilation matters here
  }
  STEADYLOSS_HOST_DEVICE float grad(float pred, float target) const noexcept { return pred - target; }
};
}  // namespace user

STEADYLOSS_CUDA_INSTANTIATE(user::LogCosh)

// The typed entry point, as a caller without the type-erased layer would use it.
void steadyloss_fused_kernel_compile_test(const __half* pred, const __half* target, __half* grad, double* slot,
                                          cudaStream_t stream) {
  steadyloss::cuda::launch_term(steadyloss::Huber<float>{}, pred, target, grad, 1024,
                                steadyloss::cuda::term_weighting{}, steadyloss::reduction::mean, 1.0f, slot, stream);
}
