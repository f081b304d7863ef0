// A downstream program: builds against an installed or embedded steadyloss and checks one value.
#include <steadyloss/steadyloss.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  namespace sl = steadyloss;
  const std::vector<float> pred{0.5f, 3.0f}, target{0.0f, 0.0f};
  std::vector<float> grad(2);
  // Huber(delta 1): (0.5 * 0.25 + (3 - 0.5)) / 2 = 1.3125
  const auto r = sl::evaluate(sl::Huber<float>{}, sl::inputs(pred, target), grad);
  if (std::fabs(r.value - 1.3125f) > 1e-6f || grad[1] != 0.5f) {
    std::printf("consumer: wrong value %g\n", static_cast<double>(r.value));
    return 1;
  }
  std::printf("consumer ok\n");
  return 0;
}
