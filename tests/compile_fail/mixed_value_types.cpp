// Must not compile: float predictions with double targets.
#include <steadyloss/steadyloss.hpp>
int main() {
  std::vector<float> pred(4);
  std::vector<double> target(4);
  (void)steadyloss::inputs(pred, target);
}
