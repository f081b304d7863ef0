// Must not compile: the EmaSmoother is listed after the EarlyStopper that needs its output.
#include <steadyloss/stability/stability.hpp>
steadyloss::Stabilizer<steadyloss::EarlyStopper<double, steadyloss::monitor::smoothed>, steadyloss::EmaSmoother<double>>
    guard;
