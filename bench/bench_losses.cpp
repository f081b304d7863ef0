// Loss throughput, every implementation side by side in one process. Names:
// <case>/<implementation>/<n>, implementations steadyloss, loop, eigen, xtensor, torch.
//   huber_value_grad  Huber(delta 1), mean: value and gradient w.r.t. pred
//   bce_value_grad    BalancedBCE(pos_weight 5) with label smoothing 0.05, mean
//   tts_composed      35 * masked Huber on mel [16, 400, 80] + masked BCE on stop logits [16, 400]
//   roof/copy         g[i] = a[i] + b[i]: the memory limit a read-two-write-one pass is held against
//   sum/{blocked,naive,kahan}  the cost of accurate float accumulation (value-only MSE, sum)
// steadyloss_mt is sl::parallel_executor with one thread per core (serial below 64K per thread).
// steadyloss_baseline / steadyloss_avx2: the same serial pass capped to that kernel variant
// (sl::limit_cpu_isa; baseline = the build's own flags), registered when this CPU runs a wider
// one: what run-time dispatch buys.
// The torch implementations live in bench_losses_torch.cpp (g++ only: LibTorch 1.13's headers do
// not compile with clang 14 in C++20 mode) and are linked in when LibTorch is found.
#if __has_include(<xsimd/xsimd.hpp>)
#define XTENSOR_USE_XSIMD  // the fastest xtensor configuration Debian offers
#endif

#include <algorithm>
#include <cmath>
#include <string>

#include <Eigen/Core>
#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include <steadyloss/parallel.hpp>
#include <steadyloss/steadyloss.hpp>

#include "common.hpp"

namespace sl = steadyloss;

namespace bench {
void register_torch();  // bench_losses_torch.cpp, or the empty fallback below
}

