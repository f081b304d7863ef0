// Must not compile: label smoothing has no meaning for a regression term.
#include <steadyloss/steadyloss.hpp>
int main() { (void)steadyloss::LabelSmoothing{steadyloss::Huber<float>{}, 0.1f}; }
