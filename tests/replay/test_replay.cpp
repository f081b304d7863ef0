// The replay tool's log reader, its output and its command line (tools/replay). Fixtures are
// small CSV/TSV files written by the tests themselves; expected events are worked out by hand
// from the policies' documented rules.
#include <catch2/catch.hpp>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "log_reader.hpp"
#include "replay.hpp"
#include "replay_cli.hpp"

namespace rp = steadyloss::replay;

namespace {

// Writes `text` to a fixture file under the temp directory and returns its path.
std::string fixture(const std::string& name, const std::string& text) {
  const auto dir = std::filesystem::temp_directory_path() / "steadyloss_replay_tests";
  std::filesystem::create_directories(dir);
  const auto path = dir / name;
  std::ofstream(path, std::ios::binary) << text;
  return path.string();
}

std::vector<rp::log_row> read_all(const std::string& path, rp::column_choice c = {}, rp::reader_options o = {}) {
  std::ifstream in(path, std::ios::binary);
  rp::log_reader reader(in, path, c, o);
  std::vector<rp::log_row> rows;
  for (rp::log_row row; reader.next(row);) rows.push_back(row);
  return rows;
}

// The annotated CSV as rows of named cells (its cells never hold a comma).
std::vector<std::map<std::string, std::string>> parse_annotated(const std::string& text) {
  const auto split = [](const std::string& line) {
    std::vector<std::string> cells;
    std::string cell;
    std::istringstream in(line);
    while (std::getline(in, cell, ',')) cells.push_back(cell);
    if (!line.empty() && line.back() == ',') cells.emplace_back();
    return cells;
  };
  std::istringstream lines(text);
  std::string line;
  std::getline(lines, line);
  const auto names = split(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(lines, line)) {
    const auto cells = split(line);
    REQUIRE(cells.size() == names.size());
    std::map<std::string, std::string> row;
    for (std::size_t i = 0; i < names.size(); ++i) row[names[i]] = cells[i];
    rows.push_back(row);
  }
  return rows;
}

// A cell read back with std::from_chars, as its bit pattern (so 0.1 vs 0.1000001 differ).
std::uint64_t bits_of(const std::string& cell) {
  double value = 0;
  const auto [end, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), value);
  REQUIRE(ec == std::errc());
  REQUIRE(end == cell.data() + cell.size());
  return std::bit_cast<std::uint64_t>(value);
}
std::uint64_t bits_of(double value) { return std::bit_cast<std::uint64_t>(value); }

// The options the command line builds (the tool's own parser).
rp::replay_options options_from(std::vector<std::string> args) {
  args.insert(args.begin(), "log.csv");
  return rp::parse_command_line(args).options;
}

// The original rule, as the tests before the calibrated default assumed it: 2.0x the mean of the
// last `window` accepted losses.
rp::replay_options mean_ratio_options(std::size_t window) {
  return options_from(
      {"--spike-detector", "mean_ratio", "--spike-window", std::to_string(window), "--spike-threshold", "2"});
}

struct cli_result {
  int status;
  std::string out, err;
};
// The whole program (replay_main), as the binary runs it.
cli_result run_cli(const std::vector<std::string>& args) {
  std::istringstream in;
  std::ostringstream out, err;
  const int status = rp::replay_main(args, in, out, err);
  return {status, out.str(), err.str()};
}

std::string error_of(const std::string& path, rp::column_choice c = {}, rp::reader_options o = {}) {
  try {
    (void)read_all(path, c, o);
  } catch (const rp::log_error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("Lightning metrics.csv: interleaved train and validation rows, empty cells absent", "[replay][reader]") {
  const auto path = fixture("lightning.csv",
                            "epoch,step,train_loss,val_loss\n"
                            "0,0,2.5,\n"
                            "0,1,2.25,\n"
                            "0,1,,2.0\n"
                            "1,2,1.5,\n");
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  CHECK(reader.step_column() == "step");  // "step" is preferred over "epoch"
  CHECK(reader.loss_column() == "train_loss");
  CHECK(reader.validation_column() == "val_loss");
  CHECK(reader.grad_norm_column().empty());
  std::vector<rp::log_row> rows;
  for (rp::log_row row; reader.next(row);) rows.push_back(row);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].line == 2);
  CHECK(*rows[0].step == 0);
  CHECK(*rows[0].loss == 2.5);
  CHECK_FALSE(rows[0].validation.has_value());  // empty: not logged, never 0
  CHECK_FALSE(rows[2].loss.has_value());
  CHECK(*rows[2].validation == 2.0);
  CHECK(*rows[2].step == 1);
  CHECK(rows[3].line == 5);
}

TEST_CASE("Keras CSVLogger: one row per epoch with loss and val_loss", "[replay][reader]") {
  const auto path = fixture("keras.csv", "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,0.9,0.55,0.95\n1,0.6,0.7,0.6,0.8\n");
  const auto rows = read_all(path);
  REQUIRE(rows.size() == 2);
  CHECK(*rows[1].step == 1);
  CHECK(*rows[1].loss == 0.7);
  CHECK(*rows[1].validation == 0.8);
}

TEST_CASE("TSV, CRLF, BOM, quotes and spaces", "[replay][reader]") {
  const auto tsv = fixture("log.tsv", "\xEF\xBB\xBFstep\tloss\tgrad_norm\r\n1\t 0.5 \t3\r\n2\t+0.25\t1e1\r\n");
  const auto rows = read_all(tsv);
  REQUIRE(rows.size() == 2);
  CHECK(*rows[0].loss == 0.5);
  CHECK(*rows[1].loss == 0.25);
  CHECK(*rows[1].grad_norm == 10.0);
  const auto quoted = fixture("quoted.csv", "\"step\",\"my, loss\",note\n1,\"0.75\",\"said \"\"hi\"\", twice\"\n");
  rp::column_choice c;
  c.loss = "my, loss";
  const auto q = read_all(quoted, c);
  REQUIRE(q.size() == 1);
  CHECK(*q[0].loss == 0.75);
}

TEST_CASE("columns chosen by name, per-term columns", "[replay][reader]") {
  const auto path = fixture("terms.csv", "it,total,mel,stop,gn\n0,36,1,1,2\n1,18,0.5,0.5,\n");
  // Aggregate-initialized: g++ 12 at -O3 warns a false -Wmaybe-uninitialized on assigning a short
  // literal to a member of a default-constructed column_choice here.
  const rp::column_choice c{.step = "", .loss = "total", .validation = "", .grad_norm = "gn", .terms = {"mel", "stop"}};
  const auto rows = read_all(path, c);
  REQUIRE(rows.size() == 2);
  CHECK_FALSE(rows[0].step.has_value());  // "it" is not a known step name ("iter", "iteration" are)
  REQUIRE(rows[1].terms.size() == 2);
  CHECK(*rows[1].terms[0] == 0.5);
  CHECK_FALSE(rows[1].grad_norm.has_value());
}

