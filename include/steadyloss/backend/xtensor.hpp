#pragma once
// xtensor 0.24 backend: xtensor containers are steadyloss Tensors.
//
// Elements are read in MEMORY order (data()[0 .. size())), so a row-major and a column-major
// container holding the same memory give the same loss; pred, target, mask and gradient must
// therefore share one layout (mixing them compares different logical elements).
//
//   admitted (anything deriving from xt::xcontainer)      how
//   xt::xarray<T, L>, xt::xtensor<T, N, L>,                owning; read directly
//     xt::xtensor_fixed<T, S, L>
//   xt::adapt(pointer, size, xt::no_ownership(), shape),   view (a temporary is safe: it points at
//     xt::adapt(pointer, shape), xt::adapt(vector&, ...)    storage someone else owns)
//   xt::adapt(..., xt::acquire_ownership(), ...),          owning (the adaptor frees or shares the
//     xt::adapt(std::move(vector), ...), shared_ptr         buffer), so it must be named
//
//   checked at run time, before anything is evaluated or written:
//   the strides must lay the elements out densely (any layout, including user strides passed to
//   xt::adapt, whose elements fill [data(), data() + size())), else steadyloss::invalid_input;
//   an adaptor's buffer must hold at least the shape's elements, else steadyloss::shape_mismatch.
//
//   rejected at compile time, with a static_assert that says what to do:
//   every other xtensor expression: xfunction (a + b, 2 * a), xt::view, xt::strided_view,
//   xt::transpose, broadcasts, generators (xt::zeros without a container), non floating-point
//   value types.

#include <xtensor/xarray.hpp>
#include <xtensor/xbuffer_adaptor.hpp>
#include <xtensor/xcontainer.hpp>
#include <xtensor/xexpression.hpp>
#include <xtensor/xfixed.hpp>
#include <xtensor/xtensor.hpp>

#include <concepts>
#include <cstddef>
#include <sstream>
#include <type_traits>

#include "../core/errors.hpp"
#include "../core/tensor_traits.hpp"

