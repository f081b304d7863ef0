#pragma once
// The study's scenarios and the per-step decisions that depend on them, as pure functions (tested
// in tests/study/test_scenarios.cpp):
//
//   scenario            a corrupted-batch probability and a non-finite-batch probability, by name:
//                       "p0.05" (corruption 0.05), "nonfinite" (corruption 0.05 plus 1% non-finite
//                       batches), "p0.1+nf0.02" (any pair)
//   kind_of             which kind a batch is, from two uniforms drawn every step whatever the
//                       scenario: the schedules of two scenarios nest (every batch corrupted at
//                       p = 0.05 is corrupted at p = 0.1 too), so a sweep compares the same runs
//   poison              writes NaN into a few elements and +Inf into one element of a
//                       sequence's targets, as a broken audio file decodes
//   optimizer_scale     what the loop multiplies the gradients by (0: the optimizer step is skipped)

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace steadyloss::study {

struct scenario {
  std::string name;
  double corrupt_probability = 0.05;     ///< a batch's mel targets misaligned, gain 4 (task.hpp)
  double non_finite_probability = 0.0;   ///< a batch's mel targets hold NaN and Inf (poison)
};

/// The default scenario's corruption, and the non-finite scenario's rate on top of it.
inline constexpr double default_corruption = 0.05;
inline constexpr double default_non_finite = 0.01;

namespace detail {
inline double parse_probability(std::string_view text, std::string_view whole) {
  const std::string s(text);
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !(v >= 0.0 && v <= 1.0))
    throw std::invalid_argument("scenario '" + std::string(whole) + "': '" + s + "' is not a probability in [0, 1]");
  return v;
}
}  // namespace detail

/// "p<P>" (corruption P), "p<P>+nf<Q>" (and non-finite Q), "nonfinite" (p0.05+nf0.01).
/// Throws std::invalid_argument naming the text otherwise.
inline scenario parse_scenario(std::string_view name) {
  if (name == "nonfinite") return {std::string(name), default_corruption, default_non_finite};
  if (name.size() < 2 || name[0] != 'p')
    throw std::invalid_argument("scenario '" + std::string(name) + "': expected p<P>, p<P>+nf<Q> or nonfinite");
  scenario s{std::string(name), 0.0, 0.0};
  const auto plus = name.find("+nf");
  s.corrupt_probability = detail::parse_probability(name.substr(1, plus == std::string_view::npos ? name.npos : plus - 1), name);
  if (plus != std::string_view::npos) s.non_finite_probability = detail::parse_probability(name.substr(plus + 3), name);
  return s;
}

/// A comma-separated list of scenario names, in order; duplicates are an error.
inline std::vector<scenario> parse_scenarios(std::string_view list) {
  std::vector<scenario> out;
  std::size_t first = 0;
  while (first <= list.size()) {
    const auto comma = std::min(list.find(',', first), list.size());
    const auto s = parse_scenario(list.substr(first, comma - first));
    for (const auto& o : out)
      if (o.name == s.name) throw std::invalid_argument("scenario '" + s.name + "' is listed twice");
    out.push_back(s);
    first = comma + 1;
  }
  return out;
}

/// The default run's scenarios: the corruption sweep and the non-finite scenario.
inline std::vector<scenario> default_scenarios() { return parse_scenarios("p0,p0.05,p0.1,p0.2,nonfinite"); }

enum class batch_kind : unsigned char { clean, corrupted, non_finite };

/// From two uniforms in [0, 1) drawn for every batch: non-finite if u_non_finite < Q, else
/// corrupted if u_corrupt < P. Comparing one fixed uniform with the probability is what makes
/// the schedules of two scenarios nest.
inline batch_kind kind_of(double u_corrupt, double u_non_finite, const scenario& s) {
  if (u_non_finite < s.non_finite_probability) return batch_kind::non_finite;
  if (u_corrupt < s.corrupt_probability) return batch_kind::corrupted;
  return batch_kind::clean;
}

/// Writes NaN into `nan_count` elements and +Inf into one more, at distinct positions drawn
/// uniformly from `values` (one sequence's valid targets); the others are untouched. Returns the
/// positions, the Inf's last. Needs values.size() > nan_count.
template <class T>
std::vector<std::size_t> poison(std::span<T> values, std::size_t nan_count, std::mt19937_64& rng) {
  if (values.size() <= nan_count)
    throw std::invalid_argument("poison: " + std::to_string(values.size()) + " values cannot hold " +
                                std::to_string(nan_count) + " NaN and one Inf");
  std::vector<std::size_t> positions;
  std::uniform_int_distribution<std::size_t> pick(0, values.size() - 1);
  while (positions.size() < nan_count + 1) {
    const std::size_t k = pick(rng);
    if (std::find(positions.begin(), positions.end(), k) == positions.end()) positions.push_back(k);
  }
  for (std::size_t i = 0; i < nan_count; ++i) values[positions[i]] = std::numeric_limits<T>::quiet_NaN();
  values[positions.back()] = std::numeric_limits<T>::infinity();
  return positions;
}

/// How a configuration's loop treats the Stabilizer's report.
enum class step_rule : unsigned char {
  plain,       ///< no spike handling: every batch updates the model, a NaN one included (a loop
               ///< without the library); the report only measures
  oracle,      ///< plain, but the corrupted and non-finite batches are skipped, known from the data:
               ///< the limit of any spike remedy
  stabilizer,  ///< spike handling on: the gradients are multiplied by report.scale (0 = skip)
};

/// The factor the gradients are multiplied by this step (0: the optimizer step is skipped; the
/// batch's forward and backward were still paid for).
inline float optimizer_scale(step_rule rule, batch_kind kind, float report_scale) {
  switch (rule) {
    case step_rule::plain: return 1.0f;
    case step_rule::oracle: return kind == batch_kind::clean ? 1.0f : 0.0f;
    case step_rule::stabilizer: return report_scale;
  }
  return 1.0f;
}

}  // namespace steadyloss::study
