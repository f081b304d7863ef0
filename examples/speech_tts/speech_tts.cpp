// speech_tts: does steadyloss stabilize the training of a text-to-mel model on real speech? A
// small FastSpeech-style LibTorch model (phoneme embedding, convolutional encoder, expansion by
// the known durations, convolutional decoder to 80 mel bins and a stop logit per frame) trained
// on espeak-ng speech (speech_data.hpp) under the presets of steadyloss/presets.hpp (baseline,
// original, stable), an oracle that skips exactly the bad pairs, and ablations of stable, in
// scenarios with real failure modes (faults.hpp: swapped, truncated and 20 dB too loud pairs)
// and a learning-rate sweep without faults; every configuration measured the same way on the
// clean held-out (test) utterances. README.md beside this file states every choice.
//
//   speech_tts [--full] [--seeds N] [--first-seed N] [--steps N] [--eval-every N] [--jobs N]
//              [--scenarios NAME,...] [--configs NAME,...] [--data DIR] [--out DIR]
//              [--train N --validation N --test N] [--lr X] [--batch N] [--hidden N]
//              [--set FIELD=VALUE,...] [--list]
//
// Per step: the configuration's composed loss (sl::compose of its mel and stop terms) evaluated
// through the LibTorch adapter on the padded batch with its lengths; backward; the Stabilizer of
// presets::stabilizer_for sees the result and the gradient norm; sl::libtorch::apply scales the
// gradients or skips the step (spike handling on), the oracle skips its own way, the others
// always step; Adam; sl::apply(loss, report) sets the adaptive multipliers and the AdaptiveHuber
// scale. Every eval_every steps: the validation loss (a frozen copy of the loss, made before
// training) goes to presets::validation_stopper_for, sl::libtorch::best_weights keeps the best
// check's weights, and the held-out mel L1 is measured for the curves. A run ends when the
// stopper fires or at the step budget; the best weights are restored and measured.

#include <steadyloss/backend/torch.hpp>
#include <steadyloss/backend/torch_step.hpp>
#include <steadyloss/presets.hpp>
#include <steadyloss/steadyloss.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../tts_stability/preset_overrides.hpp"
#include "../tts_stability/study_metrics.hpp"
#include "../tts_stability/study_report.hpp"
#include "faults.hpp"
#include "speech_data.hpp"

namespace sl = steadyloss;
namespace st = steadyloss::study;
namespace fs = std::filesystem;
using speech::faults::fault;

