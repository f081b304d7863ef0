#pragma once
// The study programs' report helpers, shared by tts_stability and speech_tts: table cells
// (mean ± 95% interval, changes in percent), selecting a configuration's runs, running gnuplot.
// The statistics themselves are in study_metrics.hpp (tested); this is formatting.

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "study_metrics.hpp"

namespace steadyloss::study {

/// The finished runs (no error) of one configuration in one scenario. Record: anything with
/// `scenario`, `config` and `error` strings.
template <class Record>
std::vector<const Record*> select(const std::vector<Record>& records, const std::string& scenario,
                                  const std::string& config) {
  std::vector<const Record*> out;
  for (const auto& r : records)
    if (r.scenario == scenario && r.config == config && r.error.empty()) out.push_back(&r);
  return out;
}

/// f(run) for each selected run.
template <class Record, class F>
std::vector<double> values_of(const std::vector<const Record*>& runs, F f) {
  std::vector<double> v;
  for (const auto* r : runs) v.push_back(f(*r));
  return v;
}

/// "mean ± half-width" with `digits` decimals; the mean alone for one value; "-" for none.
inline std::string format_interval(const interval& i, int digits) {
  char buffer[96];
  if (i.n == 0) return "-";
  if (!std::isfinite(i.half_width)) std::snprintf(buffer, sizeof buffer, "%.*f", digits, i.mean);
  else std::snprintf(buffer, sizeof buffer, "%.*f ± %.*f", digits, i.mean, digits, i.half_width);
  return buffer;
}

/// Mean ± 95% interval over the runs; runs whose value is NaN or Inf are shown as such, not
/// dropped silently: "0.0421 ± 0.0007 (7 finite; NaN in 3/10)", or "NaN in 10/10".
inline std::string cell(const std::vector<double>& values, int digits) {
  long long nans = 0, infs = 0;
  for (double v : values) {
    nans += std::isnan(v);
    infs += std::isinf(v);
  }
  std::string text = format_interval(mean_ci95(values), digits);
  if (nans + infs == 0) return text;
  std::string bad;
  const auto n = std::to_string(values.size());
  if (nans > 0) bad += "NaN in " + std::to_string(nans) + "/" + n;
  if (infs > 0) bad += (bad.empty() ? "" : ", ") + std::string("Inf in ") + std::to_string(infs) + "/" + n;
  if (nans + infs == static_cast<long long>(values.size())) return bad;
  return text + " (" + std::to_string(values.size() - std::size_t(nans + infs)) + " finite; " + bad + ")";
}

/// The mean, NaN if any value is not finite (or there is none): for changes between means.
inline double strict_mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) {
    if (!std::isfinite(v)) return std::nan("");
    sum += v;
  }
  return values.empty() ? std::nan("") : sum / double(values.size());
}

/// The change of `value` against `reference`, in whole percent ("+4%").
inline std::string change(double value, double reference) {
  if (!std::isfinite(value) || !std::isfinite(reference)) return "n/a (NaN in some runs)";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%+.0f%%", 100.0 * (value / reference - 1.0));
  return buffer;
}

/// Runs gnuplot on `script`, which writes `png`; says on stderr whether it did (`program` names
/// the caller). A missing gnuplot is not an error: the CSVs are the results.
inline void plot(std::string_view program, const std::filesystem::path& script, const std::filesystem::path& png) {
  const std::string command = "gnuplot '" + script.string() + "'";
  const std::string name(program);
  if (std::system(command.c_str()) != 0)
    std::fprintf(stderr, "%s: gnuplot failed or is missing; %s is not written (the CSVs are)\n", name.c_str(),
                 png.string().c_str());
  else
    std::fprintf(stderr, "%s: wrote %s\n", name.c_str(), png.string().c_str());
}

}  // namespace steadyloss::study
