// The main demo: does steadyloss stabilize a TTS-like training run? Trains the task of task.hpp
// under the presets of steadyloss/presets.hpp (baseline, original, stable), an oracle and the
// ablations of stable, over several seeds and scenarios (scenarios.hpp: corrupted-batch rates and
// non-finite batches), and measures every configuration the same way on a clean held-out set.
//
//   tts_stability [--full] [--seeds N] [--first-seed N] [--steps N] [--threads N] [--out DIR]
//                 [--configs NAME,...] [--scenarios NAME,...] [--set FIELD=VALUE,...]
//                 [--ablations-everywhere] [--target X] [--eval-every N] [--lr X]
//                 [--optimizer adam|sgd] [--adam-beta2 X] [--list]
//
// Writes DIR/results.md (the tables), DIR/runs.csv (one row per run), DIR/steps.csv (one row per
// step), DIR/curves.csv and DIR/curves.png (baseline vs stable at the default scenario),
// DIR/sweep.csv and DIR/sweep.png (against the corruption rate), progress on stderr.
//
// Per step: the configuration's composed loss (sl::compose of its mel and stop terms, masked with
// sl::lengths) gives values and gradients; the Stabilizer of presets::stabilizer_for sees the
// result and the gradient norm; the gradients are multiplied by the factor of
// study::optimizer_scale (the report's scale with spike handling on, 1 without it, the oracle's
// own decision for the oracle; 0 skips the optimizer step); sl::apply(loss, report) sets the
// adaptive multipliers and the AdaptiveHuber scale for the next step.
// Early stopping watches the validation loss only: every eval_every steps the validation loss (a
// copy of the loss made before training: base weights, initial scale, so its values compare over
// the run) goes to presets::validation_stopper_for(preset) (patience in checks, min_delta,
// validation_smoothing), as Lightning's EarlyStopping monitors val_loss, and sl::best_state keeps
// the weights of the best check. Every run trains to the
// budget: the step at which the stopper fired and the held-out error of the best weights at that
// moment (what an early-stopped run ends with) are recorded, and so is the error of the weights at
// the budget (what training without early stopping ends with), so one run answers both.

#include <steadyloss/backend/eigen.hpp>
#include <steadyloss/presets.hpp>
#include <steadyloss/steadyloss.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "preset_overrides.hpp"
#include "scenarios.hpp"
#include "study_metrics.hpp"
#include "study_report.hpp"
#include "task.hpp"

namespace sl = steadyloss;
namespace st = steadyloss::study;

namespace {

constexpr double nan = std::numeric_limits<double>::quiet_NaN();
const std::string default_scenario = "p0.05";

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
  bool sgd = false;               // plain SGD instead of Adam
  double beta2 = 0.999;           // Adam's second-moment history weight
  bool ablations_everywhere = false;  // ablations at every scenario, not only the default one
  std::string out = "tts_stability_out";
  std::vector<std::string> only;  // configuration names to run (empty: all)
  std::vector<st::scenario> scenarios = st::default_scenarios();
  sl::presets::preset_config stable = sl::presets::stable;  // with --set applied
  std::string overrides;                                      // the --set text, for results.md
  tts::task_settings task;
};

struct configuration {
  std::string name;
  sl::presets::preset_config preset;
  bool oracle = false;
  bool ablation = false;
  st::step_rule rule() const {
    if (oracle) return st::step_rule::oracle;
    return preset.spike_detection ? st::step_rule::stabilizer : st::step_rule::plain;
  }
};

// The remedies of the stable preset, each as the fields it copies from one preset into another.
struct remedy {
  const char* name;
  void (*copy)(sl::presets::preset_config& to, const sl::presets::preset_config& from);
};
const remedy remedies[] = {
    {"mel_term",
     [](auto& to, const auto& from) {
       to.mel = from.mel;
       to.huber_delta = from.huber_delta;
       to.huber_k = from.huber_k;
       to.scale_factor = from.scale_factor;
       to.mel_weight = from.mel_weight;
     }},
    {"spike_handling",
     [](auto& to, const auto& from) {
       to.spike_detection = from.spike_detection;
       to.spikes = from.spikes;
     }},
    {"adaptive_weights",
     [](auto& to, const auto& from) {
       to.adaptive_weights = from.adaptive_weights;
       to.weight_lo = from.weight_lo;
       to.weight_hi = from.weight_hi;
     }},
    {"stop_term",
     [](auto& to, const auto& from) {
       to.stop_pos_weight = from.stop_pos_weight;
       to.label_smoothing = from.label_smoothing;
       to.stop_weight = from.stop_weight;
     }},
    {"smoothing", [](auto& to, const auto& from) { to.smoothing = from.smoothing; }},
    {"validation_smoothing", [](auto& to, const auto& from) { to.validation_smoothing = from.validation_smoothing; }},
    {"early_stopping",
     [](auto& to, const auto& from) {
       to.patience = from.patience;
       to.min_delta = from.min_delta;
     }},
};

const char* const core_configurations[] = {"baseline", "original", "oracle", "stable"};

struct configuration_list {
  std::vector<configuration> run;
  std::vector<std::string> not_run;  // ablations that train as another configuration ("name (trains as other)")
};

