// The CUDA executor's kernels for the built-in terms: compiled by nvcc when LibTorch has CUDA.
#include <steadyloss/backend/cuda/builtin_terms.cuh>
