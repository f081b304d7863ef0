// Must not compile: a read-only span cannot receive the gradient.
#include <steadyloss/steadyloss.hpp>
int main() {
  std::vector<float> pred(4), target(4), grad(4);
  (void)steadyloss::evaluate(steadyloss::Huber<float>{}, steadyloss::inputs(pred, target),
                             std::span<const float>(grad));
}
