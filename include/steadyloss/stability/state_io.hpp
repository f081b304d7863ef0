#pragma once
// The resume format of every step policy and of the Stabilizer: versioned, portable text.
//
//   steadyloss-state 5
//   begin EmaSmoother
//   factor 0x1.999999999999ap-4
//   steps 17
//   ...
//   end EmaSmoother
//   checksum 0123456789abcdef
//
// One `key value...` pair a line. Doubles are written as hexadecimal floats (std::to_chars,
// chars_format::hex, with a `0x` prefix), which round-trip bit for bit and, unlike printf("%a"),
// never depend on the C locale. Integers are decimal. The last line is an FNV-1a 64 checksum of
// every byte before it, so a truncated or edited state is rejected. Readers check the version,
// every key in order and the checksum, and throw steadyloss::invalid_input on any mismatch;
// callers parse into a copy and commit only on success, so a bad state never half-loads.
//
// A valid checksum proves only that the text is what some writer wrote, not that it came from
// this library: every field is range-checked on load and the fields that depend on each other
// are checked together, each message naming the field. Counters may not exceed
// max_state_counter (2^53): no run reaches it, the next updates cannot overflow, and every
// counter converts to double exactly.
//
// Version 3 adds every setting that changes a decision (AdaptiveWeight's fast, slow, warmup
// and temperature; the zscore and ema_zscore detectors' parameters; EarlyStopper's other
// options), so a state from a differently configured pipeline is rejected naming the setting.
// Version 4 adds EarlyStopper's non_finite_patience (and the ValidationStopper section,
// validation.hpp). Version 5 moves the ratio detectors' threshold from SpikeDampener's section
// into the detector's, where every detector saves its own settings.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <istream>
#include <iterator>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "../core/errors.hpp"

namespace steadyloss {

// 2: level shifts, non-finite runs; 3: every decision-changing setting, validated ranges;
// 4: EarlyStopper's non_finite_patience; 5: each spike detector saves its own settings
inline constexpr int state_format_version = 5;

/// The largest counter a state may hold (2^53; see above).
inline constexpr long long max_state_counter = 1LL << 53;

namespace detail {

inline std::uint64_t fnv1a(std::string_view text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

inline std::string format_double(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  char* first = buffer;
  if (std::signbit(value)) *first++ = '-';
  *first++ = '0';
  *first++ = 'x';
  const auto r = std::to_chars(first, buffer + sizeof buffer, std::fabs(value), std::chars_format::hex);
  return std::string(buffer, r.ptr);
}

inline bool parse_double(std::string_view text, double& value) {
  if (text == "nan") { value = std::numeric_limits<double>::quiet_NaN(); return true; }
  if (text == "inf") { value = std::numeric_limits<double>::infinity(); return true; }
  if (text == "-inf") { value = -std::numeric_limits<double>::infinity(); return true; }
  bool negative = false;
  if (!text.empty() && text.front() == '-') { negative = true; text.remove_prefix(1); }
  if (text.size() < 3 || text[0] != '0' || (text[1] != 'x' && text[1] != 'X')) return false;
  text.remove_prefix(2);
  double magnitude = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), magnitude, std::chars_format::hex);
  if (r.ec != std::errc{} || r.ptr != text.data() + text.size()) return false;
  value = negative ? -magnitude : magnitude;
  return true;
}

// A message's number: integers and strings as they are, a floating-point value as the shortest
// decimal that reads back as the same value (std::to_chars), so two different values never print
// alike, as 6 significant digits would ("must be 3852.3, got 3852.3").
template <class Part>
decltype(auto) exact_part(const Part& part) {
  if constexpr (std::is_floating_point_v<Part>) {
    char buffer[64];
    const auto r = std::is_same_v<Part, float> ? std::to_chars(buffer, buffer + sizeof buffer, part)
                                               : std::to_chars(buffer, buffer + sizeof buffer, static_cast<double>(part));
    return std::string(buffer, r.ptr);
  } else {
    return (part);
  }
}

template <class Error, class... Parts>
[[noreturn]] void fail_exact(const Parts&... parts) {
  fail<Error>(exact_part(parts)...);
}

}  // namespace detail

