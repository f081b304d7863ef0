#pragma once
// Eigen 3.4 backend: dense Eigen objects over contiguous storage are steadyloss Tensors.
//
// Elements are read in MEMORY order (data()[0 .. size()), as Eigen stores them), so a
// column-major and a row-major matrix holding the same memory give the same loss; pred, target,
// mask and gradient must therefore share one storage order (a ColMajor pred against a RowMajor
// target compares different logical elements, as it would in any elementwise loop over memory).
//
//   admitted                                           how
//   Matrix, Array (anything deriving from              owning; read directly; writable when
//     PlainObjectBase), row- or column-major           non-const
//   Map<..., Options, Stride>                          view; any stride type, checked at run time:
//                                                      a non-contiguous Map throws invalid_input
//   Ref<...>                                           view when non-const (a Ref<const X> may own
//                                                      a copy); contiguity checked at run time
//   Block with InnerPanel = true (m.col(j) of a        view; contiguity checked at run time (a
//     column-major m, m.middleCols(..), m.row(i) of    panel of an already strided block throws)
//     a row-major m), and vector blocks with unit
//     inner stride (v.head(n), v.segment(i, n))
//   ArrayWrapper/MatrixWrapper (m.array()) over an     as what they wrap
//     admitted object
//
//   rejected at compile time, with a static_assert that says what to do:
//   unevaluated expressions (a + b, m.array() * 2, m.transpose(), products), possibly strided
//   blocks (m.block(0, 0, 2, 2), m.row(i) of a column-major m), non floating-point scalars.
//
// Run-time contiguity failures throw steadyloss::invalid_input from sl::inputs / sl::grads, before
// anything is evaluated or written. Views may be temporaries in the call (sl::inputs keeps the
// storage's address, not the view object), but like a std::span they must not outlive their
// storage: m.col(0) of a temporary matrix dangles.

#include <Eigen/Core>

#include <concepts>
#include <cstddef>
#include <string_view>
#include <type_traits>

#include "../core/errors.hpp"
#include "../core/tensor_traits.hpp"

