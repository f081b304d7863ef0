// The LibTorch peers of bench_losses.cpp: torch::nn::functional forward + autograd backward on the
// same data, CPU, one intra-op thread (as steadyloss's executor is single-threaded; the run's
// header line says so), and steadyloss_torch: the same steadyloss pass through the LibTorch
// adapter (sl::libtorch::loss + autograd), to show what the autograd plumbing costs. g++ only.
#include <torch/torch.h>

#include <steadyloss/backend/torch.hpp>
#include <steadyloss/steadyloss.hpp>

#include "common.hpp"

namespace sl = steadyloss;

namespace F = torch::nn::functional;

namespace {

constexpr float delta = 1.0f, pos_weight = 5.0f, eps = 0.05f;

torch::Tensor from(bench::placed_vector<float>& v, bool requires_grad) {
  return torch::from_blob(v.data(), {static_cast<long>(v.size())}, torch::kFloat32).set_requires_grad(requires_grad);
}

void huber_torch(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  bench::elementwise_data d(n, false);
  const auto pred = from(d.pred, true), target = from(d.target, false);
  const auto options = F::HuberLossFuncOptions().reduction(torch::kMean).delta(delta);
  for (auto _ : state) {
    const auto loss = F::huber_loss(pred, target, options);
    auto grads = torch::autograd::grad({loss}, {pred});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  bench::set_value_grad_bytes(state, n);
}

void huber_steadyloss_torch(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  bench::elementwise_data d(n, false);
  const auto pred = from(d.pred, true), target = from(d.target, false);
  for (auto _ : state) {
    const auto loss = sl::libtorch::loss(sl::Huber<float>{.delta = delta}, pred, target);
    auto grads = torch::autograd::grad({loss}, {pred});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  bench::set_value_grad_bytes(state, n);
}

void bce_steadyloss_torch(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  bench::elementwise_data d(n, true);
  const auto logits = from(d.pred, true), target = from(d.target, false);
  const sl::LabelSmoothing term{sl::BalancedBCE<float>{.pos_weight = pos_weight}, eps};
  for (auto _ : state) {
    const auto loss = sl::libtorch::loss(term, logits, target);
    auto grads = torch::autograd::grad({loss}, {logits});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  bench::set_value_grad_bytes(state, n);
}

void bce_torch(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  bench::elementwise_data d(n, true);
  const auto logits = from(d.pred, true);
  const auto smoothed = from(d.target, false) * (1 - eps) + eps / 2;  // smoothed once, outside the loop
  const auto options = F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(torch::full({1}, pos_weight));
  for (auto _ : state) {
    const auto loss = F::binary_cross_entropy_with_logits(logits, smoothed, options);
    auto grads = torch::autograd::grad({loss}, {logits});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  bench::set_value_grad_bytes(state, n);
}

void tts_composed_torch(benchmark::State& state) {
  bench::tts_batch b;
  const long batch = bench::tts_batch::batch, frames = bench::tts_batch::frames, bins = bench::tts_batch::mel_bins;
  const auto mel_pred = torch::from_blob(b.mel_pred.data(), {batch, frames, bins}).set_requires_grad(true);
  const auto mel_target = torch::from_blob(b.mel_target.data(), {batch, frames, bins});
  const auto stop_logits = torch::from_blob(b.stop_logits.data(), {batch, frames}).set_requires_grad(true);
  const auto stop_target = torch::from_blob(b.stop_target.data(), {batch, frames}) * (1 - eps) + eps / 2;
  const auto mask = torch::from_blob(b.frame_mask.data(), {batch, frames});  // built once, as a data loader would
  const auto huber = F::HuberLossFuncOptions().reduction(torch::kNone).delta(delta);
  const auto bce = F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone).pos_weight(torch::full({1}, pos_weight));
  for (auto _ : state) {
    const auto frames_kept = mask.sum();
    const auto mel = (F::huber_loss(mel_pred, mel_target, huber) * mask.unsqueeze(-1)).sum() / (frames_kept * bins);
    const auto stop = (F::binary_cross_entropy_with_logits(stop_logits, stop_target, bce) * mask).sum() / frames_kept;
    const auto total = 35.0f * mel + stop;
    auto grads = torch::autograd::grad({total}, {mel_pred, stop_logits});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * b.bytes()));
}

}  // namespace

namespace bench {
void register_torch() {
  torch::set_num_threads(1);
  register_sizes("huber_value_grad", "torch", huber_torch);
  register_sizes("bce_value_grad", "torch", bce_torch);
  register_sizes("huber_value_grad", "steadyloss_torch", huber_steadyloss_torch);
  register_sizes("bce_value_grad", "steadyloss_torch", bce_steadyloss_torch);
  benchmark::RegisterBenchmark("tts_composed/torch/512000", tts_composed_torch);
}
}  // namespace bench
