#pragma once
// LibTorch adapter: steadyloss terms and composed losses on torch::Tensor, connected to autograd.
//
//   #include <steadyloss/steadyloss.hpp>
//   #include <steadyloss/backend/torch.hpp>
//   namespace sl = steadyloss;
//
//   // One term, like torch::nn::functional: a 0-dim tensor connected to autograd.
//   torch::Tensor l = sl::libtorch::loss(sl::Huber<float>{.delta = 1.0f}, pred, target);
//   torch::Tensor m = sl::libtorch::loss(sl::term(sl::MSE<float>{}, 2.0f, sl::reduction::sum), pred, target);
//   torch::Tensor w = sl::libtorch::loss(sl::L1<float>{}, pred, target, frame_mask);     // masked mean
//
//   // A composed loss: one sl::libtorch::inputs(...) per term, in term order.
//   auto loss = sl::compose(sl::term(sl::Huber<float>{}, 35.0f),
//                           sl::term(sl::LabelSmoothing{sl::BalancedBCE<float>{}, 0.05f}, 1.0f));
//   auto out = sl::libtorch::evaluate(loss,
//       sl::libtorch::inputs(mel_pred, mel_target, sl::libtorch::lengths(lengths)),      // [B, T, 80]
//       sl::libtorch::inputs(stop_logits, stop_target, sl::libtorch::lengths(lengths))); // [B, T]
//   out.total.backward();                    // d total / d mel_pred, d total / d stop_logits
//   auto step = guard.update(out.result, grad_norm);   // out.result: sl::composed_result<float, 2>
//   sl::apply(loss, step);
//
//   sl::parallel_executor pool(4);           // large CPU tensors: the fused passes on 4 threads
//   auto big = sl::libtorch::evaluate_on(pool, loss, sl::libtorch::inputs(...), sl::libtorch::inputs(...));
//
// How it runs: the forward of a torch::autograd::Function calls the core's executor (the serial
// one, or evaluate_on's, through composed_loss::evaluate_on) on the tensors' data, computing every
// term's value AND its gradient w.r.t. pred in one fused pass, and saves the gradients. Backward
// only scales the saved gradients by the incoming gradient (and returns them without a copy when
// that is exactly 1, as for `total.backward()`). With grad mode off, or when no pred requires
// grad, only values are computed.
//
// Double backward is not supported, and is an error rather than a wrong number: the saved
// gradient is a constant to autograd, so a second derivative through it would silently miss the
// term's own curvature. As PyTorch's @once_differentiable does, a backward run with
// create_graph=true still returns the right first-order gradients, but behind an autograd node
// that throws (std::runtime_error, "steadyloss::libtorch: the gradient of a steadyloss loss
// cannot be differentiated again ...") when a later backward reaches it:
//   auto g = torch::autograd::grad({l}, {pred}, {}, /*retain_graph=*/true, /*create_graph=*/true);
//   torch::autograd::grad({g[0].sum()}, {pred});   // throws
// Failing there, not at the first call, keeps create_graph=true usable for a graph whose second
// derivatives never pass through a steadyloss term, and fails every one that does.
//
// Inputs (c10::Error, from TORCH_CHECK, naming the argument, when they do not fit):
//   pred, target  same shape (no broadcasting), same dtype, same device. dtype float32 for float
//                 terms, float64 for double terms (Huber<double>, ...); on CUDA also float16 and
//                 bfloat16 for float terms (computed and accumulated in float32).
//                 target must not require grad: gradients are w.r.t. pred only (detach it).
//                 Non-contiguous tensors are copied to a contiguous temporary first (a copy of
//                 that tensor's size); pass contiguous tensors to avoid it.
//   mask          sl::libtorch::inputs(pred, target, mask): a tensor whose shape is pred's leading
//                 dimensions ([B, T] over [B, T, 80]) or pred's shape; any floating or bool dtype
//                 (converted to the compute dtype, a copy the size of the mask), same device.
//                 mean = sum(w l) / sum(w), a zero weight drops the element (see the core).
//   lengths       sl::libtorch::lengths(lengths): an integer tensor (or a std::vector / span of
//                 integers) of pred.size(0) valid frame counts over a padded [B, max_frames, ...]
//                 pred, max_frames = pred.size(1). Read on the host (a CUDA lengths tensor is
//                 copied there; it is B integers).
// Parameter and data errors found by the core (a bad delta, a BCE target outside [0, 1], an
// all-zero mask, lengths > max_frames) are steadyloss::error exceptions, as everywhere else.
//
// Devices: CPU always (the core's single-threaded fused pass). CUDA tensors run the CUDA
// executor (steadyloss/backend/cuda/, on the current stream of pred's device) when
// STEADYLOSS_WITH_CUDA is defined: the build defines it when LibTorch has CUDA (CMake:
// `if(TORCH_CUDA_LIBRARIES) target_compile_definitions(app PRIVATE STEADYLOSS_WITH_CUDA)`), and
// the program then links one .cu file, compiled by nvcc -std=c++20, that includes
// <steadyloss/backend/cuda/builtin_terms.cuh> (the kernels; this header and the translation units
// that include it stay plain g++ ones). Without STEADYLOSS_WITH_CUDA a CUDA tensor is a
// c10::Error saying so. The CUDA path copies the per-term values back to the host (one stream
// synchronization per evaluation) because the result, and the Stabilizer after it, needs them as
// numbers; its sums are deterministic (the same bits on every run; see cuda/fused_kernel.cuh).
//
// The tensor_traits specialization below also lets the core's own API take torch::Tensor
// directly, with no autograd: sl::inputs(pred, target) and sl::grads(g) on contiguous CPU
// float32 tensors (its value_type must be a compile-time type, and float32 is the training one);
// for float64 use sl::libtorch::span<const double>(t) / sl::libtorch::span<double>(g).

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <ranges>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/evaluate.hpp"
#include "../core/inputs.hpp"
#include "../core/reduction.hpp"
#include "../core/tensor_traits.hpp"
#include "../core/term.hpp"
#include "../loss/compose.hpp"

