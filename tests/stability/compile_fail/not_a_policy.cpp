// Must not compile: int is not a step policy.
#include <steadyloss/stability/stability.hpp>
steadyloss::Stabilizer<steadyloss::EmaSmoother<>, int> guard;