configuration_list all_configurations(const sl::presets::preset_config& stable) {
  const auto& base = sl::presets::baseline;
  configuration_list out;
  out.run = {{"baseline", base}, {"original", sl::presets::original}, {"oracle", base, true}, {"stable", stable}};
  // An ablation that trains as a configuration already listed (its parent when the remedy is the
  // same in both presets, or another ablation) is named, not run: its numbers would be that one's.
  const auto add = [&](std::string name, const sl::presets::preset_config& p) {
    for (const auto& c : out.run)
      if (!c.oracle && st::same_behaviour(p, c.preset)) {
        out.not_run.push_back(name + " (trains as " + c.name + ")");
        return;
      }
    out.run.push_back({std::move(name), p, false, true});
  };
  for (const auto& r : remedies) {
    auto p = base;
    r.copy(p, stable);
    add(std::string("baseline + ") + r.name, p);
  }
  for (const auto& r : remedies) {
    auto p = stable;
    r.copy(p, base);
    add(std::string("stable - ") + r.name, p);
  }
  return out;
}

struct step_row {
  int step = 0;
  float train_total = 0;      // the configuration's weighted loss (never compared across configurations)
  float train_mel_l1 = 0;     // unweighted mel L1 of the batch against its (noisy) targets
  float smoothed = 0;         // the Stabilizer's smoothed training loss (logged only)
  float grad_norm = 0;
  float scale = 1;            // the factor the gradients were multiplied by (0: optimizer step skipped)
  st::batch_kind kind = st::batch_kind::clean;
  bool spike = false;
  float w_mel = 1, w_stop = 1;  // adaptive multipliers used this step
  float error_scale = nan;      // the AdaptiveHuber scale used this step (NaN: another mel term)
  double heldout = nan;         // clean held-out mel L1 (every eval_every steps)
  double validation = nan;      // validation loss at base weights (every eval_every steps)
};