namespace {

constexpr double nan = std::numeric_limits<double>::quiet_NaN();
constexpr std::int64_t position_features = 3;

// ---- settings ------------------------------------------------------------------------------

/// A scenario: the training data's faults and the learning rate.
struct scenario {
  std::string name;
  double bad_pairs = 0;      ///< this fraction of the training pairs is bad for the whole run
  double bad_batches = 0;    ///< each batch is, with this probability, made of bad pairs only
  double lr_factor = 1;      ///< the learning rate x this (the sweep, no faults)
  std::string what;
  bool faulty() const { return bad_pairs > 0 || bad_batches > 0; }
};

const std::vector<scenario>& known_scenarios() {
  static const std::vector<scenario> all = {
      {"clean", 0, 0, 1, "no fault"},
      {"pairs10", 0.10, 0, 1, "10% of the training pairs bad (swapped, truncated, loud in equal parts), all run long"},
      {"batches5", 0, 0.05, 1, "5% of the batches made of bad pairs only (a bad shard)"},
      {"lr3x", 0, 0, 3, "no fault, learning rate x3"},
      {"lr10x", 0, 0, 10, "no fault, learning rate x10"},
  };
  return all;
}

struct study_settings {
  int seeds = 5, first_seed = 0;
  int steps = 300;
  int eval_every = 20;
  int batch_size = 4;
  int hidden = 32;
  int jobs = 2;
  double learning_rate = 2e-3;
  double target = 0.25;          // held-out mel L1 for "steps to target"
  double variability_from = 0.2;  // variability is measured from this fraction of the budget on
  std::string data_dir = "speech_data", out = "speech_tts_out";
  std::string picture_scenario = "pairs10";
  std::string ablation_scenario = "batches5";
  bool ablations_everywhere = false;
  speech::Settings data;
  std::vector<std::string> scenarios = {"clean", "pairs10", "batches5", "lr10x"};
  std::vector<std::string> configs;  // empty: all
  sl::presets::preset_config stable = sl::presets::stable;  // with --set applied
  std::string overrides;                                      // the --set text, for results.md
};

struct configuration {
  std::string name;
  sl::presets::preset_config preset;
  bool oracle = false;
  bool ablation = false;
};

std::vector<configuration> all_configurations(const sl::presets::preset_config& stable) {
  using sl::presets::baseline;
  auto without_spikes = stable;
  without_spikes.spike_detection = false;
  without_spikes.spikes = baseline.spikes;
  auto without_adaptive_huber = stable;  // the baseline's mel term (L1, weight 45)
  without_adaptive_huber.mel = baseline.mel;
  without_adaptive_huber.mel_weight = baseline.mel_weight;
  return {{"baseline", baseline},
          {"original", sl::presets::original},
          {"oracle", baseline, true},
          {"stable", stable},
          {"stable - spike_handling", without_spikes, false, true},
          {"stable - mel_term", without_adaptive_huber, false, true}};
}

/// Which configurations run in a scenario: the oracle only where there are faults (without them
/// it is the baseline), the ablations in the ablation scenario (in every scenario with
/// --ablations-everywhere or --full).
bool runs_in(const configuration& c, const scenario& sc, const std::string& ablation_scenario, bool ablations_everywhere) {
  if (c.oracle) return sc.faulty();
  if (c.ablation) return ablations_everywhere || sc.name == ablation_scenario;
  return true;
}

// ---- data ----------------------------------------------------------------------------------

/// One pair ready for batching: ids, durations, normalized mel, and whether it is bad.
struct example {
  std::vector<std::int64_t> phonemes, durations;
  std::vector<float> mel;  // frames x mel_bins, normalized with the training statistics
  int frames = 0;
  fault kind = fault::none;
};

example to_example(const speech::faults::pair& p, const speech::Dataset& d) {
  example e;
  e.phonemes.assign(p.phonemes.begin(), p.phonemes.end());
  e.durations.assign(p.durations.begin(), p.durations.end());
  e.frames = p.frames;
  e.kind = p.kind;
  e.mel.resize(p.mel.size());
  for (std::size_t i = 0; i < p.mel.size(); ++i) {
    const std::size_t bin = i % std::size_t(d.mel_bins);
    e.mel[i] = (p.mel[i] - d.mean[bin]) / d.stddev[bin];
  }
  return e;
}

std::vector<const speech::Utterance*> split_of(const speech::Dataset& d, speech::Split split) {
  std::vector<const speech::Utterance*> out;
  for (const auto& u : d.utterances)
    if (u.split == split) out.push_back(&u);
  return out;
}

std::vector<example> clean_examples(const speech::Dataset& d, speech::Split split) {
  std::vector<example> out;
  for (const auto* u : split_of(d, split)) out.push_back(to_example(speech::faults::clean_pair(*u, d.mel_bins), d));
  return out;
}

/// A padded batch: [B, P] phoneme ids (0 = padding), [B, T] the phoneme each frame expands,
/// [B, 3, T] the frame's position features (inside its phoneme, in the utterance, from its end),
/// [B, T, 80] mel, [B, T] stop target (1 on the last valid frame), the lengths in frames.
struct batch {
  torch::Tensor phonemes, frame_phoneme, positions, frame_mask, mel, stop;
  std::vector<std::int64_t> lengths;
  std::vector<fault> kinds;
  int bad = 0;
};

batch make_batch(const std::vector<const example*>& items, int mel_bins) {
  batch b;
  const auto n = std::int64_t(items.size());
  std::int64_t max_phonemes = 1, max_frames = 1;
  for (const auto* e : items) {
    max_phonemes = std::max<std::int64_t>(max_phonemes, std::int64_t(e->phonemes.size()));
    max_frames = std::max<std::int64_t>(max_frames, e->frames);
  }
  b.phonemes = torch::zeros({n, max_phonemes}, torch::kLong);
  b.frame_phoneme = torch::zeros({n, max_frames}, torch::kLong);
  b.positions = torch::zeros({n, position_features, max_frames});
  b.frame_mask = torch::zeros({n, max_frames});
  b.mel = torch::zeros({n, max_frames, mel_bins});
  b.stop = torch::zeros({n, max_frames});
  auto ids = b.phonemes.accessor<std::int64_t, 2>();
  auto owner = b.frame_phoneme.accessor<std::int64_t, 2>();
  auto position = b.positions.accessor<float, 3>();
  auto mask = b.frame_mask.accessor<float, 2>();
  auto stop = b.stop.accessor<float, 2>();
  float* mel = b.mel.data_ptr<float>();
  for (std::int64_t i = 0; i < n; ++i) {
    const example& e = *items[std::size_t(i)];
    std::int64_t t = 0;
    for (std::size_t k = 0; k < e.phonemes.size(); ++k) {
      ids[i][std::int64_t(k)] = e.phonemes[k];
      for (std::int64_t j = 0; j < e.durations[k]; ++j, ++t) {
        owner[i][t] = std::int64_t(k);
        position[i][0][t] = float(j + 1) / float(e.durations[k]);
        position[i][1][t] = float(t) / float(std::max(1, e.frames - 1));
        position[i][2][t] = std::exp(-float(e.frames - 1 - t) / 2.0f);
        mask[i][t] = 1.0f;
      }
    }
    stop[i][e.frames - 1] = 1.0f;
    std::copy(e.mel.begin(), e.mel.end(), mel + i * max_frames * mel_bins);
    b.lengths.push_back(e.frames);
    b.kinds.push_back(e.kind);
    b.bad += e.kind != fault::none;
  }
  return b;
}

/// Fixed batches of a held-out split, in order, `size` utterances each.
std::vector<batch> fixed_batches(const std::vector<example>& set, int size, int mel_bins) {
  std::vector<batch> out;
  for (std::size_t first = 0; first < set.size(); first += std::size_t(size)) {
    std::vector<const example*> items;
    for (std::size_t i = first; i < std::min(set.size(), first + std::size_t(size)); ++i) items.push_back(&set[i]);
    out.push_back(make_batch(items, mel_bins));
  }
  return out;
}

// ---- model ---------------------------------------------------------------------------------

/// FastSpeech's shape at a small size: embedding -> 2 conv layers (kernel 5, the second
/// residual) over phonemes -> length regulator (each phoneme's vector repeated for its frames,
/// plus the frame's position features: inside its phoneme, t / (frames - 1) and
/// exp(-(frames - 1 - t) / 2), a positional encoding the known durations allow) -> 2 conv
/// layers over frames -> mel and stop. Padding is zeroed after every layer.
struct speech_model : torch::nn::Module {
  std::int64_t hidden;
  torch::nn::Embedding embedding{nullptr};
  torch::nn::Conv1d encoder1{nullptr}, encoder2{nullptr}, decoder1{nullptr}, decoder2{nullptr};
  torch::nn::Linear mel_head{nullptr}, stop_head{nullptr};

  speech_model(std::int64_t inventory, std::int64_t hidden_size, std::int64_t mel_bins) : hidden(hidden_size) {
    embedding = register_module("embedding", torch::nn::Embedding(torch::nn::EmbeddingOptions(inventory, hidden).padding_idx(0)));
    const auto conv = [&](std::int64_t in) { return torch::nn::Conv1d(torch::nn::Conv1dOptions(in, hidden, 5).padding(2)); };
    encoder1 = register_module("encoder1", conv(hidden));
    encoder2 = register_module("encoder2", conv(hidden));
    decoder1 = register_module("decoder1", conv(hidden + position_features));
    decoder2 = register_module("decoder2", conv(hidden));
    mel_head = register_module("mel_head", torch::nn::Linear(hidden, mel_bins));
    stop_head = register_module("stop_head", torch::nn::Linear(hidden, 1));
  }

