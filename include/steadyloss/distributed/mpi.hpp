#pragma once
// An MPI Reducer for the Stabilizer: sums with MPI_Allreduce(MPI_SUM) over a communicator.
// Needs <mpi.h> (OpenMPI, MPICH); the rest of steadyloss does not.
//   sl::mpi_reducer reducer{MPI_COMM_WORLD};
//   auto guard = sl::with_reducer(reducer, sl::EmaSmoother<>{}, sl::SpikeDampener<>{}, ...);

// MPI's deprecated C++ bindings are not needed and trip -Wcast-function-type; skip them.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <span>
#include <stdexcept>
#include <string>

#include "../core/errors.hpp"
#include "../stability/reducer.hpp"

namespace steadyloss {

class mpi_reducer {
 public:
  explicit mpi_reducer(MPI_Comm communicator) : communicator_(communicator) {
    if (MPI_Comm_size(communicator_, &size_) != MPI_SUCCESS)
      detail::fail<invalid_parameter>("mpi_reducer: MPI_Comm_size failed on the communicator");
  }
  void sum(std::span<double> values) {
    const int rc = MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE,
                                 MPI_SUM, communicator_);
    if (rc != MPI_SUCCESS) throw std::runtime_error("steadyloss::mpi_reducer: MPI_Allreduce failed, code " +
                                                    std::to_string(rc));
  }
  int size() const noexcept { return size_; }
  MPI_Comm communicator() const noexcept { return communicator_; }

 private:
  MPI_Comm communicator_;
  int size_ = 1;
};

static_assert(Reducer<mpi_reducer>);

}  // namespace steadyloss
