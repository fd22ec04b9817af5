// Vendor header for the NVIDIA build: the CUDA runtime, fp16 and (outside the portable path)
// cuBLAS. The kernels use only names that vendors/hip.h maps onto HIP.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#if !defined(DC_NO_BLAS)
#  include <cublas_v2.h>
#  define DC_HAVE_BLAS 1
#endif

#define DC_GPU_BACKEND_NAME "cuda"
// Threads per hardware warp. NVIDIA is always 32.
#define DC_PHYS_WARP 32
#define dc_shfl_xor(v, off, width) __shfl_xor_sync(0xffffffffu, (v), (off), (width))