  /// {mel [B, T, 80], stop logits [B, T]}
  std::pair<torch::Tensor, torch::Tensor> forward(const batch& b) {
    const auto phoneme_mask = (b.phonemes != 0).unsqueeze(1).to(torch::kFloat);  // [B, 1, P]
    const auto frame_mask = b.frame_mask.unsqueeze(1);                              // [B, 1, T]
    auto x = embedding->forward(b.phonemes).transpose(1, 2);                        // [B, H, P]
    x = torch::relu(encoder1->forward(x)) * phoneme_mask;
    x = (x + torch::relu(encoder2->forward(x))) * phoneme_mask;
    auto h = x.gather(2, b.frame_phoneme.unsqueeze(1).expand({-1, hidden, -1}));   // [B, H, T]
    h = torch::cat({h, b.positions}, 1) * frame_mask;
    h = torch::relu(decoder1->forward(h)) * frame_mask;
    h = (h + torch::relu(decoder2->forward(h))) * frame_mask;
    h = h.transpose(1, 2);  // [B, T, H]
    return {mel_head->forward(h), stop_head->forward(h).squeeze(-1)};
  }
};

// ---- metrics -------------------------------------------------------------------------------

/// Unweighted mel L1 over the valid frames of the selected utterances (all when `only` is
/// empty), and the number of values it averages.
std::pair<double, double> masked_l1(const torch::Tensor& pred, const batch& b, const std::vector<bool>& only = {}) {
  torch::NoGradGuard no_grad;
  auto mask = b.frame_mask;
  if (!only.empty()) {
    std::vector<float> keep(only.begin(), only.end());
    mask = mask * torch::tensor(keep).unsqueeze(1);
  }
  const double count = mask.sum().item<double>() * double(pred.size(2));
  if (count == 0) return {nan, 0};
  const double sum = ((pred - b.mel).abs() * mask.unsqueeze(-1)).sum().item<double>();
  return {sum / count, count};
}

struct heldout_result {
  double mel_l1 = nan;
  st::confusion stop;
};

heldout_result measure_heldout(speech_model& model, const std::vector<batch>& set) {
  torch::NoGradGuard no_grad;
  double sum = 0, count = 0;
  heldout_result r;
  for (const auto& b : set) {
    const auto [mel, stop] = model.forward(b);
    const auto [l1, n] = masked_l1(mel, b);
    sum += l1 * n;
    count += n;
    const auto predicted = (stop > 0).to(torch::kFloat);
    for (std::size_t i = 0; i < b.lengths.size(); ++i) {
      const auto p = predicted[std::int64_t(i)].narrow(0, 0, b.lengths[i]);
      const auto y = b.stop[std::int64_t(i)].narrow(0, 0, b.lengths[i]);
      const auto tp = (p * y).sum().item<std::int64_t>(), positives_predicted = p.sum().item<std::int64_t>();
      const auto positives = y.sum().item<std::int64_t>();
      r.stop.tp += tp;
      r.stop.fp += positives_predicted - tp;
      r.stop.fn += positives - tp;
      r.stop.tn += b.lengths[i] - positives_predicted - positives + tp;
    }
  }
  r.mel_l1 = sum / count;
  return r;
}

// ---- one run -------------------------------------------------------------------------------

struct step_row {
  int step = 0;
  int bad_pairs = 0, pairs = 0;
  float train_total = 0, train_mel_l1 = 0, clean_mel_l1 = nan, grad_norm = 0, scale = 1;
  bool spike = false;
  float w_mel = 1, w_stop = 1, error_scale = nan;
  double heldout = nan, validation = nan;
};

struct run_record {
  std::string config, scenario;
  int seed = 0;
  std::string error;
  std::vector<step_row> rows;
  long long steps_to_target = -1, stop_step = -1, best_step = -1;
  double final_heldout = nan, balanced_accuracy = nan, f1 = nan;
  double heldout_variability = nan, train_variability = nan;
  long long spikes = 0, bad_batches = 0, bad_acted = 0, clean_batches = 0, clean_acted = 0;
  double seconds = 0;
  std::vector<float> picture;  // the picture utterance's predicted mel (frames x bins), when asked
};

struct shared_data {
  const speech::Dataset* dataset = nullptr;
  std::vector<const speech::Utterance*> train;
  std::vector<example> validation, test;
  std::vector<batch> validation_batches, test_batches;
  std::size_t picture = 0;  // index in test of the spectrogram picture's utterance
};

std::mutex init_mutex;  // torch::manual_seed and module construction use the global generator

struct progress_state {
  std::atomic<long long> steps_done{0};
  std::atomic<int> runs_done{0};
};

/// The training pairs of a run: the clean ones, with round(fraction x n) of them made bad for the
/// whole run in the pairs scenarios. The choice depends on the seed only.
std::vector<example> training_examples(const shared_data& data, const scenario& sc, int seed) {
  const auto& d = *data.dataset;
  std::vector<example> out;
  for (const auto* u : data.train) out.push_back(to_example(speech::faults::clean_pair(*u, d.mel_bins), d));
  std::uint64_t state = 0x5eed0000ULL + std::uint64_t(seed);
  const auto bad = speech::faults::choose_bad_pairs(out.size(), sc.bad_pairs, state);
  for (std::size_t k = 0; k < bad.size(); ++k)
    out[bad[k]] = to_example(speech::faults::make_bad(data.train, bad[k], speech::faults::kind_in_turn(k), d.mel_bins, state), d);
  return out;
}

/// Draws a run's batches: epochs of the training pairs in an order shuffled by Fisher-Yates
/// driven by splitmix64; with probability bad_batches a batch is a bad shard, every pair of it
/// replaced by a bad version (its kind drawn per pair).
class batch_sampler {
 public:
  batch_sampler(const shared_data& data, const std::vector<example>& train, const scenario& sc, int seed,
                std::size_t batch_size)
      : data_(data), train_(train), bad_batches_(sc.bad_batches), order_(train.size()),
        batch_size_(std::min(train.size(), batch_size)), cursor_(train.size()),
        order_state_(0x0bde0000ULL + std::uint64_t(seed)), schedule_state_(0x5c4e0000ULL + std::uint64_t(seed)),
        damage_state_(0xda3a0000ULL + std::uint64_t(seed)) {
    for (std::size_t i = 0; i < order_.size(); ++i) order_[i] = i;
    replaced_.reserve(batch_size_);  // items point into it: no reallocation
  }

  /// The next batch's pairs (valid until the next call).
  std::vector<const example*> next() {
    if (cursor_ + batch_size_ > order_.size()) {  // a new epoch
      for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[speech::faults::below(order_state_, i)]);
      cursor_ = 0;
    }
    const bool bad_shard = speech::faults::uniform(schedule_state_) < bad_batches_;
    replaced_.clear();
    std::vector<const example*> items;
    for (std::size_t k = 0; k < batch_size_; ++k) {
      const std::size_t index = order_[cursor_ + k];
      if (bad_shard) {
        const auto kind = speech::faults::kind_in_turn(speech::faults::below(damage_state_, 3));
        const int bins = data_.dataset->mel_bins;
        replaced_.push_back(to_example(speech::faults::make_bad(data_.train, index, kind, bins, damage_state_), *data_.dataset));
        items.push_back(&replaced_.back());
      } else {
        items.push_back(&train_[index]);
      }
    }
    cursor_ += batch_size_;
    return items;
  }

