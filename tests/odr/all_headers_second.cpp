// The second of the two files that include every public header (all_headers.hpp).
#include "all_headers.hpp"

namespace odr_test {
int all_headers_second() { return static_cast<int>(steadyloss::build_cpu_isa); }
}  // namespace odr_test