TEST_CASE("NaN and Inf text are non-finite values, or errors when rejected", "[replay][reader]") {
  const auto path = fixture("nan.csv", "step,loss\n1,nan\n2,inf\n3,-Infinity\n4,NaN\n5,1e999\n");
  const auto rows = read_all(path);
  REQUIRE(rows.size() == 5);
  CHECK(std::isnan(*rows[0].loss));
  CHECK(*rows[1].loss == HUGE_VAL);
  CHECK(*rows[2].loss == -HUGE_VAL);
  CHECK(std::isnan(*rows[3].loss));
  CHECK(*rows[4].loss == HUGE_VAL);  // out of range reads as infinity, as strtod does
  rp::reader_options strict;
  strict.reject_non_finite = true;
  CHECK(error_of(path, {}, strict) == path + ":2: column 'loss': non-finite value 'nan' (reject_non_finite is set)");
}

TEST_CASE("bad input: clear errors with file and line", "[replay][reader][errors]") {
  const auto empty = fixture("empty.csv", "");
  CHECK(error_of(empty) == empty + ": empty file: expected a header row with column names");
  const auto header_only = fixture("header_only.csv", "step,loss\n");
  CHECK(error_of(header_only) == header_only + ":1: the header has no data rows after it");
  const auto malformed = fixture("malformed.csv", "step,loss\n1,0.5\n2,0.4x\n");
  CHECK(error_of(malformed) == malformed + ":3: column 'loss': malformed number '0.4x'");
  const auto fields = fixture("fields.csv", "step,loss\n1,0.5\n2,0.4,9\n");
  CHECK(error_of(fields) == fields + ":3: 3 fields, the header has 2");
  const auto missing = fixture("missing.csv", "epoch,acc\n1,0.5\n");
  CHECK_THAT(error_of(missing), Catch::StartsWith(missing + ":1: no loss column (looked for loss, train_loss"));
  CHECK_THAT(error_of(missing), Catch::Contains("the header has: epoch, acc"));
  rp::column_choice named;
  named.validation = "val_los";
  const auto typo = fixture("typo.csv", "step,loss,val_loss\n1,0.5,0.6\n");
  CHECK(error_of(typo, named) == typo + ":1: validation loss column 'val_los' not found; the header has: step, loss, val_loss");
  const auto quote = fixture("quote.csv", "step,loss\n1,\"0.5\n");
  CHECK(error_of(quote) == quote + ":2: unterminated quoted field (quoted fields may not span lines)");
  for (const char* bad : {"++1", "+-1", "-", "+", "0x10", "1 2", "--1"}) {
    const auto p = fixture("bad_number.csv", std::string("step,loss\n1,") + bad + "\n");
    CHECK_THAT(error_of(p), Catch::Contains("malformed number"));
  }
}

TEST_CASE("an over-long line is an error, not an unbounded buffer", "[replay][reader][errors]") {
  const auto path = fixture("long.csv", "step,loss\n1," + std::string(5000, '1') + "\n");
  rp::reader_options o;
  o.max_line_bytes = 1000;
  CHECK(error_of(path, {}, o) == path + ":2: line longer than 1000 bytes (is this a CSV/TSV log?)");
}

TEST_CASE("blank lines are skipped, a last line without newline is read", "[replay][reader]") {
  const auto path = fixture("blank.csv", "step,loss\n\n1,0.5\n   \n2,0.25");
  const auto rows = read_all(path);
  REQUIRE(rows.size() == 2);
  CHECK(rows[1].line == 5);
  CHECK(*rows[1].loss == 0.25);
}

TEST_CASE("replay: a spike is dampened to threshold x the window mean", "[replay][output]") {
  // mean_ratio, window 4, threshold 2 (the original rule): steps 0-3 fill the window with 1.0;
  // step 4 (loss 5) exceeds the limit 2 x 1 = 2, so its scale is 2/5 = 0.4.
  const auto path = fixture("spike.csv", "step,loss\n0,1\n1,1\n2,1\n3,1\n4,5\n5,1\n");
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  rp::replay_options o = mean_ratio_options(4);
  o.smoothing = 0;
  std::ostringstream events, annotated;
  const auto s = rp::run_replay(reader, o, events, &annotated);
  CHECK(s.rows == 6);
  CHECK(s.train_steps == 6);
  CHECK(s.spikes == 1);
  CHECK(s.dampened == 1);
  CHECK(s.mean_dampened_scale == Approx(0.4));
  CHECK_THAT(events.str(), Catch::Contains("spike       step 4 (line 6): loss 5 > limit 2, scale 0.4\n"));
  CHECK_THAT(events.str(), Catch::Contains("spikes: 1 (1 dampened, mean scale 0.4), skipped steps: 0"));
  std::istringstream lines(annotated.str());
  std::string header, line;
  std::getline(lines, header);
  CHECK(header ==
        "line,step,loss,validation_loss,grad_norm,limit,scale,spike,level_shift,non_finite,skipped,smoothed,"
        "stability_score,improved,best,wait,should_stop,reason,monitored,monitored_value");
  std::vector<std::string> rows;
  while (std::getline(lines, line)) rows.push_back(line);
  REQUIRE(rows.size() == 6);
  // Smoothing 0: the smoothed value is the effective (dampened) loss 2, the limit 2 x 1; the best
  // stays 1 (step 0). Warm-up rows have no limit yet. No validation column: the stopper compares
  // the smoothed training loss, 2 at step 4.
  CHECK_THAT(rows[3], Catch::StartsWith("5,3,1,,,,1,0,0,0,0,1,"));
  CHECK_THAT(rows[4], Catch::StartsWith("6,4,5,,,2,0.4,1,0,0,0,2,"));
  CHECK_THAT(rows[4], Catch::EndsWith(",0,1,4,0,none,smoothed_loss,2"));
}