 private:
  const shared_data& data_;
  const std::vector<example>& train_;
  double bad_batches_;
  std::vector<std::size_t> order_;
  std::size_t batch_size_, cursor_;
  std::uint64_t order_state_, schedule_state_, damage_state_;
  std::vector<example> replaced_;
};

/// The mean validation total of `validation_loss` (base weights, initial error scale: comparable
/// from check to check) over the validation batches.
template <class Loss>
double validation_total(speech_model& model, const Loss& validation_loss, const std::vector<batch>& set) {
  torch::NoGradGuard no_grad;
  double total = 0;
  for (const auto& b : set) {
    const auto [mel, stop] = model.forward(b);
    const auto lengths = sl::libtorch::lengths(b.lengths);
    total += sl::libtorch::evaluate(validation_loss, sl::libtorch::inputs(mel, b.mel, lengths),
                                    sl::libtorch::inputs(stop, b.stop, lengths)).result.total;
  }
  return total / double(set.size());
}

template <class MelTerm>
run_record run(const configuration& config, const scenario& sc, const study_settings& s, int seed,
               const shared_data& data, MelTerm mel_term, progress_state& progress, bool keep_picture) {
  const auto& p = config.preset;
  const auto start = std::chrono::steady_clock::now();
  const int mel_bins = data.dataset->mel_bins;
  run_record rec;
  rec.config = config.name;
  rec.scenario = sc.name;
  rec.seed = seed;

  // Data, batch order, schedule of bad batches and initial weights depend on the seed only:
  // configurations are compared on identical runs.
  const std::vector<example> train = training_examples(data, sc, seed);
  batch_sampler sampler(data, train, sc, seed, std::size_t(s.batch_size));
  std::shared_ptr<speech_model> model;
  {
    std::lock_guard lock(init_mutex);
    torch::manual_seed(std::uint64_t(seed));
    model = std::make_shared<speech_model>(std::int64_t(data.dataset->inventory.size()), s.hidden, mel_bins);
  }
  const auto params = model->parameters();
  torch::optim::Adam optimizer(params, torch::optim::AdamOptions(s.learning_rate * sc.lr_factor));

  auto loss = sl::compose(sl::term(mel_term, float(p.mel_weight)),
                          sl::term(sl::presets::stop_term_for<float>(p), float(p.stop_weight)));
  const auto validation_loss = sl::libtorch::frozen_copy(loss);
  auto guard = sl::presets::stabilizer_for<float>(p);
  auto stopper = sl::presets::validation_stopper_for<float>(p);
  sl::libtorch::best_weights best(*model);
  // The same spike meter for every configuration: 2x the mean of the last 10 accepted values of
  // the unweighted training mel L1 (the library's mean-ratio rule, report only).
  sl::SpikeDampener<float> spike_meter({.window = 10, .mode = sl::spike_mode::report, .detector = {.threshold = 2.0}});
  const bool spike_handling = p.spike_detection && !config.oracle;

  std::vector<long long> eval_steps;
  std::vector<double> heldout_series;
  rec.rows.reserve(std::size_t(s.steps));
  int step = 0;
  for (; step < s.steps; ++step) {
    std::vector<const example*> items = sampler.next();
    step_row row;
    row.step = step;
    row.pairs = int(items.size());
    for (const auto* e : items) row.bad_pairs += e->kind != fault::none;
    // The oracle drops exactly the bad pairs from the batch (a batch of bad pairs only: no step).
    if (config.oracle) items.erase(std::remove_if(items.begin(), items.end(), [](const example* e) { return e->kind != fault::none; }), items.end());

    float scale = 0;
    if (!items.empty()) {
      const batch b = make_batch(items, mel_bins);
      const auto lengths = sl::libtorch::lengths(b.lengths);
      optimizer.zero_grad();
      const auto [mel_pred, stop_logits] = model->forward(b);
      const auto out = sl::libtorch::evaluate(loss, sl::libtorch::inputs(mel_pred, b.mel, lengths),
                                              sl::libtorch::inputs(stop_logits, b.stop, lengths));
      out.total.backward();
      const double norm = sl::libtorch::grad_norm(params);
      const auto report = guard.update(out.result, float(norm));
      if constexpr (requires { loss.template term<0>().scale; }) row.error_scale = loss.template term<0>().scale;
      if (spike_handling) {
        if (sl::libtorch::apply(report, params)) {
          optimizer.step();
          scale = report.scale;
        }
      } else {
        optimizer.step();  // what a loop without the library does, a NaN step included
        scale = 1;
      }
      sl::apply(loss, report);
      row.train_total = out.result.total;
      row.train_mel_l1 = float(masked_l1(mel_pred, b).first);
      std::vector<bool> clean(b.kinds.size());
      for (std::size_t i = 0; i < clean.size(); ++i) clean[i] = b.kinds[i] == fault::none;
      row.clean_mel_l1 = float(masked_l1(mel_pred, b, clean).first);
      row.grad_norm = float(norm);
      row.w_mel = out.result.weights[0] / float(p.mel_weight);
      row.w_stop = out.result.weights[1] / float(p.stop_weight);
      row.spike = spike_meter.update(row.train_mel_l1).is_spike;
    }
    row.scale = scale;
    rec.spikes += row.spike;
    if (row.bad_pairs > 0) {
      ++rec.bad_batches;
      rec.bad_acted += scale < 1.0f;
    } else {
      ++rec.clean_batches;
      rec.clean_acted += scale < 1.0f;
    }
    progress.steps_done++;

    if ((step + 1) % s.eval_every == 0 || step + 1 == s.steps) {
      row.heldout = measure_heldout(*model, data.test_batches).mel_l1;
      row.validation = validation_total(*model, validation_loss, data.validation_batches);
      eval_steps.push_back(step + 1);
      heldout_series.push_back(row.heldout);
      const auto check = stopper.check(float(row.validation), step + 1);
      best.update(check);
      rec.rows.push_back(row);
      if (check.should_stop) {
        rec.stop_step = step + 1;
        ++step;
        break;
      }
      continue;
    }
    rec.rows.push_back(row);
  }
  progress.steps_done += s.steps - step;  // the steps an early stop saved: the ETA counts them done
  best.restore();
  rec.best_step = best.step();
  const auto final_result = measure_heldout(*model, data.test_batches);
  rec.final_heldout = final_result.mel_l1;
  rec.balanced_accuracy = st::balanced_accuracy(final_result.stop);
  rec.f1 = st::f1(final_result.stop);
  if (keep_picture) {
    torch::NoGradGuard no_grad;
    const batch one = make_batch({&data.test[data.picture]}, mel_bins);
    const auto mel = model->forward(one).first.contiguous();
    rec.picture.assign(mel.data_ptr<float>(), mel.data_ptr<float>() + mel.numel());
  }

  const long long end = rec.stop_step >= 0 ? rec.stop_step : s.steps;
  const auto from = static_cast<long long>(s.variability_from * s.steps);
  std::vector<double> heldout_tail, train_series;
  std::size_t evaluations = 0;
  for (std::size_t k = 0; k < eval_steps.size() && eval_steps[k] <= end; ++k) {
    ++evaluations;
    if (eval_steps[k] >= from) heldout_tail.push_back(heldout_series[k]);
  }
  rec.steps_to_target = st::steps_to_target(std::span(eval_steps).first(evaluations),
                                            std::span<const double>(heldout_series).first(evaluations), s.target);
  // Training jitter on the clean pairs of each batch: a bad pair's loss measures the data.
  for (const auto& r : rec.rows)
    if (r.step >= from && std::isfinite(r.clean_mel_l1)) train_series.push_back(r.clean_mel_l1);
  rec.heldout_variability = st::variability(heldout_tail);
  rec.train_variability = st::variability(train_series);
  rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return rec;
}