#if defined(STEADYLOSS_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>

#include "cuda/executor.hpp"
#define STEADYLOSS_TORCH_CUDA_EXECUTOR 1
#else
#define STEADYLOSS_TORCH_CUDA_EXECUTOR 0
#endif

namespace steadyloss {
namespace libtorch {

// ---------------------------------------------------------------------------------------------
// Inputs

/// No weighting: every element counts once.
struct no_weights {};

/// Per-element or per-frame weights (shape = pred's leading dimensions, or pred's shape).
struct mask_weights {
  at::Tensor mask;
};

/// Per-sequence valid lengths over a padded [batch, max_frames, ...] pred.
struct length_weights {
  at::Tensor lengths;
};

/// Valid frames per sequence: an integer tensor, or any contiguous range of integers (copied).
inline length_weights lengths(const at::Tensor& valid_lengths) { return {valid_lengths}; }

template <class Range>
  requires std::ranges::contiguous_range<Range> && std::integral<std::ranges::range_value_t<Range>>
length_weights lengths(const Range& valid_lengths) {
  std::vector<std::int64_t> copy(std::ranges::begin(valid_lengths), std::ranges::end(valid_lengths));
  return {at::tensor(copy, at::kLong)};
}

/// One term's tensors. Keeps the tensors (reference-counted handles), so temporaries are fine.
template <class Weighting = no_weights>
struct tensor_inputs {
  at::Tensor pred;
  at::Tensor target;
  Weighting weighting{};
};

inline tensor_inputs<no_weights> inputs(at::Tensor pred, at::Tensor target) {
  return {std::move(pred), std::move(target), {}};
}
inline tensor_inputs<mask_weights> inputs(at::Tensor pred, at::Tensor target, at::Tensor mask) {
  return {std::move(pred), std::move(target), {std::move(mask)}};
}
inline tensor_inputs<length_weights> inputs(at::Tensor pred, at::Tensor target, length_weights valid_lengths) {
  return {std::move(pred), std::move(target), std::move(valid_lengths)};
}

/// What sl::libtorch::evaluate returns: the weighted total as a 0-dim tensor connected to autograd
/// (pred's dtype and device), and the same numbers as the core's composed_result (per-term
/// values, weights, denominators, total) for the step policies.
template <class T, std::size_t N>
struct composed_output {
  at::Tensor total;
  composed_result<T, N> result;
};

/// A checked std::span over a contiguous CPU tensor's elements (the core's plain backend), for
/// dtypes other than float32 with the core API: sl::inputs(sl::libtorch::span<const double>(p), ...).
template <class T>
std::span<T> span(const at::Tensor& tensor);

namespace detail {

using steadyloss::detail::fail;

template <class T>
constexpr at::ScalarType scalar_type_of() {
  if constexpr (std::is_same_v<T, float>) return at::kFloat;
  else return at::kDouble;
}

inline bool cuda_executor_available() { return STEADYLOSS_TORCH_CUDA_EXECUTOR != 0; }

/// The dtypes a term of value_type T accepts on pred's device.
template <class T>
bool accepts_dtype(at::ScalarType dtype, bool on_cuda) {
  if (dtype == scalar_type_of<T>()) return true;
  return on_cuda && std::is_same_v<T, float> && (dtype == at::kHalf || dtype == at::kBFloat16);
}

template <class T>
const char* accepted_dtypes(bool on_cuda) {
  if constexpr (std::is_same_v<T, float>)
    return on_cuda ? "float32, float16 or bfloat16 (a float term)" : "float32 (a float term; float64 needs a double term)";
  else
    return "float64 (a double term; float32 needs a float term)";
}

/// A term's tensors after checking: contiguous, on one device, weighting in executor form.
template <class Weighting>
struct prepared_term {
  at::Tensor pred;     // contiguous
  at::Tensor target;   // contiguous
  at::Tensor weights;  // mask: contiguous, compute dtype, pred's device; lengths: int64 CPU
  std::size_t max_frames = 0;
};

template <class T, class Weighting>
prepared_term<Weighting> prepare(const tensor_inputs<Weighting>& in, const char* function, std::size_t index) {
  const at::Tensor& pred = in.pred;
  const at::Tensor& target = in.target;
  TORCH_CHECK(pred.defined(), function, ": pred of term ", index, " is an undefined tensor");
  TORCH_CHECK(target.defined(), function, ": target of term ", index, " is an undefined tensor");
  const bool on_cuda = pred.is_cuda();
  TORCH_CHECK(pred.is_cpu() || on_cuda, function, ": pred of term ", index, " is on ", pred.device(),
              "; steadyloss runs on CPU and CUDA tensors");
  TORCH_CHECK(target.device() == pred.device(), function, ": target of term ", index, " is on ",
              target.device(), " but pred is on ", pred.device(), "; put both on one device");
  TORCH_CHECK(accepts_dtype<T>(pred.scalar_type(), on_cuda), function, ": pred of term ", index, " has dtype ",
              pred.scalar_type(), "; this term needs ", accepted_dtypes<T>(on_cuda));
  TORCH_CHECK(target.scalar_type() == pred.scalar_type(), function, ": target of term ", index, " has dtype ",
              target.scalar_type(), " but pred has ", pred.scalar_type(), "; they must match");
  TORCH_CHECK(target.sizes() == pred.sizes(), function, ": target of term ", index, " has shape ",
              target.sizes(), " but pred has shape ", pred.sizes(), " (no broadcasting)");
  TORCH_CHECK(!target.requires_grad(), function, ": target of term ", index,
              " requires grad; steadyloss differentiates w.r.t. pred only (pass target.detach())");
  TORCH_CHECK(pred.numel() > 0, function, ": pred of term ", index, " is empty");
  TORCH_CHECK(!on_cuda || cuda_executor_available(), function, ": pred of term ", index,
              " is a CUDA tensor, but the CUDA executor is not compiled in: define STEADYLOSS_WITH_CUDA and "
              "link a .cu file including steadyloss/backend/cuda/builtin_terms.cuh (see steadyloss/backend/torch.hpp)");

  prepared_term<Weighting> out{pred.contiguous(), target.contiguous(), {}, 0};
  if constexpr (std::is_same_v<Weighting, mask_weights>) {
    const at::Tensor& mask = in.weighting.mask;
    TORCH_CHECK(mask.defined(), function, ": mask of term ", index, " is an undefined tensor");
    TORCH_CHECK(mask.device() == pred.device(), function, ": mask of term ", index, " is on ", mask.device(),
                " but pred is on ", pred.device(), "; put both on one device");
    TORCH_CHECK(at::isFloatingType(mask.scalar_type()) || mask.scalar_type() == at::kBool, function,
                ": mask of term ", index, " has dtype ", mask.scalar_type(), "; use a floating or bool mask");
    const bool prefix = mask.dim() <= pred.dim() && mask.sizes() == pred.sizes().slice(0, static_cast<std::size_t>(mask.dim()));
    TORCH_CHECK(prefix && mask.numel() > 0, function, ": mask of term ", index, " has shape ", mask.sizes(),
                "; it must be pred's shape ", pred.sizes(), " or its leading dimensions (a [B, T] mask over [B, T, C])");
    out.weights = mask.to(on_cuda ? at::kFloat : scalar_type_of<T>()).contiguous();
  } else if constexpr (std::is_same_v<Weighting, length_weights>) {
    const at::Tensor& lengths = in.weighting.lengths;
    TORCH_CHECK(lengths.defined(), function, ": lengths of term ", index, " is an undefined tensor");
    TORCH_CHECK(at::isIntegralType(lengths.scalar_type(), /*includeBool=*/false), function, ": lengths of term ",
                index, " has dtype ", lengths.scalar_type(), "; use an integer tensor (int32 or int64)");
    TORCH_CHECK(lengths.dim() == 1, function, ": lengths of term ", index, " has shape ", lengths.sizes(),
                "; use one length per sequence, shape [batch]");
    TORCH_CHECK(pred.dim() >= 2 && lengths.size(0) == pred.size(0), function, ": lengths of term ", index, " has ",
                lengths.size(0), " entries but pred has shape ", pred.sizes(),
                "; lengths need a padded [batch, max_frames, ...] pred with one length per batch entry");
    out.weights = lengths.to(at::kCPU, at::kLong).contiguous();
    out.max_frames = static_cast<std::size_t>(pred.size(1));
  }
  return out;
}

/// The core's view of a prepared CPU term.
template <class T, class Weighting>
auto core_inputs(const prepared_term<Weighting>& p) {
  const tensor_view<T> pred{p.pred.template data_ptr<T>(), static_cast<std::size_t>(p.pred.numel())};
  const tensor_view<T> target{p.target.template data_ptr<T>(), static_cast<std::size_t>(p.target.numel())};
  // prepare() checked the shapes, so the frame sizes below divide exactly.
  if constexpr (std::is_same_v<Weighting, mask_weights>) {
    const std::size_t mask_size = static_cast<std::size_t>(p.weights.numel());
    return term_inputs<T, frame_mask<T>>{
        pred, target, {{p.weights.template data_ptr<T>(), mask_size}, pred.size / mask_size}};
  } else if constexpr (std::is_same_v<Weighting, length_weights>) {
    const std::size_t batch = static_cast<std::size_t>(p.weights.numel());
    return term_inputs<T, sequence_lengths<std::int64_t>>{
        pred, target,
        {p.weights.template data_ptr<std::int64_t>(), batch, p.max_frames, pred.size / (batch * p.max_frames)}};
  } else {
    return term_inputs<T>{pred, target, {}};
  }
}

/// Runs the composed loss on prepared terms; fills `grads` (one per term, pred's shape) when
/// with_grads. Returns the core's result.
template <class Loss, class Exec, class Prepared, std::size_t... I>
composed_result<typename Loss::value_type, Loss::size> run_cpu(const Loss& loss, const Exec& executor,
                                                               const Prepared& prepared,
                                                               std::vector<at::Tensor>* grads,
                                                               std::index_sequence<I...>) {
  using T = typename Loss::value_type;
  if (grads == nullptr) return loss.evaluate_on(executor, core_inputs<T>(std::get<I>(prepared))...);
  grads->clear();
  (grads->push_back(at::empty(std::get<I>(prepared).pred.sizes(), std::get<I>(prepared).pred.options())), ...);
  const grad_outputs<T, Loss::size> outputs{
      {mutable_tensor_view<T>{(*grads)[I].template data_ptr<T>(), static_cast<std::size_t>((*grads)[I].numel())}...}};
  return loss.evaluate_on(executor, core_inputs<T>(std::get<I>(prepared))..., outputs);
}

/// Each term's reduction, as the CUDA executor needs them one by one.
template <class Loss>
std::array<reduction, Loss::size> reductions_of(const Loss& loss) {
  std::array<reduction, Loss::size> out{};
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((out[I] = loss.template reduction<I>()), ...);
  }(std::make_index_sequence<Loss::size>{});
  return out;
}

#if STEADYLOSS_TORCH_CUDA_EXECUTOR
template <class Weighting>
cuda::term_weighting cuda_weighting(const prepared_term<Weighting>& p, at::Tensor& device_lengths) {
  cuda::term_weighting w;
  if constexpr (std::is_same_v<Weighting, mask_weights>) {
    w.kind = cuda::weighting_kind::mask;
    w.mask = p.weights.template data_ptr<float>();
    w.mask_size = static_cast<std::size_t>(p.weights.numel());
    w.frame_size = static_cast<std::size_t>(p.pred.numel()) / w.mask_size;
  } else if constexpr (std::is_same_v<Weighting, length_weights>) {
    w.kind = cuda::weighting_kind::lengths;
    device_lengths = p.weights.to(p.pred.device());
    w.lengths_host = p.weights.template data_ptr<std::int64_t>();
    w.lengths_device = device_lengths.template data_ptr<std::int64_t>();
    w.batch = static_cast<std::size_t>(p.weights.numel());
    w.max_frames = p.max_frames;
    w.frame_size = static_cast<std::size_t>(p.pred.numel()) / (w.batch * w.max_frames);
  }
  return w;
}

/// The CUDA executor on every term (on the current stream of pred's device), then one copy of
/// the per-term reports to the host.
template <class Loss, class Prepared, std::size_t... I>
composed_result<typename Loss::value_type, Loss::size> run_cuda(const Loss& loss, const Prepared& prepared,
                                                                std::vector<at::Tensor>* grads,
                                                                std::index_sequence<I...>) {
  using T = typename Loss::value_type;
  constexpr std::size_t N = Loss::size;
  composed_result<T, N> result;
  result.weights = loss.weights();
  const std::array<reduction, N> reductions = reductions_of(loss);
  const at::Tensor& first = std::get<0>(prepared).pred;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(first.device().index()).stream();
  if (grads != nullptr) {
    grads->clear();
    (grads->push_back(at::empty(std::get<I>(prepared).pred.sizes(), std::get<I>(prepared).pred.options())), ...);
  }
  const at::Tensor workspace = at::empty({static_cast<std::int64_t>(N * cuda::workspace_doubles)},
                                         first.options().dtype(at::kDouble));
  std::array<at::Tensor, N> device_lengths;
  const std::array<cuda::term_weighting, N> weightings{cuda_weighting(std::get<I>(prepared), device_lengths[I])...};
  auto launch_one = [&]<std::size_t J>(std::integral_constant<std::size_t, J>) {
    const auto& p = std::get<J>(prepared);
    const at::ScalarType dtype = p.pred.scalar_type();  // prepare() admitted it for the term's value_type
    const cuda::storage_type storage = dtype == at::kHalf       ? cuda::storage_type::f16
                                       : dtype == at::kBFloat16 ? cuda::storage_type::bf16
                                       : dtype == at::kDouble   ? cuda::storage_type::f64
                                                                : cuda::storage_type::f32;
    cuda::launch_term_erased(loss.template term<J>(), storage, p.pred.data_ptr(), p.target.data_ptr(),
                             grads != nullptr ? (*grads)[J].data_ptr() : nullptr, static_cast<std::size_t>(p.pred.numel()),
                             weightings[J], reductions[J], result.weights[J],
                             workspace.data_ptr<double>() + J * cuda::workspace_doubles, stream);
  };
  (launch_one(std::integral_constant<std::size_t, I>{}), ...);
  std::array<double, N * cuda::workspace_doubles> host{};
  cuda::copy_to_host(host.data(), workspace.data_ptr<double>(), host.size(), stream);
  double total = 0;
  auto check_one = [&]<std::size_t J>(std::integral_constant<std::size_t, J>) {
    using Term = std::remove_cvref_t<decltype(loss.template term<J>())>;
    const cuda::term_report report = cuda::read_report(host.data() + J * cuda::workspace_doubles);
    if constexpr (steadyloss::detail::checks_target_domain<Term>)
      cuda::check_report(report, weightings[J], steadyloss::detail::name_of<Term>(), +Term::target_min, +Term::target_max);
    else
      cuda::check_report(report, weightings[J], steadyloss::detail::name_of<Term>());
    result.values[J] = static_cast<T>(report.value);
    result.denominators[J] = report.denominator;
    total += static_cast<double>(result.weights[J]) * static_cast<double>(result.values[J]);
  };
  (check_one(std::integral_constant<std::size_t, I>{}), ...);
  result.total = static_cast<T>(total);
  return result;
}
#endif

/// The autograd node. forward receives the preds (the only differentiable inputs) and a pointer
/// to the closure that runs the executor; it saves the gradients for backward.
template <class Runner>
struct fused_loss_function : ::torch::autograd::Function<fused_loss_function<Runner>> {
  static at::Tensor forward(::torch::autograd::AutogradContext* ctx, at::TensorList preds, const Runner* runner) {
    std::vector<at::Tensor> grads;
    at::Tensor total = (*runner)(&grads);
    ctx->save_for_backward(grads);
    auto edges = c10::make_intrusive<input_edges>();
    edges->edges = ::torch::autograd::collect_next_edges(preds);
    ctx->saved_data[edges_key] = at::IValue::make_capsule(std::move(edges));
    return total;
  }

