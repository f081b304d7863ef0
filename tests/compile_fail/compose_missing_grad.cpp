// Must not compile: composing a term without grad(pred, target).
#include <steadyloss/steadyloss.hpp>
struct HalfTerm {
  using value_type = float;
  float value(float pred, float target) const { return pred - target; }
};
int main() { (void)steadyloss::compose(steadyloss::Huber<float>{}, HalfTerm{}); }