run_record run_configuration(const configuration& c, const scenario& sc, const study_settings& s, int seed,
                             const shared_data& data, progress_state& progress, bool keep_picture) {
  const auto& p = c.preset;
  switch (p.mel) {
    case sl::presets::mel_term::huber:
      return run(c, sc, s, seed, data, sl::Huber<float>{.delta = float(p.huber_delta)}, progress, keep_picture);
    case sl::presets::mel_term::adaptive_huber:
      return run(c, sc, s, seed, data, sl::AdaptiveHuber<float>{.k = float(p.huber_k)}, progress, keep_picture);
    case sl::presets::mel_term::l1: break;
  }
  return run(c, sc, s, seed, data, sl::L1<float>{}, progress, keep_picture);
}

// ---- output --------------------------------------------------------------------------------

using run_set = std::vector<const run_record*>;
using st::cell;
using st::change;
using st::format_interval;
using st::select;
using st::strict_mean;
using st::values_of;

std::string scenario_tables(const scenario& sc, const std::vector<configuration>& configs,
                            const std::vector<run_record>& records, const study_settings& s) {
  std::ostringstream out;
  const auto steps_or_budget = [&](const run_record& r) { return r.steps_to_target >= 0 ? double(r.steps_to_target) : double(s.steps); };
  const auto stop_or_budget = [&](const run_record& r) { return r.stop_step >= 0 ? double(r.stop_step) : double(s.steps); };
  out << "\n## " << sc.name << ": " << sc.what << "\n\n"
      << "| configuration | final held-out mel L1 | steps to " << s.target << " (reached) | held-out variability | "
         "train variability | stop balanced acc. | stop F1 | spikes | batches with bad pairs acted on | clean batches "
         "acted on | early stop step (stopped) |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& c : configs) {
    const auto runs = select(records, sc.name, c.name);
    if (runs.empty()) continue;
    long long reached = 0, stopped = 0, bad = 0, bad_acted = 0, clean = 0, clean_acted = 0;
    for (const auto* r : runs) {
      reached += r->steps_to_target >= 0;
      stopped += r->stop_step >= 0;
      bad += r->bad_batches;
      bad_acted += r->bad_acted;
      clean += r->clean_batches;
      clean_acted += r->clean_acted;
    }
    const auto n = std::to_string(runs.size());
    out << "| " << c.name << " | " << cell(values_of(runs, [](const run_record& r) { return r.final_heldout; }), 4) << " | "
        << format_interval(st::mean_ci95(values_of(runs, [](const run_record& r) {
             return r.steps_to_target >= 0 ? double(r.steps_to_target) : nan;
           })), 0)
        << " (" << reached << "/" << n << ") | "
        << cell(values_of(runs, [](const run_record& r) { return r.heldout_variability; }), 4) << " | "
        << cell(values_of(runs, [](const run_record& r) { return r.train_variability; }), 4) << " | "
        << cell(values_of(runs, [](const run_record& r) { return r.balanced_accuracy; }), 3) << " | "
        << cell(values_of(runs, [](const run_record& r) { return r.f1; }), 3) << " | "
        << cell(values_of(runs, [](const run_record& r) { return double(r.spikes); }), 1) << " | " << bad_acted << "/"
        << bad << " | " << clean_acted << "/" << clean << " | "
        << format_interval(st::mean_ci95(values_of(runs, stop_or_budget)), 0) << " (" << stopped << "/" << n << ") |\n";
  }
  const auto against = [&](const std::string& reference) {
    const auto ref = select(records, sc.name, reference);
    if (ref.empty()) return;
    const auto mean_of = [](const run_set& runs, auto f) { return strict_mean(values_of(runs, f)); };
    const auto final_error = [](const run_record& r) { return r.final_heldout; };
    const auto heldout_var = [](const run_record& r) { return r.heldout_variability; };
    const auto train_var = [](const run_record& r) { return r.train_variability; };
    out << "\nChange of the mean against " << reference << " (steps to target: a run that never reaches it counts as "
        << s.steps << "):\n\n| configuration | steps to target | held-out variability | train variability | final "
           "held-out mel L1 |\n|---|---|---|---|---|\n";
    for (const auto& c : configs) {
      const auto runs = select(records, sc.name, c.name);
      if (c.name == reference || runs.empty()) continue;
      out << "| " << c.name << " | " << change(mean_of(runs, steps_or_budget), mean_of(ref, steps_or_budget)) << " | "
          << change(mean_of(runs, heldout_var), mean_of(ref, heldout_var)) << " | "
          << change(mean_of(runs, train_var), mean_of(ref, train_var)) << " | "
          << change(mean_of(runs, final_error), mean_of(ref, final_error)) << " |\n";
    }
  };
  against("baseline");
  against("oracle");
  return out.str();
}

const char* const curve_configs[] = {"baseline", "original", "oracle", "stable"};
const char* const curve_colors[] = {"#c0392b", "#7f8c8d", "#27ae60", "#1f5fa8"};

