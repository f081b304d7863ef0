#pragma once
// What a term is evaluated on: sl::inputs(pred, target[, mask | sl::per_frame(mask, frame_size) |
// sl::lengths(lengths, max_frames, frame_size)]) and, for the gradients, sl::grads(d_pred...).
// Both keep views (pointer + size), taken at the call, so the
// tensors must outlive the evaluation: owning temporaries are rejected at compile time because
// they would dangle (the classic Eigen/xtensor trap), views (std::span, Eigen::Map) are accepted.

#include <array>
#include <concepts>
#include <cstddef>
#include <ranges>
#include <tuple>
#include <type_traits>

#include "fwd.hpp"
#include "tensor_traits.hpp"

namespace steadyloss {

/// No weighting: every element counts once.
struct unweighted {};

/// Mask weights: one per element (sl::inputs(pred, target, mask)), or one per frame of
/// `frame_size` consecutive elements (sl::inputs(pred, target, sl::per_frame(mask, frame_size)):
/// a [batch, time] mask over [batch, time, frame_size]). mask size x frame_size must equal pred's
/// size. Weights are finite and >= 0, and a nonzero weight is a normal number (not subnormal;
/// see check_mask in evaluate.hpp); 0 drops.
template <class T>
struct frame_mask {
  tensor_view<T> weights;
  std::size_t frame_size = 1;  ///< elements per weight
};

/// Per-sequence valid lengths over a padded [batch, max_frames, frame_size] row-major layout:
/// sequence b keeps its first lengths[b] frames. The batch size is the number of lengths;
/// batch x max_frames x frame_size must equal pred's size.
template <std::integral Int>
struct sequence_lengths {
  const Int* lengths = nullptr;
  std::size_t batch = 0;
  std::size_t max_frames = 0;
  std::size_t frame_size = 1;  ///< elements per frame (80 mel bins; 1 for a [batch, max_frames] tensor)
};

namespace detail {

template <class T>
inline constexpr bool keeps_safely = std::is_lvalue_reference_v<T> || TensorView<T>;

/// Instantiated (not called) so that its messages appear at once, before any follow-on error.
template <class T>
struct tensor_argument {
  static_assert(Tensor<T>,
                "steadyloss: this argument is not a Tensor; include its backend header "
                "(steadyloss/backend/plain.hpp, eigen.hpp, xtensor.hpp, torch.hpp) or specialize "
                "steadyloss::tensor_traits<YourType> (data, size, value_type)");
  static_assert(!Tensor<T> || keeps_safely<T>,
                "steadyloss: pass a named tensor, not a temporary: steadyloss keeps a view of it, and "
                "a temporary would dangle (wrap raw storage in std::span or Eigen::Map instead)");
  static constexpr bool ok = Tensor<T> && keeps_safely<T>;
};

template <class T>
inline constexpr bool is_sequence_lengths = false;
template <class Int>
inline constexpr bool is_sequence_lengths<sequence_lengths<Int>> = true;
template <class T>
inline constexpr bool is_frame_mask = false;
template <class T>
inline constexpr bool is_frame_mask<frame_mask<T>> = true;

}  // namespace detail

/// The elements of one term's evaluation.
template <class T, class Weighting>
struct term_inputs {
  using value_type = T;
  tensor_view<T> pred;
  tensor_view<T> target;
  Weighting weighting{};
};

template <class Pred, class Target>
auto inputs(Pred&& pred, Target&& target) {
  if constexpr (detail::tensor_argument<Pred>::ok && detail::tensor_argument<Target>::ok) {
    static_assert(std::same_as<tensor_value_t<Pred>, tensor_value_t<Target>>,
                  "steadyloss::inputs: pred and target must have the same value_type (both float or "
                  "both double)");
    using T = tensor_value_t<Pred>;
    if constexpr (std::same_as<tensor_value_t<Pred>, tensor_value_t<Target>>)
      return term_inputs<T>{view_of(pred), view_of(target), {}};
  }
}

/// Per-sequence lengths (any contiguous range of integers) over a padded row-major
/// [batch, max_frames, frame_size] layout; the frame size is stated, never guessed from sizes,
/// so lengths for the wrong batch are a shape_mismatch, not a silent misread.
template <class Range>
auto lengths(Range&& valid_lengths, std::size_t max_frames, std::size_t frame_size) {
  static_assert(std::ranges::contiguous_range<Range> &&
                    std::integral<std::ranges::range_value_t<Range>>,
                "steadyloss::lengths: pass a contiguous range of integers (std::vector<int>, "
                "std::span<const int64_t>, ...)");
  static_assert(std::ranges::borrowed_range<Range>,
                "steadyloss::lengths: pass a named container, not a temporary that would dangle");
  using Int = std::remove_cv_t<std::ranges::range_value_t<Range>>;
  return sequence_lengths<Int>{std::ranges::data(valid_lengths), std::ranges::size(valid_lengths),
                               max_frames, frame_size};
}

/// The two-argument form guessed the frame size from pred's size, which read lengths for the
/// wrong batch as larger frames; it is kept only to say what to write instead.
template <class Range>
sequence_lengths<int> lengths(Range&&, std::size_t) {
  static_assert(detail::always_false<Range>,
                "steadyloss::lengths: state the elements per frame: sl::lengths(lengths, max_frames, "
                "frame_size), e.g. frame_size 80 for a [batch, max_frames, 80] tensor, 1 for [batch, "
                "max_frames]");
  return {};
}

/// One mask weight per frame of `frame_size` consecutive elements (a [batch, time] mask over a
/// [batch, time, frame_size] tensor). A mask passed to sl::inputs directly has one weight per
/// element.
template <class Mask>
auto per_frame(Mask&& mask, std::size_t frame_size) {
  if constexpr (detail::tensor_argument<Mask>::ok)
    return frame_mask<tensor_value_t<Mask>>{view_of(mask), frame_size};
}

template <class Pred, class Target, class Weighting>
auto inputs(Pred&& pred, Target&& target, Weighting&& weighting) {
  auto plain = inputs(static_cast<Pred&&>(pred), static_cast<Target&&>(target));
  using T = typename decltype(plain)::value_type;
  using W = std::remove_cvref_t<Weighting>;
  if constexpr (detail::is_sequence_lengths<W>) {
    return term_inputs<T, W>{plain.pred, plain.target, weighting};
  } else if constexpr (detail::is_frame_mask<W>) {
    static_assert(std::same_as<W, frame_mask<T>>,
                  "steadyloss::inputs: the mask must have the same value_type as pred (float or "
                  "double weights)");
    if constexpr (std::same_as<W, frame_mask<T>>) return term_inputs<T, W>{plain.pred, plain.target, weighting};
  } else if constexpr (detail::tensor_argument<Weighting>::ok) {
    static_assert(std::same_as<tensor_value_t<Weighting>, T>,
                  "steadyloss::inputs: the mask must have the same value_type as pred (float or "
                  "double weights), or pass sl::lengths(...) for per-sequence lengths");
    if constexpr (std::same_as<tensor_value_t<Weighting>, T>)
      return term_inputs<T, frame_mask<T>>{plain.pred, plain.target, {view_of(weighting), 1}};
  }
}

/// Gradient outputs, one per term, in term order. Each is overwritten with d loss / d pred.
template <class T, std::size_t N>
struct grad_outputs {
  std::array<mutable_tensor_view<T>, N> views;
};

template <class First, class... Rest>
auto grads(First&& first, Rest&&... rest) {
  constexpr bool all_writable = (MutableTensor<First> && ... && MutableTensor<Rest>);
  static_assert(all_writable,
                "steadyloss::grads: each gradient output must be a writable Tensor "
                "(tensor_traits<T>::mutable_data; a std::span<const T> is read-only)");
  if constexpr (all_writable && (detail::tensor_argument<First>::ok && ... &&
                                  detail::tensor_argument<Rest>::ok)) {
    using T = tensor_value_t<First>;
    static_assert((std::same_as<tensor_value_t<Rest>, T> && ...),
                  "steadyloss::grads: all gradient outputs must share one value_type");
    return grad_outputs<T, 1 + sizeof...(Rest)>{{mutable_view_of(first), mutable_view_of(rest)...}};
  }
}

}  // namespace steadyloss