TEST_CASE("replay: the annotated CSV carries every decision at full precision", "[replay][output]") {
  // mean_ratio, window 4, threshold 2, smoothing 0. Steps 0-3 fill the window with 1; step 4 (3) is a spike:
  // limit 2 x mean 1 = 2, scale 2/3, effective loss 2. Step 5 (1 + 2^-52) passes: limit 2 again,
  // scale 1, smoothed = the loss itself. Values with 16-17 significant digits must come back with
  // the same bits, which six digits cannot do.
  const std::string step5_loss = "1.0000000000000002", grad_norm = "123.45678901234567",
                    validation = "0.30000000000000004";
  const auto path = fixture("exact.csv", "step,loss,grad_norm,val_loss\n0,1,1,\n1,1,1,\n2,1,1,\n3,1,1,\n4,3,1,\n5," +
                                             step5_loss + "," + grad_norm + ",\n5,,," + validation + "\n");
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  rp::replay_options o = mean_ratio_options(4);
  o.smoothing = 0;
  o.patience = 3;
  std::ostringstream events, annotated;
  (void)rp::run_replay(reader, o, events, &annotated);
  const auto rows = parse_annotated(annotated.str());
  REQUIRE(rows.size() == 7);
  for (const char* column : {"line", "step", "loss", "validation_loss", "grad_norm", "limit", "scale", "spike",
                             "level_shift", "non_finite", "skipped", "smoothed", "stability_score", "improved",
                             "best", "wait", "should_stop", "reason", "monitored", "monitored_value"})
    CHECK(rows[0].count(column) == 1);
  CHECK(rows[3].at("limit").empty());  // warming up: no limit yet, not 0
  const auto& spike = rows[4];
  CHECK(spike.at("spike") == "1");
  CHECK(spike.at("level_shift") == "0");
  CHECK(spike.at("non_finite") == "0");
  CHECK(spike.at("skipped") == "0");
  CHECK(bits_of(spike.at("limit")) == bits_of(2.0));
  CHECK(bits_of(spike.at("scale")) == bits_of(2.0 / 3.0));
  CHECK(bits_of(spike.at("smoothed")) == bits_of(2.0));
  const auto& after = rows[5];
  CHECK(after.at("spike") == "0");
  CHECK(bits_of(after.at("loss")) == bits_of(step5_loss));
  CHECK(bits_of(after.at("smoothed")) == bits_of(step5_loss));
  CHECK(bits_of(after.at("grad_norm")) == bits_of(grad_norm));
  CHECK(bits_of(after.at("limit")) == bits_of(2.0));
  CHECK(bits_of(rows[6].at("validation_loss")) == bits_of(validation));
  // The validation value is the stopper's first observation: improved, best = it, wait 0.
  CHECK(rows[6].at("improved") == "1");
  CHECK(bits_of(rows[6].at("best")) == bits_of(validation));
  CHECK(rows[6].at("wait") == "0");
  CHECK(rows[6].at("reason") == "none");
  CHECK(rows[6].at("monitored") == "validation");  // the raw value, compared as read
  CHECK(bits_of(rows[6].at("monitored_value")) == bits_of(validation));
  CHECK(rows[5].at("improved").empty());  // monitoring validation: training rows are no observation
  CHECK(rows[5].at("monitored").empty());
  CHECK(rows[5].at("monitored_value").empty());
}

TEST_CASE("replay: a run that ends non-finite is marked in the summary and the CSV", "[replay][output]") {
  const auto path = fixture("ends_nan.csv", "step,loss\n0,1\n1,1\n2,1\n3,1\n4,0.9\n5,nan\n6,inf\n");
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  rp::replay_options o = mean_ratio_options(4);
  o.smoothing = 0;
  std::ostringstream events, annotated;
  const auto s = rp::run_replay(reader, o, events, &annotated);
  CHECK(s.ends_non_finite());
  CHECK(s.trailing_non_finite == 2);
  CHECK(s.trailing_non_finite_step == 5);
  CHECK(s.last_finite_step == 4);
  CHECK(s.final_smoothed == 0.9);
  CHECK_THAT(events.str(), Catch::Contains("  NON-FINITE AT THE END: the run diverged: the last 2 training steps "
                                           "(from step 5, line 7) are non-finite\n"));
  CHECK_THAT(events.str(), Catch::Contains("smoothed loss at the end: non-finite (0.9 at step 4 (line 6), the last "
                                           "finite step), stability score"));
  CHECK_THAT(events.str(), !Catch::Contains("smoothed loss at the end 0.9"));
  const auto rows = parse_annotated(annotated.str());
  REQUIRE(rows.size() == 7);
  CHECK(rows[4].at("non_finite") == "0");
  CHECK(rows[5].at("non_finite") == "1");
  CHECK(rows[5].at("loss") == "nan");
  CHECK(rows[5].at("skipped") == "1");
  CHECK(rows[6].at("non_finite") == "1");
  CHECK(rows[6].at("loss") == "inf");
  CHECK(rows[6].at("limit").empty());  // no limit applies to a non-finite step
}

TEST_CASE("replay: a NaN in the middle is counted but is not the end, a NaN validation value at the end is",
          "[replay][output]") {
  const auto recovered = fixture("mid_nan.csv", "step,loss\n0,1\n1,nan\n2,1\n");
  std::ifstream in(recovered);
  rp::log_reader reader(in, recovered);
  std::ostringstream events;
  const auto s = rp::run_replay(reader, {}, events);
  CHECK(s.non_finite == 1);
  CHECK_FALSE(s.ends_non_finite());
  CHECK_THAT(events.str(), !Catch::Contains("NON-FINITE AT THE END"));

  const auto validation = fixture("val_nan.csv", "step,loss,val_loss\n0,1,\n0,,1\n1,1,\n1,,nan\n");
  std::ifstream vin(validation);
  rp::log_reader vreader(vin, validation);
  std::ostringstream vevents, annotated;
  const auto v = rp::run_replay(vreader, {}, vevents, &annotated);
  CHECK(v.validation_non_finite == 1);
  CHECK(v.ends_non_finite());
  CHECK_THAT(vevents.str(), Catch::Contains("non-finite validation values: 1"));
  CHECK_THAT(vevents.str(), Catch::Contains("NON-FINITE AT THE END: the run diverged: the last validation value is "
                                            "non-finite\n"));
  const auto rows = parse_annotated(annotated.str());
  REQUIRE(rows.size() == 4);
  CHECK(rows[3].at("non_finite") == "1");
  CHECK(rows[3].at("validation_loss") == "nan");
}

namespace {
rp::replay_summary replay_text(const std::string& name, const std::string& text, rp::replay_options o = {}) {
  const auto path = fixture(name, text);
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  std::ostringstream events;
  return rp::run_replay(reader, o, events);
}
std::string plot_script(const rp::replay_summary& s, rp::plot_scale scale = rp::plot_scale::automatic) {
  std::ostringstream gp;
  rp::write_plot_script(gp, {.png = "out.png", .data = "out.csv", .title = "run.csv", .scale = scale}, s);
  return gp.str();
}
}  // namespace

TEST_CASE("replay plot: a log-scale loss axis when the values span more than 3 decades", "[replay][plot]") {
  // 1000 down to 0.5: 3.3 decades. 2 down to 0.5: not. A zero loss rules a log axis out.
  const auto w = replay_text("wide.csv", "step,loss\n0,1000\n1,100\n2,10\n3,1\n4,0.5\n");
  const auto n = replay_text("narrow.csv", "step,loss\n0,2\n1,1.5\n2,1\n3,0.5\n");
  const auto z = replay_text("zero.csv", "step,loss\n0,1000\n1,100\n2,10\n3,1\n4,0\n");
  CHECK(w.finite_min == 0.5);
  CHECK(w.finite_max == 1000.0);
  CHECK(rp::log_scale(w, rp::plot_scale::automatic));
  CHECK_THAT(plot_script(w), Catch::Contains("set logscale y\n"));
  CHECK_FALSE(rp::log_scale(n, rp::plot_scale::automatic));
  CHECK_THAT(plot_script(n), !Catch::Contains("logscale"));
  CHECK_FALSE(rp::log_scale(z, rp::plot_scale::automatic));
  CHECK_THAT(plot_script(w, rp::plot_scale::linear), !Catch::Contains("logscale"));
  CHECK_THAT(plot_script(n, rp::plot_scale::log), Catch::Contains("set logscale y\n"));
  // Asked for, a log axis leaves the zero out and starts below the smallest positive value (1).
  const auto forced = plot_script(z, rp::plot_scale::log);
  CHECK_THAT(forced, Catch::Contains("set logscale y\n"));
  const auto range = forced.find("set yrange [");
  REQUIRE(range != std::string::npos);
  const double lower = std::strtod(forced.c_str() + range + 12, nullptr);
  CHECK(lower > 0);
  CHECK(lower < 1);
}

