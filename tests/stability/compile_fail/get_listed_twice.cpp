// Must not compile: get<Policy> is ambiguous when the type is listed twice.
#include <steadyloss/stability/stability.hpp>
using dampener = steadyloss::SpikeDampener<>;
steadyloss::Stabilizer<dampener, dampener> guard;
const dampener& first = guard.get<dampener>();
