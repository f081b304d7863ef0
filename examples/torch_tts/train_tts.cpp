// A small LibTorch model trained on a synthetic TTS-like task with steadyloss: mel-frame
// regression plus an imbalanced stop-token classifier (one positive frame per sequence), on
// padded batches with per-sequence lengths. The loss is the "stable" preset's composed loss,
// evaluated through the torch adapter (one fused pass per term, value and gradient together);
// the step policies (spike dampening, smoothing, adaptive weights, early stopping) decide each
// step. Every step is logged to CSV.
//
//   torch_tts [log.csv] [max_steps]        (defaults: torch_tts_log.csv, 1500)
//
// Runs on the CPU by default, on CUDA when LibTorch sees a GPU and this program was built with
// the CUDA executor (STEADYLOSS_WITH_CUDA; see steadyloss/backend/torch.hpp).
#include <steadyloss/backend/torch.hpp>
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

double gradient_norm(const std::vector<torch::Tensor>& parameters) {
  double sum = 0;
  for (const auto& p : parameters)
    if (p.grad().defined()) sum += p.grad().pow(2).sum().item<double>();
  return std::sqrt(sum);
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
  torch::manual_seed(1);
  tts_model model;
  model.to(device);
  torch::optim::Adam optimizer(model.parameters(), torch::optim::AdamOptions(3e-3));

  auto loss = sl::presets::stable_loss<float>();        // Huber mel x 35 + smoothed BalancedBCE stop x 1
  auto guard = sl::presets::stable_stabilizer<float>();  // spikes, EMA 0.1, adaptive weights, patience 25

  std::ofstream log(log_path);
  log << "step,loss,smoothed,mel,stop,grad_norm,is_spike,skipped,scale,mel_weight,stop_weight,improved,best,"
         "wait,should_stop,reason\n";
  const auto start = std::chrono::steady_clock::now();
  int spikes = 0, steps = 0;
  float first_mel = 0, last_mel = 0;
  for (int step = 0; step < max_steps; ++step, ++steps) {
    const bool corrupted = step == 150 || step == 300;  // two bad batches
    const auto batch = task.sample(corrupted);
    const auto lengths = sl::torch::lengths(batch.lengths);
    optimizer.zero_grad();
    const auto [mel_pred, stop_logits] = model.forward(batch.inputs);
    const auto out = sl::torch::evaluate(loss, sl::torch::inputs(mel_pred, batch.mel, lengths),
                                         sl::torch::inputs(stop_logits, batch.stop, lengths));
    out.total.backward();
    const auto report = guard.update(out.result, static_cast<float>(gradient_norm(model.parameters())));
    if (step == 0) first_mel = out.result.values[0];
    last_mel = out.result.values[0];

    // The policies' decision: scale the gradients (dampen), or skip the update altogether.
    if (!report.skipped) {
      if (report.scale != 1.0f) {
        torch::NoGradGuard no_grad;
        for (auto& p : model.parameters())
          if (p.grad().defined()) p.grad().mul_(report.scale);
      }
      optimizer.step();
    }
    sl::apply_weights(loss, report);  // AdaptiveWeight's multipliers for the next evaluation
    spikes += report.is_spike;

    const auto& weights = out.result.weights;  // the weights this step was evaluated with
    log << report.step << ',' << report.loss << ',' << report.smoothed << ',' << out.result.values[0] << ','
        << out.result.values[1] << ',' << report.grad_norm << ',' << report.is_spike << ',' << report.skipped << ','
        << report.scale << ',' << weights[0] << ',' << weights[1] << ',' << report.improved << ',' << report.best
        << ',' << report.wait << ',' << report.should_stop << ',' << sl::to_string(report.reason) << '\n';
    if (step % 100 == 0 || report.is_spike || report.should_stop)
      std::printf("step %4d  loss %9.4f  smoothed %9.4f  mel %.4f  stop %.4f  weights %.3f/%.3f%s%s\n", step,
                  double(report.loss), double(report.smoothed), double(out.result.values[0]),
                  double(out.result.values[1]), double(weights[0]), double(weights[1]),
                  report.is_spike ? (report.skipped ? "  SPIKE: update skipped" : "  SPIKE: gradients scaled down") : "",
                  report.should_stop ? "  EARLY STOP" : "");
    if (report.should_stop) {
      std::printf("early stop at step %d (%s); best smoothed loss %.4f at step %lld\n", step,
                  std::string(sl::to_string(report.reason)).c_str(), double(report.best), report.best_step);
      ++steps;
      break;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%d steps in %.1f s, %d spikes; mel loss %.4f -> %.4f; per-step log: %s\n", steps, seconds, spikes,
              double(first_mel), double(last_mel), log_path.c_str());
  return 0;
}
