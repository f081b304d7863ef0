#!/usr/bin/env bash
# Every test, as CI runs it: g++ build (warnings as errors) + ctest, clang build with
# AddressSanitizer and UndefinedBehaviorSanitizer + ctest, and meson test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)

echo "== g++, Release, -Werror"
# The replay fuzzer is a clang program: the clang build below builds and runs it.
cmake -S . -B build/gcc -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ \
      -DSTEADYLOSS_BUILD_TESTS=ON -DSTEADYLOSS_BUILD_EXAMPLES=ON -DSTEADYLOSS_BUILD_BENCHMARKS=ON -DSTEADYLOSS_BENCH_NATIVE=OFF \
      -DSTEADYLOSS_FUZZ=OFF
cmake --build build/gcc -j "$jobs"
ctest --test-dir build/gcc --output-on-failure -j "$jobs"

echo "== clang++, ASan + UBSan, -Werror"
cmake -S . -B build/clang-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
      -DSTEADYLOSS_SANITIZE=ON -DSTEADYLOSS_BUILD_TESTS=ON -DSTEADYLOSS_BUILD_EXAMPLES=ON -DSTEADYLOSS_BUILD_BENCHMARKS=OFF
cmake --build build/clang-sanitize -j "$jobs"
# Not here: the consumer builds and the CUDA compile (the g++ build ran them), and the checks
# labelled "once" (compiler-independent: tests/CMakeLists.txt says which).
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/clang-sanitize --output-on-failure -j "$jobs" -LE "consumer|cuda|once"

echo "== meson test"
[ -d build/meson ] || meson setup build/meson
meson test -C build/meson --print-errorlogs
