// Multi-rank consistency under mpirun -np 4: ranks see different local losses, rank 2 injects
// spikes and a NaN; every rank's step report must equal rank 0's, bit for bit, at every step,
// and all ranks must stop at the same step. Exit code 0 = pass.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

#include <steadyloss/distributed/mpi.hpp>
#include <steadyloss/stability/stability.hpp>

#include "report_fields.hpp"

namespace sl = steadyloss;

using report_fields::flatten;

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int failures = 0;
  {
    auto guard = sl::with_reducer(sl::mpi_reducer{MPI_COMM_WORLD}, sl::SpikeDampener<double>{},
                                  sl::EmaSmoother<double>{}, sl::AdaptiveWeight<2, double>{},
                                  sl::EarlyStopper<double>({.patience = 15, .min_delta = 0.001}),
                                  sl::StabilityMetrics<double>{});
    int spikes = 0, non_finite = 0, stopped_at = -1;
    for (int step = 0; step < 400; ++step) {
      // Falls, then plateaus (so patience runs out); each rank a different level and batch size.
      const double level = 1.0 + 2.0 * std::exp(-0.05 * step);
      sl::composed_result<double, 2> r;
      r.values = {level * (1.0 + 0.1 * rank) + 0.01 * std::sin(step + rank), 0.2 + 0.05 * rank};
      if (rank == 2 && (step == 40 || step == 70)) r.values[0] *= 30.0;  // local spikes
      if (rank == 2 && step == 55) r.values[1] = std::numeric_limits<double>::quiet_NaN();
      r.weights = {35.0, 1.0};
      r.denominators = {100.0 + 10.0 * rank, 100.0 + 10.0 * rank};
      r.total = 35.0 * r.values[0] + r.values[1];
      const double grad_norm = 1.0 + 0.1 * std::cos(step);
      const auto report = guard.update(r, grad_norm);
      spikes += report.is_spike;
      non_finite += report.non_finite;

      const std::vector<double> mine = flatten(report);
      std::vector<double> all(mine.size() * static_cast<std::size_t>(size));
      MPI_Gather(mine.data(), static_cast<int>(mine.size()), MPI_DOUBLE, all.data(), static_cast<int>(mine.size()),
                 MPI_DOUBLE, 0, MPI_COMM_WORLD);
      if (rank == 0)
        for (int other = 1; other < size; ++other)
          for (std::size_t i = 0; i < mine.size(); ++i)
            if (std::bit_cast<std::uint64_t>(all[other * mine.size() + i]) != std::bit_cast<std::uint64_t>(mine[i])) {
              std::printf("step %d: rank %d field %zu differs from rank 0\n", step, other, i);
              ++failures;
            }
      // A stop decided on some ranks only would hang the others: detect it instead of hanging.
      int stop = report.should_stop ? 1 : 0, any = 0, every = 0;
      MPI_Allreduce(&stop, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
      MPI_Allreduce(&stop, &every, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
      if (any != every) {
        if (rank == 0) std::printf("step %d: ranks disagree on should_stop\n", step);
        ++failures;
      }
      if (any) {
        stopped_at = step;
        break;
      }
    }
    if (rank == 0) {
      std::printf("ranks %d, stop step %d, spikes %d, non-finite steps %d\n", size, stopped_at, spikes, non_finite);
      if (stopped_at < 0) { std::printf("never stopped\n"); ++failures; }
      if (spikes < 2) { std::printf("rank 2's spikes were not seen globally\n"); ++failures; }
      if (non_finite != 1) { std::printf("rank 2's NaN was not seen globally\n"); ++failures; }
    }
  }
  MPI_Bcast(&failures, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  if (rank == 0) std::printf(failures == 0 ? "PASS\n" : "FAIL (%d)\n", failures);
  return failures == 0 ? 0 : 1;
}
