// Must not compile: AdaptiveWeight<2> and ErrorScale<3> name different numbers of loss terms.
#include <steadyloss/stability/stability.hpp>
steadyloss::Stabilizer<steadyloss::AdaptiveWeight<2, double>, steadyloss::ErrorScale<3, double>> guard;
