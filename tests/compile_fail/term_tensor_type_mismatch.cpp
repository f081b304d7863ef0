// Must not compile: a double term on float tensors.
#include <steadyloss/steadyloss.hpp>
int main() {
  std::vector<float> pred(4), target(4);
  (void)steadyloss::value(steadyloss::Huber<double>{}, steadyloss::inputs(pred, target));
}
