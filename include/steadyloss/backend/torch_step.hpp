#pragma once
// LibTorch step helpers: what a training loop does around the Stabilizer, so that it does not
// have to be written by hand in every loop.
//
//   #include <steadyloss/backend/torch_step.hpp>
//   namespace sl = steadyloss;
//
//   auto loss = sl::presets::stable_loss<float>();
//   const auto validation_loss = sl::libtorch::frozen_copy(loss);  // before training (see below)
//   auto guard = sl::presets::stable_stabilizer<float>();
//   sl::libtorch::best_weights best(model);                        // parameters and buffers
//   const auto params = model.parameters();
//
//   // every step
//   out.total.backward();
//   const auto report = guard.update(out.result, static_cast<float>(sl::libtorch::grad_norm(params)));
//   if (sl::libtorch::apply(report, params)) optimizer.step();     // gradients x report.scale
//   sl::apply(loss, report);                                       // multipliers, error scales
//
//   // every k steps, under torch::NoGradGuard: the validation loss with validation_loss
//   const auto check = stopper.check(validation_total, step);      // sl::validation_stopper<float>
//   best.update(check);                                            // copies when check.improved
//   if (check.should_stop) break;
//   ...
//   best.restore();                                                // at the end
//
// grad_norm: the global L2 norm sqrt(sum_p ||grad_p||^2) over the parameters that have a
// gradient (the others are skipped, as torch::nn::utils::clip_grad_norm_ skips them). One
// at::_foreach_norm over the gradients (on CUDA a few fused kernels; on the CPU, LibTorch 1.13
// runs it as a loop of per-tensor norms in C++), the per-parameter norms stacked and combined in
// float64, then one read back to the host: one synchronization per call, where summing
// `g.pow(2).sum().item()` per parameter syncs (and allocates a squared copy) once per parameter.
// Each float32 parameter's norm is LibTorch's float32 reduction: 1.2e-6 relative on a 512 x 512
// gradient on the CPU against float64 (measured), ample for a Stabilizer that works in float.
// Not chosen: the norm of one at::cat of all gradients (one reduction, but a copy of every
// gradient, and 1.8e-4 relative over 6.3M float32 elements on the CPU).
// float32/float64 gradients take the fused path; float16/bfloat16 gradients are normed one by
// one in float32 (their norm may exceed float16's 65504, which is when a spike detector needs
// it), sparse ones one by one with Tensor::norm. Gradients on several devices are combined on
// the first one's device.
//
// apply(report, params): multiplies every gradient by report.scale in place (one
// at::_foreach_mul_, nothing at all when the scale is 1) and returns whether to call
// optimizer.step(): false when the policies skipped the step (report.skipped, scale 0) or when
// the step was non-finite (report.non_finite: a NaN/Inf loss or gradient norm would write NaN
// into the weights, as torch.cuda.amp.GradScaler skips such steps). On false the gradients are
// left as they are; the next zero_grad() clears them.
//
// best_weights: the model's best state in memory (Keras' restore_best_weights). It keeps the
// live tensors' handles (a Module's parameters and buffers, e.g. BatchNorm's running
// statistics) and, when a report says `improved`, copies them into tensors of its own: detached
// clones on the first improvement, then copy_ into the same storage (no allocation after the
// first copy). restore() copies the kept values back into the live tensors (NoGradGuard +
// copy_), bit for bit. The copies live on each tensor's own device. The optimizer's state (Adam's
// moments) is not kept: restore() is for the end of training, not for rewinding it.
//
// frozen_copy(loss): the loss to measure validation with. A validation total is compared with
// earlier ones (early stopping, best weights), so it must be the same function at every check;
// the live loss is not: sl::apply changes its AdaptiveWeight multipliers and the scales of terms
// that follow an error scale (AdaptiveHuber's delta) every step. frozen_copy returns a copy with
// every multiplier 1 (the base weights) and each term's parameters, error scales included, as
// they are at the call: make it before the first sl::apply (right after building the loss; after
// a resume, before sl::apply(loss, guard)) and the error scales are the loss's initial ones.
// The copy is an ordinary composed loss (sl::libtorch::evaluate and the core API take it); no step
// policy ever touches it.

#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "../loss/compose.hpp"
#include "../stability/step.hpp"
#include "torch.hpp"