/// Writes one state: sections of `key value` lines. Call finish() to append the checksum.
class state_writer {
 public:
  state_writer() {
    text_ = "steadyloss-state ";
    text_.append(std::to_string(state_format_version));
    text_.push_back('\n');
  }

  void begin(std::string_view section) { line("begin", section); }
  void end(std::string_view section) { line("end", section); }
  void put(std::string_view key, double value) { line(key, detail::format_double(value)); }
  void put_int(std::string_view key, long long value) { line(key, std::to_string(value)); }
  void put_bool(std::string_view key, bool value) { line(key, value ? "1" : "0"); }
  /// A setting that is one of a few names (a mode, a rule); read back with expect_choice.
  void put_word(std::string_view key, std::string_view word) { line(key, word); }
  template <class Range>
  void put_doubles(std::string_view key, const Range& values) {
    std::string joined = std::to_string(std::size(values));
    for (const auto& v : values) {  // append, not " " + string: GCC 12 -O3 -Wrestrict misfires on that
      joined.push_back(' ');
      joined.append(detail::format_double(static_cast<double>(v)));
    }
    line(key, joined);
  }

  /// The finished text, checksum line included.
  std::string finish() const {
    char hex[17];
    const auto r = std::to_chars(hex, hex + 16, detail::fnv1a(text_), 16);
    std::string text = text_;
    text.append("checksum ");
    text.append(hex, r.ptr);
    text.push_back('\n');
    return text;
  }

 private:
  void line(std::string_view key, std::string_view value) {
    text_.append(key);
    text_.push_back(' ');
    text_.append(value);
    text_.push_back('\n');
  }
  std::string text_;
};

