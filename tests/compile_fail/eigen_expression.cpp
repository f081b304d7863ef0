// Must not compile: an unevaluated Eigen expression is not a Tensor (steadyloss would keep a
// pointer into nothing: the expression has no storage). Checked by ctest for the message
// "evaluate it first"; built with -DSTEADYLOSS_CONTROL it must compile (the control case).
#include <steadyloss/backend/eigen.hpp>
#include <steadyloss/steadyloss.hpp>

namespace sl = steadyloss;

float misuse(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b) {
#if defined(STEADYLOSS_CONTROL)
  const Eigen::MatrixXf sum = a + b;  // evaluated into storage: fine
  return sl::value(sl::Huber<float>{}, sl::inputs(sum, b)).value;
#elif defined(STEADYLOSS_ARRAY_EXPRESSION)
  return sl::value(sl::Huber<float>{}, sl::inputs(a.array() * 2.0f, b.array())).value;
#else
  return sl::value(sl::Huber<float>{}, sl::inputs(a + b, b)).value;
#endif
}
