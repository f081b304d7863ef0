// Must not compile: the EarlyStopper watches the smoothed loss but no EmaSmoother is listed.
#include <steadyloss/stability/stability.hpp>
steadyloss::Stabilizer<steadyloss::EarlyStopper<double, steadyloss::monitor::smoothed>> guard;
