// The ODR test's file built with -mavx2 -mfma (odr_tu.inc). No static initializers here: this
// file's code may run only after the test has checked that the CPU has AVX2 and FMA.
#define ODR_TEST_SUFFIX _avx2_flags
#include "odr_tu.inc"