  static ::torch::autograd::variable_list backward(::torch::autograd::AutogradContext* ctx,
                                                   ::torch::autograd::variable_list grad_outputs) {
    // Grad mode is on inside a backward exactly when it was asked to build a graph
    // (create_graph=true): the engine runs every node under that setting.
    const bool create_graph = ::torch::autograd::GradMode::is_enabled();
    ::torch::autograd::variable_list out;
    {
      const at::NoGradGuard no_grad;
      const at::Tensor& incoming = grad_outputs[0];
      ::torch::autograd::variable_list saved = ctx->get_saved_variables();
      out.reserve(saved.size() + 1);
      // `total.backward()` seeds exactly 1 on the CPU: hand the saved gradient over, no pass at
      // all. (A CUDA seed would need a device-to-host read to know; multiplying there is cheaper.)
      const bool unit = incoming.defined() && incoming.is_cpu() && incoming.numel() == 1 &&
                        incoming.item<double>() == 1.0;
      for (at::Tensor& g : saved) {
        if (!incoming.defined()) out.emplace_back();
        else if (unit) out.push_back(g);
        else out.push_back(g * incoming.to(g.scalar_type()));
      }
    }
    if (create_graph) out = once_differentiable(ctx, std::move(out));
    out.emplace_back();  // the runner pointer is not differentiable
    return out;
  }

