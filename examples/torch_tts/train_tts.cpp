// A small LibTorch model trained on a synthetic TTS-like task with steadyloss: mel-frame
// regression plus an imbalanced stop-token classifier (one positive frame per sequence), on
// padded batches with per-sequence lengths. The loss is the "stable" preset's composed loss,
// evaluated through the torch adapter (one fused pass per term, value and gradient together);
// the step policies (spike handling, smoothing, adaptive weights, the mel term's error scale)
// decide each step, through the LibTorch step helpers (steadyloss/backend/torch_step.hpp).
// Every 25 steps a validation check on a fixed validation set feeds early stopping and keeps
// the best weights, restored at the end. Every step is logged to CSV.
//
//   torch_tts [log.csv] [max_steps]        (defaults: torch_tts_log.csv, 1500)
//
// Runs on the CPU by default, on CUDA when LibTorch sees a GPU and this program was built with
// the CUDA executor (STEADYLOSS_WITH_CUDA; see steadyloss/backend/torch.hpp).
#include <steadyloss/backend/torch.hpp>
#include <steadyloss/backend/torch_step.hpp>
#include <steadyloss/presets.hpp>
#include <steadyloss/steadyloss.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace sl = steadyloss;

namespace {

constexpr std::int64_t batch_size = 16, max_frames = 80, text_features = 12, mel_bins = 20, hidden = 64;
constexpr int validation_every = 25;  // steps between validation checks

/// The synthetic task: a fixed random "teacher" maps per-frame input features (a phone embedding
/// plus the frame's relative position) to mel frames; the stop token fires on the last valid
/// frame. Padding frames hold garbage, as real padded batches may.
struct synthetic_task {
  torch::Tensor teacher_in, teacher_out;
  torch::Device device;

  explicit synthetic_task(torch::Device d) : device(d) {
    torch::manual_seed(7);
    teacher_in = torch::randn({text_features + 1, hidden}) / std::sqrt(double(text_features));
    teacher_out = torch::randn({hidden, mel_bins}) / std::sqrt(double(hidden));
  }

  struct batch {
    torch::Tensor inputs;       // [B, T, text_features + 1]
    torch::Tensor mel;          // [B, T, mel_bins]
    torch::Tensor stop;         // [B, T], 1 at the last valid frame
    std::vector<std::int64_t> lengths;
  };

  batch sample(bool corrupted) const {
    batch b;
    b.lengths.resize(batch_size);
    const auto lengths = torch::randint(max_frames / 4, max_frames + 1, {batch_size}, torch::kLong);
    for (std::int64_t i = 0; i < batch_size; ++i) b.lengths[static_cast<std::size_t>(i)] = lengths[i].item<std::int64_t>();
    const auto frame = torch::arange(max_frames, torch::kFloat32).unsqueeze(0);                  // [1, T]
    const auto position = frame / lengths.to(torch::kFloat32).unsqueeze(1);                      // [B, T]
    const auto phones = torch::randn({batch_size, max_frames, text_features});
    b.inputs = torch::cat({phones, position.unsqueeze(-1)}, -1);
    b.mel = torch::tanh(torch::matmul(torch::relu(torch::matmul(b.inputs, teacher_in)), teacher_out)) +
            0.05 * torch::randn({batch_size, max_frames, mel_bins});
    if (corrupted) b.mel = b.mel * 25.0;  // a bad batch (mis-scaled features): a loss spike
    b.stop = (frame == (lengths - 1).to(torch::kFloat32).unsqueeze(1)).to(torch::kFloat32);
    const auto padding = (frame >= lengths.to(torch::kFloat32).unsqueeze(1)).unsqueeze(-1);
    b.mel = b.mel.masked_fill(padding, 1e3);  // garbage the masked loss must ignore
    b.inputs = b.inputs.to(device);
    b.mel = b.mel.to(device);
    b.stop = b.stop.to(device);
    return b;
  }
};

struct tts_model : torch::nn::Module {
  torch::nn::Linear encoder{nullptr}, mel_head{nullptr}, stop_head{nullptr};
  tts_model()
      : encoder(register_module("encoder", torch::nn::Linear(text_features + 1, hidden))),
        mel_head(register_module("mel_head", torch::nn::Linear(hidden, mel_bins))),
        stop_head(register_module("stop_head", torch::nn::Linear(hidden + 1, 1))) {}

  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& inputs) {
    const auto h = torch::relu(encoder->forward(inputs));
    const auto position = inputs.narrow(-1, text_features, 1);
    return {mel_head->forward(h), stop_head->forward(torch::cat({h, position}, -1)).squeeze(-1)};
  }
};

/// A fixed validation set: batches sampled once, never trained on, never corrupted.
std::vector<synthetic_task::batch> validation_set(const synthetic_task& task, int batches) {
  std::vector<synthetic_task::batch> out;
  for (int i = 0; i < batches; ++i) out.push_back(task.sample(false));
  return out;
}

