// Device building blocks of the decode-size apply kernels: staging activations (any dtype, any
// column map) as fp32 in shared memory, decoding one block of 32 packed codes (pack_layout.h) of a
// runtime width, and the dot product of a decoded block with up to kTile staged rows.
//
// Compile time: nothing here is templated on the activation dtype or the token count. x is
// converted to fp32 once, while it is staged; the token tile is a fixed kTile with a runtime count;
// the width-specific part is only decode_block<BITS> (six small unrolled loops).
//
// Dequantization is folded per block: a block lies inside one quantization group (group sizes are
// multiples of 32), so Σ_i s·(c_i − z)·x_i = s·(Σ_i c_i·x_i − z·Σ_i x_i). The same formula covers
// fp16 codes (s = 1, z = 0) and BitDelta signs (s = 2·scale, z = ½: scale·Σ (2·bit − 1)·x_i).
#pragma once

#include "common.cuh"

namespace dcg {

constexpr int kTile = 8;          // rows of x per block tile (runtime count 1..kTile)
constexpr int kPitch = 36;        // floats per staged block of 32 values: 16-byte aligned, and the
                                  // float4 reads of 8 consecutive lanes hit 8 distinct bank quads
constexpr int kStageBytes = 40 * 1024;  // dynamic shared memory budget of one block's staging

// Where position p of a packed row reads its activation: x[perm[p]] or x[p - off]; 0 when the
// result is outside [0, cols) or p ≥ len (DC_PERM_NONE and p < off wrap to huge values).
struct ColMap {
  const uint32_t* perm;
  uint64_t off, cols, len;
};

// Stages positions [p0, p0 + nb·32) of `tt` rows (row indices in rows[]) of a row-major matrix of
// dtype dt into xs[i·nb·kPitch + b·kPitch + j]. Every thread of the block takes part.
__device__ __forceinline__ void stage_rows(float* xs, int nb, uint64_t p0, const void* src, int dt, uint64_t ld,
                                           const int* rows, int tt, const ColMap& map) {
  const int n = nb * 32;
  for (int i = 0; i < tt; ++i) {
    const uint64_t base = (uint64_t)rows[i] * ld;
    float* dst = xs + i * nb * kPitch;
    for (int q = threadIdx.x; q < n; q += blockDim.x) {
      const uint64_t p = p0 + q;
      uint64_t j = ~0ull;
      if (p < map.len) j = map.perm ? (uint64_t)map.perm[p] : p - map.off;
      dst[(q >> 5) * kPitch + (q & 31)] = j < map.cols ? load_any(src, base + j, dt) : 0.f;
    }
  }
}

// The raw words of one block of codes (up to 16 words: 16-bit codes); words past `bits` are 0.
struct RawBlock {
  uint32_t w[16];
  uint32_t bits;
  float s, z;
};

__device__ __forceinline__ void load_raw(const uint32_t* __restrict__ w, uint32_t bits, RawBlock& r) {
  r.bits = bits;
#pragma unroll
  for (int q = 0; q < 16; ++q) r.w[q] = (uint32_t)q < bits ? w[q] : 0u;
}

template <int BITS>
__device__ __forceinline__ void decode_block(const uint32_t* wd, float c[32]) {
  if constexpr (BITS == 1) {
#pragma unroll
    for (int i = 0; i < 32; ++i) c[i] = (float)((wd[0] >> i) & 1u);
  } else if constexpr (BITS == 3) {
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const uint32_t lo = ((i < 16 ? wd[0] : wd[1]) >> (2 * (i % 16))) & 3u;
      c[i] = (float)(lo | (((wd[2] >> i) & 1u) << 2));
    }
  } else if constexpr (BITS == 16) {
#pragma unroll
    for (int i = 0; i < 32; ++i) c[i] = f16_to_f32((uint16_t)(wd[i / 2] >> (16 * (i % 2))));
  } else {
    constexpr int per = 32 / BITS;
    constexpr uint32_t mask = (1u << BITS) - 1u;
#pragma unroll
    for (int i = 0; i < 32; ++i) c[i] = (float)((wd[i / per] >> (BITS * (i % per))) & mask);
  }
}

