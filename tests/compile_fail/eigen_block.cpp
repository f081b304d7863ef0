// Must not compile: a block that may be strided (m.block(0, 0, 2, 2) skips the rest of each
// column; m.row(i) of a column-major m strides by m.rows()) is not a Tensor, whatever its size at
// run time. Checked by ctest for the message "evaluate it first"; built with -DSTEADYLOSS_CONTROL
// it must compile (a column of a column-major matrix is contiguous).
#include <steadyloss/backend/eigen.hpp>
#include <steadyloss/steadyloss.hpp>

namespace sl = steadyloss;

float misuse(const Eigen::MatrixXf& m, const Eigen::MatrixXf& target) {
#if defined(STEADYLOSS_CONTROL)
  return sl::value(sl::Huber<float>{}, sl::inputs(m.col(0), target.col(0))).value;
#elif defined(STEADYLOSS_ROW_OF_COLUMN_MAJOR)
  return sl::value(sl::Huber<float>{}, sl::inputs(m.row(0), target.row(0))).value;
#else
  const Eigen::MatrixXf top_left = target.topLeftCorner(2, 2);
  return sl::value(sl::Huber<float>{}, sl::inputs(m.block(0, 0, 2, 2), top_left)).value;
#endif
}
