#pragma once
// A LibTorch c10d Reducer for the Stabilizer: sums with an all-reduce (SUM) over a
// c10d::ProcessGroup, so a LibTorch DDP job keeps every rank's step decisions equal without MPI.
// Needs LibTorch's c10d headers (torch/csrc/distributed/c10d); the rest of steadyloss does not.
//
//   auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, options);
//   auto guard = sl::with_reducer(sl::c10d_reducer{group}, sl::EmaSmoother<>{}, sl::SpikeDampener<>{}, ...);
//
// Gloo all-reduces CPU tensors: the default device (CPU) wraps the values in place, no copy.
// NCCL all-reduces CUDA tensors only: pass the rank's CUDA device,
// sl::c10d_reducer{nccl_group, torch::Device(torch::kCUDA, local_rank)}, and the few doubles
// are copied there and back each step. Both backends give every rank the same bits (each
// reduced chunk is computed once and then broadcast), which the Reducer contract needs.
// sum() blocks until the all-reduce has completed (Work::wait), so every rank must call it,
// with the same count, at the same step, as with any collective.

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "../core/errors.hpp"
#include "../stability/reducer.hpp"

namespace steadyloss {

class c10d_reducer {
 public:
  explicit c10d_reducer(c10::intrusive_ptr<::c10d::ProcessGroup> group, at::Device device = at::Device(at::kCPU))
      : group_(std::move(group)), device_(device) {
    if (!group_) detail::fail<invalid_parameter>("c10d_reducer: the process group is null");
  }

  void sum(std::span<double> values) {
    if (values.empty()) return;
    const at::Tensor host = at::from_blob(values.data(), {static_cast<std::int64_t>(values.size())},
                                          at::TensorOptions().dtype(at::kDouble));
    std::vector<at::Tensor> tensors{device_.is_cpu() ? host : host.to(device_)};
    ::c10d::AllreduceOptions options;
    options.reduceOp = ::c10d::ReduceOp::SUM;
    group_->allreduce(tensors, options)->wait();
    if (!device_.is_cpu()) host.copy_(tensors[0]);  // synchronous: the values are read right after
  }

  int size() const { return group_->getSize(); }
  int rank() const { return group_->getRank(); }
  const c10::intrusive_ptr<::c10d::ProcessGroup>& group() const noexcept { return group_; }

 private:
  c10::intrusive_ptr<::c10d::ProcessGroup> group_;
  at::Device device_;
};

static_assert(Reducer<c10d_reducer>);

}  // namespace steadyloss