/// Held-out mel L1 against the step, mean and 95% band over the seeds (a stopped run's last
/// value carried forward), one panel per scenario, one line per core configuration.
void write_curves(const std::vector<run_record>& records, const std::vector<scenario>& scenarios, const study_settings& s,
                  const fs::path& dir) {
  std::vector<long long> steps;
  for (int k = s.eval_every; k <= s.steps; k += s.eval_every) steps.push_back(k);
  if (steps.empty() || steps.back() != s.steps) steps.push_back(s.steps);
  std::ofstream csv(dir / "curves.csv");
  csv << "scenario,config,step,heldout_mean,heldout_lo,heldout_hi,runs\n";
  std::vector<std::string> panels;
  for (const auto& sc : scenarios) {
    bool any = false;
    for (const char* name : curve_configs) {
      const auto runs = select(records, sc.name, name);
      if (runs.empty()) continue;
      any = true;
      for (long long step : steps) {
        std::vector<double> values;
        for (const auto* r : runs) {
          double last = nan;
          for (const auto& row : r->rows) {
            if (row.step + 1 > step) break;
            if (!std::isnan(row.heldout)) last = row.heldout;
          }
          values.push_back(last);
        }
        const auto i = st::mean_ci95(values);
        const double h = std::isfinite(i.half_width) ? i.half_width : 0.0;
        csv << sc.name << ',' << name << ',' << step << ',' << i.mean << ',' << i.mean - h << ',' << i.mean + h << ','
            << i.n << '\n';
      }
    }
    if (any) panels.push_back(sc.name);
  }
  csv.close();
  if (panels.empty()) return;
  std::ofstream gp(dir / "curves.gp");
  const int columns = panels.size() > 2 ? 3 : int(panels.size());
  const int rows = (int(panels.size()) + columns - 1) / columns;
  gp << "set terminal pngcairo size " << 460 * columns << "," << 380 * rows << " font ',9'\n"
     << "set output '" << (dir / "curves.png").string() << "'\n"
     << "set datafile separator ','\nset grid\nset key top right\nset logscale y\n"
     << "set ytics (0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.2, 1.5, 2, 3)\n"
     << "set multiplot layout " << rows << "," << columns << " title 'speech\\_tts: held-out mel L1 (test utterances, "
        "clean), mean and 95% band over " << s.seeds << " seeds'\n"
     << "set xlabel 'step'\n";
  for (const auto& panel : panels) {
    gp << "set title '" << panel << "'\nset arrow 1 from graph 0, first " << s.target << " to graph 1, first " << s.target
       << " nohead dt 2 lc rgb 'gray'\nplot ";
    bool first = true;
    for (std::size_t k = 0; k < std::size(curve_configs); ++k) {
      if (select(records, panel, curve_configs[k]).empty()) continue;
      const std::string filter = "(strcol(1) eq '" + panel + "' && strcol(2) eq '" + curve_configs[k] + "')";
      gp << (first ? "" : ", ") << "'" << (dir / "curves.csv").string() << "' using ($3):(" << filter << " ? $5 : NaN):("
         << filter << " ? $6 : NaN) with filledcurves lc rgb '" << curve_colors[k]
         << "' fs transparent solid 0.15 notitle, '' using ($3):(" << filter << " ? $4 : NaN) with lines lw 2 lc rgb '"
         << curve_colors[k] << "' title '" << curve_configs[k] << "'";
      first = false;
    }
    gp << "\n";
  }
  gp << "unset multiplot\n";
  gp.close();
  st::plot("speech_tts", dir / "curves.gp", dir / "curves.png");
}

/// The picture utterance's true mel beside the baseline's and the stable preset's predictions
/// (first seed, the picture scenario), each as a matrix file (rows = mel bins) drawn with image.
void write_spectrograms(const std::vector<run_record>& records, const study_settings& s, const shared_data& data,
                        const fs::path& dir) {
  const example& truth = data.test[data.picture];
  const int bins = data.dataset->mel_bins;
  const auto write_matrix = [&](const fs::path& path, const std::vector<float>& mel) {
    std::ofstream out(path);
    for (int bin = 0; bin < bins; ++bin) {
      for (int t = 0; t < truth.frames; ++t) out << (t ? " " : "") << mel[std::size_t(t * bins + bin)];
      out << "\n";
    }
  };
  std::vector<std::pair<std::string, std::string>> panels = {{"true (held-out utterance)", "spectrogram_true.dat"}};
  write_matrix(dir / "spectrogram_true.dat", truth.mel);
  for (const char* name : {"baseline", "stable"}) {
    for (const auto& r : records)
      if (r.config == name && r.scenario == s.picture_scenario && r.seed == s.first_seed && !r.picture.empty()) {
        const std::string file = std::string("spectrogram_") + name + ".dat";
        write_matrix(dir / file, r.picture);
        char title[160];
        std::snprintf(title, sizeof title, "%s, scenario %s, seed %d (held-out mel L1 of this run %.3f)", name,
                      s.picture_scenario.c_str(), s.first_seed, r.final_heldout);
        panels.emplace_back(title, file);
      }
  }
  if (panels.size() < 2) return;
  std::ofstream gp(dir / "spectrogram.gp");
  gp << "set terminal pngcairo size 1000," << 260 * panels.size() << " font ',9'\n"
     << "set output '" << (dir / "spectrogram.png").string() << "'\n";
  std::string text = split_of(*data.dataset, speech::Split::test)[data.picture]->text;
  for (auto& c : text)
    if (c == '"') c = '\'';
  gp << "set multiplot layout " << panels.size() << ",1 title \"" << text << " (" << truth.frames
     << " frames, normalized log-mel)\"\n"
     << "set palette defined (0 '#440154', 1 '#3b528b', 2 '#21918c', 3 '#5ec962', 4 '#fde725')\nset cbrange [-3:3]\nset xlabel 'frame'\nset ylabel 'mel bin'\n"
     << "set xrange [-0.5:" << truth.frames - 0.5 << "]\nset yrange [-0.5:" << bins - 0.5 << "]\n";
  for (const auto& [title, file] : panels)
    gp << "set title '" << title << "'\nplot '" << (dir / file).string() << "' matrix with image notitle\n";
  gp << "unset multiplot\n";
  gp.close();
  st::plot("speech_tts", dir / "spectrogram.gp", dir / "spectrogram.png");
}

