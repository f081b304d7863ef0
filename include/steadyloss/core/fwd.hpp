#pragma once
// Forward declarations of the core's names and the loss terms', with their default template
// arguments (fwd.hpp adds the step policies'). Each definition includes this file and repeats no
// default, so a declaration here and its definition cannot disagree (the compiler rejects a
// mismatch), as Boost.Histogram does. Standard library only: the core and loss layers
// include it without depending on anything above them.

#include <concepts>
#include <cstddef>

namespace steadyloss {
// core
template <class T, class Enable = void>
struct tensor_traits;
struct unweighted;
template <class T, class Weighting = unweighted>
struct term_inputs;
enum class reduction;
class error;
class invalid_parameter;
class shape_mismatch;
class invalid_input;
class parallel_executor;

// loss terms and composition
template <std::floating_point T = float>
struct Huber;
template <std::floating_point T = float>
struct AdaptiveHuber;
template <std::floating_point T = float>
struct BalancedBCE;
template <std::floating_point T = float>
struct L1;
template <std::floating_point T = float>
struct MSE;
template <class Inner>
struct LabelSmoothing;
template <class Term>
struct weighted_term;
template <class... Terms>
class composed_loss;
template <class T, std::size_t N>
struct composed_result;
}  // namespace steadyloss