TEST_CASE("replay plot: markers for spikes, skipped and non-finite steps, level shifts and the stop",
          "[replay][plot]") {
  // mean_ratio, window 4, skip mode, limit 2 x 0.985: steps 4 (9) and 5 (3) are skipped spikes,
  // step 6 (3), the 3rd in a row, the level shift (level_shift_after 3); then NaN to the end: 2 in
  // a row stop the run (patience 2) with reason non_finite.
  rp::replay_options o = options_from(
      {"--spike-detector", "mean_ratio", "--spike-window", "4", "--level-shift-after", "3", "--spike-mode", "skip"});
  o.smoothing = 0;
  o.patience = 2;
  o.monitor = rp::replay_options::monitor_choice::loss;
  const auto s = replay_text("markers.csv",
                             "step,loss\n0,1\n1,0.99\n2,0.98\n3,0.97\n4,9\n5,3\n6,3\n8,nan\n9,nan\n", o);
  CHECK(s.spikes == 2);
  CHECK(s.skipped_spikes == 2);
  CHECK(s.level_shifts == 1);
  CHECK(s.stopped);
  CHECK(s.reason == "non_finite");
  const auto gp = plot_script(s);
  CHECK_THAT(gp, Catch::Contains("title 'spike, step skipped'"));
  CHECK_THAT(gp, Catch::Contains("title 'level shift'"));
  CHECK_THAT(gp, Catch::Contains("title 'non-finite (skipped)'"));
  CHECK_THAT(gp, Catch::Contains("title 'spike limit'"));
  CHECK_THAT(gp, Catch::Contains("set label 2 'early stop (non_finite)' at first 9,"));
  CHECK_THAT(gp, Catch::Contains("set object 1 rect from first 8, graph 0"));  // the non-finite tail
  // Non-finite markers sit above the finite values (9 at most here), inside the axis range.
  const auto number_after = [&](const std::string& key, std::size_t from = 0) {
    const auto at = gp.find(key, from);
    REQUIRE(at != std::string::npos);
    return std::strtod(gp.c_str() + at + key.size(), nullptr);
  };
  CHECK(s.finite_max == 9);
  const auto marker_line = gp.rfind('\n', gp.find("title 'non-finite (skipped)'"));
  const double marker_y = number_after("$10 == 1 ? ", marker_line), top = number_after("set yrange [0.5685:");
  CHECK(marker_y > 9);
  CHECK(top > marker_y);
  // The script runs: where gnuplot is installed, it draws the PNG.
  if (std::system("gnuplot --version > /dev/null 2>&1") == 0) {
    const auto dir = std::filesystem::temp_directory_path() / "steadyloss_replay_tests";
    const auto csv = (dir / "markers_plot.csv").string(), png = (dir / "markers_plot.png").string();
    {
      std::ifstream in(dir / "markers.csv");
      rp::log_reader reader(in, "markers.csv");
      std::ofstream annotated(csv);
      std::ostringstream events;
      (void)rp::run_replay(reader, o, events, &annotated);
    }
    std::filesystem::remove(png);
    std::ofstream(dir / "markers_plot.gp") << [&] {
      std::ostringstream script;
      rp::write_plot_script(script, {.png = png, .data = csv, .title = "markers.csv"}, s);
      return script.str();
    }();
    CHECK(std::system(("gnuplot '" + (dir / "markers_plot.gp").string() + "'").c_str()) == 0);
    CHECK(std::filesystem::file_size(png) > 1000);
  } else {
    WARN("gnuplot not found: the plot script was checked, not run");
  }
}

TEST_CASE("replay: a loss that settles at a new level is a level shift, not a spike forever", "[replay][output]") {
  // mean_ratio, window 4, threshold 2: level 1 for steps 0-3, then 3 from step 4 on. Steps 4-6
  // are spikes (scale 2/3); step 7, the 4th in a row, becomes the new reference level and later
  // rows pass.
  const auto path = fixture("shift.csv", "step,loss\n0,1\n1,1\n2,1\n3,1\n4,3\n5,3\n6,3\n7,3\n8,3\n9,3\n");
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  rp::replay_options o = mean_ratio_options(4);
  o.smoothing = 0;
  std::ostringstream events;
  const auto s = rp::run_replay(reader, o, events);
  CHECK(s.spikes == 3);
  CHECK(s.dampened == 3);
  CHECK(s.level_shifts == 1);
  CHECK_THAT(events.str(), Catch::Contains("level shift step 7 (line 9): loss 3 after 3 spikes in a row"));
  CHECK_THAT(events.str(), Catch::Contains("skipped steps: 0 (0 non-finite), level shifts: 1\n"));
}

TEST_CASE("replay: non-finite loss is skipped, early stop on validation with best step", "[replay][output]") {
  // Validation 1.0, 0.9, then no improvement by more than min_delta 0.0005: patience 2 stops at
  // the 4th validation value (step 30), best 0.9 at step 10.
  const auto path = fixture("stop.csv",
                            "step,train_loss,val_loss\n"
                            "0,1.0,\n0,,1.0\n"
                            "10,nan,\n10,,0.9\n"
                            "20,0.8,\n20,,0.9\n"
                            "30,0.7,\n30,,0.9004\n"
                            "40,0.6,\n");
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  rp::replay_options o;
  o.patience = 2;  // the default smoothing 0.1 smooths the training loss only: the stopper sees 0.9004 as read
  std::ostringstream events;
  const auto s = rp::run_replay(reader, o, events);
  CHECK(s.monitors_validation);
  CHECK(s.non_finite == 1);
  CHECK(s.skipped == 1);
  CHECK(s.validation_points == 4);
  CHECK(s.stopped);
  CHECK(s.stop_step == 30);
  CHECK(s.stop_line == 9);
  CHECK(s.reason == "patience");
  CHECK(s.best == Approx(0.9));
  CHECK(s.best_step == 10);
  CHECK(s.rows_after_stop == 1);
  CHECK_THAT(events.str(), Catch::Contains("skip        step 10 (line 4): non-finite train_loss nan, step skipped"));
  CHECK_THAT(events.str(), Catch::Contains("early stop  step 30 (line 9): patience (val_loss); best 0.9 at step 10 (line 5)"));
}

TEST_CASE("replay: max mode and monitoring the training loss", "[replay][output]") {
  const auto path = fixture("max.csv", "epoch,loss\n0,1\n1,2\n2,3\n3,3\n4,2.5\n");
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  rp::replay_options o = mean_ratio_options(10);  // 5 rows never fill the window: no spike decisions
  o.mode = steadyloss::stop_mode::max;
  o.patience = 2;
  o.smoothing = 0;
  o.min_delta = 0;
  std::ostringstream events;
  const auto s = rp::run_replay(reader, o, events);
  CHECK_FALSE(s.monitors_validation);
  CHECK(s.stopped);
  CHECK(s.stop_step == 4);  // 3 at epoch 2 is the best; epochs 3 and 4 do not beat it
  CHECK(s.best == 3);
  CHECK(s.best_step == 2);
  // No validation column: as before, the smoothed training loss, patience counted in steps.
  CHECK_THAT(events.str(), Catch::Contains("  early stopping: on smoothed loss (EMA factor 0; one check per training "
                                           "step, patience 2 steps; 2 non-finite steps in a row stop)\n"));
}

