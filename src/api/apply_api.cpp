// dc_apply_delta_linear, dc_merge_delta and the multi-tenant batch: argument checks, then the
// backend. Backends may assume everything checked here.
#include <cmath>

#include "api/api_internal.h"
#include "common/checked.h"

namespace {

dc_apply_params default_apply_params() {
  dc_apply_params p{};
  p.struct_size = sizeof p;
  p.flags = 0;
  p.x_dtype = DC_DTYPE_F32;
  p.y_dtype = DC_DTYPE_F32;
  p.base_dtype = DC_DTYPE_F32;
  p.scale = 1.0f;
  return p;
}

using dc::valid_dtype;

// Validates p against an operand shape (rows = y width, cols = x width) and fills default strides.
dc_apply_params checked_params(const dc_apply_params* in, uint64_t rows, uint64_t cols, bool bias_only) {
  DC_CHECK(in, DC_ERR_INVALID_ARGUMENT, "params is NULL");
  dc_apply_params p = dc::read_options(in, default_apply_params(), "dc_apply_params");
  DC_CHECK((p.flags & ~DC_APPLY_INCLUDE_BASE) == 0, DC_ERR_INVALID_ARGUMENT, "unknown apply flags 0x%x", p.flags);
  DC_CHECK(valid_dtype(p.x_dtype) && valid_dtype(p.y_dtype), DC_ERR_INVALID_ARGUMENT,
           "x_dtype %lld / y_dtype %lld is not a dc_dtype", (long long)dc::raw_enum(p.x_dtype),
           (long long)dc::raw_enum(p.y_dtype));
  DC_CHECK(std::isfinite(p.scale), DC_ERR_INVALID_ARGUMENT, "scale is not finite");
  if (p.ldx == 0) p.ldx = cols;
  if (p.ldy == 0) p.ldy = rows;
  if (p.m == 0) return p;
  DC_CHECK(p.m <= (1ull << 40), DC_ERR_INVALID_ARGUMENT, "m = %llu is implausibly large", (unsigned long long)p.m);
  DC_CHECK(p.y, DC_ERR_INVALID_ARGUMENT, "y is NULL");
  DC_CHECK(p.ldy >= rows, DC_ERR_SHAPE_MISMATCH, "ldy = %llu is smaller than the delta's %llu output rows",
           (unsigned long long)p.ldy, (unsigned long long)rows);
  const bool needs_x = !bias_only || (p.flags & DC_APPLY_INCLUDE_BASE);
  if (needs_x) {
    DC_CHECK(p.x, DC_ERR_INVALID_ARGUMENT, "x is NULL");
    DC_CHECK(p.ldx >= cols, DC_ERR_SHAPE_MISMATCH, "ldx = %llu is smaller than the delta's %llu input columns",
             (unsigned long long)p.ldx, (unsigned long long)cols);
  }
  if (p.flags & DC_APPLY_INCLUDE_BASE) {
    DC_CHECK(!bias_only, DC_ERR_UNSUPPORTED, "DC_APPLY_INCLUDE_BASE needs a 2-D delta, not a bias");
    DC_CHECK(p.base_weight, DC_ERR_INVALID_ARGUMENT, "DC_APPLY_INCLUDE_BASE is set but base_weight is NULL");
    DC_CHECK(valid_dtype(p.base_dtype), DC_ERR_INVALID_ARGUMENT, "base_dtype %lld is not a dc_dtype", (long long)dc::raw_enum(p.base_dtype));
    if (p.ld_base == 0) p.ld_base = cols;
    DC_CHECK(p.ld_base >= cols, DC_ERR_SHAPE_MISMATCH, "ld_base = %llu is smaller than %llu columns",
             (unsigned long long)p.ld_base, (unsigned long long)cols);
  }
  // Each operand's extent must be addressable: (m-1)·ld + width elements.
  dc::checked_add(dc::checked_mul(p.m - 1, std::max(p.ldx, p.ldy), "operand extent"), std::max(rows, cols),
                  "operand extent");
  return p;
}

bool is_bias(const dc_delta* d) { return d->kind == DC_KIND_DENSE && d->cols == 1; }

}  // namespace

