#pragma once
// The step policies and the Stabilizer pipeline (standard library only).

#include "adaptive_weight.hpp"
#include "detectors.hpp"
#include "early_stopper.hpp"
#include "error_scale.hpp"
#include "ema_smoother.hpp"
#include "metrics.hpp"
#include "spike_dampener.hpp"
#include "stabilizer.hpp"
#include "state_io.hpp"
#include "step.hpp"
#include "validation.hpp"
#include "window.hpp"
