#pragma once
// steadyloss-replay's command line: parse_command_line (flags to options; a usage_error for a
// mistake) and replay_main (the whole program, its exit status returned, streams passed in), so
// the tests run the tool's flags and exit statuses without starting a process.
// Exit status: 0 done, 1 the log or a file (log_error, cannot open/write), 2 a usage error or a
// policy setting the library rejects (invalid_parameter).

#include <cstdlib>
#include <fstream>
#include <istream>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "log_reader.hpp"
#include "replay.hpp"

namespace steadyloss::replay {

/// The --help text; the spike defaults are printed from the settings the tool uses.
inline std::string usage_text() {
  const spike_config<> library{};
  return std::string(
             "usage: steadyloss-replay LOG.csv [options]\n"
             "columns (by name; default: the usual spellings, see tools/replay/README.md):\n"
             "  --step-column NAME  --loss-column NAME  --val-column NAME  --grad-norm-column NAME\n"
             "  --term-column NAME (repeat, up to 4: per-term losses, enables AdaptiveWeight)\n"
             "  --delimiter comma|tab|CHAR (default: tab if the header holds one, else comma)\n"
             "  --reject-non-finite   nan/inf cells are errors (default: non-finite values, skipped steps)\n"
             "policies (defaults: the stable preset):\n"
             "  --patience N (25)  --min-delta X (0.0005)  --mode min|max (min)\n"
             "  --monitor auto|loss|validation (auto: validation if the log has a validation column)\n"
             "      validation: the raw values, one check per validation row, patience counts checks\n"
             "      (as Lightning's EarlyStopping(monitor=\"val_loss\")); loss: the smoothed training loss\n"
             "  --smooth-validation   smooth the monitored validation values too (default: raw)\n"
             "  --stop-on-non-finite  stop at the first non-finite monitored validation value (Lightning's\n"
             "      check_finite=True; default: such a value is a check without improvement)\n"
             "  --smoothing F (0.1, weight of history; 0 = off)  --weight-bounds LO,HI (0.7,1.3)\n"
             "spikes (default: the calibrated detector, ") +
         describe(default_spike_detector, default_spike_settings(default_spike_detector)) +
         ";\n  any other detector starts from the library's defaults: window " + std::to_string(library.window) +
         ", warm-up = window, threshold " + detail::number(detect::mean_ratio::config{}.threshold) + ", k " +
         detail::number(detect::zscore::config{}.sigma_factor) + ", z " +
         detail::number(detect::ema_zscore::config{}.z_threshold) +
         ";\n  the flags below override the detector's defaults, in any order):\n"
         "  --spike-detector mean_ratio|median_ratio|zscore|mad_zscore|ema_zscore\n"
         "      mean_ratio, median_ratio: loss > X * the window's mean, median; zscore: loss > mean + k * sd;\n"
         "      mad_zscore: loss > median + k * 1.4826 * MAD; ema_zscore: gradient norm > EMA mean + z * sd\n"
         "      (ema_zscore needs a gradient norm column, with a value on every training row)\n"
         "  --spike-threshold X  the ratio X (mean_ratio, median_ratio), k (zscore, mad_zscore), z (ema_zscore)\n"
         "  --spike-window N  --spike-warmup N (accepted values before any decision; 0 = the window)\n"
         "  --level-shift-after N (>= 2: that many spikes in a row are a new level)\n"
         "  --spike-min-ratio X  --spike-min-excess X (guards: a spike must also exceed X * the\n"
         "      reference, and the reference + X; 0 = off)\n"
         "  --spike-mode dampen|skip|report (dampen)\n"
         "output:\n"
         "  --output FILE.csv   annotated CSV (one row per data row)\n"
         "  --plot FILE.png     plot with gnuplot (writes FILE.png.csv unless --output is given)\n"
         "  --plot-scale auto|linear|log  loss axis (auto: log when the values span > 3 decades)\n"
         "  --quiet             summary only\n";
}

/// A mistake on the command line: exit status 2, the message and the usage text on stderr.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct command_line {
  bool help = false;
  std::string path, output, plot;
  plot_scale scale = plot_scale::automatic;
  column_choice columns;
  reader_options reader;
  replay_options options;
};

