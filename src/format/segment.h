// Payload segments of a .dcz container (docs/FORMAT.md §4): one zstd frame each, with the
// decompressed size and XXH3-64 recorded in the manifest. This header also fixes which segments a
// tensor has and how large each one must be, so the writer and the reader agree byte for byte.
// Private to src/format.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "format/container.h"

namespace dc {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the .dcz payload is little-endian and is copied as is; big-endian hosts need byte swaps");

// Human-readable role name ("VBand", ...) for error messages and docs.
const char* segment_role_name(SegmentRole role);

// Compresses `size` bytes into one zstd frame that declares its content size. Thread-safe.
std::vector<uint8_t> zstd_compress_frame(const void* data, uint64_t size, int level);

// Decompresses exactly one zstd frame of `compressed_size` bytes into `dst` (`size` bytes).
// Throws DC_ERR_DECOMPRESS (naming `what`) unless the frame declares content size == `size`, spans
// exactly `compressed_size` bytes, and decodes without error to exactly `size` bytes. Thread-safe.
void zstd_decompress_frame(const uint8_t* src, uint64_t compressed_size, uint8_t* dst, uint64_t size,
                           const std::string& what);

// Overflow-checked pack_layout.h helpers (lengths come from untrusted manifests).
uint64_t checked_row_words(uint64_t len, uint32_t bits, const char* what);
uint64_t checked_row_groups(uint64_t len, uint32_t group_size, const char* what);

// The segments a tensor must have, in the order the writer lays them out:
// LowRank: VBand b, UBand b for every band b, then InPerm if has_in_perm; BitDelta: Signs;
// Dense: DenseData. `band` is 0 for roles that are not per band.
struct SegmentSlot {
  SegmentRole role;
  uint32_t band;
};
std::vector<SegmentSlot> expected_segments(const TensorDesc& d);

// Decompressed bytes of segment (role, band) of `d`, computed with checked arithmetic. `d`'s shape
// and bands must already be structurally valid (see validate_tensor_desc).
uint64_t expected_segment_size(const TensorDesc& d, SegmentRole role, uint32_t band);

// Structural checks of a tensor description read from a manifest: name, shape, kind, dtype,
// bands, sigma, and that its segments are exactly expected_segments() with the expected sizes
// (each <= max_segment_bytes). Throws DC_ERR_CORRUPT / OVERFLOW / LIMIT naming the tensor.
void validate_tensor_desc(const TensorDesc& d, uint64_t max_segment_bytes);

// Splits a validated PackedTensor into the bytes of its segments (expected_segments order).
std::vector<std::vector<uint8_t>> serialize_segments(const PackedTensor& t, const TensorDesc& d);

// The description the writer stores for `t` (no segments yet).
TensorDesc describe_tensor(const PackedTensor& t);

// Fills the array of `t` that segment (role, band) holds from its decompressed bytes.
// `bytes.size()` must equal expected_segment_size(d, role, band).
void deserialize_segment(const TensorDesc& d, SegmentRole role, uint32_t band,
                         const std::vector<uint8_t>& bytes, PackedTensor& t);

}  // namespace dc
