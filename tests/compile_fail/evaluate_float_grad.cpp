// Must not compile: a double term writing a float gradient.
#include <steadyloss/steadyloss.hpp>
int main() {
  std::vector<double> pred(4), target(4);
  std::vector<float> grad(4);
  (void)steadyloss::evaluate(steadyloss::Huber<double>{}, steadyloss::inputs(pred, target), grad);
}
