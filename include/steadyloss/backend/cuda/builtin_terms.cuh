#pragma once
// Include in exactly one .cu file of a program (compiled by nvcc -std=c++20) to compile the CUDA
// executor for every built-in term, float and double: what steadyloss/backend/torch.hpp calls for
// CUDA tensors when STEADYLOSS_WITH_CUDA is defined. Terms of your own: add
// STEADYLOSS_CUDA_INSTANTIATE(YourTerm) in the same file.

#include "../../loss/adaptive_huber.hpp"
#include "../../loss/balanced_bce.hpp"
#include "../../loss/huber.hpp"
#include "../../loss/l1.hpp"
#include "../../loss/label_smoothing.hpp"
#include "../../loss/mse.hpp"
#include "fused_kernel.cuh"

STEADYLOSS_CUDA_INSTANTIATE(steadyloss::Huber<float>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::Huber<double>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::AdaptiveHuber<float>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::AdaptiveHuber<double>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::BalancedBCE<float>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::BalancedBCE<double>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::LabelSmoothing<steadyloss::BalancedBCE<float>>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::LabelSmoothing<steadyloss::BalancedBCE<double>>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::L1<float>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::L1<double>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::MSE<float>)
STEADYLOSS_CUDA_INSTANTIATE(steadyloss::MSE<double>)