void write_outputs(const std::vector<configuration>& configs, const std::vector<scenario>& scenarios,
                   const std::vector<run_record>& records, const study_settings& s, const shared_data& data,
                   double wall_s) {
  fs::create_directories(s.out);
  const fs::path dir(s.out);
  {
    std::ofstream csv(dir / "steps.csv");
    csv << "scenario,config,seed,step,pairs,bad_pairs,train_loss_weighted,train_mel_l1,clean_pairs_mel_l1,grad_norm,"
           "scale,spike,multiplier_mel,multiplier_stop,error_scale_mel,heldout_mel_l1,validation_loss\n";
    char line[512];
    for (const auto& r : records)
      for (const auto& row : r.rows) {
        std::snprintf(line, sizeof line, "%s,%s,%d,%d,%d,%d,%.6g,%.6g,%.6g,%.6g,%.6g,%d,%.5g,%.5g,%.5g,", r.scenario.c_str(),
                      r.config.c_str(), r.seed, row.step, row.pairs, row.bad_pairs, double(row.train_total),
                      double(row.train_mel_l1), double(row.clean_mel_l1), double(row.grad_norm), double(row.scale),
                      int(row.spike), double(row.w_mel), double(row.w_stop), double(row.error_scale));
        csv << line;
        if (!std::isnan(row.heldout)) {
          std::snprintf(line, sizeof line, "%.6g,%.6g", row.heldout, row.validation);
          csv << line;
        } else {
          csv << ",";
        }
        csv << "\n";
      }
  }
  {
    std::ofstream csv(dir / "runs.csv");
    csv << "scenario,config,seed,final_heldout_mel_l1,steps_to_target,heldout_variability,train_variability,"
           "stop_balanced_accuracy,stop_f1,spikes,bad_batches,bad_acted,clean_batches,clean_acted,stop_step,best_step,"
           "seconds,error\n";
    for (const auto& r : records)
      csv << r.scenario << "," << r.config << "," << r.seed << "," << r.final_heldout << "," << r.steps_to_target << ","
          << r.heldout_variability << "," << r.train_variability << "," << r.balanced_accuracy << "," << r.f1 << ","
          << r.spikes << "," << r.bad_batches << "," << r.bad_acted << "," << r.clean_batches << "," << r.clean_acted
          << "," << r.stop_step << "," << r.best_step << "," << r.seconds << ",\"" << r.error << "\"\n";
  }
  std::ostringstream markdown;
  for (const auto& sc : scenarios) markdown << scenario_tables(sc, configs, records, s);
  {
    std::ofstream md(dir / "results.md");
    md << "# speech_tts results\n\n" << s.seeds << " seeds (" << s.first_seed << ".." << s.first_seed + s.seeds - 1
       << ") per configuration and scenario; at most " << s.steps << " steps of batch " << s.batch_size << ", hidden "
       << s.hidden << ", Adam lr " << s.learning_rate << " (x the scenario's factor); " << data.train.size()
       << " training, " << data.validation.size() << " validation, " << data.test.size()
       << " held-out utterances; validation every " << s.eval_every << " steps (early stopping, best weights restored); "
       << "wall time " << wall_s << " s with " << s.jobs << " jobs. Ablations in "
       << (s.ablations_everywhere ? std::string("every scenario") : s.ablation_scenario)
       << ". Mean ± 95% interval (Student t) over seeds.\n\nstable preset"
       << (s.overrides.empty() ? "" : " with --set " + s.overrides) << ": `" << st::preset_text(s.stable) << "`\n"
       << markdown.str();
  }
  std::printf("%s", markdown.str().c_str());
  std::fflush(stdout);
  write_curves(records, scenarios, s, dir);
  write_spectrograms(records, s, data, dir);
}

// ---- progress ------------------------------------------------------------------------------

std::string clock_text(double seconds) {
  char buffer[32];
  const long s = long(std::max(0.0, seconds));
  std::snprintf(buffer, sizeof buffer, "%ld:%02ld", s / 60, s % 60);
  return buffer;
}

/// A progress bar on stderr (runs, steps, steps/s, ETA) until `finished`; redrawn in place on a
/// terminal, a line every 10 s otherwise.
void show_progress(const progress_state& p, const std::atomic<bool>& finished, int runs, long long total_steps) {
  const bool terminal = isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  double last_line = 0;
  while (!finished) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!terminal && elapsed - last_line < 10) continue;
    last_line = elapsed;
    const long long done = p.steps_done;
    const double rate = done / std::max(elapsed, 1e-9);
    const int width = 30, filled = int(width * double(done) / double(std::max(1LL, total_steps)));
    std::fprintf(stderr, "%s[%s%s] runs %d/%d  steps %lld/%lld  %.0f steps/s  elapsed %s  ETA %s%s",
                 terminal ? "\r" : "", std::string(std::size_t(std::min(filled, width)), '#').c_str(),
                 std::string(std::size_t(width - std::min(filled, width)), '.').c_str(), p.runs_done.load(), runs, done,
                 total_steps, rate, clock_text(elapsed).c_str(),
                 rate > 0 ? clock_text(double(total_steps - done) / rate).c_str() : "?", terminal ? "   " : "\n");
  }
  if (terminal) std::fprintf(stderr, "\n");
}

// ---- command line --------------------------------------------------------------------------

