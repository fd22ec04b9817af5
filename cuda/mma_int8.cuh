// Integer tensor-core dot products of 2- and 3-bit bands (CUDA, sm_80+), for the multi-tenant
// kernel (apply_mma_kernel.cu): 16 packed rows of codes times one vector, one
// mma.sync.m16n8k32 (u8 codes × s8 digits, s32 accumulation) per 512 codes of the warp.
//
// Why integers (bench/RESULTS-h100.md): the fp32 decode costs ~3 instructions per code (mask into
// 2^23, FMA out the bias, FMA with x) and a warp-per-row kernel is a chain of them; the fp16
// tensor-core variants of the fifth session needed a shift, a LOP3 and an HADD2 per two codes and
// fp32 chains per k-tile. Here a 32-bit word of 16 two-bit codes becomes four A registers with
// one LOP3 and three SHF+LOP3 ((w >> 2j) & 0x03030303: bytes e = code 4e + j), codes stay exact
// unsigned bytes, and the zero point folds out per group (Σ s·(c − z)·v = s·(Σ c·v − z·Σ v)).
//
// Exactness: the vector is scaled by a power of two 2^e so that its largest magnitude lies in
// [2^21, 2^22), rounded to an integer v_q (22 significant bits, relative error ≤ 2^-22 of the
// largest entry) and split into three balanced base-256 digits v_q = 65536·hi + 256·mid + lo, each
// an s8. The digits are three columns of the B operand (the other five are zero), so one MMA
// yields Σ c·hi, Σ c·mid and Σ c·lo exactly in s32; the group's sum is rebuilt in fp32 from them.
//
// Fragment order (PTX ISA, mma.m16n8k32 with 8-bit A/B): lane (g = lane/4, q = lane%4) holds A
// rows g (a0, a2) and g + 8 (a1, a3) at k = 4q…4q+3 (a0, a1) and 16 + 4q…16 + 4q + 3 (a2, a3);
// B column g at the same k (b0, b1); C rows g, g + 8 at columns 2q, 2q + 1. Inside a tile k is a
// dot-product index, so any order works if A and B agree. A chunk is 128 codes of each of the 16
// rows; lane q reads the chunk's block q (32 codes) of rows g and g + 8, and sub-step s ∈ {0, 1}
// takes codes 16s…16s+15 of that block: register R_j = bytes (code 4e + j), e = 0..3. The MMA of
// sub-step s and pair (j0, j1) ∈ {(0, 1), (2, 3)} puts R_j0 at k = 4q + e and R_j1 at
// k = 16 + 4q + e. So the B word of lane (n, q) for (chunk c, sub-step s, j) holds, in byte e,
// digit n of vector element 128c + 32q + 16s + 4e + j — stage_digits writes exactly those words.
#pragma once

#if !defined(DC_USE_HIP)
#include "apply_kernels.cuh"
#include "row_dot.cuh"
#include "vec_dot.cuh"

