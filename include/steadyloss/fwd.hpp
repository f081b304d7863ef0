#pragma once
// Forward declarations of the names users may mention in their own headers, with their default
// template arguments: the core's and the loss terms' (core/fwd.hpp), the step policies' and the
// pipeline's (here). Each definition includes its fwd file and repeats no default, so a
// declaration and its definition cannot disagree (the compiler rejects a mismatch), as
// Boost.Histogram does. The aliases (Stabilizer, validation_stopper) are defined here.

#include <cstddef>

#include "core/fwd.hpp"
#include "stability/reducer.hpp"

namespace steadyloss {
// step policies and the pipeline
namespace monitor {
struct automatic;
}
namespace detect {
struct mean_ratio;
}
template <std::size_t N>
struct step_context;
template <class T, std::size_t N>
struct step_report;
template <class T = float>
class EmaSmoother;
template <class Detector = detect::mean_ratio>
struct spike_config;
template <class T = float, class Detector = detect::mean_ratio>
class SpikeDampener;
template <std::size_t N, class T = float>
class AdaptiveWeight;
template <std::size_t N, class T = float>
class ErrorScale;
template <class T = float, class Monitor = monitor::automatic>
class EarlyStopper;
template <class T = float>
class StabilityMetrics;
template <Reducer R, class... Policies>
class BasicStabilizer;
/// The single-process pipeline of step policies, run in the order listed.
template <class... Policies>
using Stabilizer = BasicStabilizer<local_reducer, Policies...>;

// validation checks
template <class T>
struct validation_report;
template <class T = float, Reducer R = local_reducer>
class basic_validation_stopper;
/// Early stopping on the validation loss, single process.
template <class T = float>
using validation_stopper = basic_validation_stopper<T, local_reducer>;
template <class State>
class best_state;
}  // namespace steadyloss
