#pragma once
// The SpikeDetector concept: what SpikeDampener<T, Detector> needs from a detector. The built-in
// ones are in detectors.hpp; docs/extending.md ("Writing your own spike detector") shows a
// user-written one.
//
// A detector keeps the reference level of the accepted values and says where a spike begins.
// SpikeDampener owns everything else (modes, guards, level shifts, counters, non-finite values)
// and calls, each finite step:
//   ready()      false until warm-up is done: the value is then accepted without a decision
//   limit()      a value above it is a spike
//   reference()  the level the guards (min_ratio, min_excess) are relative to
//   accept(x)    x was not a spike: it enters the reference
//   on_spike(x)  x was a spike (optional: most detectors ignore spikes, so they never pollute
//                the reference)
//   clear()      forget every value: a run of spikes became the new level and is accepted next
// It is built from its own config (validated there: throw steadyloss::invalid_parameter), the
// dampener's window and the warm-up (already resolved: 0 in spike_config means the window).
// It saves what its next limit depends on, its config included, in the section the dampener
// opens for it, and checks the config on load (state_reader::expect_config).

#include <concepts>
#include <cstddef>
#include <string_view>

#include "state_io.hpp"

namespace steadyloss {

template <class D>
concept SpikeDetector =
    std::default_initializable<typename D::config> && std::copyable<D> &&
    std::constructible_from<D, const typename D::config&, std::size_t, std::size_t> &&
    requires(D& detector, const D& settled, double x, state_writer& out, state_reader& in) {
      { D::name } -> std::convertible_to<std::string_view>;
      { settled.ready() } -> std::convertible_to<bool>;
      { settled.limit() } -> std::convertible_to<double>;
      { settled.reference() } -> std::convertible_to<double>;
      detector.accept(x);
      detector.clear();
      settled.save(out);
      detector.load(in);
    };

namespace detail {
// Optional members, detected: a detector without them watches the loss and ignores spikes.
template <class D>
constexpr bool watches_grad_norm() {
  if constexpr (requires { D::watches_grad_norm; }) return D::watches_grad_norm;
  else return false;
}
template <class D>
void notify_spike(D& detector, double x) {
  if constexpr (requires { detector.on_spike(x); }) detector.on_spike(x);
}
}  // namespace detail

}  // namespace steadyloss