namespace dcg {

constexpr uint32_t kDigits = 3;  // B columns holding the vector's digits
// kMmaChunk, kMmaRows and mma_band (which bands take this path): apply_kernels.cuh, shared with
// the host.

// Bytes of the staged digits of n vector elements (three columns of whole chunks).
DC_HOST_DEVICE uint32_t digit_bytes(uint32_t n) { return mma_chunks(n) * kMmaChunk * kDigits; }

__device__ __forceinline__ void mma_u8s8(int c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  (void)c; (void)a0; (void)a1; (void)a2; (void)a3; (void)b0; (void)b1;
  __trap();  // the host never launches this kernel below sm_80 (apply_mma_kernel.cu)
#endif
}

// The largest |v| of a block-staged vector as bits, reduced over the whole block (every thread
// calls it; `red`: kWarps words of shared scratch). Non-negative floats order as integers.
__device__ __forceinline__ uint32_t block_max_bits(uint32_t m, uint32_t* red) {
  m = __reduce_max_sync(0xffffffffu, m);
  __syncthreads();  // red's previous readers are done
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
  __syncthreads();
  m = 0;
  for (uint32_t w = 0; w < blockDim.x / 32; ++w) m = max(m, red[w]);
  return m;
}

// The power of two 2^e that puts a vector whose largest magnitude has bits `m` into [2^21, 2^22)
// (e clamped to the normal range; an all-zero vector gets 2^0). Returns 2^-e in *down; a vector
// with Inf or NaN gets down = NaN, so every sum built from its digits is NaN (never a finite
// wrong value).
__device__ __forceinline__ float digit_scale(uint32_t m, float* down) {
  if (m >= 0x7f800000u) {
    *down = __uint_as_float(0x7fc00000u);
    return 0.f;
  }
  int e = m == 0 ? 0 : 21 - ((int)(m >> 23) - 127);
  e = max(-126, min(126, e));
  *down = __uint_as_float((uint32_t)(127 - e) << 23);
  return __uint_as_float((uint32_t)(127 + e) << 23);
}

// v·up rounded to an integer q (|q| ≤ 2^22) as three balanced base-256 digits q = 65536·hi +
// 256·mid + lo, each an s8, put into byte e of w0 (hi), w1 (mid) and w2 (lo).
__device__ __forceinline__ void put_digits(float v, float up, uint32_t e, uint32_t& w0, uint32_t& w1, uint32_t& w2) {
  const int q = __float2int_rn(v * up);
  const int lo = ((q + 128) & 255) - 128, r = (q - lo) >> 8;
  const int mid = ((r + 128) & 255) - 128, hi = (r - mid) >> 8;
  w0 |= (uint32_t)(hi & 255) << (8 * e);
  w1 |= (uint32_t)(mid & 255) << (8 * e);
  w2 |= (uint32_t)(lo & 255) << (8 * e);
}

// Digits of chunk c of n elements of a staged vector (element k at src[(k >> 5)·kPitch + (k & 31)],
// k ≥ n reads as 0) into dig (`chunks` chunks, digit_bytes; the B order above) and the sum of the
// chunk's elements times `up` into csum[c], by one warp: lane 4·qs + j takes elements
// 128c + 16·qs + 4e + j (e = 0..3), i.e. byte e of B word (qs, j) of each digit column, and stores those three words;
// with NC > 1 also chunks c + step, …, c + (NC − 1)·step (those < chunks), interleaved so that the
// warp has NC independent chains. `up` = 2^e from digit_scale. Why a warp per chunk
// (bench/RESULTS-h100.md, ninth session): with a thread per 16 elements, t's short bands kept one
// or two warps busy on a chain of ~250 instructions each, and the batch kernel's phase-2 staging
// took ~10k cycles. Out of line: inlined twice, it added spill slots to the batch kernel (112
// against 104 bytes of stores).
template <int NC = 1>
__device__ __noinline__ void stage_digit_chunk(const float* src, uint32_t n, uint32_t c, uint32_t chunks, float up,
                                               uint32_t* dig, float* csum, uint32_t step = 0) {
  const uint32_t lane = threadIdx.x % 32, qs = lane / 4, j = lane % 4;
  float s[NC];
  uint32_t w0[NC], w1[NC], w2[NC];
#pragma unroll
  for (int i = 0; i < NC; ++i) {  // NC chunks c, c + step, … side by side (independent chains)
    s[i] = 0.f;
    w0[i] = w1[i] = w2[i] = 0u;
#pragma unroll
    for (uint32_t e = 0; e < 4; ++e) {
      const uint32_t k = (c + i * step) * kMmaChunk + 16 * qs + 4 * e + j;
      const float v = k < n ? src[(k >> 5) * kPitch + (k & 31)] : 0.f;
      s[i] += v;
      put_digits(v, up, e, w0[i], w1[i], w2[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < NC; ++i) {
    const uint32_t ci = c + i * step;
    if (ci >= chunks) break;
    const float t = seg_sum<32>(s[i]);
    // word index ((d·chunks + c)·4 + q)·8 + s·4 + j = (d·chunks + c)·32 + lane
    dig[(0 * chunks + ci) * 32 + lane] = w0[i];
    dig[(1 * chunks + ci) * 32 + lane] = w1[i];
    dig[(2 * chunks + ci) * 32 + lane] = w2[i];
    if (lane == 0) csum[ci] = t * up;  // scaled like the digits: mma_rows folds 2^-e in once
  }
}

// Every chunk of n elements (stage_digit_chunk), warp w taking chunks w, w + warps, …, DC_DIGIT_NC
// of them per call side by side. The caller synchronises before the digits are read.
#ifndef DC_DIGIT_NC
#  define DC_DIGIT_NC 4
#endif
__device__ __forceinline__ void stage_digits(const float* src, uint32_t n, float up, uint32_t* dig, float* csum) {
  const uint32_t chunks = mma_chunks(n), warps = blockDim.x / 32;
  for (uint32_t c = threadIdx.x / 32; c < chunks; c += DC_DIGIT_NC * warps)
    stage_digit_chunk<DC_DIGIT_NC>(src, n, c, chunks, up, dig, csum, warps);
}

// The four A registers of one sub-step from a 2-bit word: R_j = (w >> 2j) & 0x03030303.
__device__ __forceinline__ void regs_2bit(uint32_t w, uint32_t r[4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) r[j] = (w >> (2 * j)) & 0x03030303u;
}

// The same for a 3-bit block: lo = the sub-step's 2-bit word, hi = the block's high-bit word
// (bit i = code i's bit 2); sub-step s takes hi bits 16s…16s+15. Nibble e of those 16 bits is
// spread to byte e (one PRMT, a shift, a LOP3), then bit j of each byte is moved to bit 2.
__device__ __forceinline__ void regs_3bit(uint32_t lo, uint32_t hi, int s, uint32_t r[4]) {
  const uint32_t u = __byte_perm(hi, 0u, s ? 0x4342u : 0x4140u);   // bytes: h0, 0, h1, 0
  const uint32_t v = (u & 0x000F000Fu) | ((u << 4) & 0x0F000F00u);  // nibble e in byte e
  r[0] = (lo & 0x03030303u) | ((v << 2) & 0x04040404u);
  r[1] = ((lo >> 2) & 0x03030303u) | ((v << 1) & 0x04040404u);
  r[2] = ((lo >> 4) & 0x03030303u) | (v & 0x04040404u);
  r[3] = ((lo >> 6) & 0x03030303u) | ((v >> 1) & 0x04040404u);
}

// Sub-step s's A registers of one row's block (BITS words) for either width.
template <int BITS>
__device__ __forceinline__ void regs_of(const uint32_t* w, int s, uint32_t r[4]) {
  if constexpr (BITS == 2) regs_2bit(w[s], r);
  else regs_3bit(w[s], w[2], s, r);
}

// One sub-step: two MMAs into acc with rows g (ra) and g + 8 (rb) against the lane's B words.
__device__ __forceinline__ void mma_substep(int acc[4], const uint32_t ra[4], const uint32_t rb[4], uint4 b) {
  mma_u8s8(acc, ra[0], rb[0], ra[1], rb[1], b.x, b.y);
  mma_u8s8(acc, ra[2], rb[2], ra[3], rb[3], b.z, b.w);
}

// Σ_k c·v_k of the group just accumulated, for rows g (first) and g + 8 (second), in lanes q = 0
// (other lanes: garbage): the digit columns 0, 1 sit in lane q = 0, column 2 in lane q = 1. With a
// second vector in B columns 3..5 (pair), its sums land in lanes q = 1: column 3 is that lane's
// own second column, columns 4 and 5 are lane q = 2's.
__device__ __forceinline__ float2 mma_group_sums(const int acc[4], bool pair, int q) {
  const int n0 = __shfl_down_sync(0xffffffffu, acc[0], 1), n2 = __shfl_down_sync(0xffffffffu, acc[2], 1);
  if (pair) {  // uniform
    const int n1 = __shfl_down_sync(0xffffffffu, acc[1], 1), n3 = __shfl_down_sync(0xffffffffu, acc[3], 1);
    if (q == 1)
      return make_float2(fmaf((float)acc[1], 65536.f, fmaf((float)n0, 256.f, (float)n1)),
                         fmaf((float)acc[3], 65536.f, fmaf((float)n2, 256.f, (float)n3)));
  }
  const float a = fmaf((float)acc[0], 65536.f, fmaf((float)acc[1], 256.f, (float)n0));
  const float b = fmaf((float)acc[2], 65536.f, fmaf((float)acc[3], 256.f, (float)n2));
  return make_float2(a, b);
}

// The first MMA of a chain: C = 0 (ptxas feeds the zero register), no accumulator to clear.
__device__ __forceinline__ void mma_u8s8_first(int c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};"
      : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0));
#else
  (void)a0; (void)a1; (void)a2; (void)a3; (void)b0; (void)b1;
  c[0] = c[1] = c[2] = c[3] = 0;
  __trap();
#endif
}

// A lane's side of the B operand and of the group sums (mma_rows, mma_one): whether it holds a
// digit column (bw: its words of chunk 0), the chunk sums it finishes with, and their 2^-e.
struct DigitLane {
  bool has_b;
  const uint4* bw;
  const float* cs;
  float dn;
};
__device__ __forceinline__ DigitLane digit_lane(uint32_t chunks, const uint32_t* dig, const float* csum, float down,
                                                const uint32_t* dig_b, const float* csum_b, float down_b) {
  const int g = threadIdx.x % 32 / 4, q = threadIdx.x % 4;
  const bool pair = dig_b != nullptr;
  // this lane's B column g: digit g of the vector, or digit g − 3 of the second one (pair)
  const bool has_b = g < (int)kDigits || (pair && g < 2 * (int)kDigits);
  const uint4* bw = reinterpret_cast<const uint4*>(g < (int)kDigits || !pair ? dig : dig_b) +
                    (has_b ? (g % (int)kDigits) * chunks * 8 : 0) + 2 * q;
  // lanes q = 1 finish the second vector's sums
  return DigitLane{has_b, bw, pair && q == 1 ? csum_b : csum, pair && q == 1 ? down_b : down};
}

// Chunk c's four MMAs from zero (rows g: wa, g + 8: wb) into t.
template <int BITS>
__device__ __forceinline__ void chunk_mmas(const DigitLane& dl, uint32_t c, const uint32_t* wa, const uint32_t* wb,
                                           int t[4]) {
  uint4 b0 = make_uint4(0u, 0u, 0u, 0u), b1 = b0;
  if (dl.has_b) {
    b0 = dl.bw[c * 8];
    b1 = dl.bw[c * 8 + 1];
  }
  uint32_t ra[4], rb[4];
  regs_of<BITS>(wa, 0, ra);
  regs_of<BITS>(wb, 0, rb);
  mma_u8s8_first(t, ra[0], rb[0], ra[1], rb[1], b0.x, b0.y);
  mma_u8s8(t, ra[2], rb[2], ra[3], rb[3], b0.z, b0.w);
  regs_of<BITS>(wa, 1, ra);
  regs_of<BITS>(wb, 1, rb);
  mma_substep(t, ra, rb, b1);
}

// A group's s32 sums t folded into sum: s·(F − z·Σv) per row, with the group parameters pqa, pqb
// (f16 scale, f16 zero) and sx = Σv of the group (scaled by 2^e).
__device__ __forceinline__ void fold_group(const int t[4], uint32_t pqa, uint32_t pqb, float sx, bool pair, int q,
                                           float2& sum) {
  float sa, za, sb, zb;
  load_qp_word(pqa, sa, za);
  load_qp_word(pqb, sb, zb);
  const float2 f = mma_group_sums(t, pair, q);
  sum.x = fmaf(sa, fmaf(-za, sx, f.x), sum.x);
  sum.y = fmaf(sb, fmaf(-zb, sx, f.y), sum.y);
}

// Σ_k s·(c − z)·v_k over chunks [c_begin, c_end) of the 16 rows row_a (lane group g) and row_b
// (g + 8) of one band (row stride row_words words, qparams row_groups per row, 2^gsh chunks per
// group; kG1: gsh = 0; a range may start or end inside a group: the partial sums of a group add
// up) against staged digits (dig of `chunks` chunks; csum: each chunk's Σ v already scaled by
// 2^e; `down` = 2^-e). Lane (g, q) returns the sums of rows g (x) and g + 8 (y) in q = 0. Rows are
// always valid (the caller clamps). dig_b (or null): a second vector's digits (csum_b, down_b) in
// B columns 3..5 — each tile decoded once for two vectors; its sums are returned in lanes q = 1.
//
// Codes and group parameters come in batches of kB chunks (below), the next batch's loads issued
// before the current one's math (two register sets), and the lines of the batch after that are
// requested into L2. Each chunk is one chain of 4 MMAs from zero: with groups of one chunk (the
// default group of 128) no accumulator is cleared or added; longer groups add the chunk sums in
// s32. Why this shape (bench/RESULTS-h100.md, thirteenth session): the loop it replaces (batches
// of 4, loaded and then used) spent ~140 warp instructions per chunk — 64-bit address arithmetic
// and bounds per load, generic loads of the group parameters, accumulators cleared and added, B
// registers re-zeroed, the 2^-e product per group — 55 % of the 32-tenant kernel's instructions
// (ncu). Here a batch computes its addresses once (constant offsets per chunk), the group
// parameters come through the read-only path, and 2^-e multiplies the row's sum once at the end
// (csum is staged pre-scaled: s·(F − z·Σv·2^e) per group). Same call on the H100, three rounds:
// 32 tenants 76.7–77.4 µs against 78.3–78.9, one delta at M = 16 36.8–37.0 against 37.9–38.0,
// M = 64 83.6–84.6 against 86.9–87.4; the same loop without the second register set (batches of
// 4): 79.3–79.6 / 35.8–35.9 / 81.3–81.8, with batches of 3 in two sets (spills): 79.0–79.9.
//
// kB, chunks per batch, is the kernel instance's (build-time tuning): 2 for the batch instance (3 and
// 4 spill at 128 registers), 1 for the pair instance, whose second vector's sums take the registers
// (spills 40/60 bytes against 108/244 with 2). H100, same call, three rounds (fourteenth session):
// kB = 1 in both instances gave one delta at M = 16 34.3–34.7 µs against 35.6–36.3 and M = 64
// 77.4–77.8 against 79.6–80.2, but 32 tenants 77.5–77.9 against 74.3–75.3; kB = 1 for pairs only
// (kept): M = 7 28.2–28.5 against 28.9–29.3, M = 16 33.7–34.0 against 35.0–35.2, M = 64 76.3–77.1
// against 78.7–79.1, 32 tenants unchanged (74.6–75.5 against 74.8–74.9).
#ifndef DC_MMA_KB
#  define DC_MMA_KB 2  // the batch instance's kB
#endif
#ifndef DC_MMA_KB_PAIR
#  define DC_MMA_KB_PAIR 1  // the pair instance's kB
#endif
template <int BITS, bool kG1, int kB>
__device__ __forceinline__ float2 mma_rows(const uint32_t* __restrict__ codes, uint32_t row_words,
                                           const dc_qparam* __restrict__ qp, uint32_t row_groups, uint32_t gsh,
                                           uint64_t row_a, uint64_t row_b, uint32_t c_begin, uint32_t c_end,
                                           uint32_t chunks, const uint32_t* dig, const float* csum, float down,
                                           const uint32_t* dig_b, const float* csum_b, float down_b) {
  constexpr uint32_t kW = 4 * BITS;  // words of one lane's row block per chunk
  const int q = threadIdx.x % 4;
  const bool pair = dig_b != nullptr;
  const uint32_t* pa = codes + row_a * row_words + (uint64_t)q * BITS;
  const uint32_t* pb = codes + row_b * row_words + (uint64_t)q * BITS;
  const uint32_t* qa = reinterpret_cast<const uint32_t*>(qp + row_a * row_groups);
  const uint32_t* qb = reinterpret_cast<const uint32_t*>(qp + row_b * row_groups);
  const DigitLane dl = digit_lane(chunks, dig, csum, down, dig_b, csum_b, down_b);
  const uint32_t gmask = (1u << gsh) - 1u;
  // this lane's block of chunk c starts at word kW·c (+ q·BITS above) and exists while that is
  // < row_words: for c < c_have
  const uint32_t lim = row_words > (uint32_t)q * BITS ? row_words - (uint32_t)q * BITS : 0u;
  const uint32_t c_have = min(c_end, (lim + kW - 1) / kW);
  float2 sum = make_float2(0.f, 0.f);
  int acc[4] = {0, 0, 0, 0};  // a group's sums so far (groups longer than a chunk)
  float sx = 0.f;
  // A batch in registers: kB chunks' codes of rows g (wa) and g + 8 (wb) and their group parameters.
  struct Batch {
    uint32_t wa[kB][BITS], wb[kB][BITS], pqa[kB], pqb[kB];
  };
  // Batch c0's codes and group parameters into registers (zeros past the range or the row).
  auto load = [&](uint32_t c0, Batch& bt) {
    auto& [wa, wb, pqa, pqb] = bt;
    const uint32_t* ca = pa + (uint64_t)c0 * kW;
    const uint32_t* cb = pb + (uint64_t)c0 * kW;
    // the lines of the batch after this one into L2: row g in lane q = 0, row g + 8 in lane q = 1
    if (q < 2 && c0 + kB < c_end) prefetch_l2((q ? cb : ca) + kB * kW);
#pragma unroll
    for (int u = 0; u < kB; ++u) {
      const uint32_t c = c0 + u;
#pragma unroll
      for (int b = 0; b < BITS; ++b) wa[u][b] = wb[u][b] = 0u;
      pqa[u] = pqb[u] = 0u;
      if (c < c_end) {  // the chunk's group parameters (used by the group's last chunk)
        pqa[u] = __ldg(qa + (kG1 ? c : c >> gsh));
        pqb[u] = __ldg(qb + (kG1 ? c : c >> gsh));
      }
      if (c < c_have) {
        // The codes bypass L1 (ld_stream*): read once, they kept the group parameters and the
        // spill slots out of it — 32 tenants 88.1–88.2 µs against 90.0–90.6 µs through L1 on
        // the H100 (three alternating rounds, eighth session).
        if constexpr (BITS == 2) {
          const uint2 x = ld_stream8(ca + u * kW), y = ld_stream8(cb + u * kW);
          wa[u][0] = x.x; wa[u][1] = x.y; wb[u][0] = y.x; wb[u][1] = y.y;
        } else {
#pragma unroll
          for (int b = 0; b < BITS; ++b) {
            wa[u][b] = ld_stream4(ca + u * kW + b);
            wb[u][b] = ld_stream4(cb + u * kW + b);
          }
        }
      }
    }
  };
  // Batch c0's MMAs and group sums.
  auto compute = [&](uint32_t c0, const Batch& bt) {
    const auto& [wa, wb, pqa, pqb] = bt;
#pragma unroll
    for (int u = 0; u < kB; ++u) {
      const uint32_t c = c0 + u;
      if (c >= c_end) break;
      int t[4];
      chunk_mmas<BITS>(dl, c, wa[u], wb[u], t);
      if constexpr (kG1) {
        sx = dl.cs[c];
      } else {
        sx += dl.cs[c];
#pragma unroll
        for (int i = 0; i < 4; ++i) t[i] = acc[i] += t[i];
      }
      if (kG1 || (c & gmask) == gmask || c + 1 == c_end) {  // the group ends: fold it in
        fold_group(t, pqa[u], pqb[u], sx, pair, q, sum);
        if constexpr (!kG1) {
          sx = 0.f;
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[i] = 0;
        }
      }
    }
  };
  // Two register sets in turn: batch c0 + kB is in flight while batch c0 is computed, so a warp
  // always has codes on the way.
  Batch cur;
  load(c_begin, cur);
#pragma unroll 1
  for (uint32_t c0 = c_begin; c0 < c_end; c0 += kB) {
    Batch next;
    load(c0 + kB, next);
    compute(c0, cur);
    cur = next;
  }
  return make_float2(sum.x * dl.dn, sum.y * dl.dn);
}

// A band of one chunk (every code of a row in chunk 0, one group: the 3-bit band of 32 ranks in the
// default allocation) in phase 2 of the batch kernel: mma_one_load issues the lane's loads when an
// item starts, beside the other small bands' and before the large band's, and mma_one sums them
// after the large band (the loads are back by then). Why (bench/RESULTS-h100.md, sixteenth
// session): through mma_rows such a band cost each item a loop's set-up and its own round trip,
// ~2.4k of an item's ~14k cycles for 1.6 % of its bytes.
struct OneChunk {
  uint32_t wa[3], wb[3], pqa, pqb;  // rows g and g + 8: the lane's words (bits of them used), group parameters
};
__device__ __forceinline__ void mma_one_load(uint32_t bits, const uint32_t* codes, uint32_t row_words,
                                             const dc_qparam* qp, uint32_t row_groups, uint64_t row_a, uint64_t row_b,
                                             OneChunk& o) {
  const uint32_t q = threadIdx.x % 4;
  o.pqa = __ldg(reinterpret_cast<const uint32_t*>(qp + row_a * row_groups));
  o.pqb = __ldg(reinterpret_cast<const uint32_t*>(qp + row_b * row_groups));
  const bool have = q * bits < row_words;  // the lane's block of 32 codes exists (rows are whole blocks)
  const uint32_t* pa = codes + row_a * row_words + q * bits;
  const uint32_t* pb = codes + row_b * row_words + q * bits;
#pragma unroll
  for (uint32_t b = 0; b < 3; ++b) {
    o.wa[b] = have && b < bits ? ld_stream4(pa + b) : 0u;
    o.wb[b] = have && b < bits ? ld_stream4(pb + b) : 0u;
  }
}
// The sums of rows g (x) and g + 8 (y) in lanes q = 0 (a second vector's in q = 1), as mma_rows.
__device__ __forceinline__ float2 mma_one(uint32_t bits, const OneChunk& o, const uint32_t* dig, const float* csum,
                                          float down, const uint32_t* dig_b, const float* csum_b, float down_b) {
  const DigitLane dl = digit_lane(1, dig, csum, down, dig_b, csum_b, down_b);
  int t[4];
  if (bits == 2) chunk_mmas<2>(dl, 0, o.wa, o.wb, t);
  else chunk_mmas<3>(dl, 0, o.wa, o.wb, t);
  float2 sum = make_float2(0.f, 0.f);
  fold_group(t, o.pqa, o.pqb, dl.cs[0], dig_b != nullptr, threadIdx.x % 4, sum);
  return make_float2(sum.x * dl.dn, sum.y * dl.dn);
}

// mma_rows for a band width (2 or 3: mma_band) and group length known at run time.
template <int kB>
__device__ __forceinline__ float2 mma_rows_any(uint32_t bits, const uint32_t* codes, uint32_t row_words,
                                               const dc_qparam* qp, uint32_t row_groups, uint32_t gsh, uint64_t row_a,
                                               uint64_t row_b, uint32_t c_begin, uint32_t c_end, uint32_t chunks,
                                               const uint32_t* dig, const float* csum, float down,
                                               const uint32_t* dig_b = nullptr, const float* csum_b = nullptr,
                                               float down_b = 0.f) {
#define DC_MMA_ROWS(B, G1)                                                                                         \
  mma_rows<B, G1, kB>(codes, row_words, qp, row_groups, gsh, row_a, row_b, c_begin, c_end, chunks, dig, csum, down, \
                      dig_b, csum_b, down_b)
  if (gsh == 0) return bits == 2 ? DC_MMA_ROWS(2, true) : DC_MMA_ROWS(3, true);
  return bits == 2 ? DC_MMA_ROWS(2, false) : DC_MMA_ROWS(3, false);
#undef DC_MMA_ROWS
}

}  // namespace dcg
#endif  // !DC_USE_HIP
