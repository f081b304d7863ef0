// libFuzzer target for the replay tool's log reader and replay loop: any input must end in rows
// or a log_error, never a crash, a sanitizer report, a leak or unbounded memory.
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//       tools/replay/fuzz_log_reader.cpp -o replay_fuzz && ./replay_fuzz -max_total_time=20
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include "log_reader.hpp"
#include "replay.hpp"

namespace rp = steadyloss::replay;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks the reader's and the replay's options; the rest is the file.
  const std::uint8_t knobs = data[0];
  std::istringstream in(std::string(reinterpret_cast<const char*>(data) + 1, size - 1));
  rp::column_choice columns;
  columns.need_loss = (knobs & 1) != 0;
  if (knobs & 2) columns.terms = {"a", "b"};
  rp::reader_options reader_options;
  reader_options.delimiter = (knobs & 4) ? '\t' : 0;
  reader_options.reject_non_finite = (knobs & 8) != 0;
  reader_options.max_line_bytes = (knobs & 16) ? 64 : 4096;
  rp::replay_options options;
  options.patience = (knobs >> 5) & 3;
  // The validation monitor's switches share those two bits: every combination of them is reached.
  options.stop_on_non_finite = (knobs & 32) != 0;
  options.smooth_validation = (knobs & 64) != 0;
  // Every detector (ema_zscore needs a gradient norm column: a log_error without one), window 2.
  rp::spike_flags spikes;
  spikes.window = 2;
  spikes.warmup = 0;
  spikes.mode = (knobs & 128) ? steadyloss::spike_mode::skip : steadyloss::spike_mode::dampen;
  options.set_spikes(rp::spike_detectors[std::size_t(knobs >> 1) % rp::spike_detectors.size()], spikes);
  try {
    rp::log_reader reader(in, "fuzz.csv", columns, reader_options);
    if (reader.loss_column().empty()) {
      for (rp::log_row row; reader.next(row);) {
      }
      return 0;
    }
    std::ostringstream events, annotated;
    const auto summary = rp::run_replay(reader, options, events, &annotated);
    // The plot script gets finite numbers only, whatever the log held.
    for (const auto scale : {rp::plot_scale::automatic, rp::plot_scale::log}) {
      std::ostringstream script;
      rp::write_plot_script(script, {.png = "fuzz.png", .data = "fuzz.csv", .title = "fuzz.csv", .scale = scale},
                            summary);
      if (script.str().find("nan") != std::string::npos || script.str().find("inf") != std::string::npos)
        std::abort();
    }
  } catch (const rp::log_error&) {
  }
  return 0;
}
