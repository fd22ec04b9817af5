// Loading an already-decoded PackedTensor into a context: what dc_delta_load does after reading
// the container, split out so the pool can decode on its host threads and place on the context's
// thread, through dc::place_delta (src/api) for whole tensors (the pool does not shard).
#pragma once

#include "api/api_internal.h"
#include "common/packed_tensor.h"

namespace dc {
namespace pool {

// Decompresses and verifies tensor `index` of `c` (thread-safe: no context involved).
PackedTensor decode_tensor(const dc_container* c, uint64_t index, uint32_t load_flags);

// Places `t` into `ctx` (GPU: uploaded on `stream`). Uses the context. Throws dc::Error.
std::unique_ptr<dc_delta> place_tensor(dc_context* ctx, const PackedTensor& t, void* stream);

}  // namespace pool
}  // namespace dc
