#pragma once
// The checks every executor runs before it writes anything (sizes, masks, lengths, reductions,
// buffer overlaps, the gradient scale against the term's value_type) and their messages: the CPU
// pass (core/evaluate.hpp) and the CUDA executor (backend/cuda) share them, so the CUDA side
// depends on the core alone, never on the CPU kernels. The errors are listed in core/evaluate.hpp.

#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <type_traits>

#include "config.hpp"
#include "errors.hpp"
#include "inputs.hpp"
#include "reduction.hpp"
#include "term.hpp"

namespace steadyloss::detail {

template <class T>
bool overlaps(const T* a, std::size_t a_size, const T* b, std::size_t b_size) {
  std::less<const T*> before;
  return before(a, b + b_size) && before(b, a + a_size);
}

template <class Term>
struct term_argument {
  static_assert(LossTerm<Term>,
                "steadyloss: this type is not a loss term; a term needs `using value_type = float "
                "or double`, `value_type value(value_type pred, value_type target) const` and "
                "`value_type grad(value_type pred, value_type target) const`");
  static constexpr bool ok = LossTerm<Term>;
};

/// a x b into `product`; false (product untouched) when it does not fit in size_t.
inline bool multiply_fits(std::size_t a, std::size_t b, std::size_t& product) {
  if (b != 0 && a > std::numeric_limits<std::size_t>::max() / b) return false;
  product = a * b;
  return true;
}

/// Rejects a reduction that is neither mean nor sum (a cast integer), rather than reading it as sum.
inline void check_reduction(reduction reduction, const char* function) {
  if (reduction != reduction::mean && reduction != reduction::sum)
    fail<invalid_parameter>(function, ": reduction must be reduction::mean or reduction::sum, got ",
                            static_cast<int>(reduction));
}

/// How a caller of check_mask_shape states a frame size, for its message: `before` frame_size
/// `after` for a known one, `general` otherwise.
struct frame_size_fix {
  const char* before;
  const char* after;
  const char* general;
};
/// sl::inputs(pred, target, mask) callers.
inline constexpr frame_size_fix per_frame_fix{"write sl::per_frame(mask, ", ")", "sl::per_frame(mask, frame_size)"};
/// Raw sl::cuda::launch_term callers, who describe the mask in a cuda::term_weighting.
inline constexpr frame_size_fix term_weighting_fix{"set term_weighting::frame_size = ", "",
                                                    "term_weighting::frame_size"};

/// The sizes a mask must have: count x frame_size = n (also the CUDA executor's check, whose
/// callers pass term_weighting_fix).
inline void check_mask_shape(std::size_t count, std::size_t frame_size, std::size_t n, const char* function,
                             const frame_size_fix& fix = per_frame_fix) {
  if (frame_size == 1 && count != n) {
    if (count != 0 && n % count == 0)
      fail<shape_mismatch>(function, ": mask has ", count, " elements, pred ", n,
                           "; a mask holds one weight per element; for one weight per frame of ", n / count,
                           " elements ", fix.before, n / count, fix.after);
    fail<shape_mismatch>(function, ": mask has ", count, " elements, pred ", n,
                         "; a mask holds one weight per element (or per frame: ", fix.general, ")");
  }
  std::size_t covered = 0;
  if (!multiply_fits(count, frame_size, covered))
    fail<shape_mismatch>(function, ": pred has ", n, " elements, but the mask's ", count, " frames x frame_size ",
                         frame_size, " overflow size_t");
  if (covered != n)
    fail<shape_mismatch>(function, ": pred has ", n, " elements, but the mask's ", count, " frames x frame_size ",
                         frame_size, " cover ", covered);
}

/// What check_mask found: sum(w) over the mask (not yet per element) and the largest weight.
struct mask_weights_summary {
  double sum = 0;
  double max = 0;
};

/// Checks the mask's sizes and weights. A nonzero weight must be a normal number: the fused pass
/// forms w x loss in T, and with a subnormal w (float's 1e-45) that product underflows to 0 for
/// every loss below 1, so the masked mean would come out 0 (or a few bits of it) instead of
/// sum(w l) / sum(w). A weight at or above the smallest normal keeps w x loss as accurate as
/// IEEE arithmetic (and PyTorch's `(w * l).sum() / w.sum()` in the same dtype) makes it. One rule
/// for both mask forms, and for the CUDA kernel, which forms w x loss in float for every mask.
template <class T>
mask_weights_summary check_mask(const frame_mask<T>& mask, std::size_t n, bool mean) {
  check_mask_shape(mask.weights.size, mask.frame_size, n, "evaluate");
  if (mask.weights.data == nullptr) fail<invalid_input>("evaluate: the mask's data pointer is null");
  mask_weights_summary summary;
  for (std::size_t i = 0; i < mask.weights.size; ++i) {
    const T w = mask.weights.data[i];
    if (!(w >= T(0)) || !std::isfinite(w))
      fail<invalid_input>("evaluate: mask[", i, "] = ", w, "; mask weights must be finite and >= 0");
    if (w != T(0) && w < std::numeric_limits<T>::min())
      fail<invalid_input>("evaluate: mask[", i, "] = ", w, " is subnormal; a nonzero mask weight must be at least ",
                          std::numeric_limits<T>::min(), " (the smallest normal value), or w x loss underflows; "
                          "scale the mask up (a masked mean does not change)");
    summary.sum += static_cast<double>(w);
    if (static_cast<double>(w) > summary.max) summary.max = static_cast<double>(w);
  }
  // With sum, an all-zero mask is an empty batch (value 0, gradient 0); a mean of nothing is undefined.
  if (mean && summary.sum == 0) fail<invalid_input>("evaluate: the mask is all zero; there is nothing to average");
  if (!std::isfinite(summary.sum))
    fail<invalid_input>("evaluate: the mask weights sum to ", summary.sum, ", which is not finite");
  return summary;
}

/// The largest factor a gradient is multiplied by, formed in double: term weight `scale` x mask
/// weight / `denominator` (mask weight 1 without a mask). When `weight_in_double` (the CPU's
/// per-frame path) each frame's factor scale x (w / denominator) is formed in double and then
/// converted to T; otherwise (every other path, and the CUDA kernel) scale / denominator is
/// converted to T first and multiplied by w in T, so both must fit.
STEADYLOSS_HOST_DEVICE inline double largest_gradient_factor(double scale, double denominator, double max_weight,
                                                             bool weight_in_double) {
  const double weighted = scale * (max_weight / denominator);
  if (weight_in_double) return weighted;
  const double unweighted = scale / denominator;
  return weighted > unweighted ? weighted : unweighted;
}

/// The message for a gradient factor that overflows T (shared with the CUDA executor's report).
[[noreturn]] inline void fail_gradient_scale(const char* function, double scale, double denominator,
                                             bool masked, double max_weight, double factor, double limit) {
  if (masked)
    fail<invalid_input>(function, ": the gradient scale, term weight ", scale, " x largest mask weight ", max_weight,
                        " / denominator ", denominator, " = ", factor, ", overflows the term's value_type (max ",
                        limit, "); rescale the mask or the term weight");
  fail<invalid_input>(function, ": the gradient scale, term weight ", scale, " / denominator ", denominator, " = ",
                      factor, ", overflows the term's value_type (max ", limit, "); rescale the term weight");
}

/// Rejects a gradient factor that would overflow T (Inf gradients, NaN where 0 x Inf). Compared
/// in double against T's largest value, so nothing out of T's range is ever converted to T. A
/// factor that underflows is not an error: the gradient then underflows toward 0, as IEEE
/// arithmetic would (a term weight of 0 gives an exactly zero gradient).
template <class T>
void check_gradient_scale(double scale, double denominator, bool masked, double max_weight, bool weight_in_double,
                          const char* function) {
  constexpr double limit = static_cast<double>(std::numeric_limits<T>::max());
  const double factor = largest_gradient_factor(scale, denominator, masked ? max_weight : 1.0, weight_in_double);
  if (!(factor <= limit)) fail_gradient_scale(function, scale, denominator, masked, max_weight, factor, limit);
}

/// A double that is a value of T's range, converted to T; beyond it, +-Inf (what IEEE arithmetic
/// in T would have produced), never an out-of-range conversion.
template <class T>
T to_value_type(double x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    constexpr double limit = static_cast<double>(std::numeric_limits<T>::max());
    if (x > limit) return std::numeric_limits<T>::infinity();
    if (x < -limit) return -std::numeric_limits<T>::infinity();
    return static_cast<T>(x);
  }
}

