// What buffer placement costs the fused pass: Huber and BalancedBCE (label smoothing 0.05)
// value + gradient, serial, over 64-byte-aligned buffers (aligned64) and over views of the same
// kind of buffers offset by 4 bytes (offset4), as a user slicing a tensor at element 1 passes
// them. Names <case>_alignment/{aligned64,offset4}/<n>; bench/run shows the ratio.
#include <steadyloss/steadyloss.hpp>

#include <cstdint>
#include <cstdio>
#include <string>

#include "common.hpp"

namespace sl = steadyloss;

namespace {

constexpr float delta = 1.0f, pos_weight = 5.0f, eps = 0.05f;

template <bool BinaryTargets, class Body>
void register_case(const std::string& case_name, Body body) {
  for (const std::size_t misalign_bytes : {std::size_t{0}, std::size_t{4}}) {
    for (const long n : {1024L, 8192L, 1048576L}) {
      // Arg(n) appends "/<n>" to the name.
      const std::string name = case_name + "_alignment/" + (misalign_bytes == 0 ? "aligned64" : "offset4");
      benchmark::RegisterBenchmark(name.c_str(), [body, misalign_bytes](benchmark::State& state) {
        const auto size = static_cast<std::size_t>(state.range(0));
        bench::elementwise_data d(size, BinaryTargets, misalign_bytes);
        for (auto _ : state) {
          benchmark::DoNotOptimize(body(d));
          benchmark::ClobberMemory();
        }
        bench::set_value_grad_bytes(state, size);
      })->Arg(n);
    }
  }
}

float huber(bench::elementwise_data& d) {
  return sl::evaluate(sl::Huber<float>{.delta = delta}, sl::inputs(d.pred, d.target), d.grad).value;
}

float bce(bench::elementwise_data& d) {
  const sl::LabelSmoothing term{sl::BalancedBCE<float>{.pos_weight = pos_weight}, eps};
  return sl::evaluate(term, sl::inputs(d.pred, d.target), d.grad).value;
}

// The placement the results depend on: each buffer misalign_bytes past a 64-byte boundary, no
// two at the same offset in a 4 KiB page. Checked, so a change in common.hpp cannot quietly turn
// both rows into the same case.
bool placed_as_asked(const bench::elementwise_data& d, std::size_t misalign_bytes) {
  const auto address = [](const float* p) { return reinterpret_cast<std::uintptr_t>(p); };
  const std::uintptr_t a[3] = {address(d.pred.data()), address(d.target.data()), address(d.grad.data())};
  for (int i = 0; i < 3; ++i) {
    if (a[i] % 64 != misalign_bytes) return false;
    for (int j = 0; j < i; ++j)
      if ((a[i] - a[j]) % 4096 == 0) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  for (const std::size_t misalign_bytes : {std::size_t{0}, std::size_t{4}})
    for (const std::size_t n : {std::size_t{1024}, std::size_t{1048576}})
      if (!placed_as_asked(bench::elementwise_data(n, false, misalign_bytes), misalign_bytes)) {
        std::fprintf(stderr, "bench_alignment: buffers of %zu elements are not placed %zu bytes past 64-byte "
                             "boundaries at distinct 4 KiB-page offsets\n", n, misalign_bytes);
        return 1;
      }
  register_case<false>("huber", huber);
  register_case<true>("bce", bce);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