namespace {
struct replayed {
  rp::replay_summary summary;
  std::string events;
  std::vector<std::map<std::string, std::string>> rows;  // the annotated CSV
};
// A fixture replayed with the options the command line builds from `flags`.
replayed replay_flags(const std::string& name, const std::string& text, const std::vector<std::string>& flags) {
  const auto path = fixture(name, text);
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  std::ostringstream events, annotated;
  const auto s = rp::run_replay(reader, options_from(flags), events, &annotated);
  return {s, events.str(), parse_annotated(annotated.str())};
}

// Lightning's layout: two training rows per validation row, validation every 10 steps. The
// validation values 1.0, 0.6, 0.7, 0.65, 0.9, 0.9 at steps 10, 20, ..., 60 (lines 5, 8, ..., 20).
const std::string validation_every_10_steps =
    "step,train_loss,val_loss\n"
    "0,2.0,\n5,1.9,\n10,1.8,\n10,,1.0\n"
    "15,1.7,\n20,1.6,\n20,,0.6\n"
    "25,1.5,\n30,1.4,\n30,,0.7\n"
    "35,1.3,\n40,1.2,\n40,,0.65\n"
    "45,1.1,\n50,1.0,\n50,,0.9\n"
    "55,0.9,\n60,0.8,\n60,,0.9\n"
    "65,0.7,\n";
}  // namespace

TEST_CASE("replay: early stopping monitors the raw validation values, patience counted in validation checks",
          "[replay][output][validation]") {
  // Patience 2, min_delta 0.0005, --smoothing 0.5 (a strong smoothing, which must not reach the
  // validation values). Checks: 1.0 best; 0.6 best (step 20); 0.7 wait 1; 0.65 (not below
  // 0.6 - 0.0005) wait 2 = patience: stop at step 40 (line 14), the 4th check, though 12 training
  // rows came before it. The 7 rows after line 14 would not have been trained.
  const auto r = replay_flags("raw_validation.csv", validation_every_10_steps, {"--patience", "2", "--smoothing", "0.5"});
  const auto& s = r.summary;
  CHECK(s.monitors_validation);
  CHECK_FALSE(s.smooths_validation);
  CHECK(s.monitored == "val_loss");
  CHECK(s.stopped);
  CHECK(s.reason == "patience");
  CHECK(s.stop_step == 40);
  CHECK(s.stop_line == 14);
  CHECK(s.best == 0.6);
  CHECK(s.best_step == 20);
  CHECK(s.best_line == 8);
  CHECK(s.rows_after_stop == 7);
  CHECK_THAT(r.events, Catch::Contains("early stop  step 40 (line 14): patience (val_loss); best 0.6 at step 20 "
                                       "(line 8): restore that checkpoint\n"));
  CHECK_THAT(r.events, Catch::Contains("  early stopping: on val_loss (raw values; one check per validation row, "
                                       "patience 2 checks; a non-finite value is a check without improvement)\n"));
  CHECK_THAT(r.events, Catch::Contains("  early stop: step 40 (line 14), patience, on val_loss; 7 later rows"));
  // The annotated CSV: the stopper's view on the validation rows only, each compared as read.
  REQUIRE(r.rows.size() == 20);
  const auto& check3 = r.rows[9];  // line 11: 0.7
  CHECK(check3.at("monitored") == "validation");
  CHECK(bits_of(check3.at("monitored_value")) == bits_of(0.7));
  CHECK(check3.at("wait") == "1");
  const auto& check4 = r.rows[12];  // line 14: 0.65
  CHECK(check4.at("line") == "14");
  CHECK(check4.at("wait") == "2");
  CHECK(check4.at("should_stop") == "1");
  CHECK(check4.at("reason") == "patience");
  CHECK(r.rows[11].at("monitored").empty());  // a training row: no check
  // The training loss is still smoothed with factor 0.5 (debiased): 2.0, then
  // (0.25 x 2.0 + 0.5 x 1.9) / 0.75 = 1.45 / 0.75.
  CHECK(std::stod(r.rows[1].at("smoothed")) == Approx(1.45 / 0.75));
}

TEST_CASE("replay: --smooth-validation smooths the monitored validation values", "[replay][output][validation]") {
  // The same log, the validation values smoothed with factor 0.5, debiased (EmaSmoother):
  // sum_t = 0.5 sum_{t-1} + 0.5 v_t, smoothed_t = sum_t / (1 - 0.5^t):
  //   0.5 / 0.5 = 1;  0.55 / 0.75 = 0.7333;  0.625 / 0.875 = 0.7143 (best, 0.019 below);
  //   0.6375 / 0.9375 = 0.68 (best); 0.76875 / 0.96875 = 0.7935 wait 1; 0.834375 / 0.984375 =
  //   0.8476 wait 2: stop at step 60 (line 20), best 0.68 at step 40 (line 14).
  const auto r = replay_flags("smoothed_validation.csv", validation_every_10_steps,
                              {"--patience", "2", "--smoothing", "0.5", "--smooth-validation"});
  const auto& s = r.summary;
  CHECK(s.monitors_validation);
  CHECK(s.smooths_validation);
  CHECK(s.monitored == "smoothed val_loss");
  CHECK(s.stopped);
  CHECK(s.reason == "patience");
  CHECK(s.stop_step == 60);
  CHECK(s.stop_line == 20);
  CHECK(s.best == Approx(0.68));
  CHECK(s.best_step == 40);
  CHECK(s.rows_after_stop == 1);
  CHECK_THAT(r.events, Catch::Contains("early stop  step 60 (line 20): patience (smoothed val_loss); best 0.68 at step "
                                       "40 (line 14)"));
  CHECK_THAT(r.events, Catch::Contains("  early stopping: on smoothed val_loss (EMA factor 0.5; one check per "
                                       "validation row, patience 2 checks;"));
  REQUIRE(r.rows.size() == 20);
  CHECK(r.rows[6].at("monitored") == "smoothed_validation");  // line 8: 0.6 read, 0.7333 compared
  CHECK(r.rows[6].at("validation_loss") == "0.6");
  CHECK(std::stod(r.rows[6].at("monitored_value")) == Approx(0.55 / 0.75));
  CHECK(std::stod(r.rows[18].at("monitored_value")) == Approx(0.834375 / 0.984375));
  // The plot draws the compared series and says which one it is.
  const auto gp = plot_script(s);
  CHECK_THAT(gp, Catch::Contains("title 'validation, smoothed (monitored)'"));
  CHECK_THAT(gp, Catch::Contains(", early stopping on smoothed val_loss' noenhanced\n"));
  // Without the flag, the same smoothing leaves the validation values raw (the test above).
  const auto raw = replay_flags("raw_validation_again.csv", validation_every_10_steps,
                                {"--patience", "2", "--smoothing", "0.5"});
  CHECK(raw.summary.stop_step == 40);
  const auto raw_gp = plot_script(raw.summary);
  CHECK_THAT(raw_gp, Catch::Contains("title 'validation (monitored)'"));
  CHECK_THAT(raw_gp, !Catch::Contains("smoothed (monitored)"));
  CHECK_THAT(raw_gp, Catch::Contains(", early stopping on val_loss' noenhanced\n"));
}