/// The mean validation total of `validation_loss` (the loss as defined: base weights, initial
/// error scale) over the validation set: a value that is comparable from check to check.
template <class Loss>
double validation_total(tts_model& model, const Loss& validation_loss, const std::vector<synthetic_task::batch>& set) {
  torch::NoGradGuard no_grad;
  double sum = 0;
  for (const auto& b : set) {
    const auto lengths = sl::libtorch::lengths(b.lengths);
    const auto [mel_pred, stop_logits] = model.forward(b.inputs);
    sum += sl::libtorch::evaluate(validation_loss, sl::libtorch::inputs(mel_pred, b.mel, lengths),
                                  sl::libtorch::inputs(stop_logits, b.stop, lengths))
               .result.total;
  }
  return sum / static_cast<double>(set.size());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string log_path = argc > 1 ? argv[1] : "torch_tts_log.csv";
  const int max_steps = argc > 2 ? std::atoi(argv[2]) : 1500;
  torch::set_num_threads(1);  // small matrices: threads cost more than they give; steady timings

  torch::Device device(torch::kCPU);
#if defined(STEADYLOSS_WITH_CUDA)
  if (torch::cuda::is_available()) device = torch::Device(torch::kCUDA);
#endif
  std::printf("device: %s\n", device.is_cuda() ? "cuda" : "cpu");

  synthetic_task task(device);
  const auto validation = validation_set(task, 4);
  torch::manual_seed(1);
  tts_model model;
  model.to(device);
  const auto params = model.parameters();
  torch::optim::Adam optimizer(params, torch::optim::AdamOptions(3e-3));

  auto loss = sl::presets::stable_loss<float>();  // AdaptiveHuber mel + BalancedBCE stop, presets::stable weights
  // Validation measures with the loss as defined (base weights, the initial error scale): the
  // live loss's multipliers and delta move every step, and the checks must compare like with like.
  const auto validation_loss = sl::libtorch::frozen_copy(loss);
  // Spikes, smoothing, adaptive weights, the mel error scale; it stops only a run of NaN steps.
  auto guard = sl::presets::stable_stabilizer<float>();
  // Early stopping watches the validation loss, patience counted in checks.
  auto stopper = sl::presets::validation_stopper_for<float>(sl::presets::stable);
  sl::libtorch::best_weights best(model);  // the weights of the best validation check

  std::ofstream log(log_path);
  log << "step,loss,smoothed,mel,stop,grad_norm,is_spike,skipped,scale,mel_weight,stop_weight,mel_scale,validation,"
         "improved,best,wait,should_stop,reason\n";
  const auto start = std::chrono::steady_clock::now();
  int spikes = 0, steps = 0;
  bool stopped = false;
  double first_validation = 0;
  for (int step = 0; step < max_steps; ++step, ++steps) {
    const bool corrupted = step == 150 || step == 300;  // two bad batches
    const auto batch = task.sample(corrupted);
    const auto lengths = sl::libtorch::lengths(batch.lengths);
    optimizer.zero_grad();
    const auto [mel_pred, stop_logits] = model.forward(batch.inputs);
    const auto out = sl::libtorch::evaluate(loss, sl::libtorch::inputs(mel_pred, batch.mel, lengths),
                                            sl::libtorch::inputs(stop_logits, batch.stop, lengths));
    out.total.backward();
    const auto report = guard.update(out.result, static_cast<float>(sl::libtorch::grad_norm(params)));
    // The policies' decision: gradients scaled by report.scale (dampened), or no update at all.
    if (sl::libtorch::apply(report, params)) optimizer.step();
    const float mel_scale = loss.term<0>().scale;  // the error scale this step was evaluated with
    sl::apply(loss, report);  // multipliers and the mel term's error scale for the next step
    spikes += report.is_spike;

    const auto& weights = out.result.weights;  // the weights this step was evaluated with
    log << report.step << ',' << report.loss << ',' << report.smoothed << ',' << out.result.values[0] << ','
        << out.result.values[1] << ',' << report.grad_norm << ',' << report.is_spike << ',' << report.skipped << ','
        << report.scale << ',' << weights[0] << ',' << weights[1] << ',' << mel_scale;
    if (step % 100 == 0 || report.is_spike)
      std::printf("step %4d  loss %9.4f  smoothed %9.4f  mel %.4f  stop %.4f  weights %.3f/%.3f  mel scale %.4f%s\n",
                  step, double(report.loss), double(report.smoothed), double(out.result.values[0]),
                  double(out.result.values[1]), double(weights[0]), double(weights[1]), double(mel_scale),
                  report.is_spike ? (report.skipped ? "  SPIKE: update skipped" : "  SPIKE: gradients scaled down") : "");

    if (report.should_stop) {  // the per-step pipeline ends a run of non-finite steps
      log << ",,,,1," << sl::to_string(report.reason) << '\n';
      std::printf("stopped at step %d (%s)\n", step, std::string(sl::to_string(report.reason)).c_str());
      stopped = true;
      ++steps;
      break;
    }
    if ((step + 1) % validation_every != 0) {
      log << ",,,,,,\n";
      continue;
    }
    const double value = validation_total(model, validation_loss, validation);
    const auto check = stopper.check(static_cast<float>(value), step);
    if (check.check == 0) first_validation = value;
    best.update(check);  // copies the weights when this check improved, and only then
    log << ',' << value << ',' << check.improved << ',' << check.best << ',' << check.wait << ',' << check.should_stop
        << ',' << sl::to_string(check.reason) << '\n';
    if (check.should_stop) {
      std::printf("early stop at step %d (validation check %lld, %s); best validation loss %.4f at step %lld\n", step,
                  check.check, std::string(sl::to_string(check.reason)).c_str(), double(check.best), check.best_step);
      stopped = true;
      ++steps;
      break;
    }
  }
  if (!stopped)
    std::printf("no early stop in %d steps: %lld validation checks, %lld since the last improvement (patience %d)\n",
                steps, stopper.checks(), stopper.wait(), stopper.settings().stop.patience);
  if (best.restore())
    std::printf("restored the weights of step %lld (validation loss %.4f)\n", best.step(),
                validation_total(model, validation_loss, validation));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%d steps in %.1f s, %d spikes; validation loss %.4f (first check) -> %.4f (best); per-step log: %s\n",
              steps, seconds, spikes, first_validation, double(stopper.best()), log_path.c_str());
  return 0;
}
