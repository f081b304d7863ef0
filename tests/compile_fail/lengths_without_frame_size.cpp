// Must not compile: lengths without the elements per frame (the old form guessed it from pred's
// size, so lengths for another batch size were silently misread).
#include <steadyloss/steadyloss.hpp>
int main() {
  std::vector<float> pred(40), target(40);
  std::vector<int> lengths{5, 3};
  (void)steadyloss::value(steadyloss::L1<float>{},
                          steadyloss::inputs(pred, target, steadyloss::lengths(lengths, 5)));
}