/// Reads what state_writer wrote, checking version, checksum, and each key in order.
class state_reader {
 public:
  explicit state_reader(std::string_view text) {
    // A text-mode copy on Windows (or a git checkout with autocrlf) turns every \n into \r\n;
    // say so instead of reporting a checksum mismatch.
    if (text.find('\r') != std::string_view::npos)
      detail::fail<invalid_input>("steadyloss state: the text has CRLF (\\r\\n) line endings; it was converted "
                                  "as text on the way (a Windows text-mode copy or git autocrlf): copy it byte for "
                                  "byte (binary mode)");
    // The version comes before the checksum: an older or newer state says which version it is.
    const std::string_view header = text.substr(0, text.find('\n'));
    if (header.substr(0, 17) != "steadyloss-state ")
      detail::fail<invalid_input>("steadyloss state: not a steadyloss state (first line '", header.substr(0, 64),
                                  "')");
    if (header.substr(17) != std::to_string(state_format_version))
      detail::fail<invalid_input>("steadyloss state: unsupported version '", header.substr(17, 32),
                                  "', this build reads version ", state_format_version,
                                  ": resume with the steadyloss version that wrote it, or start a new state (a new "
                                  "run, or this run's pipeline without restoring it)");
    const auto last = text.rfind("checksum ");
    if (last == std::string_view::npos || (last != 0 && text[last - 1] != '\n'))
      detail::fail<invalid_input>("steadyloss state: no checksum line (truncated?)");
    std::string_view tail = text.substr(last + 9);
    if (!tail.empty() && tail.back() == '\n') tail.remove_suffix(1);
    std::uint64_t expected = 0;
    const auto r = std::from_chars(tail.data(), tail.data() + tail.size(), expected, 16);
    if (r.ec != std::errc{} || r.ptr != tail.data() + tail.size())
      detail::fail<invalid_input>("steadyloss state: malformed checksum line '", tail.substr(0, 64), "'");
    body_ = std::string(text.substr(0, last));
    if (detail::fnv1a(body_) != expected)
      detail::fail<invalid_input>("steadyloss state: checksum mismatch (corrupted or truncated state)");
    next_line();  // the header, checked above
  }
  explicit state_reader(std::istream& in)
      : state_reader(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>())) {}

  void begin(std::string_view section) {
    expect_word("begin", section);
    if (!section_.empty()) section_.push_back('.');
    section_.append(section);
  }
  void end(std::string_view section) {
    expect_word("end", section);
    const auto dot = section_.rfind('.');
    section_.resize(dot == std::string::npos ? 0 : dot);
  }
  /// The sections being read, outermost first ("Stabilizer.SpikeDampener.mean_ratio").
  const std::string& section() const { return section_; }

  /// Throws invalid_input naming the current section and the field.
  template <class... Parts>
  [[noreturn]] void fail_field(std::string_view key, const Parts&... parts) const {
    detail::fail_exact<invalid_input>("steadyloss state: ", section_, " ", key, " ", parts...);
  }

  /// An integer in [lo, hi].
  long long get_count(std::string_view key, long long lo = 0, long long hi = max_state_counter) {
    const long long v = get_int(key);
    if (v < lo || v > hi) fail_field(key, "must be in [", lo, ", ", hi, "], got ", v);
    return v;
  }
  /// A finite double.
  double get_finite(std::string_view key) {
    const double v = get(key);
    if (!std::isfinite(v)) fail_field(key, "must be finite, got ", v);
    return v;
  }
  /// A double in [lo, hi] (so never NaN).
  double get_in(std::string_view key, double lo, double hi) {
    const double v = get(key);
    if (!(v >= lo && v <= hi)) fail_field(key, "must be in [", lo, ", ", hi, "], got ", v);
    return v;
  }
  /// `key count v0 v1 ...` with every value finite.
  std::vector<double> get_finite_doubles(std::string_view key, std::size_t expected_count) {
    auto values = get_doubles(key, expected_count);
    for (std::size_t i = 0; i < values.size(); ++i)
      if (!std::isfinite(values[i])) fail_field(key, "value ", i, " must be finite, got ", values[i]);
    return values;
  }

  double get(std::string_view key) {
    const std::string_view value = value_of(key);
    double result = 0;
    if (!detail::parse_double(value, result))
      detail::fail<invalid_input>("steadyloss state: '", key, "' is not a hexadecimal double: '", value, "'");
    return result;
  }
  long long get_int(std::string_view key) {
    const std::string_view value = value_of(key);
    long long result = 0;
    const auto r = std::from_chars(value.data(), value.data() + value.size(), result);
    if (r.ec != std::errc{} || r.ptr != value.data() + value.size())
      detail::fail<invalid_input>("steadyloss state: '", key, "' is not an integer: '", value, "'");
    return result;
  }
  bool get_bool(std::string_view key) {
    const long long v = get_int(key);
    if (v != 0 && v != 1) detail::fail<invalid_input>("steadyloss state: '", key, "' must be 0 or 1, got ", v);
    return v == 1;
  }
  /// Reads `key count v0 v1 ...` and checks that count == expected_count.
  std::vector<double> get_doubles(std::string_view key, std::size_t expected_count) {
    std::string_view rest = value_of(key);
    auto word = [&] {
      const auto space = rest.find(' ');
      const std::string_view w = rest.substr(0, space);
      rest = space == std::string_view::npos ? std::string_view{} : rest.substr(space + 1);
      return w;
    };
    const std::string_view count_text = word();
    std::size_t count = 0;
    const auto r = std::from_chars(count_text.data(), count_text.data() + count_text.size(), count);
    if (r.ec != std::errc{} || count != expected_count)
      detail::fail<invalid_input>("steadyloss state: '", key, "' holds ", count_text, " values, expected ",
                                  expected_count);
    std::vector<double> values(count);
    for (auto& v : values) {
      const std::string_view w = word();
      if (!detail::parse_double(w, v))
        detail::fail<invalid_input>("steadyloss state: '", key, "' has a bad value '", w, "'");
    }
    if (!rest.empty()) detail::fail<invalid_input>("steadyloss state: '", key, "' has extra values");
    return values;
  }
  /// Throws unless the configuration value stored under key equals the live one.
  void expect_config(std::string_view section, std::string_view key, double live) {
    const double stored = get(key);
    if (!(stored == live || (std::isnan(stored) && std::isnan(live))))
      detail::fail_exact<invalid_input>("steadyloss state: ", section, " was saved with ", key, " = ", stored,
                                        ", this one has ", live, "; restore into an identically configured pipeline");
  }
  /// The same for an integer or flag setting.
  void expect_int(std::string_view section, std::string_view key, long long live) {
    const long long stored = get_int(key);
    if (stored != live)
      detail::fail<invalid_input>("steadyloss state: ", section, " was saved with ", key, " = ", stored,
                                  ", this one has ", live, "; restore into an identically configured pipeline");
  }
  /// The same for a setting that is a choice (mode, rule): names both by their names.
  void expect_choice(std::string_view section, std::string_view key, long long live,
                     std::initializer_list<std::string_view> names) {
    const std::string_view value = value_of(key);
    const auto it = std::find(names.begin(), names.end(), value);
    const long long live_index = live;
    if (it == names.end() || it - names.begin() != live_index) {
      const std::string_view live_name =
          live_index >= 0 && live_index < static_cast<long long>(names.size()) ? names.begin()[live_index] : "?";
      detail::fail<invalid_input>("steadyloss state: ", section, " was saved with ", key, " = ", value,
                                  ", this one has ", live_name, "; restore into an identically configured pipeline");
    }
  }
  void finish() {
    if (position_ != body_.size())
      detail::fail<invalid_input>("steadyloss state: unexpected trailing line '", next_line(), "'");
  }

 private:
  std::string_view next_line() {
    if (position_ >= body_.size()) detail::fail<invalid_input>("steadyloss state: truncated");
    const auto newline = body_.find('\n', position_);
    if (newline == std::string::npos) detail::fail<invalid_input>("steadyloss state: truncated line");
    const std::string_view line = std::string_view(body_).substr(position_, newline - position_);
    position_ = newline + 1;
    return line;
  }
  std::string_view value_of(std::string_view key) {
    const std::string_view line = next_line();
    if (line.size() <= key.size() || line.substr(0, key.size()) != key || line[key.size()] != ' ')
      detail::fail<invalid_input>("steadyloss state: expected key '", key, "', found '", line, "'");
    return line.substr(key.size() + 1);
  }
  void expect_word(std::string_view word, std::string_view section) {
    const std::string_view line = next_line();
    if (line.substr(0, word.size()) != word || line.size() != word.size() + 1 + section.size() ||
        line.substr(word.size() + 1) != section)
      detail::fail<invalid_input>("steadyloss state: expected '", word, " ", section, "', found '", line, "'");
  }
  std::string body_;
  std::size_t position_ = 0;
  std::string section_;
};

namespace detail {
/// Checks a running product power = factor^steps (flushed to 0 below 2^-60, as the policies do)
/// against pow: each multiply rounds by at most half an ulp, so they agree to (steps + 4) ulps.
inline void check_power(state_reader& in, std::string_view key, double power, double factor, long long steps) {
  const double expected = std::pow(factor, static_cast<double>(steps));
  const double tolerance = expected * static_cast<double>(steps + 4) * 0x1p-52;
  const bool flushed = power == 0.0 && expected <= 0x1p-58;
  const bool close = power >= 0x1p-60 && std::fabs(power - expected) <= tolerance;
  if (!flushed && !close)
    in.fail_field(key, "must be ", factor, "^", steps, " = ", expected, " (after ", steps, " steps), got ", power);
}
}  // namespace detail

}  // namespace steadyloss
