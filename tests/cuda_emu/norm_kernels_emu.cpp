// The fused kernels' unchanged source, compiled for the SIMT emulator.
#include "norm/fused/norm_kernels.cu"
