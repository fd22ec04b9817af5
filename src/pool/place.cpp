#include "pool/place.h"


namespace dc {
namespace pool {

PackedTensor decode_tensor(const dc_container* c, uint64_t index, uint32_t load_flags) {
  const bool verify = !c->trusted && !(load_flags & DC_LOAD_SKIP_CHECKSUM);
  return c->reader->load_tensor(index, verify);
}

std::unique_ptr<dc_delta> place_tensor(dc_context* ctx, const PackedTensor& t, void* stream) {
  const dc_shard whole{DC_SHARD_NONE, 0, 1, 0, 0};
  return place_delta(ctx, t, whole, stream);
}

}  // namespace pool
}  // namespace dc
