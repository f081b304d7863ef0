// The main demo: does steadyloss stabilize a TTS-like training run? Trains the task of task.hpp
// under the baseline and stable presets (steadyloss/presets.hpp) and their ablations, over several seeds,
// and measures every configuration the same way on a clean held-out set.
//
//   tts_stability [--full] [--seeds N] [--first-seed N] [--steps N] [--threads N] [--out DIR] [--configs a,b,...]
//                 [--early-stop-on validation|train] [--target X] [--eval-every N] [--lr X]
//   investigation: [--huber-delta X] [--spike-mode dampen|skip] [--weight-rule share_and_rate|dwa]
//                  [--adam-beta2 X] [--optimizer adam|sgd] [--corrupt P]
//
// Writes DIR/results.md (the table), DIR/runs.csv (one row per run), DIR/steps.csv (one row per
// step), DIR/curves.csv and DIR/curves.png (baseline vs stable), progress on stderr.
//
// Per step: the configuration's composed loss (sl::compose of its mel and stop terms, masked with
// sl::lengths) gives values and gradients; the Stabilizer sees the total and the gradient norm;
// the gradients are multiplied by report.scale (the optimizer step is skipped when report.skipped);
// sl::apply_weights(loss, report) sets the adaptive multipliers for the next step.
// Early stopping (default --early-stop-on validation): every eval_every steps a second Stabilizer
// (EmaSmoother + EarlyStopper, with the configuration's smoothing, patience and min_delta)
// observes the validation loss (the configuration's loss at its base weights on noisy validation
// data), as Lightning's EarlyStopping monitors val_loss; the weights of the best observation are
// restored at the end. With --early-stop-on train the step Stabilizer's own EarlyStopper decides on
// the smoothed per-step training loss, as the presets are written.

#include <steadyloss/backend/eigen.hpp>
#include <steadyloss/presets.hpp>
#include <steadyloss/steadyloss.hpp>

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
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "study_metrics.hpp"
#include "task.hpp"

namespace sl = steadyloss;
namespace st = steadyloss::study;