namespace detail {
inline double number_arg(const std::string& flag, const std::string& text) {
  std::string problem;
  const auto v = log_reader::parse_number(text, true, problem);
  if (!v) throw usage_error(flag + ": expected a number, got '" + text + "'");
  return *v;
}
inline std::size_t whole_arg(const std::string& flag, const std::string& text, double lo, double hi,
                             const std::string& what) {
  const double n = number_arg(flag, text);
  if (!(n >= lo && n <= hi) || n != double(static_cast<long long>(n))) throw usage_error(flag + ": " + what);
  return static_cast<std::size_t>(n);
}
inline double non_negative_arg(const std::string& flag, const std::string& text) {
  const double x = number_arg(flag, text);
  if (!(x >= 0)) throw usage_error(flag + ": a number >= 0, got '" + text + "'");
  return x;
}
}  // namespace detail

/// The arguments after the program name. The spike flags are collected first and applied to the
/// chosen detector's defaults at the end, so their order does not matter.
inline command_line parse_command_line(std::span<const std::string> args) {
  using detail::number_arg;
  using detail::whole_arg;
  command_line c;
  spike_flags spikes;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw usage_error("missing value after " + arg);
      return args[++i];
    };
    if (arg == "--help" || arg == "-h") {
      c.help = true;
      return c;
    } else if (arg == "--step-column") c.columns.step = value();
    else if (arg == "--loss-column") c.columns.loss = value();
    else if (arg == "--val-column") c.columns.validation = value();
    else if (arg == "--grad-norm-column") c.columns.grad_norm = value();
    else if (arg == "--term-column") c.columns.terms.push_back(value());
    else if (arg == "--delimiter") {
      const std::string d = value();
      if (d == "comma" || d == ",") c.reader.delimiter = ',';
      else if (d == "tab" || d == "\\t") c.reader.delimiter = '\t';
      else if (d.size() == 1 && d != "\"" && d != "\n") c.reader.delimiter = d[0];
      else throw usage_error("--delimiter: comma, tab or one character");
    } else if (arg == "--reject-non-finite") c.reader.reject_non_finite = true;
    else if (arg == "--patience")
      c.options.patience = int(whole_arg(arg, value(), 0, 1e9, "a whole number >= 0"));
    else if (arg == "--min-delta") c.options.min_delta = number_arg(arg, value());
    else if (arg == "--mode") {
      const std::string m = value();
      if (m != "min" && m != "max") throw usage_error("--mode: min or max");
      c.options.mode = m == "min" ? stop_mode::min : stop_mode::max;
    } else if (arg == "--monitor") {
      const std::string m = value();
      using mc = replay_options::monitor_choice;
      if (m == "auto") c.options.monitor = mc::automatic;
      else if (m == "loss") c.options.monitor = mc::loss;
      else if (m == "validation") c.options.monitor = mc::validation;
      else throw usage_error("--monitor: auto, loss or validation");
    } else if (arg == "--smooth-validation") c.options.smooth_validation = true;
    else if (arg == "--stop-on-non-finite") c.options.stop_on_non_finite = true;
    else if (arg == "--spike-detector") {
      const std::string name = value();
      spikes.detector = parse_spike_detector(name);
      if (!spikes.detector)
        throw usage_error("--spike-detector: unknown detector '" + name +
                          "'; one of mean_ratio, median_ratio, zscore, mad_zscore, ema_zscore");
    } else if (arg == "--spike-window") spikes.window = whole_arg(arg, value(), 1, 1e6, "a whole number >= 1");
    else if (arg == "--spike-warmup")
      spikes.warmup = whole_arg(arg, value(), 0, 1e6, "a whole number >= 0 (0: the spike window)");
    else if (arg == "--level-shift-after")
      spikes.level_shift_after = whole_arg(arg, value(), 2, 1e9, "a whole number >= 2");
    else if (arg == "--spike-threshold") spikes.threshold = number_arg(arg, value());
    else if (arg == "--spike-min-ratio") spikes.min_ratio = detail::non_negative_arg(arg, value());
    else if (arg == "--spike-min-excess") spikes.min_excess = detail::non_negative_arg(arg, value());
    else if (arg == "--spike-mode") {
      const std::string m = value();
      if (m == "dampen") spikes.mode = spike_mode::dampen;
      else if (m == "skip") spikes.mode = spike_mode::skip;
      else if (m == "report") spikes.mode = spike_mode::report;
      else throw usage_error("--spike-mode: dampen, skip or report");
    } else if (arg == "--smoothing") c.options.smoothing = number_arg(arg, value());
    else if (arg == "--weight-bounds") {
      const std::string b = value();
      const auto comma = b.find(',');
      if (comma == std::string::npos) throw usage_error("--weight-bounds: LO,HI");
      c.options.weight_lo = number_arg(arg, b.substr(0, comma));
      c.options.weight_hi = number_arg(arg, b.substr(comma + 1));
    } else if (arg == "--output") c.output = value();
    else if (arg == "--plot") c.plot = value();
    else if (arg == "--plot-scale") {
      const std::string m = value();
      if (m == "auto") c.scale = plot_scale::automatic;
      else if (m == "linear") c.scale = plot_scale::linear;
      else if (m == "log") c.scale = plot_scale::log;
      else throw usage_error("--plot-scale: auto, linear or log");
    } else if (arg == "--quiet") c.options.quiet = true;
    else if (!arg.empty() && arg[0] == '-' && arg != "-") throw usage_error("unknown option " + arg);
    else if (c.path.empty()) c.path = arg;
    else throw usage_error("more than one log file given");
  }
  if (c.path.empty()) throw usage_error("no log file given");
  if (!c.plot.empty() && c.output.empty()) c.output = c.plot + ".csv";
  c.options.set_spikes(spikes.detector.value_or(default_spike_detector), spikes);
  return c;
}

