/*
 * Packed layout of quantized low-rank bands, shared by the host code (C++) and the GPU kernels
 * (CUDA/HIP). Defined once here; docs/FORMAT.md §"Code packing" describes the same bytes.
 *
 * A low-rank delta is ΔW ≈ Û·diag(σ)·V̂ᵀ, W of shape rows(out) × cols(in), split into bands of
 * singular vectors [rank_begin, rank_end) with one bit width each. For band b of rank r_b:
 *   V part: r_b rows (one per singular vector), each of length cols, streamed along `in`;
 *   U part: rows rows (one per output feature), each of length r_b, streamed along the rank.
 * Every row of codes starts on a 32-bit word and is padded to a whole block of 32 codes:
 *   words per row = ceil(len / 32) * bits.
 * Within a block of 32 codes (i = 0..31):
 *   bits 2, 4, 8 : code i is bits [bits*(i % (32/bits)), +bits) of word i / (32/bits)
 *   bits 3       : low 2 bits as in the 2-bit layout in words 0..1, the high bit is bit i of word 2
 *   bits 1       : bit i of word 0 (BitDelta signs: 1 = +scale, 0 = -scale)
 *   bits 16      : the fp16 value itself, code i is the i-th little-endian half (no qparams)
 * Padding codes are 0 (their x entries are treated as 0 and they never reach an output).
 * Quantization is asymmetric per group of `group_size` consecutive codes of a row (group_size is a
 * multiple of 32): value = scale * (code - zero), with scale and zero stored as IEEE fp16 in a
 * dc_qparam, row-major [row][group]. zero is an integer in [0, 2^bits - 1].
 * A band's segment holds its codes (row-major, words) followed by its qparams.
 */
#ifndef DELTACOME_PACK_LAYOUT_H
#define DELTACOME_PACK_LAYOUT_H

#include <stdint.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#  define DC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#  define DC_HOST_DEVICE static inline
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define DC_CODE_BLOCK 32u     /* codes per block; rows are padded to whole blocks          */
#define DC_MAX_GROUP 4096u    /* largest accepted group size                               */

typedef struct dc_qparam {
  uint16_t scale; /* fp16 bits */
  uint16_t zero;  /* fp16 bits, an integer value in [0, 2^bits - 1] */
} dc_qparam;

/* Bit widths a band may use. */
DC_HOST_DEVICE int dc_valid_band_bits(uint32_t bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 8 || bits == 16;
}

/* 32-bit words that hold one packed row of `len` codes of width `bits` (1..16). */
DC_HOST_DEVICE uint64_t dc_row_words(uint64_t len, uint32_t bits) {
  return ((len + DC_CODE_BLOCK - 1) / DC_CODE_BLOCK) * (uint64_t)bits;
}

/* Quantization groups in a row of `len` codes. */
DC_HOST_DEVICE uint64_t dc_row_groups(uint64_t len, uint32_t group_size) {
  return (len + group_size - 1) / group_size;
}

/* Code i of a packed row (any width but 16). The one decoder every backend's reference uses. */
DC_HOST_DEVICE uint32_t dc_unpack_code(const uint32_t* row, uint64_t i, uint32_t bits) {
  const uint64_t block = i / DC_CODE_BLOCK;
  const uint32_t j = (uint32_t)(i % DC_CODE_BLOCK);
  const uint32_t* w = row + block * bits;
  switch (bits) {
    case 1: return (w[0] >> j) & 1u;
    case 3: return ((w[j / 16] >> (2 * (j % 16))) & 3u) | (((w[2] >> j) & 1u) << 2);
    default: {
      const uint32_t per = 32u / bits;
      return (w[j / per] >> (bits * (j % per))) & ((1u << bits) - 1u);
    }
  }
}

/* Sets code i of a packed row (row zero-initialised beforehand). */
DC_HOST_DEVICE void dc_pack_code(uint32_t* row, uint64_t i, uint32_t bits, uint32_t code) {
  const uint64_t block = i / DC_CODE_BLOCK;
  const uint32_t j = (uint32_t)(i % DC_CODE_BLOCK);
  uint32_t* w = row + block * bits;
  switch (bits) {
    case 1: w[0] |= (code & 1u) << j; break;
    case 3:
      w[j / 16] |= (code & 3u) << (2 * (j % 16));
      w[2] |= ((code >> 2) & 1u) << j;
      break;
    default: {
      const uint32_t per = 32u / bits;
      w[j / per] |= (code & ((1u << bits) - 1u)) << (bits * (j % per));
    }
  }
}

#ifdef __cplusplus
}
#endif
#endif /* DELTACOME_PACK_LAYOUT_H */