namespace {
// Validation 1.0, 0.8, NaN, 0.7, 0.75, inf at steps 0-5 (lines 3, 5, ..., 13).
const std::string validation_with_nan =
    "step,train_loss,val_loss\n"
    "0,1.0,\n0,,1.0\n"
    "1,0.9,\n1,,0.8\n"
    "2,0.8,\n2,,nan\n"
    "3,0.7,\n3,,0.7\n"
    "4,0.6,\n4,,0.75\n"
    "5,0.5,\n5,,inf\n";
}  // namespace

TEST_CASE("replay: --stop-on-non-finite stops at the first non-finite validation value", "[replay][output][validation]") {
  // Lightning's check_finite=True: the NaN at step 2 (line 7), the 3rd check, stops the run,
  // whatever the patience; the best so far is 0.8 at step 1 (line 5); lines 8-13 not trained.
  const auto r = replay_flags("stop_on_nan.csv", validation_with_nan, {"--patience", "3", "--stop-on-non-finite"});
  const auto& s = r.summary;
  CHECK(s.stopped);
  CHECK(s.reason == "non_finite");
  CHECK(s.stop_step == 2);
  CHECK(s.stop_line == 7);
  CHECK(s.best == 0.8);
  CHECK(s.best_step == 1);
  CHECK(s.rows_after_stop == 6);
  CHECK_THAT(r.events, Catch::Contains("early stop  step 2 (line 7): non_finite (val_loss); best 0.8 at step 1 "
                                       "(line 5): restore that checkpoint\n"));
  CHECK_THAT(r.events, Catch::Contains("  early stopping: on val_loss (raw values; one check per validation row, "
                                       "patience 3 checks; a non-finite value stops (--stop-on-non-finite))\n"));
  CHECK_THAT(r.events, Catch::Contains("  early stop: step 2 (line 7), non_finite, on val_loss; 6 later rows"));
  REQUIRE(r.rows.size() == 12);
  CHECK(r.rows[5].at("reason") == "non_finite");
  CHECK(r.rows[5].at("should_stop") == "1");
  CHECK(r.rows[5].at("monitored_value") == "nan");
  CHECK(r.rows[4].at("should_stop") == "0");
  CHECK_THAT(plot_script(s), Catch::Contains("set label 2 'early stop (non_finite)' at first 2,"));
  // Smoothing the validation values does not hide a NaN: the smoother passes it on.
  const auto smoothed = replay_flags("stop_on_nan_smoothed.csv", validation_with_nan,
                                     {"--patience", "3", "--stop-on-non-finite", "--smooth-validation"});
  CHECK(smoothed.summary.reason == "non_finite");
  CHECK(smoothed.summary.stop_step == 2);
}

TEST_CASE("replay: without --stop-on-non-finite a non-finite validation value is a check without improvement",
          "[replay][output][validation]") {
  // Patience 3. Checks: 1.0 best; 0.8 best; NaN wait 1; 0.7 best (step 3), wait 0; 0.75 wait 1;
  // inf wait 2: no stop, the run goes on to the end.
  const auto r = replay_flags("continue_on_nan.csv", validation_with_nan, {"--patience", "3"});
  const auto& s = r.summary;
  CHECK_FALSE(s.stopped);
  CHECK(s.reason == "none");
  CHECK(s.best == 0.7);
  CHECK(s.best_step == 3);
  CHECK(s.wait == 2);
  CHECK(s.validation_non_finite == 2);
  CHECK_THAT(r.events, Catch::Contains("non-finite  step 2 (line 7): val_loss nan, a check without improvement "
                                       "(wait 1 of 3)\n"));
  CHECK_THAT(r.events, Catch::Contains("  no early stop (val_loss, patience 3, wait 2 at the end); best 0.7 at step 3 "
                                       "(line 9)\n"));
  REQUIRE(r.rows.size() == 12);
  const auto& nan_check = r.rows[5];
  CHECK(nan_check.at("validation_loss") == "nan");
  CHECK(nan_check.at("improved") == "0");
  CHECK(nan_check.at("wait") == "1");
  CHECK(nan_check.at("should_stop") == "0");
  CHECK(nan_check.at("reason") == "none");
  // Two non-finite values in a row with patience 2 are two checks without improvement: a
  // patience stop at the second (step 2), not a non_finite one.
  const auto twice = replay_flags("nan_twice.csv", "step,val_loss,loss\n0,1.0,1\n1,nan,1\n2,nan,1\n3,0.5,1\n",
                                  {"--patience", "2"});
  CHECK(twice.summary.reason == "patience");
  CHECK(twice.summary.stop_step == 2);
  // -inf is not an improvement either (in min mode it would compare below every best): best
  // stays 1.0 at step 0, and 1.0 again is no improvement: wait 2.
  const auto minus_inf = replay_flags("minus_inf.csv", "step,val_loss,loss\n0,1.0,1\n1,-inf,1\n2,1.0,1\n",
                                      {"--patience", "5"});
  CHECK(minus_inf.summary.best == 1.0);
  CHECK(minus_inf.summary.best_step == 0);
  CHECK(minus_inf.summary.wait == 2);
}

TEST_CASE("replay: the validation monitor's flags on the command line and in the help", "[replay][validation]") {
  const auto defaults = options_from({});
  CHECK_FALSE(defaults.smooth_validation);
  CHECK_FALSE(defaults.stop_on_non_finite);
  const auto both = options_from({"--stop-on-non-finite", "--smooth-validation"});
  CHECK(both.smooth_validation);
  CHECK(both.stop_on_non_finite);
  const auto help = run_cli({"--help"});
  CHECK_THAT(help.out, Catch::Contains("--smooth-validation"));
  CHECK_THAT(help.out, Catch::Contains("--stop-on-non-finite"));
}

TEST_CASE("replay: per-term columns drive AdaptiveWeight", "[replay][output]") {
  std::string text = "step,loss,mel,stop\n";
  for (int i = 0; i < 80; ++i) text += std::to_string(i) + ",36,1,1\n";  // mel weighted 35, stop 1
  const auto path = fixture("adaptive.csv", text);
  std::ifstream in(path);
  rp::column_choice c;
  c.terms = {"mel", "stop"};
  rp::log_reader reader(in, path, c);
  rp::replay_options o;
  std::ostringstream events;
  const auto s = rp::run_replay(reader, o, events);
  REQUIRE(s.weights.size() == 2);
  // Equal values evaluated with weight 1 each (update(total, values, ...)): equal shares and rates,
  // so both multipliers stay at 1.
  CHECK(s.weights[0] == Approx(1.0));
  CHECK(s.weights[1] == Approx(1.0));
  CHECK_THAT(events.str(), Catch::Contains("final multipliers: mel 1 stop 1"));
}