struct run_record {
  std::string config, scenario;
  int seed = 0;
  std::string error;  // an exception's message: the run did not finish
  std::vector<step_row> rows;
  long long steps_to_target = -1;
  double final_heldout = nan;   // the early-stopped run: best weights when the stopper fired (or at the budget)
  double budget_heldout = nan;  // the weights at the budget, no early stop, nothing restored
  double balanced_accuracy = nan, f1 = nan;
  double heldout_variability = nan, train_variability = nan;
  long long spikes = 0;
  long long bad_batches = 0, bad_acted = 0;      // corrupted or non-finite batches; those scaled < 1
  long long clean_batches = 0, clean_acted = 0;  // clean batches; those scaled < 1
  long long stop_step = -1, best_step = -1;
  bool diverged = false;  // the weights at the budget hold a NaN or Inf
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

bool finite_weights(tts::model& m) {
  for (auto& b : tts::adam::blocks(m))
    if (!b.allFinite()) return false;
  return true;
}

template <class MelTerm>
run_record run(const configuration& config, const st::scenario& scenario, const study_settings& s, int seed,
               MelTerm mel_term) {
  const auto& p = config.preset;
  const auto start = std::chrono::steady_clock::now();
  run_record rec;
  rec.config = config.name;
  rec.scenario = scenario.name;
  rec.seed = seed;
  // The data, batch order, schedule of bad batches and initial weights depend on the seed only,
  // so configurations are compared on identical runs (paired by seed); two uniforms are drawn
  // every step in every scenario, so the scenarios' schedules nest (scenarios.hpp).
  const tts::dataset data = tts::make_dataset(s.task, static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(static_cast<unsigned long long>(seed) * 7919 + 17);
  std::mt19937_64 schedule(static_cast<unsigned long long>(seed) * 104729 + 3);
  std::mt19937_64 damage(static_cast<unsigned long long>(seed) * 1299709 + 11);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  tts::model params(s.hidden, rng);
  tts::model grads = tts::model::zeros_like(params);
  sl::best_state<tts::model> best;
  tts::adam optimizer(params, s.learning_rate);
  optimizer.beta2 = s.beta2;

  auto loss = sl::compose(sl::term(mel_term, float(p.mel_weight)),
                          sl::term(sl::presets::stop_term_for<float>(p), float(p.stop_weight)));
  const auto validation_loss = loss;  // base weights, initial scale: one scale all run
  auto guard = sl::presets::stabilizer_for<float>(p);
  auto stopper = sl::presets::validation_stopper_for<float>(p);
  // The same spike measurement for every configuration: the library's mean-ratio rule (2x the
  // mean of the last 10 accepted values), report only, on the unweighted training mel L1.
  sl::SpikeDampener<float> spike_meter({.window = 10, .mode = sl::spike_mode::report, .detector = {.threshold = 2.0}});

  const tts::batch test = tts::make_batch(data.test), validation = tts::make_batch(data.validation);
  tts::forward_pass f, f_eval;
  tts::Matrix d_mel, d_hidden;
  tts::Vector d_stop;
  std::vector<int> order(data.train.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = int(i);
  std::size_t cursor = order.size();

  const auto heldout_error = [&](const tts::model& m) {
    tts::forward(m, test.features, f_eval);
    return double(sl::value(sl::L1<float>{}, sl::inputs(f_eval.mel, test.mel, sl::lengths(test.lengths, test.max_frames, tts::mel_bins))).value);
  };
  // What an early-stopped run ends with: the held-out error and stop-token scores of `m`.
  const auto finish_with = [&](const tts::model& m) {
    rec.final_heldout = heldout_error(m);
    st::confusion c;
    for (std::size_t i = 0; i < test.lengths.size(); ++i)
      for (int t = 0; t < test.lengths[i]; ++t) {
        const Eigen::Index row = Eigen::Index(i) * test.max_frames + t;
        c.add(f_eval.stop(row) > 0.0f, test.stop(row) > 0.5f);
      }
    rec.balanced_accuracy = st::balanced_accuracy(c);
    rec.f1 = st::f1(c);
  };

  std::vector<long long> eval_steps;
  std::vector<double> heldout_series;
  bool stopped = false;
  rec.rows.reserve(std::size_t(s.steps));
  for (int step = 0; step < s.steps; ++step) {
    if (cursor + std::size_t(s.batch_size) > order.size()) {  // a new epoch
      std::shuffle(order.begin(), order.end(), rng);
      cursor = 0;
    }
    tts::batch b = tts::make_batch(data.train, order, cursor, std::size_t(s.batch_size));
    cursor += std::size_t(s.batch_size);
    const double u_corrupt = uniform(schedule), u_non_finite = uniform(schedule);
    switch (st::kind_of(u_corrupt, u_non_finite, scenario)) {
      case st::batch_kind::corrupted: tts::corrupt(b, damage); break;
      case st::batch_kind::non_finite: tts::make_non_finite(b, damage); break;
      case st::batch_kind::clean: break;
    }

    tts::forward(params, b.features, f);
    d_mel.resize(f.mel.rows(), f.mel.cols());
    d_stop.resize(f.stop.size());
    const auto frames = std::size_t(b.max_frames);
    const auto result = loss.evaluate(sl::inputs(f.mel, b.mel, sl::lengths(b.lengths, frames, tts::mel_bins)),
                                      sl::inputs(f.stop, b.stop, sl::lengths(b.lengths, frames, 1)),
                                      sl::grads(d_mel, d_stop));
    tts::backward(params, b.features, f, d_mel, d_stop, grads, d_hidden);
    const double norm = grad_norm_of(grads);
    const auto report = guard.update(result, float(norm));
    const float scale = st::optimizer_scale(config.rule(), b.kind, report.scale);

    step_row row;
    row.step = step;
    row.train_total = result.total;
    row.train_mel_l1 = sl::value(sl::L1<float>{}, sl::inputs(f.mel, b.mel, sl::lengths(b.lengths, frames, tts::mel_bins))).value;
    row.smoothed = report.smoothed;
    row.grad_norm = float(norm);
    row.scale = scale;
    row.kind = b.kind;
    row.spike = spike_meter.update(row.train_mel_l1).is_spike;
    row.w_mel = result.weights[0] / float(p.mel_weight);
    row.w_stop = result.weights[1] / float(p.stop_weight);
    if constexpr (requires { loss.template term<0>().scale; }) row.error_scale = loss.template term<0>().scale;
    rec.spikes += row.spike;
    if (b.kind == st::batch_kind::clean) {
      ++rec.clean_batches;
      rec.clean_acted += scale < 1.0f;
    } else {
      ++rec.bad_batches;
      rec.bad_acted += scale < 1.0f;
    }

    if (scale != 0.0f) {
      if (scale != 1.0f) scale_grads(grads, scale);
      if (s.sgd) {
        auto p_blocks = tts::adam::blocks(params), g_blocks = tts::adam::blocks(grads);
        for (std::size_t k = 0; k < p_blocks.size(); ++k) p_blocks[k] -= float(s.learning_rate) * g_blocks[k];
      } else {
        optimizer.step(params, grads);
      }
    }
    sl::apply(loss, report);

    if ((step + 1) % s.eval_every == 0 || step + 1 == s.steps) {
      row.heldout = heldout_error(params);
      tts::forward(params, validation.features, f_eval);
      const std::size_t v_frames = std::size_t(validation.max_frames);
      const auto v = validation_loss.evaluate(
          sl::inputs(f_eval.mel, validation.mel, sl::lengths(validation.lengths, v_frames, tts::mel_bins)),
          sl::inputs(f_eval.stop, validation.stop, sl::lengths(validation.lengths, v_frames, 1)));
      row.validation = v.total;
      eval_steps.push_back(step + 1);
      heldout_series.push_back(row.heldout);
      if (!stopped) {  // the shadow measurement: the stopper decides, training goes on to the budget
        const auto check = stopper.check(v.total, step + 1);
        best.update(check, params);  // the weights after this step's update, as a checkpoint callback saves them
        if (check.should_stop) {
          stopped = true;
          rec.stop_step = step + 1;
          finish_with(best.has_value() ? *best.get() : params);
        }
      }
    }
    rec.rows.push_back(row);
  }
  rec.budget_heldout = heldout_error(params);
  rec.diverged = !finite_weights(params);
  if (!stopped) finish_with(best.has_value() ? *best.get() : params);
  rec.best_step = best.step();

  // The early-stopped run's curve: evaluations and steps up to the stop.
  const long long end = stopped ? rec.stop_step : s.steps;
  const long long from = static_cast<long long>(s.variability_from * s.steps);
  std::vector<double> heldout_tail, train_series;
  std::size_t evaluations = 0;
  for (std::size_t k = 0; k < eval_steps.size() && eval_steps[k] <= end; ++k) {
    ++evaluations;
    if (eval_steps[k] >= from) heldout_tail.push_back(heldout_series[k]);
  }
  rec.steps_to_target = st::steps_to_target(std::span(eval_steps).first(evaluations),
                                            std::span<const double>(heldout_series).first(evaluations), s.target);
  // Bad batches are left out: their loss measures the data, not the model (and is the same in
  // every configuration, the data being paired by seed).
  for (const auto& row : rec.rows)
    if (row.step >= from && row.step < end && row.kind == st::batch_kind::clean) train_series.push_back(row.train_mel_l1);
  rec.heldout_variability = st::variability(heldout_tail);
  rec.train_variability = st::variability(train_series);
  rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return rec;
}

run_record run_configuration(const configuration& c, const st::scenario& scenario, const study_settings& s, int seed) {
  const auto& p = c.preset;
  switch (p.mel) {
    case sl::presets::mel_term::huber: return run(c, scenario, s, seed, sl::Huber<float>{.delta = float(p.huber_delta)});
    case sl::presets::mel_term::adaptive_huber:
      return run(c, scenario, s, seed, sl::AdaptiveHuber<float>{.k = float(p.huber_k)});
    case sl::presets::mel_term::l1: break;
  }
  return run(c, scenario, s, seed, sl::L1<float>{});
}

/// Builds a configuration's loss and policies once, so a bad --set value is reported before any
/// run starts (the library's constructors and validate() check the ranges).
void check_configuration(const configuration& c) {
  const auto& p = c.preset;
  const auto check_mel = [&](auto mel) {
    if constexpr (requires { mel.validate(); }) mel.validate();
    sl::presets::stop_term_for<float>(p).validate();
    auto loss = sl::compose(sl::term(mel, float(p.mel_weight)),
                            sl::term(sl::presets::stop_term_for<float>(p), float(p.stop_weight)));
    (void)loss;
  };
  switch (p.mel) {
    case sl::presets::mel_term::huber: check_mel(sl::Huber<float>{.delta = float(p.huber_delta)}); break;
    case sl::presets::mel_term::adaptive_huber: check_mel(sl::AdaptiveHuber<float>{.k = float(p.huber_k)}); break;
    case sl::presets::mel_term::l1: check_mel(sl::L1<float>{}); break;
  }
  (void)sl::presets::stabilizer_for<float>(p);
  (void)sl::presets::validation_stopper_for<float>(p);
}

// ---- output -------------------------------------------------------------------------------

using run_set = std::vector<const run_record*>;
using st::cell;
using st::change;
using st::format_interval;
using st::select;
using st::strict_mean;
using st::values_of;

const auto steps_or_budget = [](const study_settings& s) {
  return [&s](const run_record& r) { return r.steps_to_target >= 0 ? double(r.steps_to_target) : double(s.steps); };
};
const auto stop_or_budget = [](const study_settings& s) {
  return [&s](const run_record& r) { return r.stop_step >= 0 ? double(r.stop_step) : double(s.steps); };
};

std::string scenario_title(const st::scenario& sc) {
  char buffer[160];
  if (sc.non_finite_probability > 0)
    std::snprintf(buffer, sizeof buffer, "%s: corrupted batches %g, non-finite batches %g", sc.name.c_str(),
                  sc.corrupt_probability, sc.non_finite_probability);
  else
    std::snprintf(buffer, sizeof buffer, "%s: corrupted batches %g", sc.name.c_str(), sc.corrupt_probability);
  return buffer;
}

std::string scenario_tables(const st::scenario& sc, const std::vector<configuration>& configs,
                            const std::vector<run_record>& records, const study_settings& s) {
  std::ostringstream out;
  out << "\n## " << scenario_title(sc) << "\n\n"
      << "| configuration | final held-out mel L1 | steps to " << s.target << " (reached) | held-out variability | "
         "train variability | stop balanced acc. | stop F1 | spikes | bad batches acted on | clean batches acted on | "
         "early stop step (stopped) | held-out at budget | weights NaN at budget |\n"
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& c : configs) {
    const auto runs = select(records, sc.name, c.name);
    if (runs.empty()) continue;
    long long reached = 0, stopped = 0, bad = 0, bad_acted = 0, clean = 0, clean_acted = 0, diverged = 0;
    for (const auto* r : runs) {
      reached += r->steps_to_target >= 0;
      stopped += r->stop_step >= 0;
      bad += r->bad_batches;
      bad_acted += r->bad_acted;
      clean += r->clean_batches;
      clean_acted += r->clean_acted;
      diverged += r->diverged;
    }
    const auto n = std::to_string(runs.size());
    out << "| " << c.name << " | " << cell(values_of(runs, [](const run_record& r) { return r.final_heldout; }), 4)
        << " | "
        << format_interval(st::mean_ci95(values_of(runs, [](const run_record& r) {
                             return r.steps_to_target >= 0 ? double(r.steps_to_target) : nan;  // over the runs that reached it
                           })), 0)
        << " (" << reached << "/" << n << ")"
        << " | " << cell(values_of(runs, [](const run_record& r) { return r.heldout_variability; }), 4)
        << " | " << cell(values_of(runs, [](const run_record& r) { return r.train_variability; }), 3)
        << " | " << cell(values_of(runs, [](const run_record& r) { return r.balanced_accuracy; }), 3)
        << " | " << cell(values_of(runs, [](const run_record& r) { return r.f1; }), 3)
        << " | " << cell(values_of(runs, [](const run_record& r) { return double(r.spikes); }), 1)
        << " | " << bad_acted << "/" << bad << " | " << clean_acted << "/" << clean
        << " | " << format_interval(st::mean_ci95(values_of(runs, stop_or_budget(s))), 0) << " (" << stopped << "/" << n << ")"
        << " | " << cell(values_of(runs, [](const run_record& r) { return r.budget_heldout; }), 4)
        << " | " << diverged << "/" << n << " |\n";
  }

  // Each configuration against a reference, as changes of the means.
  const auto against = [&](const std::string& reference) {
    const auto ref = select(records, sc.name, reference);
    if (ref.empty()) return;
    const auto metric_mean = [](const run_set& runs, auto f) { return strict_mean(values_of(runs, f)); };
    const auto final_error = [](const run_record& r) { return r.final_heldout; };
    const auto budget_error = [](const run_record& r) { return r.budget_heldout; };
    const auto heldout_var = [](const run_record& r) { return r.heldout_variability; };
    const auto train_var = [](const run_record& r) { return r.train_variability; };
    out << "\nChange of the mean against " << reference << " (steps to target: a run that never reaches it counts as "
        << s.steps << "):\n\n| configuration | steps to target | held-out variability | train variability | final "
           "held-out mel L1 | held-out at budget |\n|---|---|---|---|---|---|\n";
    for (const auto& c : configs) {
      if (c.name == reference) continue;
      const auto runs = select(records, sc.name, c.name);
      if (runs.empty()) continue;
      out << "| " << c.name << " | " << change(metric_mean(runs, steps_or_budget(s)), metric_mean(ref, steps_or_budget(s)))
          << " | " << change(metric_mean(runs, heldout_var), metric_mean(ref, heldout_var)) << " | "
          << change(metric_mean(runs, train_var), metric_mean(ref, train_var)) << " | "
          << change(metric_mean(runs, final_error), metric_mean(ref, final_error)) << " | "
          << change(metric_mean(runs, budget_error), metric_mean(ref, budget_error)) << " |\n";
    }
  };
  against("baseline");
  against("oracle");

  // The shadow measurement: every run trained to the budget, so each one says both what early
  // stopping ended with and what training to the budget ended with.
  out << "\nEarly stopping against training to the budget (every run trains to " << s.steps
      << " steps; \"at stop\" is the held-out error of the best weights when the validation stopper fired, or at the "
         "budget if it never did; the difference is paired by run):\n\n"
         "| configuration | stopped | stop step (stopped runs) | steps used | error at stop | error at budget | "
         "at stop - at budget | runs at stop <= at budget |\n|---|---|---|---|---|---|---|---|\n";
  for (const auto& c : configs) {
    const auto runs = select(records, sc.name, c.name);
    if (runs.empty()) continue;
    long long stopped = 0, no_worse = 0;
    std::vector<double> stop_steps, differences;
    for (const auto* r : runs) {
      if (r->stop_step >= 0) {
        ++stopped;
        stop_steps.push_back(double(r->stop_step));
      }
      // A NaN at the budget is worse than any finite error at the stop.
      no_worse += r->final_heldout <= r->budget_heldout || (std::isfinite(r->final_heldout) && !std::isfinite(r->budget_heldout));
      differences.push_back(r->final_heldout - r->budget_heldout);
    }
    const double used = strict_mean(values_of(runs, stop_or_budget(s)));
    char saved[48];
    std::snprintf(saved, sizeof saved, " (%+.0f%%)", 100.0 * (used / double(s.steps) - 1.0));
    const auto n = std::to_string(runs.size());
    out << "| " << c.name << " | " << stopped << "/" << n << " | " << format_interval(st::mean_ci95(stop_steps), 0)
        << " | " << format_interval(st::mean_ci95(values_of(runs, stop_or_budget(s))), 0) << saved << " | "
        << cell(values_of(runs, [](const run_record& r) { return r.final_heldout; }), 4) << " | "
        << cell(values_of(runs, [](const run_record& r) { return r.budget_heldout; }), 4) << " | " << cell(differences, 4)
        << " | " << no_worse << "/" << n << " |\n";
  }
  return out.str();
}

// Mean and 95% band over seeds per step for one configuration in one scenario: held-out error
// (carried forward from the last evaluation; every run trains to the budget) and the unweighted
// training mel L1 (over the seeds whose batch was clean at that step: a bad batch's loss says
// nothing about the model, and the seeds share their data, so those spikes would hide the
// difference between configurations).
struct curve_point {
  st::interval heldout, train;
};
std::vector<curve_point> curves(const std::vector<run_record>& records, const std::string& scenario,
                                const std::string& name, int steps) {
  std::vector<curve_point> out(static_cast<std::size_t>(steps));
  const auto runs = select(records, scenario, name);
  std::vector<std::vector<double>> heldout(static_cast<std::size_t>(steps)), train(static_cast<std::size_t>(steps));
  for (const auto* r : runs) {
    double last = nan;
    for (int step = 0; step < steps; ++step) {
      if (std::size_t(step) < r->rows.size()) {
        const auto& row = r->rows[std::size_t(step)];
        if (!std::isnan(row.heldout)) last = row.heldout;
        if (row.kind == st::batch_kind::clean) train[std::size_t(step)].push_back(row.train_mel_l1);
      }
      heldout[std::size_t(step)].push_back(last);
    }
  }
  for (std::size_t k = 0; k < out.size(); ++k) out[k] = {st::mean_ci95(heldout[k]), st::mean_ci95(train[k])};
  return out;
}

void write_curves(const std::vector<run_record>& records, const study_settings& s, const std::string& scenario,
                  const std::filesystem::path& dir) {
  if (select(records, scenario, "baseline").empty() || select(records, scenario, "stable").empty()) return;
  const auto base = curves(records, scenario, "baseline", s.steps), stable = curves(records, scenario, "stable", s.steps);
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
          "set multiplot layout 2,1 title 'tts\\_stability: baseline vs stable, scenario "
       << scenario << " (mean and 95% band over " << s.seeds << " seeds)'\n"
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
  st::plot("tts_stability", dir / "curves.gp", dir / "curves.png");
}

// Steps to target (a run that never reaches it counts as the budget) and the final held-out
// error (early-stopped runs) against the corruption rate, over the scenarios without non-finite
// batches; one line per core configuration with its 95% band.
void write_sweep(const std::vector<run_record>& records, const study_settings& s, const std::filesystem::path& dir) {
  std::vector<st::scenario> sweep;
  for (const auto& sc : s.scenarios)
    if (sc.non_finite_probability == 0) sweep.push_back(sc);
  std::sort(sweep.begin(), sweep.end(), [](const auto& a, const auto& b) { return a.corrupt_probability < b.corrupt_probability; });
  if (sweep.size() < 2) return;
  std::vector<std::string> lines;
  for (const char* name : core_configurations)
    if (std::any_of(sweep.begin(), sweep.end(), [&](const auto& sc) { return !select(records, sc.name, name).empty(); }))
      lines.emplace_back(name);
  if (lines.empty()) return;
  {
    std::ofstream csv(dir / "sweep.csv");
    csv << "corrupt_probability";
    for (const auto& name : lines)
      for (const char* metric : {"_steps", "_steps_lo", "_steps_hi", "_error", "_error_lo", "_error_hi"}) csv << "," << name << metric;
    csv << "\n";
    const auto put = [&](const st::interval& i, bool all_finite) {
      const double h = std::isfinite(i.half_width) ? i.half_width : 0.0;
      if (i.n == 0 || !all_finite) csv << ",NaN,NaN,NaN";
      else csv << "," << i.mean << "," << i.mean - h << "," << i.mean + h;
    };
    for (const auto& sc : sweep) {
      csv << sc.corrupt_probability;
      for (const auto& name : lines) {
        const auto runs = select(records, sc.name, name);
        const auto steps = values_of(runs, steps_or_budget(s));
        const auto errors = values_of(runs, [](const run_record& r) { return r.final_heldout; });
        put(st::mean_ci95(steps), true);
        put(st::mean_ci95(errors), std::isfinite(strict_mean(errors)));
      }
      csv << "\n";
    }
  }
  {
    const char* colors[] = {"#c0392b", "#7f8c8d", "#27ae60", "#1f5fa8"};
    std::ofstream gp(dir / "sweep.gp");
    gp << "set terminal pngcairo size 1100,800 font ',10'\n"
          "set output '" << (dir / "sweep.png").string() << "'\n"
          "set datafile separator ','\nset datafile missing 'NaN'\nset key top left\nset grid\n"
          "set multiplot layout 2,1 title 'tts\\_stability: against the corrupted-batch rate (mean and 95% band over "
       << s.seeds << " seeds)'\n"
          "set ylabel 'steps to held-out mel L1 " << s.target << " (never = " << s.steps << ")'\n";
    const auto panel = [&](int offset) {
      gp << "plot ";
      for (std::size_t k = 0; k < lines.size(); ++k) {
        const int column = 2 + int(k) * 6 + offset;
        const char* color = colors[std::find(std::begin(core_configurations), std::end(core_configurations), lines[k]) -
                                   std::begin(core_configurations)];
        gp << (k == 0 ? "'" + (dir / "sweep.csv").string() + "'" : std::string("''")) << " using 1:" << column + 1 << ":"
           << column + 2 << " with filledcurves lc rgb '" << color << "' fs transparent solid 0.2 notitle, '' using 1:"
           << column << " with linespoints lw 2 pt 7 lc rgb '" << color << "' title '" << lines[k] << "'"
           << (k + 1 < lines.size() ? ", " : "\n");
      }
    };
    panel(0);
    gp << "set xlabel 'probability of a corrupted batch'\nset ylabel 'final held-out mel L1 (early-stopped)'\n";
    panel(3);
    gp << "unset multiplot\n";
  }
  st::plot("tts_stability", dir / "sweep.gp", dir / "sweep.png");
}

const char* kind_name(st::batch_kind k) {
  switch (k) {
    case st::batch_kind::clean: return "clean";
    case st::batch_kind::corrupted: return "corrupted";
    case st::batch_kind::non_finite: return "non_finite";
  }
  return "?";
}

void write_outputs(const std::vector<configuration>& configs, const std::vector<std::string>& not_run,
                   const std::vector<run_record>& records, const study_settings& s, double wall_s) {
  namespace fs = std::filesystem;
  fs::create_directories(s.out);
  const fs::path dir(s.out);
  {
    std::ofstream csv(dir / "steps.csv");
    csv << "scenario,config,seed,step,batch,train_loss_weighted,train_mel_l1,smoothed,grad_norm,scale,spike,"
           "multiplier_mel,multiplier_stop,error_scale_mel,heldout_mel_l1,validation_loss\n";
    char line[512];
    for (const auto& r : records)
      for (const auto& row : r.rows) {
        std::snprintf(line, sizeof line, "%s,%s,%d,%d,%s,%.6g,%.6g,%.6g,%.6g,%.6g,%d,%.5g,%.5g,%.5g,", r.scenario.c_str(),
                      r.config.c_str(), r.seed, row.step, kind_name(row.kind), double(row.train_total),
                      double(row.train_mel_l1), double(row.smoothed), double(row.grad_norm), double(row.scale),
                      int(row.spike), double(row.w_mel), double(row.w_stop), double(row.error_scale));
        csv << line;
        if (!std::isnan(row.heldout) || !std::isnan(row.validation)) {
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
    csv << "scenario,config,seed,final_heldout_mel_l1,budget_heldout_mel_l1,steps_to_target,heldout_variability,"
           "train_variability,stop_balanced_accuracy,stop_f1,spikes,bad_batches,bad_acted,clean_batches,clean_acted,"
           "stop_step,best_step,diverged,seconds,error\n";
    for (const auto& r : records)
      csv << r.scenario << "," << r.config << "," << r.seed << "," << r.final_heldout << "," << r.budget_heldout << ","
          << r.steps_to_target << "," << r.heldout_variability << "," << r.train_variability << ","
          << r.balanced_accuracy << "," << r.f1 << "," << r.spikes << "," << r.bad_batches << "," << r.bad_acted << ","
          << r.clean_batches << "," << r.clean_acted << "," << r.stop_step << "," << r.best_step << "," << int(r.diverged)
          << "," << r.seconds << ",\"" << r.error << "\"\n";
  }
  std::ostringstream markdown;
  for (const auto& sc : s.scenarios) markdown << scenario_tables(sc, configs, records, s);
  long long failed = 0;
  for (const auto& r : records) failed += !r.error.empty();
  {
    std::ofstream md(dir / "results.md");
    md << "# tts_stability results\n\n" << s.seeds << " seeds (" << s.first_seed << ".." << s.first_seed + s.seeds - 1
       << ") per configuration and scenario, " << s.steps << " steps (batches consumed, skipped ones included), batch "
       << s.batch_size << ", hidden " << s.hidden << ", " << s.task.train_sequences << " training sequences, "
       << (s.sgd ? "SGD" : "Adam") << " lr " << s.learning_rate << (s.sgd ? "" : ", beta2 " + std::to_string(s.beta2))
       << ", early stopping on the validation loss every " << s.eval_every << " steps (every run trains to the budget)"
       << "; wall time " << wall_s << " s on " << s.threads << " threads. Mean ± 95% interval (Student t) over seeds.\n\n"
       << "stable preset" << (s.overrides.empty() ? "" : " with --set " + s.overrides) << ": `"
       << st::preset_text(s.stable) << "`\n\n"
       << "Ablations run at " << (s.ablations_everywhere ? "every scenario" : "the default scenario only") << ".";
    if (!not_run.empty()) {
      md << " Not run (they train exactly as the configuration named):";
      for (const auto& n : not_run) md << " " << n << ";";
    }
    if (failed > 0) md << "\n\n**" << failed << " runs failed with an exception; see runs.csv's error column.**";
    md << "\n" << markdown.str();
  }
  std::printf("%s", markdown.str().c_str());
  const bool has_default = std::any_of(s.scenarios.begin(), s.scenarios.end(), [](const auto& sc) { return sc.name == default_scenario; });
  write_curves(records, s, has_default ? default_scenario : s.scenarios.front().name, dir);
  write_sweep(records, s, dir);
}

[[noreturn]] void usage(const std::string& message) {
  std::fprintf(stderr,
               "tts_stability: %s\n"
               "usage: tts_stability [--full] [--seeds N] [--first-seed N] [--steps N] [--threads N] [--out DIR]\n"
               "                     [--configs NAME,NAME,...] [--scenarios NAME,NAME,...] [--ablations-everywhere]\n"
               "                     [--set FIELD=VALUE,...] [--target X] [--eval-every N] [--lr X]\n"
               "                     [--optimizer adam|sgd] [--adam-beta2 X] [--list]\n"
               "scenarios: p<P> (corrupted batches with probability P), p<P>+nf<Q> (and non-finite batches with\n"
               "           probability Q), nonfinite (= p0.05+nf0.01); default p0,p0.05,p0.1,p0.2,nonfinite\n"
               "--set fields (the stable preset): mel (l1|huber|adaptive_huber), huber_delta, huber_k, scale_factor,\n"
               "           mel_weight, stop_pos_weight, label_smoothing, stop_weight, adaptive_weights (0|1),\n"
               "           weight_lo, weight_hi, smoothing, spike_detection (0|1), spikes (dampen|skip), patience,\n"
               "           min_delta, validation_smoothing\n",
               message.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // Every step allocates batch-sized matrices (~180 KB, above glibc's initial mmap threshold) and
  // frees them: with the defaults each one is a fresh mmap and its pages fault in again. Keeping
  // them on the heap halves the run time (measured: 4.9 s -> 2.3 s for 10 runs); results unchanged.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  study_settings s;
  s.threads = std::max(1, std::min(2, int(std::thread::hardware_concurrency())));
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
    try {
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
      else if (arg == "--optimizer") {
        const std::string v = next();
        if (v != "adam" && v != "sgd") usage("--optimizer: adam or sgd");
        s.sgd = v == "sgd";
      } else if (arg == "--adam-beta2") {
        s.beta2 = number(0);
        if (!(s.beta2 < 1)) usage("--adam-beta2: a value in [0, 1)");
      } else if (arg == "--out") s.out = next();
      else if (arg == "--configs") {
        std::stringstream names(next());
        for (std::string name; std::getline(names, name, ',');) s.only.push_back(name);
      } else if (arg == "--scenarios") s.scenarios = st::parse_scenarios(next());
      else if (arg == "--set") {
        const std::string text = next();
        st::set_fields(s.stable, text);
        s.overrides += (s.overrides.empty() ? "" : ",") + text;
      } else if (arg == "--ablations-everywhere") s.ablations_everywhere = true;
      else if (arg == "--list") list = true;
      else usage("unknown argument " + arg);
    } catch (const std::invalid_argument& e) {
      usage(e.what());
    }
  }
  const auto all = all_configurations(s.stable);
  if (list) {
    for (const auto& c : all.run) std::printf("%s\n", c.name.c_str());
    for (const auto& n : all.not_run) std::printf("(not run: %s)\n", n.c_str());
    return 0;
  }
  for (const auto& name : s.only)
    if (std::none_of(all.run.begin(), all.run.end(), [&](const auto& c) { return c.name == name; }) &&
        std::none_of(all.not_run.begin(), all.not_run.end(), [&](const auto& n) { return n.rfind(name + " (", 0) == 0; }))
      usage("--configs: no configuration '" + name + "' (see --list)");
  std::vector<configuration> configs;
  for (const auto& c : all.run)
    if (s.only.empty() || std::find(s.only.begin(), s.only.end(), c.name) != s.only.end()) configs.push_back(c);
  if (configs.empty()) usage("--configs matches no configuration that runs (see --list)");
  for (const auto& c : configs) {
    try {
      check_configuration(c);
    } catch (const std::exception& e) {
      usage("configuration '" + c.name + "': " + e.what());
    }
  }

  // Ablations at the default scenario (or the first listed, if it is not), unless asked everywhere.
  const bool has_default = std::any_of(s.scenarios.begin(), s.scenarios.end(), [](const auto& sc) { return sc.name == default_scenario; });
  const std::string ablation_scenario = has_default ? default_scenario : s.scenarios.front().name;
  struct job {
    std::size_t config, scenario;
    int seed;
  };
  std::vector<job> jobs;
  for (std::size_t k = 0; k < s.scenarios.size(); ++k)
    for (std::size_t c = 0; c < configs.size(); ++c) {
      if (configs[c].ablation && !s.ablations_everywhere && s.scenarios[k].name != ablation_scenario) continue;
      for (int seed = s.first_seed; seed < s.first_seed + s.seeds; ++seed) jobs.push_back({c, k, seed});
    }
  std::vector<run_record> records(jobs.size());
  std::atomic<std::size_t> next_job{0}, done{0};
  std::mutex log;
  const auto start = std::chrono::steady_clock::now();
  const auto worker = [&] {
    for (std::size_t j; (j = next_job++) < jobs.size();) {
      const auto& c = configs[jobs[j].config];
      const auto& sc = s.scenarios[jobs[j].scenario];
      try {
        records[j] = run_configuration(c, sc, s, jobs[j].seed);
      } catch (const std::exception& e) {  // reported in runs.csv and results.md; the study goes on
        records[j] = run_record{};
        records[j].config = c.name;
        records[j].scenario = sc.name;
        records[j].seed = jobs[j].seed;
        records[j].error = e.what();
      }
      const auto& r = records[j];
      std::lock_guard lock(log);
      if (!r.error.empty())
        std::fprintf(stderr, "[%3zu/%zu] %-10s %-30s seed %2d: FAILED: %s\n", ++done, jobs.size(), r.scenario.c_str(),
                     r.config.c_str(), r.seed, r.error.c_str());
      else
        std::fprintf(stderr, "[%3zu/%zu] %-10s %-30s seed %2d: %4zu steps in %5.2f s, held-out L1 %.4f (budget %.4f)%s\n",
                     ++done, jobs.size(), r.scenario.c_str(), r.config.c_str(), r.seed, r.rows.size(), r.seconds,
                     r.final_heldout, r.budget_heldout, r.stop_step >= 0 ? ", stopper fired" : "");
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < s.threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "tts_stability: %zu runs in %.1f s on %d threads\n", jobs.size(), wall_s, s.threads);
  write_outputs(configs, all.not_run, records, s, wall_s);
  return 0;
}
