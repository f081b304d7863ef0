// Must not compile: float and double policies in one pipeline.
#include <steadyloss/stability/stability.hpp>
steadyloss::Stabilizer<steadyloss::EmaSmoother<float>, steadyloss::EarlyStopper<double>> guard;
