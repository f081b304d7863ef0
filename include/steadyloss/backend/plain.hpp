#pragma once
// Plain-memory backend: std::span, std::vector, std::array, and raw pointer + size via view().

#include <array>
#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

#include "../core/errors.hpp"
#include "../core/tensor_traits.hpp"

namespace steadyloss {

template <class Element, std::size_t Extent>
  requires std::floating_point<std::remove_const_t<Element>>
struct tensor_traits<std::span<Element, Extent>> {
  using value_type = std::remove_const_t<Element>;
  static constexpr bool is_view = true;
  static const value_type* data(const std::span<Element, Extent>& s) { return s.data(); }
  static std::size_t size(const std::span<Element, Extent>& s) { return s.size(); }
  static value_type* mutable_data(const std::span<Element, Extent>& s)
    requires(!std::is_const_v<Element>)
  {
    return s.data();
  }
};

template <std::floating_point T, class Allocator>
struct tensor_traits<std::vector<T, Allocator>> {
  using value_type = T;
  static const T* data(const std::vector<T, Allocator>& v) { return v.data(); }
  static std::size_t size(const std::vector<T, Allocator>& v) { return v.size(); }
  static T* mutable_data(std::vector<T, Allocator>& v) { return v.data(); }
};

template <std::floating_point T, std::size_t N>
struct tensor_traits<std::array<T, N>> {
  using value_type = T;
  static const T* data(const std::array<T, N>& a) { return a.data(); }
  static std::size_t size(const std::array<T, N>&) { return N; }
  static T* mutable_data(std::array<T, N>& a) { return a.data(); }
};

/// A raw pointer + element count as a tensor (read-only or writable, following the pointer).
/// A null pointer with a nonzero size is invalid_input (it would crash at the first read).
template <std::floating_point T>
std::span<const T> view(const T* data, std::size_t size) {
  if (data == nullptr && size != 0)
    detail::fail<invalid_input>("view: data is a null pointer with size ", size);
  return {data, size};
}

template <std::floating_point T>
std::span<T> view(T* data, std::size_t size) {
  if (data == nullptr && size != 0)
    detail::fail<invalid_input>("view: data is a null pointer with size ", size);
  return {data, size};
}

}  // namespace steadyloss
