#pragma once
// Forward declarations of the names users may mention in their own headers.

#include <concepts>
#include <cstddef>

#include "stability/reducer.hpp"

namespace steadyloss {
template <class T, class Enable>
struct tensor_traits;
template <std::floating_point T>
struct Huber;
template <std::floating_point T>
struct AdaptiveHuber;
template <std::floating_point T>
struct BalancedBCE;
template <std::floating_point T>
struct L1;
template <std::floating_point T>
struct MSE;
template <class Inner>
struct LabelSmoothing;
template <class Term>
struct weighted_term;
template <class... Terms>
class composed_loss;
template <class T, std::size_t N>
struct composed_result;
enum class Reduction;
template <std::size_t N>
struct step_context;
template <class T, std::size_t N>
struct step_report;
template <class T>
class EmaSmoother;
template <class T, class Detector>
class SpikeDampener;
template <std::size_t N, class T>
class AdaptiveWeight;
template <std::size_t N, class T>
class ErrorScale;
template <class T, class Monitor>
class EarlyStopper;
template <class T>
class StabilityMetrics;
template <class T>
struct validation_report;
template <class T, Reducer R>
class basic_validation_stopper;
template <class State>
class best_state;
class error;
class invalid_parameter;
class shape_mismatch;
class invalid_input;
}  // namespace steadyloss
