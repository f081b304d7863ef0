// The first of the two files that include every public header (all_headers.hpp).
#include "all_headers.hpp"

namespace odr_test {
// Something to link from each file, so that neither is dropped from the program.
int all_headers_first() { return static_cast<int>(steadyloss::build_cpu_isa); }
}  // namespace odr_test
