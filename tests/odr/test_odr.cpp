// One program, two files built with different -march flags, both running Huber<float>'s fused
// pass: each keeps its own kernels (cpu_isa.hpp's ISA namespace), dispatches by its own
// build_cpu_isa, and gives the long-double reference's values. Without the namespace the linker
// kept one fused_pass for both, and the default-flags file could run the AVX2 file's body.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include <steadyloss/cpu_isa.hpp>

#include "../reference.hpp"
#include "odr_report.hpp"

namespace sl = steadyloss;

#if STEADYLOSS_ODR_AVX2_FILE

namespace {

bool cpu_runs_avx2_file() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

void check_huber(const char* file, odr_test::huber_result (*run)(const float*, const float*, std::size_t, float,
                                                                  float*, float*, sl::cpu_isa),
                 sl::cpu_isa cap) {
  const std::size_t n = 4099;  // full blocks, a partial block of rows and a scalar remainder
  const float delta = 1.5f;
  const auto pred = reference::uniform<float>(n, -8.0f, 8.0f, 41);
  const auto target = reference::uniform<float>(n, -3.0f, 3.0f, 42);
  reference::real sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += reference::huber(pred[i], target[i], delta);
  std::vector<float> grad_evaluate(n), grad_pass(n);
  const auto result = run(pred.data(), target.data(), n, delta, grad_evaluate.data(), grad_pass.data(), cap);
  INFO(file << " file, cap " << sl::to_string(cap));
  const double tolerance = 20 * reference::tolerance<float>();
  CHECK(result.evaluate_value == Approx(double(sum / n)).epsilon(tolerance));
  CHECK(result.fused_pass_sum == Approx(double(sum)).epsilon(tolerance));
  int bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double expected = double(reference::huber_grad(pred[i], target[i], delta));
    bad += !(std::fabs(double(grad_pass[i]) - expected) <= tolerance * (1 + std::fabs(expected)));
    bad += !(std::fabs(double(grad_evaluate[i]) - expected / n) <= tolerance * (1 + std::fabs(expected)) / n);
  }
  CHECK(bad == 0);
}

using entry_points_function = odr_test::entry_points (*)(const float*, const float*, std::size_t, float, float*,
                                                          float*, sl::cpu_isa);

odr_test::entry_points check_entry_points(const char* file, entry_points_function run) {
  const std::size_t n = 4099;
  const float delta = 1.5f;
  const auto pred = reference::uniform<float>(n, -8.0f, 8.0f, 43);
  const auto target = reference::uniform<float>(n, -3.0f, 3.0f, 44);
  reference::real huber_sum = 0, l1_sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    huber_sum += reference::huber(pred[i], target[i], delta);
    l1_sum += std::fabs(reference::real(pred[i]) - reference::real(target[i]));
  }
  std::vector<float> grad_huber(n), grad_l1(n);
  const auto result = run(pred.data(), target.data(), n, delta, grad_huber.data(), grad_l1.data(),
                          sl::cpu_isa::baseline);
  INFO(file << " file");
  const double tolerance = 20 * reference::tolerance<float>();
  CHECK(result.value == Approx(double(huber_sum / n)).epsilon(tolerance));
  CHECK(result.composed_total == Approx(double((huber_sum + l1_sum) / n)).epsilon(tolerance));
  CHECK(result.value_address != 0);
  CHECK(result.composed_evaluate_address != 0);
  return result;
}

}  // namespace

TEST_CASE("Files built at -O0 with different flags each call their own sl::value and evaluate", "[odr][isa]") {
  const auto default_file = check_entry_points("default-flags", &odr_test::entry_points_default_flags);
  if (!cpu_runs_avx2_file()) {
    WARN("this CPU lacks AVX2 or FMA: the -mavx2 -mfma file is not run");
    return;
  }
  const auto avx2_file = check_entry_points("-mavx2 -mfma", &odr_test::entry_points_avx2_flags);
  if (sl::build_cpu_isa >= sl::cpu_isa::avx2) {
    WARN("the build's own flags give AVX2 and FMA already: both files have the same flags");
    return;
  }
  // One shared copy (the linker's pick of two weak definitions of one symbol) would have one
  // address, and run one file's kernels from both.
  CHECK(avx2_file.value_address != default_file.value_address);
  CHECK(avx2_file.composed_evaluate_address != default_file.composed_evaluate_address);
}

TEST_CASE("Files built with different -march flags keep their own fused pass", "[odr][isa]") {
  const auto default_file = odr_test::report_default_flags(sl::cpu_isa::baseline);
  CHECK(std::string(default_file.isa_namespace) == std::string(sl::detail::isa_namespace_name));
  CHECK(default_file.build_isa == sl::build_cpu_isa);
  CHECK(default_file.active_isa == sl::build_cpu_isa);
  if (!cpu_runs_avx2_file()) {
    WARN("this CPU lacks AVX2 or FMA: the -mavx2 -mfma file is not run");
    return;
  }
  const auto avx2_file = odr_test::report_avx2_flags(sl::cpu_isa::baseline);
  if (sl::build_cpu_isa >= sl::cpu_isa::avx2) {
    WARN("the build's own flags give AVX2 and FMA already: both files have the same flags");
    CHECK(std::string(avx2_file.isa_namespace) == std::string(default_file.isa_namespace));
    return;
  }
  INFO("default flags: " << default_file.isa_namespace << ", -mavx2 -mfma: " << avx2_file.isa_namespace);
  CHECK(std::string(avx2_file.isa_namespace) != std::string(default_file.isa_namespace));
  CHECK(avx2_file.fused_pass_address != default_file.fused_pass_address);
  // Each file's dispatch floor is its own flags': capped at baseline, the -mavx2 file still runs
  // AVX2 (its baseline body is AVX2 code), the default-flags file its own build's variant.
  CHECK(avx2_file.build_isa >= sl::cpu_isa::avx2);
  CHECK(avx2_file.active_isa == avx2_file.build_isa);
  CHECK(default_file.active_isa < sl::cpu_isa::avx2);
}

TEST_CASE("Both files' fused passes give the reference values under every cap", "[odr][isa]") {
  for (const auto cap : {sl::cpu_isa::baseline, sl::cpu_isa::avx2, sl::cpu_isa::avx512}) {
    check_huber("default-flags", &odr_test::huber_default_flags, cap);
    if (cpu_runs_avx2_file()) check_huber("-mavx2 -mfma", &odr_test::huber_avx2_flags, cap);
  }
}

#else

TEST_CASE("Files built with different -march flags keep their own fused pass", "[odr][isa]") {
  WARN("not an x86-64 gcc/clang build, or the compiler refuses -mavx2 -mfma: only one file's flags here");
  const auto default_file = odr_test::report_default_flags(sl::cpu_isa::baseline);
  CHECK(std::string(default_file.isa_namespace) == std::string(sl::detail::isa_namespace_name));
}

#endif