namespace {

constexpr float delta = 1.0f, pos_weight = 5.0f, eps = 0.05f;

template <bool BinaryTargets, class Body>
auto value_grad_case(Body body) {
  return [body](benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    bench::elementwise_data d(n, BinaryTargets);
    for (auto _ : state) {
      benchmark::DoNotOptimize(body(d, n));
      benchmark::ClobberMemory();
    }
    bench::set_value_grad_bytes(state, n);
  };
}

// --- Huber -------------------------------------------------------------------------------------
float huber_steadyloss(bench::elementwise_data& d, std::size_t) {
  return sl::evaluate(sl::Huber<float>{.delta = delta}, sl::inputs(d.pred, d.target), d.grad).value;
}

float huber_loop(bench::elementwise_data& d, std::size_t n) {
  double sum = 0;
  const float scale = 1.0f / static_cast<float>(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float diff = d.pred[i] - d.target[i];
    if (std::fabs(diff) <= delta) {
      sum += 0.5f * diff * diff;
      d.grad[i] = diff * scale;
    } else {
      sum += delta * (std::fabs(diff) - 0.5f * delta);
      d.grad[i] = std::copysign(delta, diff) * scale;
    }
  }
  return static_cast<float>(sum / static_cast<double>(n));
}

float huber_eigen(bench::elementwise_data& d, std::size_t n) {
  const Eigen::Map<const Eigen::ArrayXf> p(d.pred.data(), static_cast<Eigen::Index>(n));
  const Eigen::Map<const Eigen::ArrayXf> t(d.target.data(), static_cast<Eigen::Index>(n));
  Eigen::Map<Eigen::ArrayXf> g(d.grad.data(), static_cast<Eigen::Index>(n));
  const float scale = 1.0f / static_cast<float>(n);
  const auto diff = p - t;
  const float value = (diff.abs() <= delta).select(0.5f * diff.square(), delta * (diff.abs() - 0.5f * delta)).sum();
  g = diff.max(-delta).min(delta) * scale;
  return value * scale;
}

float huber_xtensor(bench::elementwise_data& d, std::size_t n) {
  const std::array<std::size_t, 1> shape{n};
  const auto p = xt::adapt(d.pred.data(), n, xt::no_ownership(), shape);
  const auto t = xt::adapt(d.target.data(), n, xt::no_ownership(), shape);
  auto g = xt::adapt(d.grad.data(), n, xt::no_ownership(), shape);
  const float scale = 1.0f / static_cast<float>(n);
  const auto diff = p - t;
  const float value = xt::sum(xt::where(xt::abs(diff) <= delta, 0.5f * diff * diff,
                                        delta * (xt::abs(diff) - 0.5f * delta)))();
  g = xt::clip(diff, -delta, delta) * scale;
  return value * scale;
}

const sl::parallel_executor& pool() {
  static const sl::parallel_executor executor;  // one thread per core, started once
  return executor;
}

float huber_steadyloss_mt(bench::elementwise_data& d, std::size_t) {
  return pool().evaluate(sl::Huber<float>{.delta = delta}, sl::inputs(d.pred, d.target), d.grad).value;
}

// --- BalancedBCE with label smoothing --------------------------------------------------------------
float bce_steadyloss(bench::elementwise_data& d, std::size_t) {
  const sl::LabelSmoothing term{sl::BalancedBCE<float>{.pos_weight = pos_weight}, eps};
  return sl::evaluate(term, sl::inputs(d.pred, d.target), d.grad).value;
}

float bce_steadyloss_mt(bench::elementwise_data& d, std::size_t) {
  const sl::LabelSmoothing term{sl::BalancedBCE<float>{.pos_weight = pos_weight}, eps};
  return pool().evaluate(term, sl::inputs(d.pred, d.target), d.grad).value;
}

float bce_loop(bench::elementwise_data& d, std::size_t n) {
  double sum = 0;
  const float scale = 1.0f / static_cast<float>(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float x = d.pred[i], y = d.target[i] * (1 - eps) + eps / 2;
    const float log_weight = 1 + (pos_weight - 1) * y;
    sum += (1 - y) * x + log_weight * (std::log1p(std::exp(-std::fabs(x))) + std::max(-x, 0.0f));
    d.grad[i] = (log_weight / (1 + std::exp(-x)) - pos_weight * y) * scale;
  }
  return static_cast<float>(sum / static_cast<double>(n));
}

float bce_eigen(bench::elementwise_data& d, std::size_t n) {
  const Eigen::Map<const Eigen::ArrayXf> x(d.pred.data(), static_cast<Eigen::Index>(n));
  const Eigen::Map<const Eigen::ArrayXf> t(d.target.data(), static_cast<Eigen::Index>(n));
  Eigen::Map<Eigen::ArrayXf> g(d.grad.data(), static_cast<Eigen::Index>(n));
  const float scale = 1.0f / static_cast<float>(n);
  const auto y = t * (1 - eps) + eps / 2;
  const auto log_weight = 1 + (pos_weight - 1) * y;
  const float value = ((1 - y) * x + log_weight * ((-x.abs()).exp().log1p() + (-x).max(0.0f))).sum();
  g = (log_weight * x.logistic() - pos_weight * y) * scale;
  return value * scale;
}

float bce_xtensor(bench::elementwise_data& d, std::size_t n) {
  const std::array<std::size_t, 1> shape{n};
  const auto x = xt::adapt(d.pred.data(), n, xt::no_ownership(), shape);
  const auto t = xt::adapt(d.target.data(), n, xt::no_ownership(), shape);
  auto g = xt::adapt(d.grad.data(), n, xt::no_ownership(), shape);
  const float scale = 1.0f / static_cast<float>(n);
  const auto y = t * (1 - eps) + eps / 2;
  const auto log_weight = 1 + (pos_weight - 1) * y;
  const float value = xt::sum((1 - y) * x + log_weight * (xt::log1p(xt::exp(-xt::abs(x))) + xt::maximum(-x, 0.0f)))();
  g = (log_weight / (1 + xt::exp(-x)) - pos_weight * y) * scale;
  return value * scale;
}

// --- the roof and the accumulation cost --------------------------------------------------------
float roof_copy(bench::elementwise_data& d, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) d.grad[i] = d.pred[i] + d.target[i];
  return d.grad[n / 2];
}

float sum_blocked(bench::elementwise_data& d, std::size_t) {
  return sl::value(sl::MSE<float>{}, sl::inputs(d.pred, d.target), sl::reduction::sum).value;
}

