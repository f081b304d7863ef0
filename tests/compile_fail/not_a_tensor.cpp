// Must not compile: std::vector<int> has no tensor_traits (integer elements).
#include <steadyloss/steadyloss.hpp>
int main() {
  std::vector<int> pred(4), target(4);
  (void)steadyloss::inputs(pred, target);
}
