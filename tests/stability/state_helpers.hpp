#pragma once
// Shared by the resume tests: bit-for-bit report comparison, a deterministic two-term loss stream
// with spikes, NaNs and a level shift, and re-sealing an edited state with a valid checksum.

#include <bit>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <steadyloss/stability/stability.hpp>

namespace state_helpers {
namespace sl = steadyloss;

template <class T>
bool same_bits(T a, T b) {
  if constexpr (std::is_same_v<T, float>) return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
  else if constexpr (std::is_same_v<T, double>) return std::bit_cast<std::uint64_t>(a) == std::bit_cast<std::uint64_t>(b);
  else return a == b;
}

template <class T, std::size_t N>
bool same_report(const sl::step_report<T, N>& a, const sl::step_report<T, N>& b) {
  bool same = a.step == b.step && same_bits(a.loss, b.loss) && same_bits(a.grad_norm, b.grad_norm) &&
              same_bits(a.scale, b.scale) && a.non_finite == b.non_finite && a.is_spike == b.is_spike &&
              a.level_shift == b.level_shift && a.skipped == b.skipped && same_bits(a.smoothed, b.smoothed) &&
              a.should_stop == b.should_stop && a.improved == b.improved && same_bits(a.best, b.best) &&
              a.best_step == b.best_step && a.wait == b.wait && a.reason == b.reason &&
              same_bits(a.stability_score, b.stability_score) && same_bits(a.loss_variance, b.loss_variance) &&
              same_bits(a.grad_norm_ema, b.grad_norm_ema) && a.grad_explosion == b.grad_explosion &&
              same_bits(a.progress, b.progress);
  for (std::size_t i = 0; i < N; ++i) same = same && same_bits(a.weights[i], b.weights[i]);
  return same;
}

/// A cheap LCG, so every platform draws the same numbers.
struct lcg {
  std::uint64_t state = 12345;
  double uniform() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(state >> 11) * 0x1.0p-53;
  }
  std::uint64_t below(std::uint64_t n) { return static_cast<std::uint64_t>(uniform() * static_cast<double>(n)); }
};

// A deterministic noisy, slowly decreasing two-term loss with spikes every 37 steps, a NaN every
// 101 steps and a level shift (x3) from step 700 on.
template <class T>
struct loss_stream {
  lcg random;
  int step = 0;
  sl::composed_result<T, 2> next(T& grad_norm) {
    sl::composed_result<T, 2> r;
    const double level = 1.0 + 3.0 / (1.0 + 0.01 * step);
    r.values = {static_cast<T>(level * (0.9 + 0.2 * random.uniform())),
                static_cast<T>(0.3 * (0.9 + 0.2 * random.uniform()))};
    if (step % 37 == 36) r.values[0] *= T(8);
    if (step >= 700) r.values[0] *= T(3);
    if (step % 101 == 100) r.values[1] = std::numeric_limits<T>::quiet_NaN();
    r.weights = {T(35), T(1)};
    r.denominators = {100.0, 100.0};
    r.total = r.weights[0] * r.values[0] + r.weights[1] * r.values[1];
    grad_norm = static_cast<T>(1.0 + random.uniform() + (step % 53 == 52 ? 50.0 : 0.0));
    ++step;
    return r;
  }
};

/// Replaces the checksum line of an edited state by the right one, so the edit reaches the
/// loader's field checks (an independent FNV-1a 64, written from its published definition).
inline std::string reseal(std::string text) {
  const auto at = text.rfind("checksum ");
  if (at != std::string::npos) text.resize(at);
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char hex[17];
  const auto r = std::to_chars(hex, hex + 16, hash, 16);
  text.append("checksum ");
  text.append(hex, r.ptr);
  text.push_back('\n');
  return text;
}

/// The state with the value of the first line starting with `key ` (after `from`) replaced.
inline std::string with_value(std::string text, const std::string& key, const std::string& value,
                              const std::string& from = "") {
  const auto start = text.find(from);
  auto at = text.find("\n" + key + " ", start == std::string::npos ? 0 : start);
  if (at == std::string::npos) return {};
  at += key.size() + 2;
  const auto end = text.find('\n', at);
  text.replace(at, end - at, value);
  return reseal(text);
}

}  // namespace state_helpers
