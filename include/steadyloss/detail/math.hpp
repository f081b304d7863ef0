#pragma once
// Branch-free exp and log1p for the two ranges BCE needs, written so that the CPU loops that call
// them vectorize without -ffast-math (libm's scalar expf/log1pf would not; that alone made BCE
// slower than LibTorch). Range reduction and polynomials follow Cephes (S. Moshier); both are
// accurate to a few ulp, checked against long double in tests/test_math.cpp.
// On a CUDA device the hardware-backed libdevice functions are used instead.

#include <bit>
#include <cstdint>
#include <type_traits>

#include "../core/config.hpp"

namespace steadyloss::detail {

// Why no `?:` below: gcc (without -ffast-math) will not if-convert a select whose arm holds
// floating-point arithmetic that might trap, and its own code sinking moves arithmetic into such
// arms. One surviving branch keeps the whole loop scalar (10x slower). So selects that guard
// computed values are written as bit masks, and abs as the fabs builtin (one AND).

template <class T>
STEADYLOSS_HOST_DEVICE constexpr T abs(T x) noexcept {
  return __builtin_fabs(x);
}
STEADYLOSS_HOST_DEVICE constexpr float abs(float x) noexcept { return __builtin_fabsf(x); }

template <class T>
struct bits_of;
template <>
struct bits_of<float> {
  using type = std::uint32_t;
};
template <>
struct bits_of<double> {
  using type = std::uint64_t;
};

/// `condition ? if_true : if_false`, as integer bit operations the compiler cannot turn into a branch.
template <class T>
STEADYLOSS_HOST_DEVICE inline T select_bits(bool condition, T if_true, T if_false) noexcept {
#if defined(__CUDA_ARCH__)
  return condition ? if_true : if_false;  // a predicated select on the GPU
#else
  using U = typename bits_of<T>::type;
  const U mask = U(0) - static_cast<U>(condition);
  return std::bit_cast<T>((std::bit_cast<U>(if_true) & mask) | (std::bit_cast<U>(if_false) & ~mask));
#endif
}

/// `keep ? value : +0`, as integer bit operations the compiler cannot turn into a branch.
template <class T>
STEADYLOSS_HOST_DEVICE inline T zero_unless(bool keep, T value) noexcept {
  return select_bits(keep, value, T(0));
}

template <class T>
struct exp_constants;

template <>
struct exp_constants<float> {
  using bits_type = std::uint32_t;
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f;  // few mantissa bits: n * ln2_hi is exact
  static constexpr float ln2_lo = -2.12194440e-4f;
  static constexpr float lowest = -87.3365447f;   // exp(lowest) = smallest normal float
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr int mantissa_bits = 23;
  static constexpr bits_type exponent_bias = 127;
};

template <>
struct exp_constants<double> {
  using bits_type = std::uint64_t;
  static constexpr double log2e = 1.44269504088896340736;
  static constexpr double ln2_hi = 6.93145751953125E-1;
  static constexpr double ln2_lo = 1.42860682030941723212E-6;
  static constexpr double lowest = -708.396418532264;  // exp(lowest) = smallest normal double
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr int mantissa_bits = 52;
  static constexpr bits_type exponent_bias = 1023;
};

/// exp(x) for x <= 0. Results below the smallest normal number are flushed to +0 (the absolute
/// error is then below 1e-38 in float, 1e-308 in double). NaN propagates.
template <class T>
STEADYLOSS_HOST_DEVICE inline T exp_nonpositive(T x) noexcept {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  using C = exp_constants<T>;
  using bits_type = typename C::bits_type;
  // No clamp before the reduction: gcc turns a clamp into a branch and the loop stays scalar.
  // Below `lowest` the bits below are garbage and the final select returns 0 instead.
  // n = round(x / ln2), read from the low mantissa bits after adding the magic constant; the bit
  // arithmetic is unsigned so that garbage inputs wrap instead of overflowing.
  const T shifted = x * C::log2e + C::round_magic;
  const T n = shifted - C::round_magic;
  const bits_type n_bits = std::bit_cast<bits_type>(shifted) - std::bit_cast<bits_type>(C::round_magic);
  const T r = (x - n * C::ln2_hi) - n * C::ln2_lo;
  T p;
  if constexpr (std::is_same_v<T, float>) {
    p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
  } else {
    // Cephes exp: Pade form 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)).
    const double rr = r * r;
    const double px = r * ((1.26177193074810590878E-4 * rr + 3.02994407707441961300E-2) * rr +
                           9.99999999999999999910E-1);
    const double qx = ((3.00198505138664455042E-6 * rr + 2.52448340349684104192E-3) * rr +
                       2.27265548208155028766E-1) * rr + 2.00000000000000000009E0;
    p = 1.0 + 2.0 * (px / (qx - px));
  }
  const T scale = std::bit_cast<T>((n_bits + C::exponent_bias) << C::mantissa_bits);
  return zero_unless(!(x < C::lowest), p * scale);  // NaN x: kept, and NaN propagates
#endif
}

/// log(1 + e) for e in [0, 1], as 2 atanh(s) with s = e / (2 + e) in [0, 1/3]: the odd series in s
/// converges fast there and keeps full relative accuracy for tiny e, where log(1 + e) would not.
template <class T>
STEADYLOSS_HOST_DEVICE inline T log1p_unit(T e) noexcept {
#if defined(__CUDA_ARCH__)
  return log1p(e);
#else
  const T s = e / (T(2) + e);
  const T z = s * s;  // <= 1/9
  T series;
  if constexpr (std::is_same_v<T, float>) {
    // sum_{k=0}^{7} z^k / (2k + 1): the first term left out is below 2e-9.
    series = 1.0f / 15;
    series = series * z + 1.0f / 13;
    series = series * z + 1.0f / 11;
    series = series * z + 1.0f / 9;
    series = series * z + 1.0f / 7;
    series = series * z + 1.0f / 5;
    series = series * z + 1.0f / 3;
    series = series * z + 1.0f;
  } else {
    // sum_{k=0}^{16} z^k / (2k + 1): the first term left out is below 2e-18.
    series = 1.0 / 33;
    series = series * z + 1.0 / 31;
    series = series * z + 1.0 / 29;
    series = series * z + 1.0 / 27;
    series = series * z + 1.0 / 25;
    series = series * z + 1.0 / 23;
    series = series * z + 1.0 / 21;
    series = series * z + 1.0 / 19;
    series = series * z + 1.0 / 17;
    series = series * z + 1.0 / 15;
    series = series * z + 1.0 / 13;
    series = series * z + 1.0 / 11;
    series = series * z + 1.0 / 9;
    series = series * z + 1.0 / 7;
    series = series * z + 1.0 / 5;
    series = series * z + 1.0 / 3;
    series = series * z + 1.0;
  }
  return T(2) * s * series;
#endif
}

}  // namespace steadyloss::detail
