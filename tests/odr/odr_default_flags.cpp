// The ODR test's file built with the build's own flags (odr_tu.inc).
#define ODR_TEST_SUFFIX _default_flags
#include "odr_tu.inc"