__device__ __forceinline__ void decode_any(const RawBlock& r, float c[32]) {
  switch (r.bits) {
    case 1: decode_block<1>(r.w, c); break;
    case 2: decode_block<2>(r.w, c); break;
    case 3: decode_block<3>(r.w, c); break;
    case 4: decode_block<4>(r.w, c); break;
    case 8: decode_block<8>(r.w, c); break;
    default: decode_block<16>(r.w, c); break;
  }
}

// acc[m] += s·(Σ c_i·x_m,i − z·Σ x_m,i) for m < tt, x_m at xs + m·tstride (one staged block).
__device__ __forceinline__ void dot_block(const float c[32], float s, float z, const float* xs, int tstride, int tt,
                                          float acc[kTile]) {
#pragma unroll
  for (int m = 0; m < kTile; ++m) {
    if (m < tt) {
      const float4* xv = reinterpret_cast<const float4*>(xs + m * tstride);
      float cx = 0.f, sx = 0.f;
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        const float4 v = xv[q];
        cx = fmaf(c[4 * q], v.x, cx);
        cx = fmaf(c[4 * q + 1], v.y, cx);
        cx = fmaf(c[4 * q + 2], v.z, cx);
        cx = fmaf(c[4 * q + 3], v.w, cx);
        sx += (v.x + v.y) + (v.z + v.w);
      }
      acc[m] = fmaf(s, cx - z * sx, acc[m]);
    }
  }
}

// Σ over the blocks [0, nb) of one staged chunk, lanes striding by G; block kb's codes come from
// fetch(kb, RawBlock&) (which also sets s and z). The next block's words are requested before the
// current block's math, so a lane keeps two reads in flight.
template <int G, class Fetch>
__device__ __forceinline__ void chunk_dot(const Fetch& fetch, int nb, const float* xs, int lane, int tt,
                                          float acc[kTile]) {
  const int tstride = nb * kPitch;
  int kb = lane;
  RawBlock next;
  if (kb < nb) fetch(kb, next);
#pragma unroll 1
  for (; kb < nb; kb += G) {
    const RawBlock cur = next;
    if (kb + G < nb) fetch(kb + G, next);
    float c[32];
    decode_any(cur, c);
    dot_block(c, cur.s, cur.z, xs + kb * kPitch, tstride, tt, acc);
  }
}

__device__ __forceinline__ float qp_scale(const dc_qparam& q) { return f16_to_f32(q.scale); }
__device__ __forceinline__ float qp_zero(const dc_qparam& q) { return f16_to_f32(q.zero); }

// One packed row of a single width: block b (absolute) at row + b·bits, qparams qp[b / gb]; when
// qp is null, constant s0/z0 (fp16 codes, BitDelta signs).
struct PlainRowFetch {
  const uint32_t* row;
  const dc_qparam* qp;
  uint32_t bits, gb;
  uint64_t b0;  // absolute block of the chunk's first block
  float s0, z0;
  __device__ __forceinline__ void operator()(int kb, RawBlock& r) const {
    const uint64_t b = b0 + kb;
    load_raw(row + b * bits, bits, r);
    if (qp) {
      const dc_qparam q = qp[b / gb];
      r.s = qp_scale(q);
      r.z = qp_zero(q);
    } else {
      r.s = s0;
      r.z = z0;
    }
  }
};

// Row o of Û over every band: block b of t-space (bands padded to 32 columns) → its band's codes.
struct URowFetch {
  const DeltaDesc* d;  // shared-memory copy
  uint64_t o, b0;
  __device__ __forceinline__ void operator()(int kb, RawBlock& r) const {
    const uint32_t b = (uint32_t)(b0 + kb);
    uint32_t k = 0;
    while (k + 1 < d->n_bands && b >= d->bands[k + 1].t_off / 32) ++k;
    const BandDesc& bd = d->bands[k];
    const uint32_t lb = b - bd.t_off / 32;
    load_raw(bd.u_codes + o * bd.u_row_words + (uint64_t)lb * bd.bits, bd.bits, r);
    if (bd.bits != 16) {
      const dc_qparam q = bd.u_qp[o * bd.u_row_groups + lb / (bd.group_size / 32)];
      r.s = qp_scale(q);
      r.z = qp_zero(q);
    } else {
      r.s = 1.f;
      r.z = 0.f;
    }
  }
};

}  // namespace dcg
