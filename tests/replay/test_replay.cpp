// The replay tool's log reader and its output (tools/replay). Fixtures are small CSV/TSV files
// written by the tests themselves; expected events are worked out by hand from the policies'
// documented rules.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "log_reader.hpp"
#include "replay.hpp"

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
  rp::column_choice c;
  c.loss = "total";
  c.grad_norm = "gn";
  c.terms = {"mel", "stop"};
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

TEST_CASE("blank lines are skipped; a last line without newline is read", "[replay][reader]") {
  const auto path = fixture("blank.csv", "step,loss\n\n1,0.5\n   \n2,0.25");
  const auto rows = read_all(path);
  REQUIRE(rows.size() == 2);
  CHECK(rows[1].line == 5);
  CHECK(*rows[1].loss == 0.25);
}

TEST_CASE("replay: a spike is dampened to threshold x the window mean", "[replay][output]") {
  // Window 4, threshold 2: steps 0-3 fill the window with 1.0; step 4 (loss 5) exceeds the limit
  // 2 x 1 = 2, so its scale is 2/5 = 0.4.
  const auto path = fixture("spike.csv", "step,loss\n0,1\n1,1\n2,1\n3,1\n4,5\n5,1\n");
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  rp::replay_options o;
  o.spike_window = 4;
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
  CHECK(header == "line,step,loss,validation_loss,grad_norm,scale,spike,skipped,smoothed,stability_score,best,wait,should_stop");
  std::vector<std::string> rows;
  while (std::getline(lines, line)) rows.push_back(line);
  REQUIRE(rows.size() == 6);
  // Smoothing 0: the smoothed value is the effective (dampened) loss 2; the best stays 1 (step 0).
  CHECK_THAT(rows[4], Catch::StartsWith("6,4,5,,,0.4,1,0,2,"));
  CHECK_THAT(rows[4], Catch::EndsWith(",1,4,0"));
}

TEST_CASE("replay: a loss that settles at a new level is a level shift, not a spike forever", "[replay][output]") {
  // Window 4, threshold 2: level 1 for steps 0-3, then 3 from step 4 on. Steps 4-6 are spikes
  // (scale 2/3); step 7, the 4th in a row, becomes the new reference level and later rows pass.
  const auto path = fixture("shift.csv", "step,loss\n0,1\n1,1\n2,1\n3,1\n4,3\n5,3\n6,3\n7,3\n8,3\n9,3\n");
  std::ifstream in(path);
  rp::log_reader reader(in, path);
  rp::replay_options o;
  o.spike_window = 4;
  o.smoothing = 0;
  std::ostringstream events;
  const auto s = rp::run_replay(reader, o, events);
  CHECK(s.spikes == 3);
  CHECK(s.dampened == 3);
  CHECK(s.level_shifts == 1);
  CHECK_THAT(events.str(), Catch::Contains("level shift step 7 (line 9): loss 3 after 3 spikes in a row"));
  CHECK_THAT(events.str(), Catch::Contains("skipped steps: 0 (0 non-finite), level shifts: 1\n"));
}

TEST_CASE("replay: non-finite loss is skipped; early stop on validation with best step", "[replay][output]") {
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
  o.patience = 2;
  o.smoothing = 0;  // the monitor sees the raw validation values
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
  rp::replay_options o;
  o.mode = steadyloss::stop_mode::max;
  o.patience = 2;
  o.smoothing = 0;
  o.min_delta = 0;
  o.spike_window = 10;  // never fills: no spike decisions
  std::ostringstream events;
  const auto s = rp::run_replay(reader, o, events);
  CHECK_FALSE(s.monitors_validation);
  CHECK(s.stopped);
  CHECK(s.stop_step == 4);  // 3 at epoch 2 is the best; epochs 3 and 4 do not beat it
  CHECK(s.best == 3);
  CHECK(s.best_step == 2);
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
