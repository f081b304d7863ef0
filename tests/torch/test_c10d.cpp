// The c10d Reducer (steadyloss/distributed/c10d.hpp) over ProcessGroupGloo + FileStore with
// 2 to 4 local processes forked from this program (argv[1], default 4). Ranks see different
// local losses and batch sizes, rank 1 injects spikes and a NaN; every rank's step report must
// equal rank 0's, bit for bit, at every step, and all ranks must stop at the same step.
// Prints PASS and exits 0 on success.
#include <steadyloss/distributed/c10d.hpp>
#include <steadyloss/stability/stability.hpp>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include "../stability/report_fields.hpp"

namespace sl = steadyloss;
using report_fields::flatten;

namespace {

int run_rank(const std::string& store_path, int rank, int size) {
  auto store = c10::make_intrusive<c10d::FileStore>(store_path, size);
  auto options = c10d::ProcessGroupGloo::Options::create();
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);

  auto guard = sl::with_reducer(sl::c10d_reducer{group}, sl::SpikeDampener<double>{}, sl::EmaSmoother<double>{},
                                sl::AdaptiveWeight<2, double>{},
                                sl::EarlyStopper<double>({.patience = 15, .min_delta = 0.001}),
                                sl::StabilityMetrics<double>{});
  int failures = 0, spikes = 0, non_finite = 0, stopped_at = -1;
  for (int step = 0; step < 400; ++step) {
    // Falls, then plateaus (so patience runs out); each rank a different level and batch size.
    const double level = 1.0 + 2.0 * std::exp(-0.05 * step);
    sl::composed_result<double, 2> r;
    r.values = {level * (1.0 + 0.1 * rank) + 0.01 * std::sin(step + rank), 0.2 + 0.05 * rank};
    if (rank == 1 && (step == 40 || step == 70)) r.values[0] *= 30.0;  // local spikes
    if (rank == 1 && step == 55) r.values[1] = std::numeric_limits<double>::quiet_NaN();
    r.weights = {35.0, 1.0};
    r.denominators = {100.0 + 10.0 * rank, 100.0 + 10.0 * rank};
    r.total = 35.0 * r.values[0] + r.values[1];
    const auto report = guard.update(r, 1.0 + 0.1 * std::cos(step));
    spikes += report.is_spike;
    non_finite += report.non_finite;

    // Every rank compares every rank's report with rank 0's (an allgather through the same group).
    const std::vector<double> mine = flatten(report);
    std::vector<at::Tensor> input{at::tensor(mine, at::kDouble)};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int other = 0; other < size; ++other) output[0].push_back(at::empty_like(input[0]));
    group->allgather(output, input)->wait();
    const auto* reference = output[0][0].data_ptr<double>();
    for (int other = 1; other < size; ++other) {
      const auto* theirs = output[0][static_cast<std::size_t>(other)].data_ptr<double>();
      for (std::size_t i = 0; i < mine.size(); ++i)
        if (std::bit_cast<std::uint64_t>(theirs[i]) != std::bit_cast<std::uint64_t>(reference[i])) {
          std::printf("rank %d: step %d: rank %d field %zu differs from rank 0\n", rank, step, other, i);
          ++failures;
        }
    }
    if (report.should_stop) {
      stopped_at = step;
      break;  // equal reports imply every rank stops here
    }
  }
  if (rank == 0) {
    std::printf("ranks %d, stop step %d, spikes %d, non-finite steps %d\n", size, stopped_at, spikes, non_finite);
    if (stopped_at < 0) { std::printf("never stopped\n"); ++failures; }
    if (spikes < 2) { std::printf("rank 1's spikes were not seen globally\n"); ++failures; }
    if (non_finite != 1) { std::printf("rank 1's NaN was not seen globally\n"); ++failures; }
  }
  std::fflush(stdout);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const int size = argc > 1 ? std::atoi(argv[1]) : 4;
  if (size < 2 || size > 8) {
    std::printf("FAIL: ranks must be in [2, 8], got %d\n", size);
    return 2;
  }
  // FileStore needs a file no earlier run left behind; the parent removes it at the end.
  const std::string store_path = "/tmp/steadyloss_c10d_store_" + std::to_string(getpid());
  std::remove(store_path.c_str());
  std::fflush(stdout);
  std::vector<pid_t> children;
  for (int rank = 0; rank < size; ++rank) {
    const pid_t pid = fork();
    if (pid < 0) {
      std::perror("fork");
      return 2;
    }
    if (pid == 0) {
      int code = 1;
      try {
        code = run_rank(store_path, rank, size);
      } catch (const std::exception& e) {
        std::printf("rank %d: exception: %s\n", rank, e.what());
      }
      std::fflush(stdout);
      _exit(code);  // no parent-inherited atexit handlers or static destructors in the child
    }
    children.push_back(pid);
  }
  int failed = 0;
  for (const pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  std::remove(store_path.c_str());
  if (failed == 0) std::printf("PASS (%d ranks)\n", size);
  else std::printf("FAIL (%d of %d ranks)\n", failed, size);
  return failed == 0 ? 0 : 1;
}
