// Must not compile: a term without grad(pred, target).
#include <steadyloss/steadyloss.hpp>
struct HalfTerm {
  using value_type = float;
  float value(float pred, float target) const { return pred - target; }
};
int main() {
  std::vector<float> pred(4), target(4);
  (void)steadyloss::value(HalfTerm{}, steadyloss::inputs(pred, target));
}
