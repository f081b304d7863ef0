#pragma once
// The reduction hook through which a Stabilizer makes every rank see the same step inputs.
// A Reducer sums a few doubles in place across all ranks (an all-reduce) and knows how many
// ranks there are. Every rank must call sum() with the same count, in the same order, and the
// reduction must give every rank bit-identical results (MPI_Allreduce and NCCL/c10d all-reduce
// do for a fixed communicator and count), so that every rank then takes identical decisions.
// The MPI and c10d reducers live in distributed/; the single-process one is here, next to the
// Stabilizer that uses it by default.

#include <concepts>
#include <span>

namespace steadyloss {

template <class R>
concept Reducer = requires(R& reducer, std::span<double> values) {
  reducer.sum(values);
  { reducer.size() } -> std::convertible_to<int>;
};

/// The single-process reducer: sum() leaves the values as they are (one rank's sum is itself).
struct local_reducer {
  void sum(std::span<double>) noexcept {}
  int size() const noexcept { return 1; }
};

static_assert(Reducer<local_reducer>);

}  // namespace steadyloss
