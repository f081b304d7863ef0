#pragma once
// Tuning without recompiling: `--set FIELD=VALUE[,FIELD=VALUE...]` overrides fields of a
// presets::preset_config (tested in tests/study/test_preset_overrides.cpp). Also the preset's
// fields as text (results.md records the values a run used) and field-by-field equality (an
// ablation identical to its parent is not run twice).

#include <steadyloss/presets.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

namespace steadyloss::study {

namespace detail {
inline double parse_number(std::string_view field, std::string_view text) {
  const std::string s(text);
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
    throw std::invalid_argument("--set " + std::string(field) + ": '" + s + "' is not a finite number");
  return v;
}
inline bool parse_flag(std::string_view field, std::string_view text) {
  if (text == "1" || text == "true" || text == "on") return true;
  if (text == "0" || text == "false" || text == "off") return false;
  throw std::invalid_argument("--set " + std::string(field) + ": '" + std::string(text) + "' is not 0/1");
}
inline int parse_count(std::string_view field, std::string_view text) {
  const double v = parse_number(field, text);
  if (v != std::floor(v) || v < 0 || v > 1e9)
    throw std::invalid_argument("--set " + std::string(field) + ": '" + std::string(text) + "' is not a count >= 0");
  return static_cast<int>(v);
}
}  // namespace detail

/// The names --set accepts, in the order preset_text prints them.
inline constexpr std::string_view preset_fields[] = {
    "mel",       "huber_delta", "huber_k",        "scale_factor",    "mel_weight",      "stop_pos_weight",
    "label_smoothing", "stop_weight", "adaptive_weights", "weight_lo", "weight_hi",   "smoothing",
    "spike_detection", "spikes",  "patience",       "min_delta",       "validation_smoothing"};

inline std::string_view mel_name(presets::mel_term m) {
  switch (m) {
    case presets::mel_term::l1: return "l1";
    case presets::mel_term::huber: return "huber";
    case presets::mel_term::adaptive_huber: return "adaptive_huber";
  }
  return "?";
}
inline std::string_view spikes_name(spike_mode m) {
  switch (m) {
    case spike_mode::dampen: return "dampen";
    case spike_mode::skip: return "skip";
    case spike_mode::report: return "report";
  }
  return "?";
}

/// Sets one field from its text. The values are checked only as text here (a number, 0/1, a
/// name); the library's own constructors check the ranges when the run builds its policies.
/// Throws std::invalid_argument naming the field and the value.
inline void set_field(presets::preset_config& p, std::string_view field, std::string_view value) {
  using detail::parse_number;
  if (field == "mel") {
    if (value == "l1") p.mel = presets::mel_term::l1;
    else if (value == "huber") p.mel = presets::mel_term::huber;
    else if (value == "adaptive_huber") p.mel = presets::mel_term::adaptive_huber;
    else throw std::invalid_argument("--set mel: '" + std::string(value) + "' is not l1, huber or adaptive_huber");
  } else if (field == "huber_delta") p.huber_delta = parse_number(field, value);
  else if (field == "huber_k") p.huber_k = parse_number(field, value);
  else if (field == "scale_factor") p.scale_factor = parse_number(field, value);
  else if (field == "mel_weight") p.mel_weight = parse_number(field, value);
  else if (field == "stop_pos_weight") p.stop_pos_weight = parse_number(field, value);
  else if (field == "label_smoothing") p.label_smoothing = parse_number(field, value);
  else if (field == "stop_weight") p.stop_weight = parse_number(field, value);
  else if (field == "adaptive_weights") p.adaptive_weights = detail::parse_flag(field, value);
  else if (field == "weight_lo") p.weight_lo = parse_number(field, value);
  else if (field == "weight_hi") p.weight_hi = parse_number(field, value);
  else if (field == "smoothing") p.smoothing = parse_number(field, value);
  else if (field == "spike_detection") p.spike_detection = detail::parse_flag(field, value);
  else if (field == "spikes") {
    if (value == "dampen") p.spikes = spike_mode::dampen;
    else if (value == "skip") p.spikes = spike_mode::skip;
    else throw std::invalid_argument("--set spikes: '" + std::string(value) + "' is not dampen or skip");
  } else if (field == "patience") p.patience = detail::parse_count(field, value);
  else if (field == "min_delta") p.min_delta = parse_number(field, value);
  else if (field == "validation_smoothing") p.validation_smoothing = parse_number(field, value);
  else {
    std::string known;
    for (auto f : preset_fields) known += (known.empty() ? "" : ", ") + std::string(f);
    throw std::invalid_argument("--set: unknown field '" + std::string(field) + "' (known: " + known + ")");
  }
}

/// Applies "FIELD=VALUE[,FIELD=VALUE...]" left to right (a later value of a field wins).
inline void set_fields(presets::preset_config& p, std::string_view list) {
  std::size_t first = 0;
  while (first <= list.size()) {
    const auto comma = std::min(list.find(',', first), list.size());
    const auto item = list.substr(first, comma - first);
    const auto equals = item.find('=');
    if (equals == std::string_view::npos || equals == 0)
      throw std::invalid_argument("--set: '" + std::string(item) + "' is not FIELD=VALUE");
    set_field(p, item.substr(0, equals), item.substr(equals + 1));
    first = comma + 1;
  }
}

/// Every field as FIELD=VALUE, comma-separated: the text set_fields reads back to the same preset.
inline std::string preset_text(const presets::preset_config& p) {
  std::string out;
  char buffer[64];
  const auto put = [&](std::string_view name, std::string_view value) {
    if (!out.empty()) out += ',';
    out.append(name).append("=").append(value);
  };
  const auto number = [&](std::string_view name, double v) {
    std::snprintf(buffer, sizeof buffer, "%.17g", v);
    put(name, buffer);
  };
  put("mel", mel_name(p.mel));
  number("huber_delta", p.huber_delta);
  number("huber_k", p.huber_k);
  number("scale_factor", p.scale_factor);
  number("mel_weight", p.mel_weight);
  number("stop_pos_weight", p.stop_pos_weight);
  number("label_smoothing", p.label_smoothing);
  number("stop_weight", p.stop_weight);
  put("adaptive_weights", p.adaptive_weights ? "1" : "0");
  number("weight_lo", p.weight_lo);
  number("weight_hi", p.weight_hi);
  number("smoothing", p.smoothing);
  put("spike_detection", p.spike_detection ? "1" : "0");
  put("spikes", spikes_name(p.spikes));
  number("patience", p.patience);
  number("min_delta", p.min_delta);
  number("validation_smoothing", p.validation_smoothing);
  return out;
}

/// Field-by-field equality (preset_config has no operator==).
inline bool same_preset(const presets::preset_config& a, const presets::preset_config& b) {
  return preset_text(a) == preset_text(b);
}

/// The preset with every field the study's loop does not read set to the default's value: the
/// Huber delta unless the mel term is Huber, k and the scale's factor unless it is
/// AdaptiveHuber, the bounds while adaptive weights are off, the spike mode while spike
/// detection is off, and the training-loss smoothing always (early stopping watches the
/// validation loss, so no decision reads the smoothed training loss; steps.csv logs it).
inline presets::preset_config effective_preset(presets::preset_config p) {
  const presets::preset_config defaults{};
  if (p.mel != presets::mel_term::huber) p.huber_delta = defaults.huber_delta;
  if (p.mel != presets::mel_term::adaptive_huber) {
    p.huber_k = defaults.huber_k;
    p.scale_factor = defaults.scale_factor;
  }
  if (!p.adaptive_weights) {
    p.weight_lo = defaults.weight_lo;
    p.weight_hi = defaults.weight_hi;
  }
  if (!p.spike_detection) p.spikes = defaults.spikes;
  p.smoothing = defaults.smoothing;
  return p;
}

/// Whether two presets train identically in the study (an ablation that equals its parent this
/// way is not run: its numbers would be the parent's).
inline bool same_behaviour(const presets::preset_config& a, const presets::preset_config& b) {
  return same_preset(effective_preset(a), effective_preset(b));
}

}  // namespace steadyloss::study
