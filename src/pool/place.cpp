#include "pool/place.h"

#include "api/shard_view.h"

namespace dc {
namespace pool {

PackedTensor decode_tensor(const dc_container* c, uint64_t index, uint32_t load_flags) {
  const bool verify = !c->trusted && !(load_flags & DC_LOAD_SKIP_CHECKSUM);
  return c->reader->load_tensor(index, verify);
}

std::unique_ptr<dc_delta> place_tensor(dc_context* ctx, const PackedTensor& t, void* stream) {
  const ShardRange whole;  // DC_SHARD_NONE
  TensorViewStorage storage(t, whole);
  auto d = std::make_unique<dc_delta>();
  d->device = ctx->device;
  d->name = t.name;
  d->rows = t.rows;
  d->cols = t.cols;
  d->view_rows = storage.view().rows;
  d->view_cols = storage.view().cols;
  d->kind = t.kind;
  d->split = DC_SHARD_NONE;
  d->shard_begin = 0;
  d->shard_end = t.rows;
  const dc_backend_ops* ops = ctx->device->ops;
  check_backend(ops->delta_load(ctx->device->handle, &storage.view(), stream, &d->handle, &d->device_bytes),
                ("loading '" + t.name + "'").c_str());
  return d;
}

}  // namespace pool
}  // namespace dc