  /// PyTorch's @once_differentiable, in C++, wired to the preds' own graph: the first-order
  /// gradients, with their values, as outputs of an autograd Error node whose edges lead where
  /// the preds' gradients go, so that a later backward that asks for any of them (grad of the
  /// gradient w.r.t. pred or anything upstream of it) reaches the node and throws, where an
  /// alias with no edges would be "unused" (and, with allow_unused, a silent zero).
  static ::torch::autograd::variable_list once_differentiable(::torch::autograd::AutogradContext* ctx,
                                                              ::torch::autograd::variable_list grads) {
    const auto edges = c10::static_intrusive_pointer_cast<input_edges>(ctx->saved_data.at(edges_key).toCapsule());
    const auto error = std::make_shared<::torch::autograd::Error>(
        "steadyloss::libtorch: the gradient of a steadyloss loss cannot be differentiated again "
        "(double backward, create_graph=true): its backward returns the gradient saved by the fused "
        "forward pass, a constant to autograd, so second derivatives through it would be wrong; "
        "use LibTorch's own losses where second derivatives are needed",
        ::torch::autograd::edge_list(edges->edges));
    for (at::Tensor& g : grads) {
      if (!g.defined()) continue;
      g = g.variable_data();  // the same values, a tensor of its own to hang the node on
      ::torch::autograd::set_history(g, error);
    }
    return grads;
  }

