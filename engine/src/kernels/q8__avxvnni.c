/* q8__avxvnni.c - the AVX2 integer kernels rebuilt with AVX-VNNI's 256-bit dot products
 * (vpdpbusd, vpdpwssd) for AVX2-class CPUs that have them; see q8__avx2.c. */
#define LSQ_Q8_AVXVNNI 1
#include "q8__avx2.c"
