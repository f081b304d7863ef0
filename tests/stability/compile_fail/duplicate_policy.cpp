// Must not compile: two EmaSmoothers in one pipeline.
#include <steadyloss/stability/stability.hpp>
steadyloss::Stabilizer<steadyloss::EmaSmoother<>, steadyloss::EmaSmoother<>> guard;