namespace steadyloss {
namespace detail::xtensor_backend {

// The xcontainer behind T: T itself, or the container a user type derives from (void if none).
template <class Derived>
Derived container_type_of(const xt::xcontainer<Derived>*);
void container_type_of(...);
template <class T>
using container_type = decltype(container_type_of(static_cast<const T*>(nullptr)));

// The storage closure EC of an adaptor: a reference to a container, or a buffer adaptor over a
// pointer. Owning containers have none (void).
template <class C>
struct storage_closure {
  using type = void;
};
template <class EC, xt::layout_type L, class SC, class Tag>
struct storage_closure<xt::xarray_adaptor<EC, L, SC, Tag>> {
  using type = EC;
};
template <class EC, std::size_t N, xt::layout_type L, class Tag>
struct storage_closure<xt::xtensor_adaptor<EC, N, L, Tag>> {
  using type = EC;
};
template <class EC, std::size_t N, xt::layout_type L, class Tag>
struct storage_closure<xt::xtensor_view<EC, N, L, Tag>> {
  using type = EC;
};
template <class EC, class S, xt::layout_type L, bool SH, class Tag>
struct storage_closure<xt::xfixed_adaptor<EC, S, L, SH, Tag>> {
  using type = EC;
};

// A closure refers to storage owned elsewhere when it is an lvalue reference (adapt(vector&, ..))
// or a buffer adaptor with no_ownership (adapt(pointer, ...)). acquire_ownership frees the buffer
// and a smart-pointer owner may hold its last reference: those adaptors own what they read.
template <class EC>
inline constexpr bool refers_elsewhere = std::is_lvalue_reference_v<EC>;
template <class CP, class Allocator>
inline constexpr bool refers_elsewhere<xt::xbuffer_adaptor<CP, xt::no_ownership, Allocator>> = true;

template <class C>
inline constexpr bool is_view = refers_elsewhere<typename storage_closure<C>::type>;

/// The number of elements the shape describes. (xtensor's own size() is the buffer's size for
/// fixed layouts, which differs from the shape's once an adapted std::vector has been resized.)
template <class C>
std::size_t shape_size(const C& container) {
  std::size_t size = 1;
  for (const auto extent : container.shape()) size *= static_cast<std::size_t>(extent);
  return size;
}

/// Throws unless the shape's elements fill [data(), data() + shape_size) densely.
template <class C>
void check_dense(const C& container) {
  const std::size_t size = shape_size(container);
  if (size == 0) return;  // the executor reports empty tensors itself
  if (container.storage().size() < size)
    fail<shape_mismatch>("steadyloss: this xtensor container's shape has ", size,
                         " elements but its buffer only ", container.storage().size(),
                         " (an adapted std::vector resized after xt::adapt?)");
  // Dense iff, taking the axes of extent > 1 by increasing stride, each stride is the product of
  // the extents before it. Strides are distinct when dense, so each round matches one axis.
  const auto& shape = container.shape();
  const auto& strides = container.strides();
  const std::size_t rank = shape.size();
  std::size_t axes_to_match = 0;
  for (std::size_t axis = 0; axis < rank; ++axis) axes_to_match += shape[axis] > 1 ? 1 : 0;
  std::ptrdiff_t expected_stride = 1;
  for (std::size_t matched = 0; matched < axes_to_match; ++matched) {
    std::size_t found = rank;
    for (std::size_t axis = 0; axis < rank && found == rank; ++axis)
      if (shape[axis] > 1 && static_cast<std::ptrdiff_t>(strides[axis]) == expected_stride) found = axis;
    if (found == rank) {
      std::ostringstream layout;
      for (std::size_t axis = 0; axis < rank; ++axis)
        layout << (axis == 0 ? "" : ", ") << shape[axis] << ":" << strides[axis];
      fail<invalid_input>("steadyloss: this xtensor container is not dense (shape:stride ",
                          layout.str(), "); steadyloss reads elements in memory order, so pass "
                          "contiguous storage or copy it into an xt::xarray first");
    }
    expected_stride *= static_cast<std::ptrdiff_t>(shape[found]);
  }
}

template <class T>
struct container_traits {
  using value_type = std::remove_const_t<typename T::value_type>;
  static constexpr bool is_view = xtensor_backend::is_view<container_type<T>>;
  // An adaptor over a const pointer hands out const data only and cannot be a gradient output.
  static constexpr bool writable =
      std::is_same_v<decltype(std::declval<T&>().data()), value_type*>;

  static const value_type* data(const T& tensor) {
    check_dense(tensor);
    return tensor.data();
  }
  static std::size_t size(const T& tensor) { return shape_size(tensor); }
  static value_type* mutable_data(T& tensor)
    requires writable
  {
    check_dense(tensor);
    return tensor.data();
  }
};

template <class T>
struct rejected_expression {
  static_assert(always_false<T>,
                "steadyloss: an xtensor expression or view (a + b, xt::view, xt::transpose, ...) "
                "is not a Tensor: evaluate it first with xt::eval or assign it to a named "
                "xt::xarray/xt::xtensor, or xt::adapt contiguous storage");
};

template <class T>
struct rejected_value_type {
  static_assert(always_false<T>,
                "steadyloss: this xtensor container does not hold float or double; convert it into "
                "a named floating-point container first (xt::xarray<float> x = xt::cast<float>(y);)");
};

template <class T, bool IsContainer = !std::is_void_v<container_type<T>>>
struct traits_for {
  using type = rejected_expression<T>;
};
template <class T>
struct traits_for<T, true> {
  using type = std::conditional_t<std::floating_point<std::remove_const_t<typename T::value_type>>,
                                  container_traits<T>, rejected_value_type<T>>;
};

template <class T>
inline constexpr bool is_xtensor_type =
    !std::is_void_v<container_type<T>> || xt::is_xexpression<T>::value;

}  // namespace detail::xtensor_backend

/// Every xtensor expression: containers are admitted (see the table above), anything else is
/// rejected with a static_assert that names the fix.
template <class T>
struct tensor_traits<T, std::enable_if_t<detail::xtensor_backend::is_xtensor_type<T>>>
    : detail::xtensor_backend::traits_for<T>::type {};

}  // namespace steadyloss
