#pragma once
// Every public header, for the two files that include them all (all_headers_first.cpp,
// all_headers_second.cpp) and are linked into one program: a header that defines a non-inline
// function or variable fails that link. test_public_headers.cpp checks this list against
// include/steadyloss on disk, so a new header cannot be left out.
// Not here: the LibTorch, MPI and CUDA headers (their dependencies are absent from this build).
#include <steadyloss/core/checks.hpp>
#include <steadyloss/core/config.hpp>
#include <steadyloss/core/errors.hpp>
#include <steadyloss/core/evaluate.hpp>
#include <steadyloss/core/executor.hpp>
#include <steadyloss/core/fwd.hpp>
#include <steadyloss/core/inputs.hpp>
#include <steadyloss/core/reduction.hpp>
#include <steadyloss/core/result.hpp>
#include <steadyloss/core/tensor_traits.hpp>
#include <steadyloss/core/term.hpp>
#include <steadyloss/cpu_isa.hpp>
#include <steadyloss/detail/cpu_pass.hpp>
#include <steadyloss/detail/math.hpp>
#include <steadyloss/fwd.hpp>
#include <steadyloss/loss/adaptive_huber.hpp>
#include <steadyloss/loss/balanced_bce.hpp>
#include <steadyloss/loss/compose.hpp>
#include <steadyloss/loss/huber.hpp>
#include <steadyloss/loss/l1.hpp>
#include <steadyloss/loss/label_smoothing.hpp>
#include <steadyloss/loss/mse.hpp>
#include <steadyloss/parallel.hpp>
#include <steadyloss/presets.hpp>
#include <steadyloss/stability/adaptive_weight.hpp>
#include <steadyloss/stability/detectors.hpp>
#include <steadyloss/stability/early_stopper.hpp>
#include <steadyloss/stability/ema_smoother.hpp>
#include <steadyloss/stability/error_scale.hpp>
#include <steadyloss/stability/metrics.hpp>
#include <steadyloss/stability/reducer.hpp>
#include <steadyloss/stability/spike_dampener.hpp>
#include <steadyloss/stability/spike_detector.hpp>
#include <steadyloss/stability/stability.hpp>
#include <steadyloss/stability/stabilizer.hpp>
#include <steadyloss/stability/state_io.hpp>
#include <steadyloss/stability/step.hpp>
#include <steadyloss/stability/validation.hpp>
#include <steadyloss/stability/window.hpp>
#include <steadyloss/steadyloss.hpp>
#include <steadyloss/backend/plain.hpp>
// The optional backends, where the build found their libraries.
#if STEADYLOSS_ODR_HAVE_EIGEN
#include <steadyloss/backend/eigen.hpp>
#endif
#if STEADYLOSS_ODR_HAVE_XTENSOR
#include <steadyloss/backend/xtensor.hpp>
#endif
