// The 80-byte .dcz preamble (FORMAT.md §1): field offsets and little-endian (de)serialisation.
// Private to src/format.
#pragma once

#include <cstdint>
#include <cstring>

#include "format/container.h"

namespace dc {

struct Preamble {
  uint16_t major = 1;               // @8
  uint16_t minor = 0;               // @10
  uint32_t header_len = kDczPreambleSize;  // @12
  uint64_t manifest_offset = 0;     // @16
  uint64_t manifest_size = 0;       // @24
  uint64_t payload_offset = 0;      // @32
  uint64_t payload_size = 0;        // @40
  uint32_t flags_required = 0;      // @48
  uint32_t flags_optional = 0;      // @52
  uint32_t segment_alignment = 0;   // @56
  uint32_t reserved = 0;            // @60
  uint64_t manifest_xxh3 = 0;       // @64
  uint64_t header_xxh3 = 0;         // @72: XXH3-64 of bytes [0, 72)
};

constexpr uint32_t kDczHeaderHashedBytes = 72;
constexpr uint32_t kDczKnownRequiredFlags = 0;  // no required feature exists in format 1.0
constexpr uint32_t kDczMinAlignment = 64, kDczMaxAlignment = 1u << 20;

namespace preamble_detail {
template <class T>
inline void put(uint8_t* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = (uint8_t)(v >> (8 * i));
}
template <class T>
inline T get(const uint8_t* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= (T)p[i] << (8 * i);
  return v;
}
}  // namespace preamble_detail

// Writes the 80 bytes, computing header_xxh3 over the first 72.
inline void encode_preamble(Preamble& h, uint8_t out[kDczPreambleSize]) {
  using preamble_detail::put;
  std::memcpy(out, kDczMagic, 8);
  put<uint16_t>(out + 8, h.major);
  put<uint16_t>(out + 10, h.minor);
  put<uint32_t>(out + 12, h.header_len);
  put<uint64_t>(out + 16, h.manifest_offset);
  put<uint64_t>(out + 24, h.manifest_size);
  put<uint64_t>(out + 32, h.payload_offset);
  put<uint64_t>(out + 40, h.payload_size);
  put<uint32_t>(out + 48, h.flags_required);
  put<uint32_t>(out + 52, h.flags_optional);
  put<uint32_t>(out + 56, h.segment_alignment);
  put<uint32_t>(out + 60, h.reserved);
  put<uint64_t>(out + 64, h.manifest_xxh3);
  h.header_xxh3 = xxh3_64(out, kDczHeaderHashedBytes);
  put<uint64_t>(out + 72, h.header_xxh3);
}

// Reads the fields (no checks; the reader validates them in order).
inline Preamble decode_preamble(const uint8_t in[kDczPreambleSize]) {
  using preamble_detail::get;
  Preamble h;
  h.major = get<uint16_t>(in + 8);
  h.minor = get<uint16_t>(in + 10);
  h.header_len = get<uint32_t>(in + 12);
  h.manifest_offset = get<uint64_t>(in + 16);
  h.manifest_size = get<uint64_t>(in + 24);
  h.payload_offset = get<uint64_t>(in + 32);
  h.payload_size = get<uint64_t>(in + 40);
  h.flags_required = get<uint32_t>(in + 48);
  h.flags_optional = get<uint32_t>(in + 52);
  h.segment_alignment = get<uint32_t>(in + 56);
  h.reserved = get<uint32_t>(in + 60);
  h.manifest_xxh3 = get<uint64_t>(in + 64);
  h.header_xxh3 = get<uint64_t>(in + 72);
  return h;
}

inline bool valid_segment_alignment(uint64_t a) {
  return a >= kDczMinAlignment && a <= kDczMaxAlignment && (a & (a - 1)) == 0;
}

}  // namespace dc
