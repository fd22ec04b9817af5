// Vendor header for the AMD build (DC_USE_HIP): maps the CUDA runtime names the backend uses onto
// HIP, the way llama.cpp's ggml-cuda/vendors/hip.h does, so cuda/*.cu compile unchanged with hipcc.
// Debian's ROCm has no hipBLAS/rocBLAS, so DC_HAVE_BLAS stays undefined and the backend uses its
// own tiled GEMM kernels for prefill and merge.
#pragma once

#include <hip/hip_fp16.h>
#include <hip/hip_runtime.h>

#define DC_GPU_BACKEND_NAME "hip"

// Wavefront width of the target being compiled (device pass): 64 on CDNA (gfx9xx), 32 on RDNA in
// wave32 mode. The host pass has no target: it picks the kernel instantiation at run time from
// hipDeviceProp_t::warpSize, so the host value only has to be a valid upper bound.
#if defined(__AMDGCN_WAVEFRONT_SIZE)
#  define DC_PHYS_WARP __AMDGCN_WAVEFRONT_SIZE
#else
#  define DC_PHYS_WARP 64
#endif
// HIP's shuffles take no lane mask (a 32-bit mask would be wrong on wave64); width is explicit.
#define dc_shfl_xor(v, off, width) __shfl_xor((v), (off), (width))

#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaErrorMemoryAllocation hipErrorOutOfMemory
#define cudaStream_t hipStream_t
#define cudaEvent_t hipEvent_t
#define cudaGetErrorString hipGetErrorString
#define cudaGetLastError hipGetLastError
#define cudaPeekAtLastError hipPeekAtLastError
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaSetDevice hipSetDevice
#define cudaGetDevice hipGetDevice
#define cudaDeviceProp hipDeviceProp_t
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaDeviceSynchronize hipDeviceSynchronize
#define cudaMalloc hipMalloc
#define cudaFree hipFree
#define cudaMallocAsync hipMallocAsync
#define cudaFreeAsync hipFreeAsync
#define cudaMallocHost hipHostMalloc
#define cudaFreeHost hipHostFree
#define cudaMemcpy hipMemcpy
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaStreamCreate hipStreamCreate
#define cudaStreamDestroy hipStreamDestroy
#define cudaEventCreate hipEventCreate
#define cudaEventDestroy hipEventDestroy
#define cudaEventRecord hipEventRecord
#define cudaEventSynchronize hipEventSynchronize
#define cudaEventElapsedTime hipEventElapsedTime
#define cudaMemGetInfo hipMemGetInfo
#define cudaFuncSetAttribute hipFuncSetAttribute
#define cudaErrorNotSupported hipErrorNotSupported