/// Checks the lengths against pred's size and [0, max_frames]; returns the number of valid frames.
template <class Int>
double check_lengths(const sequence_lengths<Int>& spec, std::size_t n, bool mean, const char* function) {
  std::size_t sequence_size = 0, covered = 0;
  if (!multiply_fits(spec.max_frames, spec.frame_size, sequence_size) ||
      !multiply_fits(spec.batch, sequence_size, covered))
    fail<shape_mismatch>(function, ": pred has ", n, " elements, but batch (", spec.batch, " lengths) x max_frames (",
                         spec.max_frames, ") x frame_size (", spec.frame_size, ") overflows size_t");
  if (covered != n)
    fail<shape_mismatch>(function, ": pred has ", n, " elements, but batch (", spec.batch, " lengths) x max_frames (",
                         spec.max_frames, ") x frame_size (", spec.frame_size, ") = ", covered);
  if (spec.lengths == nullptr) fail<invalid_input>(function, ": the lengths' data pointer is null");
  double frames = 0;
  for (std::size_t b = 0; b < spec.batch; ++b) {
    const Int length = spec.lengths[b];
    bool negative = false;
    if constexpr (std::is_signed_v<Int>) negative = length < 0;
    if (negative || static_cast<std::size_t>(length) > spec.max_frames)
      fail<invalid_input>(function, ": lengths[", b, "] = ", +length, ", outside [0, max_frames = ",
                          spec.max_frames, "]");
    frames += static_cast<double>(length);
  }
  // With sum, all-zero lengths are an empty batch (value 0, gradient 0); a mean of nothing is undefined.
  if (mean && frames == 0)
    fail<invalid_input>(function, ": every sequence length is 0; there is nothing to average");
  return frames;
}

}  // namespace steadyloss::detail
