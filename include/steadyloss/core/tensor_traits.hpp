#pragma once
// The tensor-backend customization point. A type is a steadyloss Tensor once
// steadyloss::tensor_traits<T> is specialized for it; the primary template is empty on purpose,
// so "not a tensor" is the default and a user adapts their own type without editing ours.
//
// A specialization provides:
//   using value_type = float or double;
//   static const value_type* data(const T&);           contiguous, in memory order
//   static std::size_t size(const T&);                 number of elements
//   static value_type* mutable_data(T&);               optional: makes T usable as a gradient output
//   static constexpr bool is_view = true;              optional: T does not own its storage, so a
//                                                      temporary T is safe to keep (std::span, Map)

#include <concepts>
#include <cstddef>
#include <type_traits>

#include "fwd.hpp"

namespace steadyloss {

template <class T, class Enable>
struct tensor_traits {};

template <class T>
using tensor_value_t = typename tensor_traits<std::remove_cvref_t<T>>::value_type;

template <class T>
concept Tensor = requires(const std::remove_cvref_t<T>& tensor) {
  typename tensor_traits<std::remove_cvref_t<T>>::value_type;
  requires std::floating_point<tensor_value_t<T>>;
  { tensor_traits<std::remove_cvref_t<T>>::data(tensor) } -> std::convertible_to<const tensor_value_t<T>*>;
  { tensor_traits<std::remove_cvref_t<T>>::size(tensor) } -> std::convertible_to<std::size_t>;
};

template <class T>
concept MutableTensor = Tensor<T> && requires(std::remove_reference_t<T>& tensor) {  // const T: no
  { tensor_traits<std::remove_cvref_t<T>>::mutable_data(tensor) } -> std::same_as<tensor_value_t<T>*>;
};

/// A tensor type that does not own its storage (span, Eigen::Map, xt::adapt over a pointer).
template <class T>
concept TensorView = Tensor<T> && requires {
  requires tensor_traits<std::remove_cvref_t<T>>::is_view;
};

/// The tensor's contiguous elements, in memory order, as the executors see them.
template <class T>
struct tensor_view {
  const T* data = nullptr;
  std::size_t size = 0;
};

template <class T>
struct mutable_tensor_view {
  T* data = nullptr;
  std::size_t size = 0;
};

namespace detail {
template <class T>
inline constexpr bool always_false = false;
}

/// Reads the storage of any Tensor. Fails to compile, with a message a user can act on, otherwise.
template <class T>
tensor_view<tensor_value_t<T>> view_of(const T& tensor) {
  using traits = tensor_traits<std::remove_cvref_t<T>>;
  return {traits::data(tensor), static_cast<std::size_t>(traits::size(tensor))};
}

template <class T>
mutable_tensor_view<tensor_value_t<T>> mutable_view_of(T& tensor) {
  using traits = tensor_traits<std::remove_cvref_t<T>>;
  return {traits::mutable_data(tensor), static_cast<std::size_t>(traits::size(tensor))};
}

}  // namespace steadyloss
