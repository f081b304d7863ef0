// Must not compile: a two-term loss evaluated with one set of inputs.
#include <steadyloss/steadyloss.hpp>
int main() {
  std::vector<float> pred(4), target(4);
  auto loss = steadyloss::compose(steadyloss::Huber<float>{}, steadyloss::MSE<float>{});
  (void)loss.evaluate(steadyloss::inputs(pred, target));
}
