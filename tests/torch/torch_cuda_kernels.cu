// The one nvcc-compiled file the torch tests link when LibTorch has CUDA: the CUDA executor for
// every built-in term (see steadyloss/backend/cuda/executor.hpp for why the kernels live apart).
#include <steadyloss/backend/cuda/builtin_terms.cuh>