float sum_naive(bench::elementwise_data& d, std::size_t n) {
  float sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += (d.pred[i] - d.target[i]) * (d.pred[i] - d.target[i]);
  return sum;
}

float sum_kahan(bench::elementwise_data& d, std::size_t n) {
  float sum = 0, compensation = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float term = (d.pred[i] - d.target[i]) * (d.pred[i] - d.target[i]) - compensation;
    const float next = sum + term;
    compensation = (next - sum) - term;
    sum = next;
  }
  return sum;
}

// --- the kernel variants (cpu_isa.hpp) --------------------------------------------------------------
template <class Body>
auto capped(sl::cpu_isa isa, Body body) {
  return [isa, body](bench::elementwise_data& d, std::size_t n) {
    const sl::scoped_cpu_isa_limit cap(isa);
    return body(d, n);
  };
}

template <bool BinaryTargets, class Body>
void register_variants(const std::string& case_name, Body body) {
  // A row where the cap changes the variant; "baseline" is the build's own flags, so an avx2 row
  // exists only for a build below AVX2.
  for (const auto isa : {sl::cpu_isa::baseline, sl::cpu_isa::avx2}) {
    const sl::cpu_isa capped_to = std::max(isa, sl::build_cpu_isa);
    if ((isa == sl::cpu_isa::baseline || capped_to == isa) && capped_to < sl::detected_cpu_isa())
      bench::register_sizes(case_name, "steadyloss_" + std::string(sl::to_string(isa)),
                            value_grad_case<BinaryTargets>(capped(isa, body)));
  }
}

// --- the two-term TTS loss -------------------------------------------------------------------------
void tts_composed_steadyloss(benchmark::State& state) {
  bench::tts_batch b;
  auto loss = sl::compose(sl::term(sl::Huber<float>{.delta = delta}, 35.0f),
                          sl::term(sl::LabelSmoothing{sl::BalancedBCE<float>{.pos_weight = pos_weight}, eps}, 1.0f));
  for (auto _ : state) {
    auto r = loss.evaluate(sl::inputs(b.mel_pred, b.mel_target, sl::lengths(b.lengths, b.frames, b.mel_bins)),
                           sl::inputs(b.stop_logits, b.stop_target, sl::lengths(b.lengths, b.frames, 1)),
                           sl::grads(b.d_mel, b.d_stop));
    benchmark::DoNotOptimize(r);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * b.bytes()));
}

}  // namespace

int main(int argc, char** argv) {
  bench::register_sizes("huber_value_grad", "steadyloss", value_grad_case<false>(huber_steadyloss));
  bench::register_sizes("huber_value_grad", "steadyloss_mt", value_grad_case<false>(huber_steadyloss_mt));
  register_variants<false>("huber_value_grad", huber_steadyloss);
  bench::register_sizes("huber_value_grad", "loop", value_grad_case<false>(huber_loop));
  bench::register_sizes("huber_value_grad", "eigen", value_grad_case<false>(huber_eigen));
  bench::register_sizes("huber_value_grad", "xtensor", value_grad_case<false>(huber_xtensor));
  bench::register_sizes("bce_value_grad", "steadyloss", value_grad_case<true>(bce_steadyloss));
  bench::register_sizes("bce_value_grad", "steadyloss_mt", value_grad_case<true>(bce_steadyloss_mt));
  register_variants<true>("bce_value_grad", bce_steadyloss);
  bench::register_sizes("bce_value_grad", "loop", value_grad_case<true>(bce_loop));
  bench::register_sizes("bce_value_grad", "eigen", value_grad_case<true>(bce_eigen));
  bench::register_sizes("bce_value_grad", "xtensor", value_grad_case<true>(bce_xtensor));
  bench::register_sizes("roof", "copy", value_grad_case<false>(roof_copy));
  bench::register_sizes("sum", "blocked", value_grad_case<false>(sum_blocked));
  bench::register_sizes("sum", "naive", value_grad_case<false>(sum_naive));
  bench::register_sizes("sum", "kahan", value_grad_case<false>(sum_kahan));
  benchmark::RegisterBenchmark("tts_composed/steadyloss/512000", tts_composed_steadyloss);
  bench::register_torch();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
