#pragma once
// steadyloss: stable, fast training losses for any C++ tensor backend.
// The umbrella header: the core, every loss term, composition, the step policies and the
// plain-memory backend (all standard-library only).
// Other backends have a header each: steadyloss/backend/eigen.hpp, steadyloss/backend/xtensor.hpp.

#include "core/config.hpp"
#include "core/errors.hpp"
#include "core/evaluate.hpp"
#include "core/inputs.hpp"
#include "core/reduction.hpp"
#include "core/tensor_traits.hpp"
#include "core/term.hpp"

#include "loss/adaptive_huber.hpp"
#include "loss/balanced_bce.hpp"
#include "loss/compose.hpp"
#include "loss/huber.hpp"
#include "loss/l1.hpp"
#include "loss/label_smoothing.hpp"
#include "loss/mse.hpp"

#include "stability/stability.hpp"

#include "backend/plain.hpp"