  /// The preds' gradient edges, taken in forward (autograd passes the Function's backward no
  /// access to its node), for once_differentiable. Edges rather than the preds themselves: a
  /// saved pred would hold its memory and make an in-place change of it after the forward an
  /// error, for the sake of a case that only ever throws.
  struct input_edges : ::torch::CustomClassHolder {
    ::torch::autograd::edge_list edges;
  };
  static constexpr const char* edges_key = "steadyloss_input_edges";
};

template <class Loss, class Exec, class... Weightings>
composed_output<typename Loss::value_type, Loss::size> evaluate_composed(const Loss& loss, const Exec& executor,
                                                                          const char* function,
                                                                          const tensor_inputs<Weightings>&... in) {
  using T = typename Loss::value_type;
  constexpr std::size_t N = Loss::size;
  static_assert(sizeof...(Weightings) == N,
                "steadyloss::libtorch::evaluate: pass one sl::libtorch::inputs(pred, target[, mask | lengths]) per "
                "term, in term order");
  const auto args = std::forward_as_tuple(in...);
  const auto prepared = [&]<std::size_t... I>(std::index_sequence<I...>) {
    return std::tuple<prepared_term<Weightings>...>{prepare<T>(std::get<I>(args), function, I)...};
  }(std::make_index_sequence<N>{});
  const at::Tensor& first = std::get<0>(prepared).pred;
  const std::array<at::Device, N> devices{in.pred.device()...};
  for (std::size_t i = 1; i < N; ++i)
    TORCH_CHECK(devices[i] == first.device(), function, ": pred of term ", i, " is on ", devices[i],
                " but pred of term 0 is on ", first.device(), "; put every term on one device");

  const bool on_cuda = first.is_cuda();
  composed_output<T, N> out;
  auto run = [&](std::vector<at::Tensor>* grads) -> at::Tensor {
#if STEADYLOSS_TORCH_CUDA_EXECUTOR
    if (on_cuda) out.result = run_cuda(loss, prepared, grads, std::make_index_sequence<N>{});
    else
#endif
      out.result = run_cpu(loss, executor, prepared, grads, std::make_index_sequence<N>{});
    (void)on_cuda;
    return at::scalar_tensor(static_cast<double>(out.result.total), first.options());
  };

  bool any_requires_grad = false;
  ((any_requires_grad = any_requires_grad || in.pred.requires_grad()), ...);
  if (!::torch::autograd::GradMode::is_enabled() || !any_requires_grad) {
    out.total = run(nullptr);
    return out;
  }
  // Autograd needs the graph's own tensors (not contiguous copies) as the inputs it routes
  // gradients to; the saved gradients have pred's shape, which is all it checks.
  const std::vector<at::Tensor> preds{in.pred...};
  out.total = fused_loss_function<decltype(run)>::apply(at::TensorList(preds), &run);
  return out;
}

template <class T>
inline constexpr bool is_weighted_term = false;
template <class Term>
inline constexpr bool is_weighted_term<weighted_term<Term>> = true;

template <class TermOrWeighted>
auto as_composed(const TermOrWeighted& part) {
  if constexpr (is_weighted_term<TermOrWeighted>) return compose(part);
  else return compose(steadyloss::term(part));
}

}  // namespace detail

/// A composed loss on tensors: one sl::libtorch::inputs(...) per term, in term order. Returns the
/// weighted total (0-dim, autograd) and the core's composed_result.
template <class... Terms, class... Weightings>
composed_output<typename composed_loss<Terms...>::value_type, sizeof...(Terms)> evaluate(
    const composed_loss<Terms...>& loss, const tensor_inputs<Weightings>&... in) {
  return detail::evaluate_composed(loss, serial_executor{}, "steadyloss::libtorch::evaluate", in...);
}

/// The same, with CPU tensors' fused passes run by `executor` (a sl::parallel_executor, or any
/// sl::Executor); CUDA tensors run on the CUDA executor, as with evaluate.
template <class Exec, class... Terms, class... Weightings>
composed_output<typename composed_loss<Terms...>::value_type, sizeof...(Terms)> evaluate_on(
    const Exec& executor, const composed_loss<Terms...>& loss, const tensor_inputs<Weightings>&... in) {
  return detail::evaluate_composed(loss, executor, "steadyloss::libtorch::evaluate_on", in...);
}

/// The weighted total of a composed loss, as a 0-dim tensor connected to autograd.
template <class... Terms, class... Weightings>
at::Tensor loss(const composed_loss<Terms...>& composed, const tensor_inputs<Weightings>&... in) {
  return detail::evaluate_composed(composed, serial_executor{}, "steadyloss::libtorch::loss", in...).total;
}

/// One term (bare: weight 1, mean; or sl::term(t, weight, reduction)) on pred and target, with
/// an optional mask tensor or sl::libtorch::lengths(...). Returns weight * reduced value, 0-dim,
/// connected to autograd.
template <class Term, class... Weighting>
  requires(LossTerm<Term> || detail::is_weighted_term<Term>) && (sizeof...(Weighting) <= 1)
at::Tensor loss(const Term& term, at::Tensor pred, at::Tensor target, Weighting... weighting) {
  return detail::evaluate_composed(detail::as_composed(term), serial_executor{}, "steadyloss::libtorch::loss",
                                      inputs(std::move(pred), std::move(target), std::move(weighting)...))
      .total;
}

template <class T>
std::span<T> span(const at::Tensor& tensor) {
  using V = std::remove_const_t<T>;
  static_assert(std::is_same_v<V, float> || std::is_same_v<V, double>,
                "steadyloss::libtorch::span<T>: T must be float, double, const float or const double");
  TORCH_CHECK(tensor.defined() && tensor.is_cpu(), "steadyloss::libtorch::span: the tensor must be a defined CPU tensor");
  TORCH_CHECK(tensor.scalar_type() == detail::scalar_type_of<V>(), "steadyloss::libtorch::span: the tensor has dtype ",
              tensor.scalar_type(), ", span asked for ", detail::scalar_type_of<V>());
  TORCH_CHECK(tensor.is_contiguous(), "steadyloss::libtorch::span: the tensor is not contiguous; call .contiguous() "
              "first (and keep the result alive while the span is used)");
  return {tensor.data_ptr<V>(), static_cast<std::size_t>(tensor.numel())};
}

}  // namespace libtorch

/// torch::Tensor (at::Tensor) as a core Tensor: contiguous CPU float32, checked at each access.
template <>
struct tensor_traits<at::Tensor> {
  using value_type = float;
  static const float* data(const at::Tensor& t) { return libtorch::span<const float>(t).data(); }
  static std::size_t size(const at::Tensor& t) { return static_cast<std::size_t>(t.numel()); }
  static float* mutable_data(at::Tensor& t) { return libtorch::span<float>(t).data(); }
};

}  // namespace steadyloss