namespace steadyloss {
namespace libtorch {

namespace detail {

/// The gradients of the parameters that have one, as handles (no copy).
inline std::vector<at::Tensor> defined_grads(at::TensorList params, const char* function) {
  std::vector<at::Tensor> grads;
  grads.reserve(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    TORCH_CHECK(params[i].defined(), function, ": parameter ", i, " is an undefined tensor");
    const at::Tensor& grad = params[i].grad();
    if (grad.defined()) grads.push_back(grad);
  }
  return grads;
}

inline bool fused_norm_dtype(const at::Tensor& t) {
  return !t.is_sparse() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

}  // namespace detail

/// The global L2 norm of the parameters' gradients, sqrt(sum over parameters of ||grad||^2),
/// for Stabilizer::update. Parameters without a gradient are skipped; 0 when none has one. One
/// host synchronization (see the top of this file).
inline double grad_norm(at::TensorList params) {
  const std::vector<at::Tensor> grads = detail::defined_grads(params, "steadyloss::libtorch::grad_norm");
  if (grads.empty()) return 0.0;
  std::vector<at::Tensor> fused, norms;
  fused.reserve(grads.size());
  norms.reserve(grads.size());
  for (const at::Tensor& g : grads) {
    if (detail::fused_norm_dtype(g)) fused.push_back(g);
    else if (g.is_sparse()) norms.push_back(g.norm(2));
    else norms.push_back(at::linalg_vector_norm(g, 2, c10::nullopt, false, at::kFloat));
  }
  if (!fused.empty()) {
    std::vector<at::Tensor> fused_norms = at::_foreach_norm(fused, 2);
    for (at::Tensor& n : fused_norms) norms.push_back(std::move(n));
  }
  // One stack when the norms share a device and dtype (the usual case); else each goes to the
  // first one's device in float64 first (at::stack does not promote across devices).
  const at::Tensor& first = norms.front();
  bool uniform = true;
  for (const at::Tensor& n : norms)
    uniform = uniform && n.device() == first.device() && n.scalar_type() == first.scalar_type();
  if (!uniform)
    for (at::Tensor& n : norms) n = n.to(first.device(), at::kDouble);
  // The squares of the per-parameter norms are summed in float64: a float32 sum of squares would
  // overflow at norms above 1.8e19 and round where float64 does not.
  const at::Tensor total = at::linalg_vector_norm(at::stack(norms), 2, c10::nullopt, false, at::kDouble);
  return total.item<double>();
}

/// Applies the Stabilizer's decision to the gradients: multiplies them by report.scale in place
/// (one fused op; none when the scale is 1) and returns whether optimizer.step() should run:
/// false when the step is skipped (report.skipped) or non-finite (report.non_finite), and then
/// the gradients are left untouched.
///
///   if (sl::libtorch::apply(report, params)) optimizer.step();
template <class T, std::size_t N>
[[nodiscard]] bool apply(const step_report<T, N>& report, at::TensorList params) {
  if (report.skipped || report.non_finite) return false;
  const double scale = static_cast<double>(report.scale);
  TORCH_CHECK(std::isfinite(scale) && scale > 0.0, "steadyloss::libtorch::apply: report.scale must be finite and > 0 "
              "on a step that is not skipped, got ", scale);
  if (scale == 1.0) return true;
  std::vector<at::Tensor> grads = detail::defined_grads(params, "steadyloss::libtorch::apply");
  if (grads.empty()) return true;
  const at::NoGradGuard no_grad;
  at::_foreach_mul_(grads, scale);
  return true;
}

/// A model's best weights, kept in memory: update(report) copies the live tensors when
/// report.improved (no allocation after the first copy), restore() copies them back. The
/// LibTorch counterpart of sl::best_state (stability/validation.hpp), whose State is copied by
/// value: a vector of at::Tensor would copy handles, not weights.
class best_weights {
 public:
  best_weights() = default;
  /// Keeps these tensors (e.g. model.parameters()); the handles are held, the values copied on
  /// improvement.
  explicit best_weights(std::vector<at::Tensor> tensors) : live_(std::move(tensors)) {
    for (std::size_t i = 0; i < live_.size(); ++i)
      TORCH_CHECK(live_[i].defined(), "steadyloss::libtorch::best_weights: tensor ", i, " is an undefined tensor");
  }
  /// Keeps a torch::nn::Module's parameters and buffers (BatchNorm's running statistics), all
  /// submodules included. Make it after the module is built; moving the module (to(device))
  /// afterwards is fine, adding parameters to it is not seen.
  template <class Module>
    requires requires(const Module& m) {
      { m.parameters(true) } -> std::convertible_to<std::vector<at::Tensor>>;
      { m.buffers(true) } -> std::convertible_to<std::vector<at::Tensor>>;
    }
  explicit best_weights(const Module& module) : best_weights(tensors_of(module)) {}

