// Compiled (not run) in CI wherever nvcc exists: every term's value/grad must be callable from
// device code, since the CUDA executor runs the same term structs.
#include <steadyloss/steadyloss.hpp>

namespace sl = steadyloss;

template <class Term>
__global__ void value_and_grad_kernel(Term term, const float* pred, const float* target, float* value,
                                      float* grad, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    const sl::value_grad<float> vg = sl::detail::value_and_grad(term, pred[i], target[i]);
    value[i] = vg.value;
    grad[i] = vg.grad;
  }
}

template __global__ void value_and_grad_kernel(sl::Huber<float>, const float*, const float*, float*, float*, int);
template __global__ void value_and_grad_kernel(sl::BalancedBCE<float>, const float*, const float*, float*, float*, int);
template __global__ void value_and_grad_kernel(sl::LabelSmoothing<sl::BalancedBCE<float>>, const float*, const float*, float*, float*, int);
template __global__ void value_and_grad_kernel(sl::L1<float>, const float*, const float*, float*, float*, int);
template __global__ void value_and_grad_kernel(sl::MSE<float>, const float*, const float*, float*, float*, int);
