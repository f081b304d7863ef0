#pragma once
// Which vector instructions the CPU loss kernels use. On x86-64 with gcc or clang the fused pass
// is compiled three times (the build's own flags, AVX2 and AVX-512) and picks, at run time, the
// widest this CPU runs: a default build (no -march) is then as fast as a -march=native one on
// AVX2 and AVX-512 machines, and still runs on any x86-64. Elsewhere, or with
// STEADYLOSS_NO_ISA_DISPATCH defined, the build's flags alone decide.
//
//   sl::detected_cpu_isa()             // what this CPU can run
//   sl::active_cpu_isa()               // what the kernels use now
//   sl::limit_cpu_isa(sl::cpu_isa::avx2);  // cap it: to compare paths, or to match another machine
//   sl::scoped_cpu_isa_limit cap(sl::cpu_isa::baseline);  // the same for one scope
//
// The paths differ in speed and, through fused multiply-add, in the last bits of a result (as a
// -march=native build does); sums keep the same order on every path.

#include <atomic>
#include <string_view>

// nvcc's host pass keeps the dispatch (tested), so .cu and .cpp files of one program agree. Not on
// Windows: clang-cl lacks the runtime behind __builtin_cpu_supports, and MinGW gcc misaligns AVX
// stack spills (gcc bug 54412). HIP is untested.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32) && \
    !defined(__HIPCC__) && !defined(STEADYLOSS_NO_ISA_DISPATCH)
#define STEADYLOSS_ISA_DISPATCH 1
#else
#define STEADYLOSS_ISA_DISPATCH 0
#endif

namespace steadyloss {

/// Kernel variants, narrowest first. baseline: the build's own flags (SSE2 for a default x86-64 build).
enum class cpu_isa { baseline, avx2, avx512 };

/// The variant the build's flags already give (e.g. avx512 for -march=native on an AVX-512
/// machine); the kernels never go below it.
inline constexpr cpu_isa build_cpu_isa =
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
    cpu_isa::avx512;
#elif defined(__AVX2__) && defined(__FMA__)
    cpu_isa::avx2;
#else
    cpu_isa::baseline;
#endif

inline std::string_view to_string(cpu_isa isa) {
  switch (isa) {
    case cpu_isa::baseline: return "baseline";
    case cpu_isa::avx2: return "avx2";
    case cpu_isa::avx512: return "avx512";
  }
  return "unknown";
}

/// The widest kernel variant this CPU runs (build_cpu_isa where there is no dispatch).
inline cpu_isa detected_cpu_isa() noexcept {
#if STEADYLOSS_ISA_DISPATCH
  static const cpu_isa detected = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
      return cpu_isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && build_cpu_isa <= cpu_isa::avx2)
      return cpu_isa::avx2;
    return build_cpu_isa;
  }();
  return detected;
#else
  return build_cpu_isa;
#endif
}

namespace detail {
inline std::atomic<cpu_isa> cpu_isa_limit{cpu_isa::avx512};
}  // namespace detail

/// Caps the variant the kernels use from now on, on every thread (the default cap is avx512; a
/// cap below build_cpu_isa means build_cpu_isa).
inline void limit_cpu_isa(cpu_isa limit) noexcept { detail::cpu_isa_limit.store(limit, std::memory_order_relaxed); }

/// Caps the variant for a scope and restores the cap before it at the end (to compare paths).
class scoped_cpu_isa_limit {
 public:
  explicit scoped_cpu_isa_limit(cpu_isa limit) noexcept
      : previous_(detail::cpu_isa_limit.exchange(limit, std::memory_order_relaxed)) {}
  ~scoped_cpu_isa_limit() { limit_cpu_isa(previous_); }
  scoped_cpu_isa_limit(const scoped_cpu_isa_limit&) = delete;
  scoped_cpu_isa_limit& operator=(const scoped_cpu_isa_limit&) = delete;

 private:
  cpu_isa previous_;
};

/// The variant the kernels use: the detected one, capped by limit_cpu_isa, never below the build's.
inline cpu_isa active_cpu_isa() noexcept {
  const cpu_isa detected = detected_cpu_isa();
  const cpu_isa limit = detail::cpu_isa_limit.load(std::memory_order_relaxed);
  const cpu_isa capped = limit < detected ? limit : detected;
  return capped < build_cpu_isa ? build_cpu_isa : capped;
}

}  // namespace steadyloss
