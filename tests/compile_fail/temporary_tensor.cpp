// Must not compile: inputs() keeps a view; a temporary vector would dangle.
#include <steadyloss/steadyloss.hpp>
int main() {
  std::vector<float> target(4);
  auto in = steadyloss::inputs(std::vector<float>(4), target);
  (void)in;
}