TEST_CASE("replay: an empty term cell on a training row is an error", "[replay][errors]") {
  const auto path = fixture("term_gap.csv", "step,loss,mel\n0,1,1\n1,1,\n");
  std::ifstream in(path);
  rp::column_choice c;
  c.terms = {"mel"};
  rp::log_reader reader(in, path, c);
  std::ostringstream events;
  try {
    (void)rp::run_replay(reader, {}, events);
    FAIL("expected an error");
  } catch (const rp::log_error& e) {
    CHECK(std::string(e.what()) == path + ":3: column 'mel' is empty on a row with a training loss");
  }
}

TEST_CASE("replay: the default is the calibrated spike detector with the stable preset's settings",
          "[replay][detector]") {
  // The options the command line builds with no spike flags, against the library's preset.
  const auto o = options_from({});
  CHECK(o.detector == rp::spike_detector::mad_zscore);
  CHECK(std::is_same_v<steadyloss::presets::calibrated_spike_detector, steadyloss::detect::mad_zscore>);
  const auto& preset = steadyloss::presets::calibrated_spikes;
  CHECK(o.spikes.window == preset.window);
  CHECK(o.spikes.warmup == preset.warmup);
  CHECK(o.spikes.level_shift_after == preset.level_shift_after);
  CHECK(o.spikes.threshold == preset.detector.sigma_factor);
  CHECK(o.spikes.min_ratio == preset.min_ratio);
  CHECK(o.spikes.min_excess == preset.min_excess);
  CHECK(o.spikes.mode == preset.mode);
  // And what the run says it used: docs/spike-calibration.md's choice (robust z-score, window 25,
  // k 15, at least 1.5x the median, deciding after 10 values, a run of 10 spikes a new level).
  const auto path = fixture("default_detector.csv", "step,loss\n0,1\n1,0.9\n2,0.8\n");
  const auto r = run_cli({path, "--quiet"});
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("  spike detector: mad_zscore (window 25, warm-up 10, k 15, level shift after 10 "
                                    "spikes, min ratio 1.5, dampen)\n"));
}

TEST_CASE("replay: --spike-detector mean_ratio --spike-window 4 --spike-threshold 2 is the original rule",
          "[replay][detector]") {
  // The same log and events as "a spike is dampened to threshold x the window mean", through the
  // program: steps 0-3 fill the window with 1, step 4 (5) is above 2 x 1, scale 0.4.
  const auto path = fixture("spike_cli.csv", "step,loss\n0,1\n1,1\n2,1\n3,1\n4,5\n5,1\n");
  const auto r = run_cli({path, "--spike-detector", "mean_ratio", "--spike-window", "4", "--spike-threshold", "2",
                          "--smoothing", "0"});
  CHECK(r.status == 0);
  CHECK(r.err.empty());
  CHECK_THAT(r.out, Catch::StartsWith("spike       step 4 (line 6): loss 5 > limit 2, scale 0.4\n"));
  CHECK_THAT(r.out, Catch::Contains(
                        "  spike detector: mean_ratio (window 4, warm-up 4, threshold 2x the mean, level shift after 4 "
                        "spikes, dampen)\n"));
  CHECK_THAT(r.out, Catch::Contains("spikes: 1 (1 dampened, mean scale 0.4), skipped steps: 0"));
}

TEST_CASE("replay: spike flags override the chosen detector's defaults in any order", "[replay][detector]") {
  const std::vector<std::string> flags = {"--spike-threshold", "3",   "--spike-window",      "8",
                                          "--spike-warmup",    "5",   "--level-shift-after", "6",
                                          "--spike-min-ratio", "1.5", "--spike-min-excess",  "0.25"};
  for (const char* detector : {"mean_ratio", "median_ratio", "zscore", "mad_zscore", "ema_zscore"}) {
    CAPTURE(detector);
    // The detector first, last, and in the middle: the same settings.
    std::vector<std::string> first = {"--spike-detector", detector}, last = flags, middle = flags;
    first.insert(first.end(), flags.begin(), flags.end());
    last.insert(last.end(), {"--spike-detector", detector});
    middle.insert(middle.begin() + 4, {"--spike-detector", detector});
    for (const auto& args : {first, last, middle}) {
      const auto o = options_from(args);
      CHECK(std::string(rp::to_string(o.detector)) == detector);
      CHECK(o.spikes.window == 8);
      CHECK(o.spikes.warmup == 5);
      CHECK(o.spikes.level_shift_after == 6);
      CHECK(o.spikes.min_ratio == 1.5);
      CHECK(o.spikes.min_excess == 0.25);
      CHECK(o.spikes.threshold == 3.0);
    }
  }
  // --spike-threshold is the ratio, k or z, as each detector's config names it; the detector's
  // other settings keep their defaults.
  rp::spike_settings three;
  three.threshold = 3.0;
  const auto mean = rp::to_config<steadyloss::detect::mean_ratio>(three);
  const auto median = rp::to_config<steadyloss::detect::median_ratio>(three);
  const auto z = rp::to_config<steadyloss::detect::zscore>(three);
  const auto mad = rp::to_config<steadyloss::detect::mad_zscore>(three);
  const auto ema = rp::to_config<steadyloss::detect::ema_zscore>(three);
  CHECK(mean.detector.threshold == 3.0);
  CHECK(median.detector.threshold == 3.0);
  CHECK(z.detector.sigma_factor == 3.0);
  CHECK(mad.detector.sigma_factor == 3.0);
  CHECK(ema.detector.z_threshold == 3.0);
  CHECK(ema.detector.alpha == 0.97);
  // A detector other than the default, no value flags: its config's defaults, the original
  // window 10 and threshold 2.0, k 6, z 2.5.
  for (const auto& [d, threshold] : std::vector<std::pair<std::string, double>>{
           {"mean_ratio", 2.0}, {"median_ratio", 2.0}, {"zscore", 6.0}, {"ema_zscore", 2.5}}) {
    CAPTURE(d);
    const auto o = options_from({"--spike-detector", d});
    CHECK(o.spikes.window == 10);
    CHECK(o.spikes.warmup == 0);
    CHECK(o.spikes.level_shift_after == 0);
    CHECK(o.spikes.threshold == threshold);
  }
  // The default detector named explicitly is the default; a flag before or after it overrides.
  const auto named = options_from({"--spike-window", "60", "--spike-detector", "mad_zscore"});
  CHECK(named.spikes.window == 60);
  CHECK(named.spikes.warmup == steadyloss::presets::calibrated_spikes.warmup);
  CHECK(options_from({"--spike-detector", "mad_zscore"}).spikes.threshold ==
        steadyloss::presets::calibrated_spikes.detector.sigma_factor);
}

