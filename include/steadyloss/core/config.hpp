#pragma once
// Build-environment switches shared by every header: host+device annotation and version.

#if defined(__CUDACC__) || defined(__HIPCC__)
#define STEADYLOSS_HOST_DEVICE __host__ __device__
#else
#define STEADYLOSS_HOST_DEVICE
#endif

#define STEADYLOSS_VERSION_MAJOR 0
#define STEADYLOSS_VERSION_MINOR 1
#define STEADYLOSS_VERSION_PATCH 0

// The executors' pointers never alias (evaluate() rejects overlapping buffers), and saying so lets
// compilers vectorize without runtime alias checks, which gcc's -O2 cost model will not emit.
#if defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER)
#define STEADYLOSS_RESTRICT __restrict
#else
#define STEADYLOSS_RESTRICT
#endif