[[noreturn]] void usage(const std::string& message) {
  std::fprintf(stderr,
               "speech_tts: %s\n"
               "usage: speech_tts [--full] [--seeds N] [--first-seed N] [--steps N] [--eval-every N] [--jobs N]\n"
               "                  [--scenarios NAME,...] [--configs NAME,...] [--data DIR] [--out DIR]\n"
               "                  [--train N] [--validation N] [--test N] [--lr X] [--batch N] [--hidden N]\n"
               "                  [--target X] [--picture-scenario NAME] [--ablations-everywhere]\n"
               "                  [--set FIELD=VALUE,...] [--list]\n"
               "--set overrides fields of the stable preset (and its ablations), as tts_stability's --set\n",
               message.c_str());
  std::exit(2);
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  torch::set_num_threads(1);  // small tensors: threads cost more than they give; runs go in parallel instead
  study_settings s;
  s.jobs = std::max(1, std::min(2, int(std::thread::hardware_concurrency())));
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value after " + arg);
      return argv[++i];
    };
    const auto number = [&](double lo) {
      const std::string text = next();
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (end == text.c_str() || *end != '\0' || !(v >= lo)) usage(arg + ": bad value '" + text + "'");
      return v;
    };
    if (arg == "--full") {
      s.seeds = 10;
      s.steps = 600;
      s.scenarios = {"clean", "pairs10", "batches5", "lr3x", "lr10x"};
      s.ablations_everywhere = true;
    } else if (arg == "--seeds") s.seeds = int(number(1));
    else if (arg == "--first-seed") s.first_seed = int(number(0));
    else if (arg == "--steps") s.steps = int(number(1));
    else if (arg == "--eval-every") s.eval_every = int(number(1));
    else if (arg == "--jobs") s.jobs = int(number(1));
    else if (arg == "--batch") s.batch_size = int(number(1));
    else if (arg == "--hidden") s.hidden = int(number(1));
    else if (arg == "--lr") s.learning_rate = number(0);
    else if (arg == "--target") s.target = number(0);
    else if (arg == "--train") s.data.train = int(number(1));
    else if (arg == "--validation") s.data.validation = int(number(1));
    else if (arg == "--test") s.data.test = int(number(1));
    else if (arg == "--data") s.data_dir = next();
    else if (arg == "--out") s.out = next();
    else if (arg == "--picture-scenario") s.picture_scenario = next();
    else if (arg == "--scenarios") s.scenarios = split_list(next());
    else if (arg == "--configs") s.configs = split_list(next());
    else if (arg == "--ablations-everywhere") s.ablations_everywhere = true;
    else if (arg == "--set") {
      const std::string text = next();
      try {
        st::set_fields(s.stable, text);
      } catch (const std::invalid_argument& e) {
        usage(e.what());
      }
      s.overrides += (s.overrides.empty() ? "" : ",") + text;
    }
    else if (arg == "--list") list = true;
    else usage("unknown argument " + arg);
  }
  const auto all = all_configurations(s.stable);
  if (list) {
    for (const auto& c : all)
      std::printf("configuration %s%s\n", c.name.c_str(),
                  c.oracle ? " (fault scenarios)" : c.ablation ? " (the ablation scenario batches5; --full: every scenario)" : "");
    for (const auto& sc : known_scenarios()) std::printf("scenario %-9s %s\n", sc.name.c_str(), sc.what.c_str());
    return 0;
  }
  std::vector<scenario> scenarios;
  for (const auto& name : s.scenarios) {
    const auto it = std::find_if(known_scenarios().begin(), known_scenarios().end(), [&](const auto& sc) { return sc.name == name; });
    if (it == known_scenarios().end()) usage("--scenarios: no scenario '" + name + "' (see --list)");
    scenarios.push_back(*it);
  }
  std::vector<configuration> configs;
  for (const auto& c : all)
    if (s.configs.empty() || std::find(s.configs.begin(), s.configs.end(), c.name) != s.configs.end()) configs.push_back(c);
  for (const auto& name : s.configs)
    if (std::none_of(all.begin(), all.end(), [&](const auto& c) { return c.name == name; }))
      usage("--configs: no configuration '" + name + "' (see --list)");
  if (std::none_of(scenarios.begin(), scenarios.end(), [&](const auto& sc) { return sc.name == s.picture_scenario; }))
    s.picture_scenario = scenarios.front().name;

  const auto data_start = std::chrono::steady_clock::now();
  bool from_cache = false;
  const speech::Dataset dataset = speech::load_or_build(s.data_dir, s.data, &from_cache, [](int done, int total) {
    if (done % 20 == 0 || done == total) std::fprintf(stderr, "\rspeech_tts: synthesizing %d/%d%s", done, total, done == total ? "\n" : "");
  });
  std::fprintf(stderr, "speech_tts: data %s in %.1f s (%s)\n", from_cache ? "read from the cache" : "synthesized",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - data_start).count(),
               speech::cache_path(s.data_dir, s.data).c_str());
  shared_data data;
  data.dataset = &dataset;
  data.train = split_of(dataset, speech::Split::train);
  data.validation = clean_examples(dataset, speech::Split::validation);
  data.test = clean_examples(dataset, speech::Split::test);
  data.validation_batches = fixed_batches(data.validation, 20, dataset.mel_bins);
  data.test_batches = fixed_batches(data.test, 20, dataset.mel_bins);
  // The spectrogram picture: the first held-out utterance of 150-300 frames (readable at 1000
  // pixels), else the first.
  for (std::size_t i = 0; i < data.test.size(); ++i)
    if (data.test[i].frames >= 150 && data.test[i].frames <= 300) {
      data.picture = i;
      break;
    }

  struct job {
    std::size_t config, scenario;
    int seed;
  };
  std::vector<job> jobs;
  for (std::size_t k = 0; k < scenarios.size(); ++k)
    for (std::size_t c = 0; c < configs.size(); ++c)
      if (runs_in(configs[c], scenarios[k], s.ablation_scenario, s.ablations_everywhere))
        for (int seed = s.first_seed; seed < s.first_seed + s.seeds; ++seed) jobs.push_back({c, k, seed});
  std::vector<run_record> records(jobs.size());
  progress_state progress;
  std::atomic<std::size_t> next_job{0};
  std::atomic<bool> finished{false};
  const auto start = std::chrono::steady_clock::now();
  const auto worker = [&] {
    torch::set_num_threads(1);
    for (std::size_t j; (j = next_job++) < jobs.size();) {
      const auto& c = configs[jobs[j].config];
      const auto& sc = scenarios[jobs[j].scenario];
      const bool picture = sc.name == s.picture_scenario && jobs[j].seed == s.first_seed &&
                           (c.name == "baseline" || c.name == "stable");
      try {
        records[j] = run_configuration(c, sc, s, jobs[j].seed, data, progress, picture);
      } catch (const std::exception& e) {  // recorded in runs.csv; the study goes on
        records[j] = run_record{};
        records[j].config = c.name;
        records[j].scenario = sc.name;
        records[j].seed = jobs[j].seed;
        records[j].error = e.what();
        std::fprintf(stderr, "\nspeech_tts: %s / %s / seed %d failed: %s\n", sc.name.c_str(), c.name.c_str(), jobs[j].seed, e.what());
      }
      progress.runs_done++;
    }
  };
  std::thread monitor(show_progress, std::cref(progress), std::cref(finished), int(jobs.size()),
                      static_cast<long long>(jobs.size()) * s.steps);
  std::vector<std::thread> pool;
  for (int t = 1; t < s.jobs; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  finished = true;
  monitor.join();
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "speech_tts: %zu runs in %.1f s with %d jobs\n", jobs.size(), wall_s, s.jobs);
  write_outputs(configs, scenarios, records, s, data, wall_s);
  std::printf("\nspeech_tts: %zu runs in %.1f s; outputs in %s\n", jobs.size(), wall_s, s.out.c_str());
  return 0;
}