extern "C" {

DC_API void dc_apply_params_init(dc_apply_params* p) {
  if (p) *p = default_apply_params();
}

DC_API dc_status dc_apply_workspace_size(const dc_delta* d, uint64_t m, uint64_t* bytes) {
  return dc::guard("dc_apply_workspace_size", [&] {
    DC_CHECK(d && bytes, DC_ERR_INVALID_ARGUMENT, "delta or bytes is NULL");
    *bytes = 0;
    dc::check_backend(d->device->ops->workspace_size(d->device->handle, d->handle, m, bytes), "workspace size");
    return DC_OK;
  });
}

DC_API dc_status dc_apply_delta_linear(const dc_delta* d, const dc_apply_params* in) {
  return dc::guard("dc_apply_delta_linear", [&] {
    DC_CHECK(d, DC_ERR_INVALID_ARGUMENT, "delta is NULL");
    const dc_apply_params p = checked_params(in, d->view_rows, d->view_cols, is_bias(d));
    if (p.m == 0) return DC_OK;
    uint64_t need = 0;
    dc::check_backend(d->device->ops->workspace_size(d->device->handle, d->handle, p.m, &need), "workspace size");
    DC_CHECK(need == 0 || (p.workspace && p.workspace_bytes >= need), DC_ERR_INVALID_ARGUMENT,
             "apply with m = %llu needs a workspace of %llu bytes (dc_apply_workspace_size); got %llu",
             (unsigned long long)p.m, (unsigned long long)need, (unsigned long long)p.workspace_bytes);
    dc::check_backend(d->device->ops->apply(d->device->handle, d->handle, &p), ("applying '" + d->name + "'").c_str());
    return DC_OK;
  });
}

DC_API dc_status dc_merge_delta(const dc_delta* d, void* weight, dc_dtype dtype, uint64_t ld, float scale,
                                void* stream) {
  return dc::guard("dc_merge_delta", [&] {
    DC_CHECK(d && weight, DC_ERR_INVALID_ARGUMENT, "delta or weight is NULL");
    DC_CHECK(valid_dtype(dtype), DC_ERR_INVALID_ARGUMENT, "dtype %lld is not a dc_dtype", (long long)dc::raw_enum(dtype));
    DC_CHECK(std::isfinite(scale), DC_ERR_INVALID_ARGUMENT, "scale is not finite");
    if (ld == 0) ld = d->view_cols;
    DC_CHECK(ld >= d->view_cols, DC_ERR_SHAPE_MISMATCH, "ld = %llu is smaller than %llu columns",
             (unsigned long long)ld, (unsigned long long)d->view_cols);
    dc::checked_mul(d->view_rows, ld, "weight extent");
    dc::check_backend(d->device->ops->merge(d->device->handle, d->handle, weight, dtype, ld, scale, stream),
                      ("merging '" + d->name + "'").c_str());
    return DC_OK;
  });
}

DC_API dc_status dc_delta_batch_create(dc_delta_batch** out, const dc_delta* const* deltas, uint64_t count) {
  if (out) *out = nullptr;
  return dc::guard("dc_delta_batch_create", [&] {
    DC_CHECK(out && deltas, DC_ERR_INVALID_ARGUMENT, "out or deltas is NULL");
    DC_CHECK(count >= 1 && count <= (1u << 20), DC_ERR_INVALID_ARGUMENT, "count %llu out of range [1, 2^20]",
             (unsigned long long)count);
    std::vector<const void*> handles(count);
    for (uint64_t i = 0; i < count; ++i) {
      const dc_delta* d = deltas[i];
      DC_CHECK(d, DC_ERR_INVALID_ARGUMENT, "deltas[%llu] is NULL", (unsigned long long)i);
      DC_CHECK(d->device == deltas[0]->device, DC_ERR_INVALID_ARGUMENT, "deltas[%llu] belongs to another context",
               (unsigned long long)i);
      DC_CHECK(d->kind == DC_KIND_LOWRANK || d->kind == DC_KIND_BITDELTA, DC_ERR_UNSUPPORTED,
               "deltas[%llu] ('%s') is dense; batches hold low-rank or BitDelta deltas", (unsigned long long)i,
               d->name.c_str());
      DC_CHECK(d->view_rows == deltas[0]->view_rows && d->view_cols == deltas[0]->view_cols, DC_ERR_SHAPE_MISMATCH,
               "deltas[%llu] ('%s') is %llux%llu, deltas[0] is %llux%llu", (unsigned long long)i, d->name.c_str(),
               (unsigned long long)d->view_rows, (unsigned long long)d->view_cols,
               (unsigned long long)deltas[0]->view_rows, (unsigned long long)deltas[0]->view_cols);
      handles[i] = d->handle;
    }
    auto b = std::make_unique<dc_delta_batch>();
    b->device = deltas[0]->device;
    b->rows = deltas[0]->view_rows;
    b->cols = deltas[0]->view_cols;
    b->count = count;
    dc::check_backend(b->device->ops->batch_create(b->device->handle, handles.data(), count, &b->handle),
                      "creating the batch");
    *out = b.release();
    return DC_OK;
  });
}

DC_API void dc_delta_batch_free(dc_delta_batch* batch) { delete batch; }

DC_API dc_status dc_apply_delta_linear_batched(const dc_delta_batch* batch, const int32_t* row_slot,
                                               const dc_apply_params* in) {
  return dc::guard("dc_apply_delta_linear_batched", [&] {
    DC_CHECK(batch, DC_ERR_INVALID_ARGUMENT, "batch is NULL");
    const dc_apply_params p = checked_params(in, batch->rows, batch->cols, false);
    if (p.m == 0) return DC_OK;
    DC_CHECK(row_slot, DC_ERR_INVALID_ARGUMENT, "row_slot is NULL");
    if (batch->device->kind == DC_BACKEND_CPU) {
      // Host memory: the slots can be checked here.
      for (uint64_t i = 0; i < p.m; ++i)
        DC_CHECK(row_slot[i] >= -1 && row_slot[i] < (int64_t)batch->count, DC_ERR_INVALID_ARGUMENT,
                 "row_slot[%llu] = %d is outside [-1, %llu)", (unsigned long long)i, row_slot[i],
                 (unsigned long long)batch->count);
    }
    dc::check_backend(batch->device->ops->apply_batched(batch->device->handle, batch->handle, row_slot, &p),
                      "batched apply");
    return DC_OK;
  });
}

}  // extern "C"