namespace {

constexpr double nan = std::numeric_limits<double>::quiet_NaN();

struct study_settings {
  int seeds = 10;
  int first_seed = 0;  ///< seeds first_seed .. first_seed + seeds - 1 (tuning runs use other seeds than reports)
  int steps = 600;
  int batch_size = 4;
  int hidden = 32;
  int eval_every = 10;
  int threads = 2;
  double learning_rate = 2e-2;  // the best final held-out error of the baseline among 5e-3, 1e-2, 2e-2, 4e-2
  double target = 0.10;  // held-out mel L1 for "steps to target": about 2x the baseline's final error
  double variability_from = 0.2;  // variability is measured from this fraction of the step budget on
  double huber_delta = 0;         // > 0: overrides the presets' Huber delta (an investigation, not a preset)
  bool sgd = false;               // plain SGD instead of Adam
  double beta2 = 0.999;           // Adam's second-moment history weight
  sl::spike_mode spike_mode = sl::spike_mode::dampen;  // what a configuration with spike detection does
  sl::weight_rule weight_rule = sl::weight_rule::share_and_rate;
  bool early_stop_on_train = false;
  std::string out = "tts_stability_out";
  std::vector<std::string> only;  // configuration names to run (empty: all)
  tts::task_settings task;
};

struct configuration {
  std::string name;
  sl::presets::preset_config preset;
};

// The six remedies of the stable preset, each as the fields it copies from one preset into another.
struct remedy {
  const char* name;
  void (*copy)(sl::presets::preset_config& to, const sl::presets::preset_config& from);
};
const remedy remedies[] = {
    {"huber_mel",
     [](auto& to, const auto& from) {
       to.huber_mel = from.huber_mel;
       to.huber_delta = from.huber_delta;
       to.mel_weight = from.mel_weight;
     }},
    {"balanced_stop",
     [](auto& to, const auto& from) {
       to.stop_pos_weight = from.stop_pos_weight;
       to.label_smoothing = from.label_smoothing;
       to.stop_weight = from.stop_weight;
     }},
    {"adaptive_weights",
     [](auto& to, const auto& from) {
       to.adaptive_weights = from.adaptive_weights;
       to.weight_lo = from.weight_lo;
       to.weight_hi = from.weight_hi;
     }},
    {"smoothing", [](auto& to, const auto& from) { to.smoothing = from.smoothing; }},
    {"spike_dampening",
     [](auto& to, const auto& from) {
       to.spike_detection = from.spike_detection;
     }},
    {"early_stopping",
     [](auto& to, const auto& from) {
       to.patience = from.patience;
       to.min_delta = from.min_delta;
     }},
};

std::vector<configuration> all_configurations() {
  std::vector<configuration> out{{"baseline", sl::presets::baseline}, {"stable", sl::presets::stable}};
  for (const auto& r : remedies) {
    configuration c{std::string("baseline + ") + r.name, sl::presets::baseline};
    r.copy(c.preset, sl::presets::stable);
    out.push_back(c);
  }
  for (const auto& r : remedies) {
    configuration c{std::string("stable - ") + r.name, sl::presets::stable};
    r.copy(c.preset, sl::presets::baseline);
    out.push_back(c);
  }
  return out;
}

struct step_row {
  int step = 0;
  float train_total = 0;      // the configuration's weighted loss (never compared across configurations)
  float train_mel_l1 = 0;     // unweighted mel L1 of the batch against its (noisy) targets
  float grad_norm = 0;
  float scale = 1;
  bool skipped = false, corrupted = false, spike = false;
  float w_mel = 1, w_stop = 1;  // adaptive multipliers used this step
  double heldout = nan;         // clean held-out mel L1 (every eval_every steps)
  double validation = nan;      // validation loss at base weights (every eval_every steps)
};

struct run_record {
  std::string config;
  int seed = 0;
  std::vector<step_row> rows;
  long long steps_to_target = -1;
  double final_heldout = nan;
  double balanced_accuracy = nan, f1 = nan;
  double heldout_variability = nan, train_variability = nan;
  long long spikes = 0, dampened = 0;
  long long stop_step = -1, best_step = -1;
  double seconds = 0;
};

double grad_norm_of(tts::model& g) {
  double sum = 0;
  for (auto& b : tts::adam::blocks(g)) sum += double(b.squaredNorm());
  return std::sqrt(sum);
}

void scale_grads(tts::model& g, float s) {
  for (auto b : tts::adam::blocks(g)) b *= s;
}

template <class MelTerm, class StopTerm>
run_record run(const configuration& config, const study_settings& s, int seed, MelTerm mel_term, StopTerm stop_term) {
  const auto& p = config.preset;
  const auto start = std::chrono::steady_clock::now();
  run_record rec;
  rec.config = config.name;
  rec.seed = seed;
  // The data, corruption schedule and initial weights depend on the seed only, so configurations
  // are compared on identical runs (paired by seed).
  const tts::dataset data = tts::make_dataset(s.task, static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(static_cast<unsigned long long>(seed) * 7919 + 17);
  tts::model params(s.hidden, rng);
  tts::model grads = tts::model::zeros_like(params), best = params;
  tts::adam optimizer(params, s.learning_rate);
  optimizer.beta2 = s.beta2;

  auto loss = sl::compose(sl::term(mel_term, float(p.mel_weight)), sl::term(stop_term, float(p.stop_weight)));
  const auto validation_loss = loss;  // multipliers stay 1: the monitor keeps one scale all run

  // One Stabilizer type for every configuration; a remedy that is off gets neutral settings:
  // spike detection in report mode (never scales), adaptive bounds [1, 1], smoothing 0.
  auto guard = sl::presets::stable_stabilizer_type<float>(
      sl::presets::calibrated_spike_dampener<float>([&] {
        auto spikes = sl::presets::calibrated_spikes;
        spikes.mode = p.spike_detection ? s.spike_mode : sl::spike_mode::report;
        return spikes;
      }()),
      sl::EmaSmoother<float>({.factor = p.smoothing}),
      sl::AdaptiveWeight<2, float>({.lo = p.adaptive_weights ? p.weight_lo : 1.0,
                                    .hi = p.adaptive_weights ? p.weight_hi : 1.0,
                                    .rule = s.weight_rule}),
      sl::EarlyStopper<float>({.patience = s.early_stop_on_train ? p.patience : std::numeric_limits<int>::max(),
                               .min_delta = p.min_delta}),
      sl::StabilityMetrics<float>{});
  sl::Stabilizer<sl::EmaSmoother<float>, sl::EarlyStopper<float>> validation_guard(
      sl::EmaSmoother<float>({.factor = p.smoothing}),
      sl::EarlyStopper<float>({.patience = p.patience, .min_delta = p.min_delta}));
  // The same spike measurement for every configuration: the library's mean-ratio rule (2x the
  // mean of the last 10 accepted values), report only, on the unweighted training mel L1.
  sl::SpikeDampener<float> spike_meter({.window = 10, .threshold = 2.0, .mode = sl::spike_mode::report});

  const tts::batch test = tts::make_batch(data.test), validation = tts::make_batch(data.validation);
  tts::forward_pass f, f_eval;
  tts::Matrix d_mel, d_hidden;
  tts::Vector d_stop;
  std::vector<int> order(data.train.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = int(i);
  std::size_t cursor = order.size();
  std::bernoulli_distribution corrupt_now(s.task.corrupt_probability);

  const auto heldout_error = [&](const tts::model& m) {
    tts::forward(m, test.features, f_eval);
    return double(sl::value(sl::L1<float>{}, sl::inputs(f_eval.mel, test.mel, sl::lengths(test.lengths, test.max_frames, tts::mel_bins))).value);
  };

  std::vector<long long> eval_steps;
  std::vector<double> heldout_series, heldout_tail, train_series;
  for (int step = 0; step < s.steps; ++step) {
    if (cursor + std::size_t(s.batch_size) > order.size()) {  // a new epoch
      std::shuffle(order.begin(), order.end(), rng);
      cursor = 0;
    }
    tts::batch b = tts::make_batch(data.train, order, cursor, std::size_t(s.batch_size));
    cursor += std::size_t(s.batch_size);
    if (corrupt_now(rng)) tts::corrupt(b, rng);

    tts::forward(params, b.features, f);
    d_mel.resize(f.mel.rows(), f.mel.cols());
    d_stop.resize(f.stop.size());
    const auto result = loss.evaluate(sl::inputs(f.mel, b.mel, sl::lengths(b.lengths, std::size_t(b.max_frames), tts::mel_bins)),
                                      sl::inputs(f.stop, b.stop, sl::lengths(b.lengths, std::size_t(b.max_frames), 1)),
                                      sl::grads(d_mel, d_stop));
    tts::backward(params, b.features, f, d_mel, d_stop, grads, d_hidden);
    const double norm = grad_norm_of(grads);
    const auto report = guard.update(result, float(norm));

    step_row row;
    row.step = step;
    row.train_total = result.total;
    row.train_mel_l1 =
        sl::value(sl::L1<float>{}, sl::inputs(f.mel, b.mel, sl::lengths(b.lengths, std::size_t(b.max_frames), tts::mel_bins))).value;
    row.grad_norm = float(norm);
    row.scale = report.scale;
    row.skipped = report.skipped;
    row.corrupted = b.corrupted;
    row.spike = spike_meter.update(row.train_mel_l1).is_spike;
    row.w_mel = result.weights[0] / float(p.mel_weight);
    row.w_stop = result.weights[1] / float(p.stop_weight);
    rec.spikes += row.spike;
    rec.dampened += report.scale < 1.0f;
    // Corrupted batches are left out: their loss measures the data, not the model (and is the same
    // in every configuration, the data being paired by seed).
    if (step >= int(s.variability_from * s.steps) && !b.corrupted) train_series.push_back(row.train_mel_l1);

    if (!report.skipped) {
      if (report.scale != 1.0f) scale_grads(grads, report.scale);
      if (s.sgd) {
        auto p_blocks = tts::adam::blocks(params), g_blocks = tts::adam::blocks(grads);
        for (std::size_t k = 0; k < p_blocks.size(); ++k) p_blocks[k] -= float(s.learning_rate) * g_blocks[k];
      } else {
        optimizer.step(params, grads);
      }
    }
    sl::apply_weights(loss, report);

    bool stop = false;
    if (s.early_stop_on_train) {
      if (report.improved) {
        best = params;  // the weights after this step's update, as a checkpoint callback saves them
        rec.best_step = step;
      }
      stop = report.should_stop;
    }
    if ((step + 1) % s.eval_every == 0 || step + 1 == s.steps) {
      row.heldout = heldout_error(params);
      tts::forward(params, validation.features, f_eval);
      const std::size_t frames = std::size_t(validation.max_frames);
      const auto v = validation_loss.evaluate(
          sl::inputs(f_eval.mel, validation.mel, sl::lengths(validation.lengths, frames, tts::mel_bins)),
          sl::inputs(f_eval.stop, validation.stop, sl::lengths(validation.lengths, frames, 1)));
      row.validation = v.total;
      eval_steps.push_back(step + 1);
      heldout_series.push_back(row.heldout);
      if (step + 1 >= int(s.variability_from * s.steps)) heldout_tail.push_back(row.heldout);
      if (!s.early_stop_on_train) {
        const auto vr = validation_guard.update(v, 0.0f);
        if (vr.improved) {
          best = params;
          rec.best_step = step + 1;
        }
        stop = vr.should_stop;
      }
    }
    rec.rows.push_back(row);
    if (stop) {
      rec.stop_step = step + 1;
      break;
    }
  }
  if (rec.best_step >= 0) params = best;

  rec.steps_to_target = st::steps_to_target(eval_steps, heldout_series, s.target);
  rec.final_heldout = heldout_error(params);
  st::confusion c;
  for (std::size_t i = 0; i < test.lengths.size(); ++i)
    for (int t = 0; t < test.lengths[i]; ++t) {
      const Eigen::Index row = Eigen::Index(i) * test.max_frames + t;
      c.add(f_eval.stop(row) > 0.0f, test.stop(row) > 0.5f);
    }
  rec.balanced_accuracy = st::balanced_accuracy(c);
  rec.f1 = st::f1(c);
  rec.heldout_variability = st::variability(heldout_tail);
  rec.train_variability = st::variability(train_series);
  rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return rec;
}

run_record run_configuration(const configuration& c, const study_settings& s, int seed) {
  const auto& p = c.preset;
  const sl::BalancedBCE<float> bce{.pos_weight = float(p.stop_pos_weight)};
  const auto with_stop = [&](auto mel) {
    if (p.label_smoothing > 0)
      return run(c, s, seed, mel, sl::LabelSmoothing<sl::BalancedBCE<float>>{bce, float(p.label_smoothing)});
    return run(c, s, seed, mel, bce);
  };
  if (p.huber_mel) return with_stop(sl::Huber<float>{.delta = float(s.huber_delta > 0 ? s.huber_delta : p.huber_delta)});
  return with_stop(sl::L1<float>{});
}

// ---- output -------------------------------------------------------------------------------

std::string cell(const st::interval& i, int digits) {
  char buffer[96];
  if (i.n == 0) return "-";
  if (!std::isfinite(i.half_width)) std::snprintf(buffer, sizeof buffer, "%.*f", digits, i.mean);
  else std::snprintf(buffer, sizeof buffer, "%.*f ± %.*f", digits, i.mean, digits, i.half_width);
  return buffer;
}

template <class F>
st::interval collect(const std::vector<const run_record*>& runs, F f) {
  std::vector<double> v;
  for (const auto* r : runs) v.push_back(f(*r));
  return st::mean_ci95(v);
}

std::string table(const std::vector<configuration>& configs, const std::vector<run_record>& records,
                  const study_settings& s) {
  std::ostringstream out;
  out << "| configuration | final held-out mel L1 | steps to " << s.target << " (reached) | held-out variability | "
         "train variability | stop balanced acc. | stop F1 | spikes | dampened | early stop step (stopped) |\n"
         "|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& c : configs) {
    std::vector<const run_record*> runs;
    for (const auto& r : records)
      if (r.config == c.name) runs.push_back(&r);
    if (runs.empty()) continue;
    long long reached = 0, stopped = 0;
    for (const auto* r : runs) {
      reached += r->steps_to_target >= 0;
      stopped += r->stop_step >= 0;
    }
    const auto to_target = collect(runs, [](const run_record& r) { return r.steps_to_target >= 0 ? double(r.steps_to_target) : nan; });
    const auto stop_step = collect(runs, [&](const run_record& r) { return r.stop_step >= 0 ? double(r.stop_step) : double(s.steps); });
    out << "| " << c.name << " | " << cell(collect(runs, [](const run_record& r) { return r.final_heldout; }), 4)
        << " | " << cell(to_target, 0) << " (" << reached << "/" << runs.size() << ")"
        << " | " << cell(collect(runs, [](const run_record& r) { return r.heldout_variability; }), 4)
        << " | " << cell(collect(runs, [](const run_record& r) { return r.train_variability; }), 3)
        << " | " << cell(collect(runs, [](const run_record& r) { return r.balanced_accuracy; }), 3)
        << " | " << cell(collect(runs, [](const run_record& r) { return r.f1; }), 3)
        << " | " << cell(collect(runs, [](const run_record& r) { return double(r.spikes); }), 1)
        << " | " << cell(collect(runs, [](const run_record& r) { return double(r.dampened); }), 1)
        << " | " << cell(stop_step, 0) << " (" << stopped << "/" << runs.size() << ") |\n";
  }
  // Each configuration against the baseline, as changes of the means (the study's goal:
  // stable needs <= -25% steps to target and <= -50% variability at a final error no worse).
  std::vector<const run_record*> base;
  for (const auto& r : records)
    if (r.config == "baseline") base.push_back(&r);
  if (base.empty()) return out.str();
  const auto mean_of = [&](const std::vector<const run_record*>& runs, auto f) { return collect(runs, f).mean; };
  const auto to_target = [&](const run_record& r) { return r.steps_to_target >= 0 ? double(r.steps_to_target) : double(s.steps); };
  const auto final_error = [](const run_record& r) { return r.final_heldout; };
  const auto heldout_var = [](const run_record& r) { return r.heldout_variability; };
  const auto train_var = [](const run_record& r) { return r.train_variability; };
  const auto change = [](double value, double reference) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%+.0f%%", 100.0 * (value / reference - 1.0));
    return std::string(buffer);
  };
  out << "\nChange of the mean against the baseline (steps to target: a run that never reaches it counts as "
      << s.steps << "):\n\n| configuration | steps to target | held-out variability | train variability | final "
         "held-out mel L1 |\n|---|---|---|---|---|\n";
  for (const auto& c : configs) {
    if (c.name == "baseline") continue;
    std::vector<const run_record*> runs;
    for (const auto& r : records)
      if (r.config == c.name) runs.push_back(&r);
    if (runs.empty()) continue;
    out << "| " << c.name << " | " << change(mean_of(runs, to_target), mean_of(base, to_target)) << " | "
        << change(mean_of(runs, heldout_var), mean_of(base, heldout_var)) << " | "
        << change(mean_of(runs, train_var), mean_of(base, train_var)) << " | "
        << change(mean_of(runs, final_error), mean_of(base, final_error)) << " |\n";
  }
  return out.str();
}

// Mean and 95% band over seeds per step for one configuration: held-out error (carried forward
// from the last evaluation, and after an early stop) and the unweighted training mel L1 (over
// the seeds still training at that step whose batch was not corrupted: a corrupted batch's loss
// says nothing about the model, and the seeds share their data, so those spikes would hide the
// difference between configurations).
struct curve_point {
  st::interval heldout, train;
};
std::vector<curve_point> curves(const std::vector<run_record>& records, const std::string& name, int steps) {
  std::vector<curve_point> out(static_cast<std::size_t>(steps));
  std::vector<const run_record*> runs;
  for (const auto& r : records)
    if (r.config == name) runs.push_back(&r);
  std::vector<std::vector<double>> heldout(static_cast<std::size_t>(steps)), train(static_cast<std::size_t>(steps));
  for (const auto* r : runs) {
    double last = nan;
    for (int step = 0; step < steps; ++step) {
      if (std::size_t(step) < r->rows.size()) {
        const auto& row = r->rows[std::size_t(step)];
        if (!std::isnan(row.heldout)) last = row.heldout;
        if (!row.corrupted) train[std::size_t(step)].push_back(row.train_mel_l1);
      }
      heldout[std::size_t(step)].push_back(last);
    }
  }
  for (std::size_t k = 0; k < out.size(); ++k) out[k] = {st::mean_ci95(heldout[k]), st::mean_ci95(train[k])};
  return out;
}

void write_outputs(const std::vector<configuration>& configs, const std::vector<run_record>& records,
                   const study_settings& s, double wall_s) {
  namespace fs = std::filesystem;
  fs::create_directories(s.out);
  const fs::path dir(s.out);
  {
    std::ofstream csv(dir / "steps.csv");
    csv << "config,seed,step,train_loss_weighted,train_mel_l1,grad_norm,scale,skipped,corrupted,spike,"
           "multiplier_mel,multiplier_stop,heldout_mel_l1,validation_loss\n";
    char line[512];
    for (const auto& r : records)
      for (const auto& row : r.rows) {
        std::snprintf(line, sizeof line, "%s,%d,%d,%.6g,%.6g,%.6g,%.6g,%d,%d,%d,%.5g,%.5g,", r.config.c_str(), r.seed,
                      row.step, double(row.train_total), double(row.train_mel_l1), double(row.grad_norm),
                      double(row.scale), int(row.skipped), int(row.corrupted), int(row.spike), double(row.w_mel),
                      double(row.w_stop));
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
    csv << "config,seed,final_heldout_mel_l1,steps_to_target,heldout_variability,train_variability,"
           "stop_balanced_accuracy,stop_f1,spikes,dampened,stop_step,best_step,seconds\n";
    for (const auto& r : records)
      csv << r.config << "," << r.seed << "," << r.final_heldout << "," << r.steps_to_target << ","
          << r.heldout_variability << "," << r.train_variability << "," << r.balanced_accuracy << "," << r.f1 << ","
          << r.spikes << "," << r.dampened << "," << r.stop_step << "," << r.best_step << "," << r.seconds << "\n";
  }
  const std::string markdown = table(configs, records, s);
  {
    std::ofstream md(dir / "results.md");
    md << "# tts_stability results\n\n" << s.seeds << " seeds per configuration, " << s.steps
       << " steps at most, batch " << s.batch_size << ", hidden " << s.hidden << ", " << (s.sgd ? "SGD" : "Adam")
       << " lr " << s.learning_rate << ", corrupted batch probability " << s.task.corrupt_probability
       << (s.huber_delta > 0 ? ", Huber delta overridden to " + std::to_string(s.huber_delta) : std::string())
       << ", early stopping on " << (s.early_stop_on_train ? "the smoothed training loss (per step)" : "the validation loss (every " + std::to_string(s.eval_every) + " steps)")
       << "; wall time " << wall_s << " s. Mean ± 95% interval (Student t) over seeds.\n\n"
       << markdown;
  }
  std::printf("%s", markdown.c_str());

  const bool have_pair = std::any_of(records.begin(), records.end(), [](const auto& r) { return r.config == "baseline"; }) &&
                         std::any_of(records.begin(), records.end(), [](const auto& r) { return r.config == "stable"; });
  if (!have_pair) return;
  const auto base = curves(records, "baseline", s.steps), stable = curves(records, "stable", s.steps);
  {
    std::ofstream csv(dir / "curves.csv");
    csv << "step,baseline_heldout,baseline_heldout_lo,baseline_heldout_hi,stable_heldout,stable_heldout_lo,"
           "stable_heldout_hi,baseline_train,baseline_train_lo,baseline_train_hi,stable_train,stable_train_lo,"
           "stable_train_hi\n";
    const auto put = [&](const st::interval& i) {
      const double h = std::isfinite(i.half_width) ? i.half_width : 0.0;
      if (i.n == 0) csv << ",NaN,NaN,NaN";
      else csv << "," << i.mean << "," << i.mean - h << "," << i.mean + h;
    };
    for (int k = 0; k < s.steps; ++k) {
      csv << k + 1;
      put(base[std::size_t(k)].heldout);
      put(stable[std::size_t(k)].heldout);
      put(base[std::size_t(k)].train);
      put(stable[std::size_t(k)].train);
      csv << "\n";
    }
  }
  {
    std::ofstream gp(dir / "curves.gp");
    gp << "set terminal pngcairo size 1100,800 font ',10'\n"
          "set output '" << (dir / "curves.png").string() << "'\n"
          "set datafile separator ','\nset datafile missing 'NaN'\nset key top right\nset grid\n"
          // Log axes with autoscale yfix lose their labels inside one decade: name the ticks.
          "set ytics (0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1, 1.5, 2, 3, 5)\n"
          "set multiplot layout 2,1 title 'tts\\_stability: baseline vs stable (mean and 95% band over "
       << s.seeds << " seeds)'\n"
          "set logscale y\nset autoscale yfix\nset ylabel 'held-out mel L1 (clean targets)'\n"
          "set arrow from graph 0, first " << s.target << " to graph 1, first " << s.target << " nohead dt 2 lc rgb 'gray'\n"
          "plot '" << (dir / "curves.csv").string() << "' using 1:3:4 every ::1 with filledcurves lc rgb '#f4a6a6' fs transparent solid 0.4 notitle, "
          "'' using 1:2 every ::1 with lines lw 2 lc rgb '#c0392b' title 'baseline', "
          "'' using 1:6:7 every ::1 with filledcurves lc rgb '#a6c8f4' fs transparent solid 0.4 notitle, "
          "'' using 1:5 every ::1 with lines lw 2 lc rgb '#1f5fa8' title 'stable'\n"
          "unset arrow\nset xlabel 'step'\nset ylabel 'training mel L1 (unweighted, clean batches)'\n"
          "plot '' using 1:9:10 every ::1 with filledcurves lc rgb '#f4a6a6' fs transparent solid 0.4 notitle, "
          "'' using 1:8 every ::1 with lines lw 1 lc rgb '#c0392b' title 'baseline', "
          "'' using 1:12:13 every ::1 with filledcurves lc rgb '#a6c8f4' fs transparent solid 0.4 notitle, "
          "'' using 1:11 every ::1 with lines lw 1 lc rgb '#1f5fa8' title 'stable'\n"
          "unset multiplot\n";
  }
  const std::string command = "gnuplot '" + (dir / "curves.gp").string() + "'";
  if (std::system(command.c_str()) != 0)
    std::fprintf(stderr, "tts_stability: gnuplot failed or is missing; %s is not written (the CSVs are)\n",
                 (dir / "curves.png").string().c_str());
  else
    std::fprintf(stderr, "tts_stability: wrote %s\n", (dir / "curves.png").string().c_str());
}

[[noreturn]] void usage(const char* message) {
  std::fprintf(stderr,
               "tts_stability: %s\n"
               "usage: tts_stability [--full] [--seeds N] [--first-seed N] [--steps N] [--threads N] [--out DIR]\n"
               "                     [--configs NAME,NAME,...] [--early-stop-on validation|train]\n"
               "                     [--target X] [--eval-every N] [--lr X] [--optimizer adam|sgd]\n"
               "                     [--corrupt P] [--huber-delta X] [--spike-mode dampen|skip]\n"
               "                     [--weight-rule share_and_rate|dwa] [--adam-beta2 X] [--list]\n",
               message);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  study_settings s;
  s.threads = std::max(1, std::min(2, int(std::thread::hardware_concurrency())));
  const auto configs_all = all_configurations();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    const auto number = [&](double lo) {
      const std::string text = next();
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (end == text.c_str() || *end != '\0' || !(v >= lo)) usage((arg + ": bad value '" + text + "'").c_str());
      return v;
    };
    if (arg == "--full") {
      s.seeds = 20;
      s.steps = 2000;
      s.task.train_sequences = 400;
      s.task.test_sequences = s.task.validation_sequences = 16;
    } else if (arg == "--seeds") s.seeds = int(number(1));
    else if (arg == "--first-seed") s.first_seed = int(number(0));
    else if (arg == "--steps") s.steps = int(number(1));
    else if (arg == "--threads") s.threads = int(number(1));
    else if (arg == "--eval-every") s.eval_every = int(number(1));
    else if (arg == "--target") s.target = number(0);
    else if (arg == "--lr") s.learning_rate = number(0);
    else if (arg == "--corrupt") s.task.corrupt_probability = number(0);
    else if (arg == "--huber-delta") s.huber_delta = number(0);
    else if (arg == "--optimizer") {
      const std::string v = next();
      if (v != "adam" && v != "sgd") usage("--optimizer: adam or sgd");
      s.sgd = v == "sgd";
    } else if (arg == "--spike-mode") {
      const std::string v = next();
      if (v != "dampen" && v != "skip") usage("--spike-mode: dampen or skip");
      s.spike_mode = v == "skip" ? sl::spike_mode::skip : sl::spike_mode::dampen;
    } else if (arg == "--adam-beta2") {
      s.beta2 = number(0);
      if (!(s.beta2 < 1)) usage("--adam-beta2: a value in [0, 1)");
    } else if (arg == "--weight-rule") {
      const std::string v = next();
      if (v != "share_and_rate" && v != "dwa") usage("--weight-rule: share_and_rate or dwa");
      s.weight_rule = v == "dwa" ? sl::weight_rule::dwa : sl::weight_rule::share_and_rate;
    } else if (arg == "--out") s.out = next();
    else if (arg == "--early-stop-on") {
      const std::string v = next();
      if (v != "train" && v != "validation") usage("--early-stop-on: train or validation");
      s.early_stop_on_train = v == "train";
    } else if (arg == "--configs") {
      std::stringstream list(next());
      for (std::string name; std::getline(list, name, ',');) s.only.push_back(name);
    } else if (arg == "--list") {
      for (const auto& c : configs_all) std::printf("%s\n", c.name.c_str());
      return 0;
    } else usage(("unknown argument " + arg).c_str());
  }
  std::vector<configuration> configs;
  for (const auto& c : configs_all)
    if (s.only.empty() || std::find(s.only.begin(), s.only.end(), c.name) != s.only.end()) configs.push_back(c);
  if (configs.empty()) usage("--configs matches no configuration (see --list)");

  struct job {
    std::size_t config;
    int seed;
  };
  std::vector<job> jobs;
  for (std::size_t c = 0; c < configs.size(); ++c)
    for (int seed = s.first_seed; seed < s.first_seed + s.seeds; ++seed) jobs.push_back({c, seed});
  std::vector<run_record> records(jobs.size());
  std::atomic<std::size_t> next_job{0}, done{0};
  std::mutex log;
  const auto start = std::chrono::steady_clock::now();
  const auto worker = [&] {
    for (std::size_t j; (j = next_job++) < jobs.size();) {
      records[j] = run_configuration(configs[jobs[j].config], s, jobs[j].seed);
      const auto& r = records[j];
      std::lock_guard lock(log);
      std::fprintf(stderr, "[%3zu/%zu] %-28s seed %2d: %4zu steps in %5.2f s (%5.0f steps/s), held-out L1 %.4f%s\n",
                   ++done, jobs.size(), r.config.c_str(), r.seed, r.rows.size(), r.seconds,
                   double(r.rows.size()) / r.seconds, r.final_heldout, r.stop_step >= 0 ? ", stopped early" : "");
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < s.threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "tts_stability: %zu runs in %.1f s on %d threads\n", jobs.size(), wall_s, s.threads);
  write_outputs(configs, records, s, wall_s);
  return 0;
}
