// Must not compile: AdaptiveWeight cannot work from the total loss alone.
#include <steadyloss/stability/stability.hpp>
int main() {
  steadyloss::Stabilizer<steadyloss::AdaptiveWeight<2, double>> guard;
  guard.update(1.0, 1.0);
}