namespace steadyloss {
namespace detail::eigen_backend {

// The Eigen type behind T: T itself, or the Eigen type a user type derives from (void if none).
template <class Derived>
Derived dense_type_of(const Eigen::DenseBase<Derived>*);
void dense_type_of(...);
template <class T>
using dense_type = decltype(dense_type_of(static_cast<const T*>(nullptr)));

template <class Derived>
std::true_type plain_object_test(const Eigen::PlainObjectBase<Derived>*);
std::false_type plain_object_test(...);
template <class T>
inline constexpr bool is_plain_object = decltype(plain_object_test(static_cast<const T*>(nullptr)))::value;

template <class D>
inline constexpr bool has_direct_access = (int(D::Flags) & int(Eigen::DirectAccessBit)) != 0;

// Views over someone else's storage whose elements are contiguous, or may be, at run time.
// `admitted` is decided at compile time; `is_view` says whether a temporary of it is safe to keep.
template <class D>
struct direct_view {
  static constexpr bool admitted = false;
};

template <class Plain, int Options, class Stride>
struct direct_view<Eigen::Map<Plain, Options, Stride>> {
  static constexpr bool admitted = true;
  static constexpr bool is_view = true;
  static constexpr std::string_view name = "Eigen::Map";
};

// A Ref<const X> bound to an expression evaluates it into storage the Ref owns, so only a
// non-const Ref is safe as a temporary.
template <class Plain, int Options, class Stride>
struct direct_view<Eigen::Ref<Plain, Options, Stride>> {
  static constexpr bool admitted = true;
  static constexpr bool is_view = !std::is_const_v<Plain>;
  static constexpr std::string_view name = "Eigen::Ref";
};

// A block is contiguous by construction only when it spans whole inner vectors (InnerPanel) or is
// a vector with unit inner stride; m.block(0, 0, 2, 2) is strided whatever its size and is
// rejected at compile time rather than working in a test and throwing in production.
template <class D>
inline constexpr bool unit_stride_vector =
    D::IsVectorAtCompileTime && int(D::InnerStrideAtCompileTime) == 1;

template <class Xpr, int Rows, int Cols, bool InnerPanel>
struct direct_view<Eigen::Block<Xpr, Rows, Cols, InnerPanel>> {
  using block = Eigen::Block<Xpr, Rows, Cols, InnerPanel>;
  static constexpr bool admitted =
      has_direct_access<block> && (InnerPanel || unit_stride_vector<block>);
  static constexpr bool is_view = true;
  static constexpr std::string_view name = "Eigen::Block";
};

template <class Vector, int Size>
struct direct_view<Eigen::VectorBlock<Vector, Size>> {
  using block = Eigen::VectorBlock<Vector, Size>;
  static constexpr bool admitted = has_direct_access<block> && unit_stride_vector<block>;
  static constexpr bool is_view = true;
  static constexpr std::string_view name = "Eigen::VectorBlock";
};

template <class D>
inline constexpr bool admitted = is_plain_object<D> || direct_view<D>::admitted;

template <class Wrapped>
struct direct_view<Eigen::ArrayWrapper<Wrapped>> {
  using inner = std::remove_cvref_t<Wrapped>;
  static constexpr bool admitted = has_direct_access<Eigen::ArrayWrapper<Wrapped>> &&
                                   eigen_backend::admitted<inner>;
  static constexpr bool is_view = true;
  static constexpr std::string_view name = "Eigen::ArrayWrapper";
};

template <class Wrapped>
struct direct_view<Eigen::MatrixWrapper<Wrapped>> {
  using inner = std::remove_cvref_t<Wrapped>;
  static constexpr bool admitted = has_direct_access<Eigen::MatrixWrapper<Wrapped>> &&
                                   eigen_backend::admitted<inner>;
  static constexpr bool is_view = true;
  static constexpr std::string_view name = "Eigen::MatrixWrapper";
};

/// Throws invalid_input unless the elements of `x` fill [data(), data() + size()) in memory order.
template <class D>
void check_contiguous(const D& x, std::string_view name) {
  const Eigen::Index inner = x.innerSize(), outer = x.outerSize();
  const Eigen::Index inner_stride = x.innerStride(), outer_stride = x.outerStride();
  const bool contiguous = x.size() == 0 || ((inner <= 1 || inner_stride == 1) &&
                                            (outer <= 1 || outer_stride == inner));
  if (!contiguous)
    fail<invalid_input>("steadyloss: this ", name, " (", x.rows(), " x ", x.cols(),
                        ") is not contiguous: inner stride ", inner_stride, ", outer stride ",
                        outer_stride, ", inner size ", inner,
                        "; steadyloss reads elements in memory order, so pass a Map/Ref over "
                        "contiguous storage or copy it into a Matrix/Array first");
}

template <class T, class D>
struct plain_traits {
  using value_type = typename D::Scalar;
  static const value_type* data(const T& tensor) { return tensor.data(); }
  static std::size_t size(const T& tensor) { return static_cast<std::size_t>(tensor.size()); }
  static value_type* mutable_data(T& tensor) { return tensor.data(); }
};

template <class T, class D>
struct view_traits {
  using value_type = std::remove_const_t<typename D::Scalar>;
  static constexpr bool is_view = direct_view<D>::is_view;
  // Eigen's constness is deep: a Map<const X>, a Block of a const matrix or a const Ref hand out
  // const pointers only, and those cannot be gradient outputs.
  static constexpr bool writable =
      std::is_same_v<decltype(std::declval<T&>().data()), value_type*>;

  static const value_type* data(const T& tensor) {
    check_contiguous(tensor, direct_view<D>::name);
    return tensor.data();
  }
  static std::size_t size(const T& tensor) { return static_cast<std::size_t>(tensor.size()); }
  static value_type* mutable_data(T& tensor)
    requires writable
  {
    check_contiguous(tensor, direct_view<D>::name);
    return tensor.data();
  }
};

template <class T>
struct rejected_expression {
  static_assert(always_false<T>,
                "steadyloss: an Eigen expression or non-contiguous block is not a Tensor: evaluate "
                "it first (.eval(), or assign it to a named Matrix/Array) or pass a Map/Ref over "
                "contiguous storage (m.col(j) of a column-major m, m.middleCols(...), "
                "Eigen::Map<Eigen::VectorXf>(p, n))");
};

template <class T>
struct rejected_scalar {
  static_assert(always_false<T>,
                "steadyloss: this Eigen object does not hold float or double; convert it into a "
                "named floating-point object first (Eigen::MatrixXf m = x.cast<float>();)");
};

template <class T, class D = dense_type<T>>
using traits_for = std::conditional_t<
    !std::floating_point<std::remove_const_t<typename D::Scalar>>, rejected_scalar<T>,
    std::conditional_t<is_plain_object<D>, plain_traits<T, D>,
                       std::conditional_t<direct_view<D>::admitted, view_traits<T, D>,
                                          rejected_expression<T>>>>;

template <class T>
inline constexpr bool is_dense = !std::is_void_v<dense_type<T>>;

}  // namespace detail::eigen_backend

/// Every dense Eigen type: admitted (see the table above) or rejected with a static_assert that
/// names the fix. Instantiating the chosen base is what fires the static_assert, so only the
/// types actually used as tensors are checked.
template <class T>
struct tensor_traits<T, std::enable_if_t<detail::eigen_backend::is_dense<T>>>
    : detail::eigen_backend::traits_for<T> {};

}  // namespace steadyloss
