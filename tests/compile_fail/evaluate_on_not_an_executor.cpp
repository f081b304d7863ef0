// Must not compile: evaluate_on given something that is not an executor (arguments swapped).
#include <steadyloss/steadyloss.hpp>
int main() {
  std::vector<float> pred(4), target(4);
  auto loss = steadyloss::compose(steadyloss::Huber<float>{});
  const auto in = steadyloss::inputs(pred, target);
  (void)loss.evaluate_on(in, in);
}
