// Must not compile: an xtensor expression (xfunction) or view is not a Tensor; xtensor evaluates
// lazily, so steadyloss would keep a view of storage that does not exist. Checked by ctest for the
// message "evaluate it first with xt::eval"; built with -DSTEADYLOSS_CONTROL it must compile.
#include <steadyloss/backend/xtensor.hpp>
#include <steadyloss/steadyloss.hpp>

#include <xtensor/xarray.hpp>
#include <xtensor/xview.hpp>

namespace sl = steadyloss;

float misuse(const xt::xarray<float>& a, const xt::xarray<float>& b) {
#if defined(STEADYLOSS_CONTROL)
  const xt::xarray<float> sum = a + b;  // evaluated into storage: fine
  return sl::value(sl::Huber<float>{}, sl::inputs(sum, b)).value;
#elif defined(STEADYLOSS_VIEW)
  return sl::value(sl::Huber<float>{}, sl::inputs(xt::view(a, 0), xt::view(b, 0))).value;
#else
  return sl::value(sl::Huber<float>{}, sl::inputs(a + b, b)).value;
#endif
}
