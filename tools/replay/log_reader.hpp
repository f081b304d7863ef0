#pragma once
// A streaming reader for training logs: CSV or TSV with a header row, columns chosen by name.
//
// Reads one line at a time from a std::istream into a buffer of at most max_line_bytes (default
// 1 MiB), so memory stays bounded whatever the file's size. Understands
//   - PyTorch Lightning's CSVLogger metrics.csv: train and validation rows interleaved, an empty
//     cell where a metric was not logged that step (an empty cell is "absent", never 0);
//   - Keras' CSVLogger: one row per epoch, `epoch,loss,val_loss,...`;
//   - any CSV/TSV: the delimiter is a tab if the header holds one, else a comma (or set it);
//     RFC 4180 quoting ("a,b" and "" for a quote) within one line; CRLF line ends; a UTF-8 BOM.
// Numbers: what std::from_chars accepts, with an optional leading '+', surrounding spaces trimmed.
// "nan", "inf", "-inf", "infinity" (any case) are read as non-finite values, not errors: a NaN
// loss is what a diverged run logs, and the Stabilizer treats it as a step to skip; a NaN
// validation value is a check without improvement, or the stop with stop_on_non_finite
// (Lightning's check_finite; replay.hpp). Set reject_non_finite to make them errors instead.
// Every problem throws log_error whose message starts with "file:line: " and names the column
// and the text: a missing column, a malformed number, a row with the wrong number of fields, an
// unterminated quote, an over-long line, an empty file, a header without data rows.

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <istream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace steadyloss::replay {

/// A problem in the log, with "file:line: " in front of what().
class log_error : public std::runtime_error {
 public:
  log_error(const std::string& file, long long line, const std::string& what)
      : std::runtime_error(file + (line > 0 ? ":" + std::to_string(line) : std::string()) + ": " + what),
        line_(line) {}
  long long line() const { return line_; }

 private:
  long long line_;
};

/// Which columns to read. Empty names are looked up among the usual spellings (first match wins);
/// a name that is set must exist.
struct column_choice {
  std::string step, loss, validation, grad_norm;
  std::vector<std::string> terms;  ///< per-term losses, in order; each must exist
  bool need_loss = true;           ///< no loss column is an error (else: validation-only logs)
};

/// The usual spellings, as Lightning, Keras and hand-written loops log them.
inline const std::vector<std::string>& step_names() {
  static const std::vector<std::string> v{"step", "global_step", "iteration", "iter", "epoch"};
  return v;
}
inline const std::vector<std::string>& loss_names() {
  static const std::vector<std::string> v{"loss", "train_loss", "train_loss_step", "train/loss", "training_loss"};
  return v;
}
inline const std::vector<std::string>& validation_names() {
  static const std::vector<std::string> v{"val_loss", "validation_loss", "val/loss", "valid_loss", "val_loss_epoch"};
  return v;
}
inline const std::vector<std::string>& grad_norm_names() {
  static const std::vector<std::string> v{"grad_norm", "gradient_norm", "grad_norm_2.0_norm_total", "train/grad_norm"};
  return v;
}

/// One data row: each chosen column's value, or nothing where the cell was empty.
struct log_row {
  long long line = 0;  ///< 1-based line number in the file (the header is line 1)
  std::optional<double> step, loss, validation, grad_norm;
  std::vector<std::optional<double>> terms;
};

struct reader_options {
  char delimiter = 0;                   ///< 0: tab if the header holds one, else comma
  std::size_t max_line_bytes = 1 << 20;
  bool reject_non_finite = false;
};

class log_reader {
 public:
  /// Reads and checks the header. `file` is only used in messages.
  log_reader(std::istream& in, std::string file, column_choice choice = {}, reader_options options = {})
      : in_(in), file_(std::move(file)), options_(options) {
    std::string header;
    if (!next_line(header)) throw log_error(file_, 0, "empty file: expected a header row with column names");
    if (header.size() >= 3 && header.compare(0, 3, "\xEF\xBB\xBF") == 0) header.erase(0, 3);
    if (options_.delimiter == 0) options_.delimiter = header.find('\t') != std::string::npos ? '\t' : ',';
    split(header, names_);
    if (names_.size() == 1 && names_[0].empty()) throw log_error(file_, line_, "empty header row");
    for (auto& n : names_) n = std::string(trim(n));
    step_ = resolve(choice.step, step_names(), "step", false);
    loss_ = resolve(choice.loss, loss_names(), "loss", choice.need_loss);
    validation_ = resolve(choice.validation, validation_names(), "validation loss", false);
    grad_norm_ = resolve(choice.grad_norm, grad_norm_names(), "gradient norm", false);
    for (const auto& t : choice.terms) terms_.push_back(resolve(t, {}, "term", true));
  }

  /// The next data row; false at the end of the file. Blank lines are skipped.
  bool next(log_row& row) {
    std::string line;
    for (;;) {
      if (!next_line(line)) {
        if (rows_ == 0) throw log_error(file_, line_, "the header has no data rows after it");
        return false;
      }
      if (trim(line).empty()) continue;
      break;
    }
    split(line, fields_);
    if (fields_.size() != names_.size())
      throw log_error(file_, line_, std::to_string(fields_.size()) + " fields, the header has " +
                                        std::to_string(names_.size()));
    row.line = line_;
    row.step = cell(step_);
    row.loss = cell(loss_);
    row.validation = cell(validation_);
    row.grad_norm = cell(grad_norm_);
    row.terms.clear();
    for (int t : terms_) row.terms.push_back(cell(t));
    ++rows_;
    return true;
  }

  const std::vector<std::string>& header() const { return names_; }
  /// The chosen column's name, or "" when absent.
  std::string step_column() const { return name_of(step_); }
  std::string loss_column() const { return name_of(loss_); }
  std::string validation_column() const { return name_of(validation_); }
  std::string grad_norm_column() const { return name_of(grad_norm_); }
  std::size_t term_count() const { return terms_.size(); }
  std::string term_column(std::size_t i) const { return name_of(terms_[i]); }
  char delimiter() const { return options_.delimiter; }
  const std::string& file() const { return file_; }

  /// Parses one cell: nothing for an empty cell, else a number (see the file comment).
  static std::optional<double> parse_number(std::string_view text, bool reject_non_finite, std::string& problem) {
    text = trim(text);
    if (text.empty()) return std::nullopt;
    std::string_view body = text;
    if (body.front() == '+') body.remove_prefix(1);  // from_chars takes '-' but not '+'
    double value = 0;
    const auto [end, ec] = body.empty() || body.front() == '+' || (body.front() == '-' && body.data() != text.data())
                               ? std::from_chars_result{body.data(), std::errc::invalid_argument}
                               : std::from_chars(body.data(), body.data() + body.size(), value);
    if (ec == std::errc::invalid_argument || end != body.data() + body.size()) {
      problem = "malformed number '" + std::string(text) + "'";
      return std::nullopt;
    }
    // Out of range (1e999, 1e-999): from_chars leaves value alone; strtod gives +-HUGE_VAL or the
    // nearest tiny value, as every CSV reader would.
    if (ec == std::errc::result_out_of_range) value = std::strtod(std::string(body).c_str(), nullptr);
    if (reject_non_finite && !std::isfinite(value)) {
      problem = "non-finite value '" + std::string(text) + "' (reject_non_finite is set)";
      return std::nullopt;
    }
    problem.clear();
    return value;
  }

 private:
  static std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
  }

  std::string name_of(int column) const { return column < 0 ? std::string() : names_[std::size_t(column)]; }

  int find(const std::string& name) const {
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (names_[i] == name) return int(i);
    return -1;
  }

  int resolve(const std::string& wanted, const std::vector<std::string>& usual, const char* what, bool required) {
    if (!wanted.empty()) {
      const int i = find(wanted);
      if (i < 0) throw log_error(file_, 1, std::string(what) + " column '" + wanted + "' not found; " + listing());
      return i;
    }
    for (const auto& name : usual)
      if (const int i = find(name); i >= 0) return i;
    if (required) {
      std::string tried;
      for (const auto& name : usual) tried += (tried.empty() ? "" : ", ") + name;
      throw log_error(file_, 1, std::string("no ") + what + " column (looked for " + tried + "); " + listing() +
                                    "; name it with the matching --*-column flag");
    }
    return -1;
  }

  std::string listing() const {
    std::string s = "the header has: ";
    for (std::size_t i = 0; i < names_.size() && i < 40; ++i) s += (i ? ", " : "") + names_[i];
    if (names_.size() > 40) s += ", ... (" + std::to_string(names_.size()) + " columns)";
    return s;
  }

  std::optional<double> cell(int column) const {
    if (column < 0) return std::nullopt;
    std::string problem;
    const auto v = parse_number(fields_[std::size_t(column)], options_.reject_non_finite, problem);
    if (!problem.empty()) throw log_error(file_, line_, "column '" + names_[std::size_t(column)] + "': " + problem);
    return v;
  }

  // Reads up to '\n' into `line` (without it), at most max_line_bytes; false at the end of input.
  bool next_line(std::string& line) {
    line.clear();
    std::streambuf* buffer = in_.rdbuf();
    if (buffer == nullptr) return false;
    bool any = false;
    for (;;) {
      const int c = buffer->sbumpc();
      if (c == std::char_traits<char>::eof()) break;
      any = true;
      if (c == '\n') break;
      if (line.size() >= options_.max_line_bytes)
        throw log_error(file_, line_ + 1, "line longer than " + std::to_string(options_.max_line_bytes) +
                                              " bytes (is this a CSV/TSV log?)");
      line.push_back(static_cast<char>(c));
    }
    if (!any) return false;
    ++line_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }

  // Splits on the delimiter, honouring RFC 4180 quotes within the line.
  void split(const std::string& line, std::vector<std::string>& out) const {
    out.clear();
    std::string field;
    bool quoted = false, was_quoted = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (quoted) {
        if (c == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field.push_back('"');
            ++i;
          } else {
            quoted = false;
          }
        } else {
          field.push_back(c);
        }
      } else if (c == '"' && !was_quoted && trim(field).empty()) {
        quoted = was_quoted = true;
        field.clear();
      } else if (c == options_.delimiter) {
        out.push_back(std::move(field));
        field.clear();
        was_quoted = false;
      } else {
        field.push_back(c);
      }
    }
    if (quoted) throw log_error(file_, line_, "unterminated quoted field (quoted fields may not span lines)");
    out.push_back(std::move(field));
  }

  std::istream& in_;
  std::string file_;
  reader_options options_;
  std::vector<std::string> names_, fields_;
  int step_ = -1, loss_ = -1, validation_ = -1, grad_norm_ = -1;
  std::vector<int> terms_;
  long long line_ = 0, rows_ = 0;
};

}  // namespace steadyloss::replay
