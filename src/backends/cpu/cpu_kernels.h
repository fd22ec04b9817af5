// Inner loops of the CPU backend: per-width block decoders and the "packed row · several vectors"
// dot product that both apply phases are built from.
//
// Decode is organised per 32-code block (the unit of pack_layout.h): decode_block<BITS> turns one
// block's words into 32 floats with compile-time shifts, one specialisation per width (tests prove
// each equal to dc_unpack_code). packed_row_dot then multiplies the decoded block with up to
// kMaxTile activation rows using 32 independent fp32 lanes per row (no loop-carried reduction, so
// the compiler vectorises it), and applies each quantization group's scale and zero once:
//     Σ_g scale_g · (Σ_{p∈g} code_p·x_p − zero_g · Σ_{p∈g} x_p)
// where Σ_{p∈g} x_p comes from per-block sums the caller computes once per tile.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/half.h"
#include "common/pack_layout.h"

namespace dc::cpu {

constexpr unsigned kMaxTile = 16;  // activation rows the decode loops take together (bounds scratch)
// The prefill path (cpu_apply.cpp, gemm_tile): a tile of up to kGemmTile rows against the delta
// dequantized kGemmRanks V̂ rows or kGemmOut Û rows at a time, each piece by one OpenBLAS sgemm.
constexpr unsigned kGemmTile = 256;
constexpr unsigned kGemmRanks = 256;
constexpr unsigned kGemmOut = 1024;
// Most scratch a device reserves for the prefill path (a 4096×4096 delta at α = 1/16: ~14 MB,
// 11008 wide ~31 MB); wider deltas keep the decode loops.
constexpr uint64_t kPrefillScratchMax = uint64_t{64} << 20;
constexpr unsigned kBlock = DC_CODE_BLOCK;

inline uint64_t round_up_block(uint64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

// Byte -> floats tables: a byte of a 1/2/4-bit packed word holds 8/4/2 whole codes, so decoding is
// one table row copy per byte (plain loads and stores the compiler vectorises), instead of a shift,
// mask and int->float conversion per code.
struct DecodeTables {
  float bit1[256][8];  // 8 codes of 1 bit
  float bit2[256][4];  // 4 codes of 2 bits
  float bit4[256][2];  // 2 codes of 4 bits
  DecodeTables() {
    for (unsigned b = 0; b < 256; ++b) {
      for (unsigned k = 0; k < 8; ++k) bit1[b][k] = static_cast<float>((b >> k) & 1u);
      for (unsigned k = 0; k < 4; ++k) bit2[b][k] = static_cast<float>((b >> (2 * k)) & 3u);
      for (unsigned k = 0; k < 2; ++k) bit4[b][k] = static_cast<float>((b >> (4 * k)) & 15u);
    }
  }
};
inline const DecodeTables kDecodeTables;

// Byte q (0..3) of a word, independent of the host's byte order.
inline unsigned word_byte(uint32_t w, unsigned q) { return (w >> (8 * q)) & 0xffu; }

// IEEE fp16 -> fp32 without branches (selects vectorise): the exponent/mantissa bits shifted into
// place and rescaled by 2^112 are exact for normals and subnormals; inf/nan get the max exponent.
inline float half_to_float_fast(uint32_t h) {
  const uint32_t em = (h & 0x7fffu) << 13;
  float f = bits_to_float(em) * 0x1p112f;
  const uint32_t special = ((h & 0x7c00u) == 0x7c00u) ? (0x7f800000u | em) : float_to_bits(f);
  return bits_to_float(special | ((h & 0x8000u) << 16));
}

// The 32 codes of one block (words `w`, BITS words long) as floats. BITS = 16 gives the fp16
// values themselves, BITS = 1 the sign bits as 0/1. One specialisation per width; the tests check
// each against dc_unpack_code.
template <unsigned BITS>
inline void decode_block(const uint32_t* w, float* out) {
  const DecodeTables& T = kDecodeTables;
  if constexpr (BITS == 1) {
    for (unsigned q = 0; q < 4; ++q)
      for (unsigned k = 0; k < 8; ++k) out[8 * q + k] = T.bit1[word_byte(w[0], q)][k];
  } else if constexpr (BITS == 2 || BITS == 3) {
    // 2-bit layout in words 0..1 (for 3 bits: the low two bits of every code) ...
    for (unsigned q = 0; q < 8; ++q)
      for (unsigned k = 0; k < 4; ++k) out[4 * q + k] = T.bit2[word_byte(w[q / 4], q % 4)][k];
    if constexpr (BITS == 3) {  // ... plus 4 × the high bit, bit k of word 2
      for (unsigned q = 0; q < 4; ++q)
        for (unsigned k = 0; k < 8; ++k) out[8 * q + k] += 4.f * T.bit1[word_byte(w[2], q)][k];
    }
  } else if constexpr (BITS == 4) {
    for (unsigned q = 0; q < 16; ++q)
      for (unsigned k = 0; k < 2; ++k) out[2 * q + k] = T.bit4[word_byte(w[q / 4], q % 4)][k];
  } else if constexpr (BITS == 8) {
    for (unsigned k = 0; k < 32; ++k) out[k] = static_cast<float>(word_byte(w[k / 4], k % 4));
  } else {
    static_assert(BITS == 16, "unsupported width");
    for (unsigned k = 0; k < 32; ++k) out[k] = half_to_float_fast((w[k / 2] >> (16 * (k % 2))) & 0xffffu);
  }
}

// Sum of the 32 lanes.
inline float lane_sum(const float* lane) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (unsigned k = 0; k < kBlock; k += 8)
    for (unsigned l = 0; l < 8; ++l) s[l] += lane[k + l];
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

// out[i] = Σ_p V̂[p] · vec[i·vstride + p] for i < mt, over one packed row of `nblocks` blocks.
//   codes, qp     : the row's words and qparams (qp unused for BITS 1 and 16)
//   group_blocks  : blocks per quantization group (group_size / 32); ignored for BITS 1 and 16
//   vec           : mt rows, each ≥ nblocks·32 floats, zero beyond the row's real length
//   bsum          : bsum[i·bstride + b] = Σ of vec row i over block b (unused for BITS 1 and 16)
// BITS = 1 gives Σ bit·x (the caller turns it into Σ (2·bit−1)·x); BITS = 16 gives Σ fp16·x.
template <unsigned BITS>
inline void packed_row_dot(const uint32_t* codes, const dc_qparam* qp, uint64_t group_blocks,
                           uint64_t nblocks, const float* vec, uint64_t vstride, const float* bsum,
                           uint64_t bstride, unsigned mt, float* out) {
  constexpr bool kQuantized = BITS != 1 && BITS != 16;
  if (!kQuantized) group_blocks = nblocks;
  if (group_blocks == 0) group_blocks = 1;
  alignas(64) float code[kBlock];
  alignas(64) float lane[kMaxTile][kBlock];
  for (unsigned i = 0; i < mt; ++i) out[i] = 0.f;
  uint64_t g = 0;
  for (uint64_t b0 = 0; b0 < nblocks; b0 += group_blocks, ++g) {
    const uint64_t b1 = std::min(nblocks, b0 + group_blocks);
    for (unsigned i = 0; i < mt; ++i)
      for (unsigned k = 0; k < kBlock; ++k) lane[i][k] = 0.f;
    for (uint64_t b = b0; b < b1; ++b) {
      decode_block<BITS>(codes + b * BITS, code);
      for (unsigned i = 0; i < mt; ++i) {
        const float* x = vec + i * vstride + b * kBlock;
        float* l = lane[i];
        for (unsigned k = 0; k < kBlock; ++k) l[k] += code[k] * x[k];
      }
    }
    if constexpr (kQuantized) {
      const float scale = half_to_float(qp[g].scale), zero = half_to_float(qp[g].zero);
      for (unsigned i = 0; i < mt; ++i) {
        float xs = 0.f;
        for (uint64_t b = b0; b < b1; ++b) xs += bsum[i * bstride + b];
        out[i] += scale * (lane_sum(lane[i]) - zero * xs);
      }
    } else {
      for (unsigned i = 0; i < mt; ++i) out[i] += lane_sum(lane[i]);
    }
  }
}

// out[i] = Σ_{c<n} w[c] · x[i·xstride + c] for i < mt (dense rows: base weight, dense deltas).
inline void dense_row_dot(const float* w, uint64_t n, const float* x, uint64_t xstride, unsigned mt,
                          float* out) {
  const uint64_t nb = n / kBlock * kBlock;
  for (unsigned i = 0; i < mt; ++i) {
    const float* xr = x + i * xstride;
    alignas(64) float lane[kBlock] = {};
    for (uint64_t c = 0; c < nb; c += kBlock)
      for (unsigned k = 0; k < kBlock; ++k) lane[k] += w[c + k] * xr[c + k];
    float tail = 0.f;
    for (uint64_t c = nb; c < n; ++c) tail += w[c] * xr[c];
    out[i] = lane_sum(lane) + tail;
  }
}

// bsum[b] = Σ of v over block b, for the nblocks blocks of one zero-padded row.
inline void block_sums(const float* v, uint64_t nblocks, float* bsum) {
  for (uint64_t b = 0; b < nblocks; ++b) {
    float s = 0.f;
    for (unsigned k = 0; k < kBlock; ++k) s += v[b * kBlock + k];
    bsum[b] = s;
  }
}

}  // namespace dc::cpu

namespace dc::cpu {

// out[p] = V̂[p] for p < len (the dequantized values of one packed row); `out` must hold
// round_up_block(len) floats. Used by merge, where the decoded row is reused across all rows of W.
template <unsigned BITS>
inline void decode_row(const uint32_t* codes, const dc_qparam* qp, uint64_t group_blocks, uint64_t len,
                       float* out) {
  const uint64_t nblocks = (len + kBlock - 1) / kBlock;
  for (uint64_t b = 0; b < nblocks; ++b) decode_block<BITS>(codes + b * BITS, out + b * kBlock);
  if constexpr (BITS != 1 && BITS != 16) {
    if (group_blocks == 0) group_blocks = 1;
    uint64_t g = 0;
    for (uint64_t b0 = 0; b0 < nblocks; b0 += group_blocks, ++g) {
      const float scale = half_to_float(qp[g].scale), zero = half_to_float(qp[g].zero);
      const uint64_t e = std::min(nblocks, b0 + group_blocks) * kBlock;
      for (uint64_t q = b0 * kBlock; q < e; ++q) out[q] = scale * (out[q] - zero);
    }
  }
}

inline void decode_row_bits(uint32_t bits, const uint32_t* codes, const dc_qparam* qp,
                            uint64_t group_blocks, uint64_t len, float* out) {
  switch (bits) {
    case 1: decode_row<1>(codes, qp, group_blocks, len, out); break;
    case 2: decode_row<2>(codes, qp, group_blocks, len, out); break;
    case 3: decode_row<3>(codes, qp, group_blocks, len, out); break;
    case 4: decode_row<4>(codes, qp, group_blocks, len, out); break;
    case 8: decode_row<8>(codes, qp, group_blocks, len, out); break;
    default: decode_row<16>(codes, qp, group_blocks, len, out); break;
  }
}

}  // namespace dc::cpu
