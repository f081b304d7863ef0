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

// The instruction sets this translation unit's flags allow, spelled into the symbols of everything
// whose body depends on them (build_cpu_isa, the CPU query below, the kernels in
// detail/cpu_pass.hpp): an inline namespace, e.g. steadyloss::isa_x86_64_sse4_avx_avx2_fma for
// -mavx2 -mfma. Without it a program whose files are built with different -march flags holds one
// definition per symbol, and the linker keeps any one: a default-flags file could run an AVX-512
// body as its "baseline" (SIGILL on a CPU without AVX-512) or dispatch by another file's
// build_cpu_isa. With it each file keeps its own. Spelling is unchanged (an inline namespace is
// transparent to lookup), and types users name in their own signatures (cpu_isa,
// parallel_executor) stay outside it.
// Not [[gnu::abi_tag]]: gcc and clang on the Itanium ABI only, where an inline namespace works with
// every compiler; and what it adds, tagging a function whose return type is tagged, the namespace
// gives the templates concerned already: a function template's symbol spells its return type, so
// every executor's `run` returning detail::pass_sum (parallel_executor's too) is told apart. The
// templates above those (sl::value, sl::evaluate, detail::run_term and execute_term, a composed
// loss's evaluate and evaluate_on, parallel_executor's value and evaluate) return no such type:
// each takes a last template parameter `class Isa = detail::isa_tag`, defaulted to the type below,
// so its symbol spells the namespace too. Without it, where they are not inlined (-O0) the linker
// kept one file's copy, which called that file's kernels from every file.
// The features listed are those gcc's vectorizer uses in these loops; a finer flag difference
// (-mssse3 alone, -mf16c) is not told apart.
#if defined(__x86_64__) || defined(_M_X64)
#define STEADYLOSS_ISA_ARCH_ x86_64
#elif defined(__aarch64__) || defined(_M_ARM64)
#define STEADYLOSS_ISA_ARCH_ aarch64
#else
#define STEADYLOSS_ISA_ARCH_ generic
#endif
#if defined(__SSE4_1__)
#define STEADYLOSS_ISA_SSE4_ _sse4
#else
#define STEADYLOSS_ISA_SSE4_
#endif
#if defined(__AVX__)
#define STEADYLOSS_ISA_AVX_ _avx
#else
#define STEADYLOSS_ISA_AVX_
#endif
#if defined(__AVX2__)
#define STEADYLOSS_ISA_AVX2_ _avx2
#else
#define STEADYLOSS_ISA_AVX2_
#endif
#if defined(__FMA__)
#define STEADYLOSS_ISA_FMA_ _fma
#else
#define STEADYLOSS_ISA_FMA_
#endif
#if defined(__AVX512F__)
#define STEADYLOSS_ISA_AVX512_ _avx512
#else
#define STEADYLOSS_ISA_AVX512_
#endif
#if defined(__ARM_FEATURE_SVE)
#define STEADYLOSS_ISA_SVE_ _sve
#else
#define STEADYLOSS_ISA_SVE_
#endif
#if STEADYLOSS_ISA_DISPATCH || !defined(__x86_64__)
#define STEADYLOSS_ISA_FIXED_
#else
#define STEADYLOSS_ISA_FIXED_ _nodispatch  // STEADYLOSS_NO_ISA_DISPATCH: fused_pass's body differs
#endif
#define STEADYLOSS_ISA_PASTE_(arch, a, b, c, d, e, f, g) isa_##arch##a##b##c##d##e##f##g
#define STEADYLOSS_ISA_NAME_(...) STEADYLOSS_ISA_PASTE_(__VA_ARGS__)
/// The inline namespace this translation unit's flag-dependent definitions live in.
#define STEADYLOSS_ISA_NAMESPACE                                                                     \
  STEADYLOSS_ISA_NAME_(STEADYLOSS_ISA_ARCH_, STEADYLOSS_ISA_SSE4_, STEADYLOSS_ISA_AVX_,              \
                       STEADYLOSS_ISA_AVX2_, STEADYLOSS_ISA_FMA_, STEADYLOSS_ISA_AVX512_,             \
                       STEADYLOSS_ISA_SVE_, STEADYLOSS_ISA_FIXED_)
#define STEADYLOSS_ISA_STRING_(...) #__VA_ARGS__
#define STEADYLOSS_ISA_STRING(...) STEADYLOSS_ISA_STRING_(__VA_ARGS__)

namespace steadyloss {

/// Kernel variants, narrowest first. baseline: the build's own flags (SSE2 for a default x86-64 build).
enum class cpu_isa { baseline, avx2, avx512 };

// (steadyloss::detail has its own: a `detail` inside steadyloss::isa_... would make the name
// `detail` ambiguous in steadyloss.)
namespace detail {
inline namespace STEADYLOSS_ISA_NAMESPACE {
/// This translation unit's namespace, e.g. "isa_x86_64" (tests and diagnostics compare them).
inline constexpr std::string_view isa_namespace_name = STEADYLOSS_ISA_STRING(STEADYLOSS_ISA_NAMESPACE);
/// Spells the namespace into the symbols of the entry points above the kernels (their defaulted
/// last template parameter); never passed explicitly.
struct isa_tag {};
}  // inline namespace STEADYLOSS_ISA_NAMESPACE
}  // namespace detail

inline namespace STEADYLOSS_ISA_NAMESPACE {

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

}  // inline namespace STEADYLOSS_ISA_NAMESPACE

inline std::string_view to_string(cpu_isa isa) {
  switch (isa) {
    case cpu_isa::baseline: return "baseline";
    case cpu_isa::avx2: return "avx2";
    case cpu_isa::avx512: return "avx512";
  }
  return "unknown";
}

inline namespace STEADYLOSS_ISA_NAMESPACE {

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

}  // inline namespace STEADYLOSS_ISA_NAMESPACE

// One cap for the whole program, whatever each file's flags: outside the ISA namespace.
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

inline namespace STEADYLOSS_ISA_NAMESPACE {

/// The variant the kernels use: the detected one, capped by limit_cpu_isa, never below the build's.
inline cpu_isa active_cpu_isa() noexcept {
  const cpu_isa detected = detected_cpu_isa();
  const cpu_isa limit = detail::cpu_isa_limit.load(std::memory_order_relaxed);
  const cpu_isa capped = limit < detected ? limit : detected;
  return capped < build_cpu_isa ? build_cpu_isa : capped;
}

}  // inline namespace STEADYLOSS_ISA_NAMESPACE
}  // namespace steadyloss
