// Must not compile: a float composed loss writing double gradients.
#include <steadyloss/steadyloss.hpp>
int main() {
  auto loss = steadyloss::compose(steadyloss::Huber<float>{}, steadyloss::L1<float>{});
  std::vector<float> pred(4), target(4);
  std::vector<double> d0(4), d1(4);
  (void)loss.evaluate(steadyloss::inputs(pred, target), steadyloss::inputs(pred, target),
                      steadyloss::grads(d0, d1));
}
