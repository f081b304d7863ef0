// Resume as the README shows it, on a LibTorch training loop (autograd through
// sl::libtorch::evaluate, Adam): a run stopped at step k, saved (guard state, model and optimizer
// with torch::save, data position), rebuilt from nothing but what was saved and continued, must
// match the uninterrupted run bit for bit, every report field and every parameter, step for
// step, and stop at the same step.
#include <torch/torch.h>
// LibTorch's headers bring glog's CHECK (abort on failure, not counted by Catch); Catch's must win.
#undef CHECK
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <steadyloss/backend/torch.hpp>
#include <steadyloss/presets.hpp>
#include <steadyloss/steadyloss.hpp>

#include "../stability/state_helpers.hpp"

namespace sl = steadyloss;
using namespace state_helpers;

namespace {

constexpr int batch = 4, max_frames = 12, features = 6, mel_bins = 8;

struct batch_data {
  torch::Tensor inputs, mel, stop, lengths;
};

// The batch of step `step` depends on the step only, as a data loader's position does. Every 17th
// batch has corrupted targets (spikes); steps 60 and 61 carry a NaN frame (skipped steps).
batch_data make_batch(long long step) {
  lcg random{static_cast<std::uint64_t>(step) * 7919u + 17u};
  std::vector<std::int64_t> lengths;
  for (int i = 0; i < batch; ++i) lengths.push_back(max_frames / 2 + static_cast<int>(random.below(max_frames / 2 + 1)));
  std::vector<float> inputs(batch * max_frames * features), mel(batch * max_frames * mel_bins), stop(batch * max_frames);
  for (int r = 0; r < batch * max_frames; ++r) {
    for (int c = 0; c < features; ++c) inputs[r * features + c] = static_cast<float>(2 * random.uniform() - 1);
    stop[r] = r % max_frames == lengths[static_cast<std::size_t>(r / max_frames)] - 1 ? 1.0f : 0.0f;
    inputs[r * features + features - 1] = stop[r] - 0.5f;  // the stop is learnable, slowly
    for (int m = 0; m < mel_bins; ++m) {
      const double clean = 0.5 * inputs[r * features + m % features] - 0.25 * inputs[r * features + (m + 1) % features];
      mel[r * mel_bins + m] = static_cast<float>(clean + 0.05 * (random.uniform() - 0.5));
      if (step % 17 == 16) mel[r * mel_bins + m] *= 12.0f;
    }
  }
  if (step == 60 || step == 61) mel[0] = std::numeric_limits<float>::quiet_NaN();
  return {torch::tensor(inputs).view({batch, max_frames, features}),
          torch::tensor(mel).view({batch, max_frames, mel_bins}), torch::tensor(stop).view({batch, max_frames}),
          torch::tensor(lengths)};
}

struct model_impl : torch::nn::Module {
  torch::nn::Linear mel_head{nullptr}, stop_head{nullptr};
  model_impl()
      : mel_head(register_module("mel_head", torch::nn::Linear(features, mel_bins))),
        stop_head(register_module("stop_head", torch::nn::Linear(features, 1))) {}
};

// One model and its optimizer: what a checkpoint holds besides the guard state.
struct trainer {
  std::shared_ptr<model_impl> model = std::make_shared<model_impl>();
  torch::optim::Adam optimizer{model->parameters(), torch::optim::AdamOptions(0.01)};

