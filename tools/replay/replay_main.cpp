// steadyloss-replay: runs a Stabilizer over a training log you already have (CSV/TSV with a
// header; PyTorch Lightning's CSVLogger metrics.csv, Keras' CSVLogger, or your own), so patience,
// min_delta and spike thresholds can be tuned offline on past runs. See tools/replay/README.md.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "log_reader.hpp"
#include "replay.hpp"

namespace rp = steadyloss::replay;

namespace {

const char* const usage_text =
    "usage: steadyloss-replay LOG.csv [options]\n"
    "columns (by name; default: the usual spellings, see --help):\n"
    "  --step-column NAME  --loss-column NAME  --val-column NAME  --grad-norm-column NAME\n"
    "  --term-column NAME (repeat, up to 4: per-term losses, enables AdaptiveWeight)\n"
    "  --delimiter comma|tab|CHAR (default: tab if the header holds one, else comma)\n"
    "  --reject-non-finite   nan/inf cells are errors (default: non-finite values, skipped steps)\n"
    "policies (defaults: the stable preset):\n"
    "  --patience N (25)  --min-delta X (0.0005)  --mode min|max (min)\n"
    "  --monitor auto|loss|validation (auto: validation if the log has a validation column)\n"
    "  --spike-window N (10)  --spike-threshold X (2.0)  --spike-mode dampen|skip|report (dampen)\n"
    "  --level-shift-after N (spike window; >= 2: that many spikes in a row are a new level)\n"
    "  --smoothing F (0.1, weight of history; 0 = off)  --weight-bounds LO,HI (0.7,1.3)\n"
    "output:\n"
    "  --output FILE.csv   annotated CSV (one row per data row)\n"
    "  --plot FILE.png     plot with gnuplot (writes FILE.png.csv unless --output is given)\n"
    "  --plot-scale auto|linear|log  loss axis (auto: log when the values span > 3 decades)\n"
    "  --quiet             summary only\n";

[[noreturn]] void fail_usage(const std::string& message) {
  std::fprintf(stderr, "steadyloss-replay: %s\n%s", message.c_str(), usage_text);
  std::exit(2);
}

double number_arg(const std::string& flag, const std::string& text) {
  std::string problem;
  const auto v = rp::log_reader::parse_number(text, true, problem);
  if (!v) fail_usage(flag + ": expected a number, got '" + text + "'");
  return *v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path, output, plot;
  rp::plot_scale plot_scale = rp::plot_scale::automatic;
  rp::column_choice columns;
  rp::reader_options reader_options;
  rp::replay_options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail_usage("missing value after " + arg);
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::printf("%s", usage_text);
      return 0;
    } else if (arg == "--step-column") columns.step = value();
    else if (arg == "--loss-column") columns.loss = value();
    else if (arg == "--val-column") columns.validation = value();
    else if (arg == "--grad-norm-column") columns.grad_norm = value();
    else if (arg == "--term-column") columns.terms.push_back(value());
    else if (arg == "--delimiter") {
      const std::string d = value();
      if (d == "comma" || d == ",") reader_options.delimiter = ',';
      else if (d == "tab" || d == "\\t") reader_options.delimiter = '\t';
      else if (d.size() == 1 && d != "\"" && d != "\n") reader_options.delimiter = d[0];
      else fail_usage("--delimiter: comma, tab or one character");
    } else if (arg == "--reject-non-finite") reader_options.reject_non_finite = true;
    else if (arg == "--patience") {
      const double p = number_arg(arg, value());
      if (!(p >= 0 && p <= 1e9) || p != double(int(p))) fail_usage("--patience: a whole number >= 0");
      options.patience = int(p);
    } else if (arg == "--min-delta") options.min_delta = number_arg(arg, value());
    else if (arg == "--mode") {
      const std::string m = value();
      if (m != "min" && m != "max") fail_usage("--mode: min or max");
      options.mode = m == "min" ? steadyloss::stop_mode::min : steadyloss::stop_mode::max;
    } else if (arg == "--monitor") {
      const std::string m = value();
      using mc = rp::replay_options::monitor_choice;
      if (m == "auto") options.monitor = mc::automatic;
      else if (m == "loss") options.monitor = mc::loss;
      else if (m == "validation") options.monitor = mc::validation;
      else fail_usage("--monitor: auto, loss or validation");
    } else if (arg == "--spike-window") {
      const double w = number_arg(arg, value());
      if (!(w >= 1 && w <= 1e6) || w != double(long(w))) fail_usage("--spike-window: a whole number >= 1");
      options.spike_window = std::size_t(w);
    } else if (arg == "--level-shift-after") {
      const double n = number_arg(arg, value());
      if (!(n >= 2 && n <= 1e9) || n != double(long(n))) fail_usage("--level-shift-after: a whole number >= 2");
      options.level_shift_after = std::size_t(n);
    } else if (arg == "--spike-threshold") options.spike_threshold = number_arg(arg, value());
    else if (arg == "--spike-mode") {
      const std::string m = value();
      if (m == "dampen") options.spikes = steadyloss::spike_mode::dampen;
      else if (m == "skip") options.spikes = steadyloss::spike_mode::skip;
      else if (m == "report") options.spikes = steadyloss::spike_mode::report;
      else fail_usage("--spike-mode: dampen, skip or report");
    } else if (arg == "--smoothing") options.smoothing = number_arg(arg, value());
    else if (arg == "--weight-bounds") {
      const std::string b = value();
      const auto comma = b.find(',');
      if (comma == std::string::npos) fail_usage("--weight-bounds: LO,HI");
      options.weight_lo = number_arg(arg, b.substr(0, comma));
      options.weight_hi = number_arg(arg, b.substr(comma + 1));
    } else if (arg == "--output") output = value();
    else if (arg == "--plot") plot = value();
    else if (arg == "--plot-scale") {
      const std::string m = value();
      if (m == "auto") plot_scale = rp::plot_scale::automatic;
      else if (m == "linear") plot_scale = rp::plot_scale::linear;
      else if (m == "log") plot_scale = rp::plot_scale::log;
      else fail_usage("--plot-scale: auto, linear or log");
    }
    else if (arg == "--quiet") options.quiet = true;
    else if (!arg.empty() && arg[0] == '-' && arg != "-") fail_usage("unknown option " + arg);
    else if (path.empty()) path = arg;
    else fail_usage("more than one log file given");
  }
  if (path.empty()) fail_usage("no log file given");
  if (!plot.empty() && output.empty()) output = plot + ".csv";

  try {
    std::ifstream file;
    std::istream* in = &std::cin;
    if (path != "-") {
      file.open(path, std::ios::binary);
      if (!file) {
        std::fprintf(stderr, "steadyloss-replay: %s: cannot open\n", path.c_str());
        return 1;
      }
      in = &file;
    }
    rp::log_reader reader(*in, path == "-" ? "<stdin>" : path, columns, reader_options);
    std::ofstream annotated;
    if (!output.empty()) {
      annotated.open(output);
      if (!annotated) {
        std::fprintf(stderr, "steadyloss-replay: %s: cannot write\n", output.c_str());
        return 1;
      }
    }
    const auto summary = rp::run_replay(reader, options, std::cout, output.empty() ? nullptr : &annotated);
    if (!output.empty()) {
      annotated.close();
      std::cout << "annotated CSV: " << output << "\n";
    }
    if (!plot.empty()) {
      std::ofstream gp(plot + ".gp");
      rp::write_plot_script(gp, {.png = plot, .data = output, .title = path, .scale = plot_scale}, summary);
      gp.close();
      const std::string command = "gnuplot " + rp::detail::gnuplot_quoted(plot + ".gp");
      if (std::system(command.c_str()) != 0) std::fprintf(stderr, "steadyloss-replay: gnuplot failed; no plot\n");
      else
        std::cout << "plot: " << plot << (rp::log_scale(summary, plot_scale) ? " (log-scale loss axis)" : "")
                  << "\n";
    }
  } catch (const rp::log_error& e) {
    std::fprintf(stderr, "steadyloss-replay: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // steadyloss::invalid_parameter from a policy's settings
    std::fprintf(stderr, "steadyloss-replay: %s\n", e.what());
    return 2;
  }
  return 0;
}