TEST_CASE("replay: a bad detector name or spike value is a usage error (exit status 2)", "[replay][detector][errors]") {
  const auto path = fixture("usage.csv", "step,loss\n0,1\n");
  const auto bad = run_cli({path, "--spike-detector", "median"});
  CHECK(bad.status == 2);
  CHECK(bad.out.empty());
  CHECK_THAT(bad.err, Catch::StartsWith("steadyloss-replay: --spike-detector: unknown detector 'median'; one of "
                                        "mean_ratio, median_ratio, zscore, mad_zscore, ema_zscore\nusage: "));
  CHECK(run_cli({path, "--spike-detector"}).status == 2);
  CHECK_THAT(run_cli({path, "--spike-min-ratio", "-1"}).err,
             Catch::StartsWith("steadyloss-replay: --spike-min-ratio: a number >= 0, got '-1'\n"));
  CHECK_THAT(run_cli({path, "--spike-warmup", "2.5"}).err,
             Catch::StartsWith("steadyloss-replay: --spike-warmup: a whole number"));
  // A value the detector rejects: the library's message, exit 2.
  const auto ratio = run_cli({path, "--spike-detector", "median_ratio", "--spike-threshold", "0.5"});
  CHECK(ratio.status == 2);
  CHECK(ratio.err == "steadyloss-replay: SpikeDampener: threshold must be finite and > 1, got 0.5\n");
  const auto help = run_cli({"--help"});
  CHECK(help.status == 0);
  CHECK_THAT(help.out, Catch::Contains("--spike-detector mean_ratio|median_ratio|zscore|mad_zscore|ema_zscore"));
  CHECK_THAT(help.out, Catch::Contains("--spike-threshold X  the ratio X (mean_ratio, median_ratio), k (zscore, "
                                       "mad_zscore), z (ema_zscore)"));
}

TEST_CASE("replay: ema_zscore watches the gradient norm column", "[replay][detector]") {
  // Warm-up 10 norms of 1: EMA mean 1, variance 0, limit 1 + 2.5 x 0 = 1. Step 10's norm 100 is a
  // spike: scale 1/100 (the norm clipped to the limit); the loss column plays no part.
  std::string text = "step,loss,grad_norm\n";
  for (int i = 0; i < 10; ++i) text += std::to_string(i) + ",1,1\n";
  text += "10,1,100\n11,50,1\n";
  const auto path = fixture("ema.csv", text);
  const auto r = run_cli({path, "--spike-detector", "ema_zscore"});
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::StartsWith("spike       step 10 (line 12): gradient norm 100 > limit 1, scale 0.01\n"));
  CHECK_THAT(r.out, Catch::Contains("  spike detector: ema_zscore (gradient norm, alpha 0.97, z 2.5, warm-up 10, level "
                                    "shift after 10 spikes, dampen)\n"));
  CHECK_THAT(r.out, Catch::Contains("  spikes: 1 (1 dampened, mean scale 0.01)"));
  // No gradient norm column: an error naming the flag, not a detector that never fires.
  const auto none = fixture("ema_none.csv", "step,loss\n0,1\n");
  const auto missing = run_cli({none, "--spike-detector", "ema_zscore"});
  CHECK(missing.status == 1);
  CHECK(missing.err == "steadyloss-replay: " + none +
                           ":1: --spike-detector ema_zscore watches the gradient norm; the log has no gradient norm "
                           "column (name it with --grad-norm-column)\n");
  const auto gap = fixture("ema_gap.csv", "step,loss,grad_norm\n0,1,1\n1,1,\n");
  CHECK(run_cli({gap, "--spike-detector", "ema_zscore"}).err ==
        "steadyloss-replay: " + gap +
            ":3: column 'grad_norm' is empty on a row with a training loss (--spike-detector ema_zscore needs it on "
            "every one)\n");
}

TEST_CASE("replay: every detector runs, the limit probe agreeing with the Stabilizer", "[replay][detector]") {
  // run() checks the probe (a second dampener of the same detector type) against the
  // Stabilizer's decision on every step and throws on a disagreement.
  std::string text = "step,loss,grad_norm,mel\n";
  for (int i = 0; i < 120; ++i)
    text += std::to_string(i) + "," + (i % 37 == 36 ? "20" : std::to_string(1.0 + 0.01 * (i % 7))) + "," +
            (i % 41 == 40 ? "30" : std::to_string(2.0 + 0.02 * (i % 5))) + ",1\n";
  const auto path = fixture("all_detectors.csv", text);
  for (const auto d : rp::spike_detectors) {
    const std::string name(rp::to_string(d));
    CAPTURE(name);
    for (const bool terms : {false, true}) {
      auto args = std::vector<std::string>{path, "--quiet", "--spike-detector", name};
      if (terms) args.insert(args.end(), {"--term-column", "mel"});
      const auto r = run_cli(args);
      CHECK(r.status == 0);
      CHECK(r.err.empty());
      CHECK_THAT(r.out, Catch::Contains("  spike detector: " + name + " ("));
      // Loss 20 at steps 36, 73, 110 (20x the level); gradient norm 30 at steps 40, 81 (15x).
      CHECK_THAT(r.out, Catch::Contains(d == rp::spike_detector::ema_zscore ? "  spikes: 2 (2 dampened"
                                                                             : "  spikes: 3 (3 dampened"));
    }
  }
}

namespace {
// A converged classifier's per-step training loss: a level near 0.005 times log-normal per-batch
// noise (the loss of a batch is a mean over few hard examples: right-skewed, heavy-tailed).
// mt19937_64 is specified bit for bit and Box-Muller is written out, so every standard library
// draws the same log.
std::string converged_classifier_log(double sigma, int steps, std::uint64_t seed) {
  std::mt19937_64 bits(seed);
  const auto uniform = [&] { return (double(bits() >> 11) + 1.0) * 0x1p-53; };  // (0, 1]
  std::string text = "step,loss\n";
  for (int i = 0; i < steps; ++i) {
    const double normal = std::sqrt(-2.0 * std::log(uniform())) * std::cos(2.0 * 3.141592653589793 * uniform());
    text += std::to_string(i) + "," + rp::detail::exact(0.005 * std::exp(sigma * normal)) + "\n";
  }
  return text;
}
}  // namespace

TEST_CASE("replay: on a converged classifier's heavy-tailed losses the default flags <= 1%, 2.0x the mean many",
          "[replay][detector]") {
  // 400 steps, log-normal sigma 0.6. Measured over 150 seeds (Python's generator): the default
  // flagged 0.55 steps on average, at most 4 (1%); the 2.0x-mean rule 66 on average (16%), at least
  // 35. At sigma 1 the default's bound does not hold (5 flags in 400 typical, up to 12): the
  // robust z-score's k = 10 covers tails up to about that of log-normal sigma 0.7.
  const auto path = fixture("converged_classifier.csv", converged_classifier_log(0.6, 400, 20261201));
  const auto spikes_of = [&](std::vector<std::string> flags) {
    std::ifstream in(path);
    rp::log_reader reader(in, path);
    std::ostringstream events;
    return rp::run_replay(reader, options_from(flags), events).spikes;
  };
  const long long calibrated = spikes_of({});
  const long long original = spikes_of({"--spike-detector", "mean_ratio"});  // window 10, 2.0x the mean
  INFO("calibrated: " << calibrated << " spikes, 2.0x the mean: " << original << " of 400 steps");
  CHECK(calibrated <= 4);    // <= 1% of 400
  CHECK(original > 40);      // > 10%
  CHECK(spikes_of({"--spike-detector", "mean_ratio", "--spike-window", "10", "--spike-threshold", "2"}) == original);
}
