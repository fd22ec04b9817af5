// The CPU backend's operations on its own objects (the C table in cpu_backend.cpp wraps them and
// turns exceptions into statuses). Arguments are already validated by the API layer.
#pragma once

#include "backends/cpu/cpu_types.h"

namespace dc::cpu {

// Deep copy of a view into backend memory (throws std::bad_alloc).
std::unique_ptr<CpuDelta> load_delta(const dc_tensor_view& view);

// y (+)= x·ΔWᵀ as in dc_apply_delta_linear. No allocation; scratch must have been reserved.
void apply(CpuDevice& dev, const CpuDelta& d, const dc_apply_params& p);
// Row i uses batch.deltas[row_slot[i]], or no delta when row_slot[i] < 0.
void apply_batched(CpuDevice& dev, const CpuBatch& batch, const int32_t* row_slot,
                   const dc_apply_params& p);
// From how many rows a tile of a low-rank delta takes the prefill path (dequantized pieces and
// OpenBLAS sgemm) instead of the decode loops: DELTACOME_CPU_GEMM_MIN_ROWS at the first call, else
// the default in cpu_apply.cpp; set_gemm_min_rows overrides it (tests run both paths). Thread-safe.
uint32_t gemm_min_rows();
void set_gemm_min_rows(uint32_t rows);
// W += scale·ΔW in place (allocates a decoded V̂ for low-rank; throws std::bad_alloc).
void merge(CpuDevice& dev, const CpuDelta& d, void* weight, dc_dtype dtype, uint64_t ld, float scale);

}  // namespace dc::cpu