  // Model and optimizer each in their own archive (one zip archive per torch::save).
  std::string save() {
    std::ostringstream model_out, optimizer_out;
    torch::save(model, model_out);
    torch::save(optimizer, optimizer_out);
    const std::string m = model_out.str();
    return std::to_string(m.size()) + '\n' + m + optimizer_out.str();
  }
  void load(const std::string& text) {
    const auto newline = text.find('\n');
    const std::size_t size = std::stoul(text.substr(0, newline));
    std::istringstream model_in(text.substr(newline + 1, size)), optimizer_in(text.substr(newline + 1 + size));
    torch::load(model, model_in);
    torch::load(optimizer, optimizer_in);
  }
  std::vector<float> parameters() const {
    std::vector<float> out;
    for (const auto& p : model->parameters()) {
      const auto c = p.detach().contiguous();
      out.insert(out.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
    }
    return out;
  }
};

auto make_guard() {
  auto guard = sl::presets::stable_stabilizer<float>();
  guard.get<sl::EarlyStopper<float>>() = sl::EarlyStopper<float>({.patience = 30, .min_delta = 0.02});
  return guard;
}

struct run_log {
  std::vector<sl::step_report<float, 2>> reports;
  std::vector<std::vector<float>> parameters;
  long long stop_step = -1;
};

template <class Loss, class Guard>
void train(Loss& loss, Guard& guard, trainer& t, long long first, long long save_at, run_log& log,
           std::string& guard_state, std::string& checkpoint) {
  for (long long step = first; step < 600; ++step) {
    const auto b = make_batch(step);
    const auto lengths = sl::libtorch::lengths(b.lengths);
    t.optimizer.zero_grad();
    const auto mel_pred = t.model->mel_head->forward(b.inputs);
    const auto stop_logits = t.model->stop_head->forward(b.inputs).squeeze(-1);
    const auto out = sl::libtorch::evaluate(loss, sl::libtorch::inputs(mel_pred, b.mel, lengths),
                                            sl::libtorch::inputs(stop_logits, b.stop, lengths));
    out.total.backward();
    double sum = 0;
    for (const auto& p : t.model->parameters()) sum += p.grad().pow(2).sum().item<double>();
    const auto s = guard.update(out.result, static_cast<float>(std::sqrt(sum)));
    if (!s.skipped) {
      if (s.scale != 1.0f) {
        torch::NoGradGuard no_grad;
        for (auto& p : t.model->parameters()) p.grad().mul_(s.scale);
      }
      t.optimizer.step();
    }
    sl::apply_weights(loss, s);
    log.reports.push_back(s);
    log.parameters.push_back(t.parameters());
    if (step == save_at) {
      guard_state = guard.save();
      checkpoint = t.save();
      return;
    }
    if (s.should_stop) {
      log.stop_step = step;
      return;
    }
  }
}

long long mismatches(const run_log& whole, const run_log& resumed, long long k) {
  long long bad = 0;
  for (std::size_t i = 0; i < resumed.reports.size(); ++i) {
    const std::size_t at = static_cast<std::size_t>(k + 1) + i;
    if (at >= whole.reports.size() || !same_report(resumed.reports[i], whole.reports[at]) ||
        resumed.parameters[i].size() != whole.parameters[at].size() ||
        std::memcmp(resumed.parameters[i].data(), whole.parameters[at].data(),
                    sizeof(float) * resumed.parameters[i].size()) != 0)
      ++bad;
  }
  return bad + (resumed.stop_step != whole.stop_step);
}

}  // namespace

TEST_CASE("An interrupted LibTorch training loop resumes bit for bit", "[torch][state]") {
  torch::set_num_threads(1);  // one thread: the reductions add in one order in every run
  torch::manual_seed(3);
  auto loss = sl::presets::stable_loss<float>();
  auto guard = make_guard();
  trainer t;
  const std::string initial = t.save();
  run_log whole;
  std::string unused_state, unused_checkpoint;
  train(loss, guard, t, 0, -1, whole, unused_state, unused_checkpoint);
  INFO("stopped at " << whole.stop_step << " (" << sl::to_string(whole.reports.back().reason) << "), loss "
                      << whole.reports.front().loss << " -> " << whole.reports.back().loss << ", best "
                      << whole.reports.back().best << " at " << whole.reports.back().best_step);
  REQUIRE(whole.stop_step > 100);
  int spikes = 0, skipped = 0;
  for (const auto& r : whole.reports) {
    spikes += r.is_spike;
    skipped += r.skipped;
  }
  CHECK(spikes >= 3);
  CHECK(skipped >= 2);
  CHECK(whole.reports.back().weights[0] != 1.0f);

  for (long long k : {16LL, 61LL, whole.stop_step - 3}) {
    INFO("interrupted after step " << k);
    auto first_loss = sl::presets::stable_loss<float>();
    auto first_guard = make_guard();
    trainer first;
    first.load(initial);
    run_log first_log;
    std::string saved, checkpoint;
    train(first_loss, first_guard, first, 0, k, first_log, saved, checkpoint);
    REQUIRE(!saved.empty());

    // A new process: fresh objects, then the documented resume path.
    auto resumed_loss = sl::presets::stable_loss<float>();
    auto resumed_guard = make_guard();
    resumed_guard.restore(saved);
    sl::apply_weights(resumed_loss, resumed_guard);
    trainer resumed;
    resumed.load(checkpoint);
    run_log resumed_log;
    train(resumed_loss, resumed_guard, resumed, k + 1, -1, resumed_log, unused_state, unused_checkpoint);
    CHECK(resumed_log.stop_step == whole.stop_step);
    CHECK(mismatches(whole, resumed_log, k) == 0);

    // Without the loss's multipliers the resume diverges (what the README's loop did before).
    if (k > 61) {
      auto loss_without = sl::presets::stable_loss<float>();
      auto guard_without = make_guard();
      guard_without.restore(saved);
      trainer without;
      without.load(checkpoint);
      run_log without_log;
      train(loss_without, guard_without, without, k + 1, -1, without_log, unused_state, unused_checkpoint);
      CHECK(mismatches(whole, without_log, k) > 0);
    }
  }
}
