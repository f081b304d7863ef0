// Must not compile: a const vector cannot receive the gradient.
#include <steadyloss/steadyloss.hpp>
int main() {
  std::vector<float> pred(4), target(4);
  const std::vector<float> grad(4);
  (void)steadyloss::evaluate(steadyloss::Huber<float>{}, steadyloss::inputs(pred, target), grad);
}
