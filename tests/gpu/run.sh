#!/usr/bin/env bash
# GPU checks for the LibTorch adapter. On a machine with an NVIDIA GPU, nvcc and a
# CUDA-enabled PyTorch, from the repository root:
#
#   bash tests/gpu/run.sh [build_dir]          (default build/gpu)
#
# It builds tests/gpu/CMakeLists.txt against the LibTorch inside that PyTorch
# (python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'), with nvcc and the CUDA
# executor (STEADYLOSS_WITH_CUDA), then runs:
#   1. the torch adapter tests on CUDA tensors (STEADYLOSS_TEST_DEVICE=cuda): values and gradients
#      against torch::nn::functional, masks/lengths, composed loss, float64 central differences,
#      bitwise reproducibility, float16/bfloat16;
#   2. the same tests on CPU tensors (the CPU path in a CUDA-enabled build);
#   3. the torch_tts example on the GPU.
# Environment: CUDA_ARCH (default 90: H100/H200), CATCH2_INCLUDE_DIR (a directory holding
# catch2/catch.hpp when Catch2 2.13 is not installed), PYTHON (default python3), JOBS.
# Exit status 0 only if everything passed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-$repo/build/gpu}
python=${PYTHON:-python3}
arch=${CUDA_ARCH:-90}
jobs=${JOBS:-$(nproc)}

export PATH=/usr/local/cuda/bin:$PATH
command -v nvcc >/dev/null || { echo "run.sh: nvcc not found (looked in PATH and /usr/local/cuda/bin)"; exit 2; }
torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
"$python" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    raise SystemExit("run.sh: PyTorch sees no GPU")
print("device:", torch.cuda.get_device_name(0))
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
nvcc --version | tail -1

catch_arg=()
if [[ -n "${CATCH2_INCLUDE_DIR:-}" ]]; then catch_arg=(-DCATCH2_INCLUDE_DIR="$CATCH2_INCLUDE_DIR"); fi
cmake -S "$repo/tests/gpu" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" \
      -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_CUDA_ARCHITECTURES="$arch" "${catch_arg[@]}"
cmake --build "$build" -j "$jobs"

status=0
echo "== torch adapter tests on CUDA tensors"
STEADYLOSS_TEST_DEVICE=cuda "$build/torch_tests_gpu" || status=1
echo "== torch adapter tests on CPU tensors (CUDA-enabled build)"
"$build/torch_tests_gpu" || status=1
echo "== torch_tts example on the GPU"
"$build/torch_tts_gpu" "$build/torch_tts_log.csv" 1500 || status=1
echo "== GPU checks: $([[ $status == 0 ]] && echo PASS || echo FAIL)"
exit $status
