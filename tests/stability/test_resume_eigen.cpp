// Resume as the README shows it, on a real training loop over Eigen tensors: a run stopped at
// step k, saved (guard state, model, optimizer, data position), rebuilt from nothing but what was
// saved and continued, must match the uninterrupted run bit for bit, every report field and every
// parameter, step for step, and stop at the same step.
#include <catch2/catch.hpp>

#include <Eigen/Dense>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include <steadyloss/backend/eigen.hpp>
#include <steadyloss/presets.hpp>
#include <steadyloss/steadyloss.hpp>

#include "state_helpers.hpp"

namespace sl = steadyloss;
using namespace state_helpers;

namespace {

constexpr int batch = 4, max_frames = 12, features = 6, mel_bins = 8;

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

template <class T>
struct batch_data {
  matrix<T> inputs{batch * max_frames, features};
  matrix<T> mel{batch * max_frames, mel_bins};
  vector<T> stop{batch * max_frames};
  std::vector<int> lengths;
  // Padding as one mask weight per element (0 past a sequence's length).
  matrix<T> mel_mask{batch * max_frames, mel_bins};
  vector<T> stop_mask{batch * max_frames};
};

// The batch of step `step` depends on the step only, as a data loader's position does. Every 17th
// batch has corrupted targets (spikes); steps 60 and 61 carry a NaN frame (skipped steps).
template <class T>
batch_data<T> make_batch(long long step) {
  lcg random{static_cast<std::uint64_t>(step) * 7919u + 17u};
  batch_data<T> b;
  for (int i = 0; i < batch; ++i) b.lengths.push_back(max_frames / 2 + static_cast<int>(random.below(max_frames / 2 + 1)));
  for (Eigen::Index r = 0; r < b.inputs.rows(); ++r) {
    for (Eigen::Index c = 0; c < features; ++c) b.inputs(r, c) = static_cast<T>(2 * random.uniform() - 1);
    for (Eigen::Index m = 0; m < mel_bins; ++m) {
      const double clean = 0.5 * b.inputs(r, m % features) - 0.25 * b.inputs(r, (m + 1) % features);
      b.mel(r, m) = static_cast<T>(clean + 0.05 * (random.uniform() - 0.5));
    }
    const int frame = static_cast<int>(r % max_frames);
    b.stop(r) = frame == b.lengths[static_cast<std::size_t>(r / max_frames)] - 1 ? T(1) : T(0);
    b.inputs(r, features - 1) = b.stop(r) - T(0.5);  // the stop is learnable, slowly
    b.stop_mask(r) = frame < b.lengths[static_cast<std::size_t>(r / max_frames)] ? T(1) : T(0);
    b.mel_mask.row(r).setConstant(b.stop_mask(r));
  }
  if (step % 17 == 16) b.mel *= T(12);
  if (step == 60 || step == 61) b.mel(0, 0) = std::numeric_limits<T>::quiet_NaN();
  return b;
}

// A linear model and SGD with momentum: everything a checkpoint must hold.
template <class T>
struct trainer {
  matrix<T> w_mel = matrix<T>::Zero(features, mel_bins);
  vector<T> w_stop = vector<T>::Zero(features);
  matrix<T> v_mel = matrix<T>::Zero(features, mel_bins);
  vector<T> v_stop = vector<T>::Zero(features);

