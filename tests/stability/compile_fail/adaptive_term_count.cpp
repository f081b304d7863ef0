// Must not compile: a 3-term AdaptiveWeight fed a 2-term composed loss result.
#include <steadyloss/stability/stability.hpp>
int main() {
  steadyloss::Stabilizer<steadyloss::AdaptiveWeight<3, double>> guard;
  steadyloss::composed_result<double, 2> result;
  guard.update(result, 1.0);
}