/// The program: returns its exit status. `in` is read for the log "-".
inline int replay_main(std::span<const std::string> args, std::istream& in, std::ostream& out, std::ostream& err) {
  command_line c;
  try {
    c = parse_command_line(args);
  } catch (const usage_error& e) {
    err << "steadyloss-replay: " << e.what() << "\n" << usage_text();
    return 2;
  }
  if (c.help) {
    out << usage_text();
    return 0;
  }
  try {
    std::ifstream file;
    std::istream* log = &in;
    if (c.path != "-") {
      file.open(c.path, std::ios::binary);
      if (!file) {
        err << "steadyloss-replay: " << c.path << ": cannot open\n";
        return 1;
      }
      log = &file;
    }
    log_reader reader(*log, c.path == "-" ? "<stdin>" : c.path, c.columns, c.reader);
    std::ofstream annotated;
    if (!c.output.empty()) {
      annotated.open(c.output);
      if (!annotated) {
        err << "steadyloss-replay: " << c.output << ": cannot write\n";
        return 1;
      }
    }
    const auto summary = run_replay(reader, c.options, out, c.output.empty() ? nullptr : &annotated);
    if (!c.output.empty()) {
      annotated.close();
      out << "annotated CSV: " << c.output << "\n";
    }
    if (!c.plot.empty()) {
      std::ofstream gp(c.plot + ".gp");
      write_plot_script(gp, {.png = c.plot, .data = c.output, .title = c.path, .scale = c.scale}, summary);
      gp.close();
      out.flush();
      const std::string command = "gnuplot " + detail::gnuplot_quoted(c.plot + ".gp");
      if (std::system(command.c_str()) != 0) err << "steadyloss-replay: gnuplot failed; no plot\n";
      else out << "plot: " << c.plot << (log_scale(summary, c.scale) ? " (log-scale loss axis)" : "") << "\n";
    }
  } catch (const log_error& e) {
    err << "steadyloss-replay: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {  // steadyloss::invalid_parameter from a policy's settings
    err << "steadyloss-replay: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

}  // namespace steadyloss::replay