  /// Copies the live tensors when `report.improved` (a validation check, an EarlyStopper's
  /// decision, a step_report); returns report.improved.
  template <class Report>
    requires requires(const Report& r) { { r.improved } -> std::convertible_to<bool>; }
  bool update(const Report& report) {
    const bool improved = static_cast<bool>(report.improved);
    if (!improved) return false;
    keep();
    if constexpr (requires { static_cast<long long>(report.step); }) step_ = static_cast<long long>(report.step);
    if constexpr (requires { static_cast<long long>(report.check); }) check_ = static_cast<long long>(report.check);
    return true;
  }

  /// Copies the live tensors now: clones on the first call, copy_ into the same tensors after.
  /// (Called directly, it leaves step() and check() as they were.)
  void keep() {
    const at::NoGradGuard no_grad;
    if (kept_.empty()) {
      kept_.reserve(live_.size());
      for (const at::Tensor& t : live_) kept_.push_back(t.detach().clone());
      return;
    }
    check_shapes("keep");
    for (std::size_t i = 0; i < live_.size(); ++i) kept_[i].copy_(live_[i]);
  }

  /// Copies the kept values back into the live tensors. Returns false (and changes nothing)
  /// when nothing was kept yet.
  bool restore() {
    if (kept_.empty()) return false;
    check_shapes("restore");
    const at::NoGradGuard no_grad;
    for (std::size_t i = 0; i < live_.size(); ++i) live_[i].copy_(kept_[i]);
    return true;
  }

  /// Whether a state was kept (update saw an improvement, or keep() ran).
  bool has_value() const { return !kept_.empty(); }
  /// The training step and the check index of the kept state, from the report that improved
  /// (a validation_report has both, a step_report a step); -1 when unknown or none kept.
  long long step() const { return step_; }
  long long check() const { return check_; }
  /// The kept copies, in the order of the live tensors (empty before the first keep).
  const std::vector<at::Tensor>& kept() const { return kept_; }
  /// The live tensors' handles.
  const std::vector<at::Tensor>& tensors() const { return live_; }

 private:
  template <class Module>
  static std::vector<at::Tensor> tensors_of(const Module& module) {
    std::vector<at::Tensor> out = module.parameters(true);
    std::vector<at::Tensor> buffers = module.buffers(true);
    out.insert(out.end(), std::make_move_iterator(buffers.begin()), std::make_move_iterator(buffers.end()));
    return out;
  }

  void check_shapes(const char* what) const {
    for (std::size_t i = 0; i < live_.size(); ++i)
      TORCH_CHECK(live_[i].sizes() == kept_[i].sizes(), "steadyloss::libtorch::best_weights::", what, ": tensor ", i,
                  " has shape ", live_[i].sizes(), " but its kept copy has ", kept_[i].sizes(),
                  "; the model changed shape after the first copy");
  }

  std::vector<at::Tensor> live_;
  std::vector<at::Tensor> kept_;
  long long step_ = -1;
  long long check_ = -1;
};

/// A copy of the loss for validation: every multiplier 1 (the base weights), every term's
/// parameters (AdaptiveHuber's scale included) as they are now. Make it before the first
/// sl::apply(loss, ...) so that its error scales are the initial ones (see the top of this file).
template <class... Terms>
composed_loss<Terms...> frozen_copy(const composed_loss<Terms...>& loss) {
  composed_loss<Terms...> copy = loss;
  std::array<typename composed_loss<Terms...>::value_type, sizeof...(Terms)> ones{};
  ones.fill(1);
  copy.set_multipliers(ones);
  return copy;
}

}  // namespace libtorch
}  // namespace steadyloss
