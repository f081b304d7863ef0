#pragma once
// One exception type per kind of mistake; all derive from steadyloss::error
// (itself a std::invalid_argument), so `catch (const std::invalid_argument&)` catches them all.
// Each message names the function or parameter and the offending values.

#include <sstream>
#include <stdexcept>
#include <string>

#include "fwd.hpp"

namespace steadyloss {

/// Base of every error steadyloss throws for bad input.
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A parameter is out of its documented range: `Huber: delta must be > 0, got -1`.
class invalid_parameter : public error {
 public:
  using error::error;
};

/// Tensor sizes do not fit together: `evaluate: pred has 4096 elements, target 4095`.
class shape_mismatch : public error {
 public:
  using error::error;
};

/// The data itself is unusable: empty tensors, a BCE target outside [0, 1], an all-zero mask.
class invalid_input : public error {
 public:
  using error::error;
};

namespace detail {

/// Concatenates its arguments with ostream formatting (floats print as `-1`, `0.05`, `1e+30`).
template <class... Parts>
std::string message(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

template <class Error, class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(message(parts...));
}

}  // namespace detail
}  // namespace steadyloss