  bool same_as(const trainer& o) const {
    return std::memcmp(w_mel.data(), o.w_mel.data(), sizeof(T) * w_mel.size()) == 0 &&
           std::memcmp(w_stop.data(), o.w_stop.data(), sizeof(T) * w_stop.size()) == 0 &&
           std::memcmp(v_mel.data(), o.v_mel.data(), sizeof(T) * v_mel.size()) == 0 &&
           std::memcmp(v_stop.data(), o.v_stop.data(), sizeof(T) * v_stop.size()) == 0;
  }
};

template <class T>
auto make_guard() {
  auto guard = sl::presets::stable_stabilizer<T>();
  guard.template get<sl::EarlyStopper<T>>() = sl::EarlyStopper<T>({.patience = 40, .min_delta = 0.0005});
  return guard;
}

template <class T>
struct run_log {
  std::vector<sl::step_report<T, 2>> reports;
  std::vector<trainer<T>> models;
  long long stop_step = -1;
};

// The README's loop, from `first` on; at step `save_at` it saves everything and returns.
template <class T, class Loss, class Guard>
void train(Loss& loss, Guard& guard, trainer<T>& model, long long first, long long save_at, run_log<T>& log,
           std::string& guard_state) {
  matrix<T> mel_pred, d_mel;
  vector<T> stop_logits, d_stop;
  const T learning_rate = T(0.02), momentum = T(0.9);
  for (long long step = first; step < 600; ++step) {
    const auto b = make_batch<T>(step);
    mel_pred = b.inputs * model.w_mel;
    stop_logits = b.inputs * model.w_stop;
    d_mel.resize(mel_pred.rows(), mel_pred.cols());
    d_stop.resize(stop_logits.size());
    const auto r = loss.evaluate(sl::inputs(mel_pred, b.mel, b.mel_mask), sl::inputs(stop_logits, b.stop, b.stop_mask),
                                 sl::grads(d_mel, d_stop));
    const matrix<T> g_mel = b.inputs.transpose() * d_mel;
    const vector<T> g_stop = b.inputs.transpose() * d_stop;
    const T grad_norm = std::sqrt(g_mel.squaredNorm() + g_stop.squaredNorm());
    const auto s = guard.update(r, grad_norm);
    if (!s.skipped) {
      model.v_mel = momentum * model.v_mel + s.scale * g_mel;
      model.v_stop = momentum * model.v_stop + s.scale * g_stop;
      model.w_mel -= learning_rate * model.v_mel;
      model.w_stop -= learning_rate * model.v_stop;
    }
    sl::apply_weights(loss, s);
    log.reports.push_back(s);
    log.models.push_back(model);
    if (step == save_at) {
      guard_state = guard.save();
      return;
    }
    if (s.should_stop) {
      log.stop_step = step;
      return;
    }
  }
}

// Compares a resumed run's steps with the uninterrupted run's, from step k + 1 on.
template <class T>
long long mismatches(const run_log<T>& whole, const run_log<T>& resumed, long long k) {
  long long bad = 0;
  for (std::size_t i = 0; i < resumed.reports.size(); ++i) {
    const std::size_t at = static_cast<std::size_t>(k + 1) + i;
    if (at >= whole.reports.size() || !same_report(resumed.reports[i], whole.reports[at]) ||
        !resumed.models[i].same_as(whole.models[at]))
      ++bad;
  }
  return bad + (resumed.stop_step != whole.stop_step);
}

}  // namespace

TEMPLATE_TEST_CASE("An interrupted Eigen training loop resumes bit for bit", "[stability][state][eigen]", float,
                   double) {
  using T = TestType;
  auto loss = sl::presets::stable_loss<T>();
  auto guard = make_guard<T>();
  trainer<T> model;
  run_log<T> whole;
  std::string unused;
  train(loss, guard, model, 0, -1, whole, unused);
  // The run exercises what a resume must carry: moved weights, spikes, skips and a stop.
  INFO("stopped at " << whole.stop_step << " (" << sl::to_string(whole.reports.back().reason) << "), loss "
                      << whole.reports.front().loss << " -> " << whole.reports.back().loss << ", best "
                      << whole.reports.back().best << " at " << whole.reports.back().best_step << ", grad norm "
                      << whole.reports.front().grad_norm);
  REQUIRE(whole.stop_step > 100);
  int spikes = 0, skipped = 0;
  for (const auto& r : whole.reports) {
    spikes += r.is_spike;
    skipped += r.skipped;
  }
  CHECK(spikes >= 5);
  CHECK(skipped >= 2);
  CHECK(whole.reports.back().weights[0] != T(1));

  for (long long k : {0LL, 16LL, 59LL, 70LL, whole.stop_step - 3}) {
    INFO("interrupted after step " << k);
    auto first_loss = sl::presets::stable_loss<T>();
    auto first_guard = make_guard<T>();
    trainer<T> first_model;
    run_log<T> first_log;
    std::string saved;
    train(first_loss, first_guard, first_model, 0, k, first_log, saved);
    REQUIRE(!saved.empty());

    // A new process: fresh objects, then the documented resume path.
    auto resumed_loss = sl::presets::stable_loss<T>();
    auto resumed_guard = make_guard<T>();
    resumed_guard.restore(saved);
    sl::apply_weights(resumed_loss, resumed_guard);
    trainer<T> resumed_model = first_model;  // the model and optimizer checkpoint
    run_log<T> resumed;
    train(resumed_loss, resumed_guard, resumed_model, k + 1, -1, resumed, unused);
    CHECK(resumed.stop_step == whole.stop_step);
    CHECK(mismatches(whole, resumed, k) == 0);

    // Without the loss's multipliers the resume diverges (what the README's loop did before).
    if (k >= 70) {
      auto loss_without = sl::presets::stable_loss<T>();
      auto guard_without = make_guard<T>();
      guard_without.restore(saved);
      trainer<T> model_without = first_model;
      run_log<T> without;
      train(loss_without, guard_without, model_without, k + 1, -1, without, unused);
      CHECK(mismatches(whole, without, k) > 0);
    }
  }
}
