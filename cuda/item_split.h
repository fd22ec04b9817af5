// How the persistent kernels (apply_persist_kernel.cu, apply_mma_kernel.cu) cut each phase's work
// items into contiguous ranges, one per block. Plain arithmetic, host and device: the backends'
// unit tests check the partition without a GPU (tests/unit/backends/item_split_test.cpp).
#pragma once

#include <cstdint>

// (not pack_layout.h's DC_HOST_DEVICE: on the host that is `static inline`, which members cannot take)
#if defined(__CUDACC__) || defined(__HIPCC__)
#  define DC_SPLIT_FN __host__ __device__ __forceinline__
#else
#  define DC_SPLIT_FN inline
#endif

namespace dcg {

// How a persistent launch cuts each phase's items into contiguous ranges, one per block: block b
// takes q + (b < rm) of them from b·q + min(b, rm). The quotients and remainders come from the
// host (split_items): a 64-bit division in the kernel is ~70 instructions, and every instruction
// before the first load is latency at decode sizes.
struct ItemSplit {
  uint32_t q1, rm1, q2, rm2;  // phase 1, phase 2
  DC_SPLIT_FN void phase1(uint32_t b, uint32_t& lo, uint32_t& hi) const {
    lo = b * q1 + min_of(b, rm1);
    hi = lo + q1 + (b < rm1);
  }
  DC_SPLIT_FN void phase2(uint32_t b, uint32_t& lo, uint32_t& hi) const {
    lo = b * q2 + min_of(b, rm2);
    hi = lo + q2 + (b < rm2);
  }
  // min.u32 on the device (a select there is two instructions), plain on the host
  DC_SPLIT_FN static uint32_t min_of(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
    return min(a, b);
#else
    return a < b ? a : b;
#endif
  }
};

// The same with row staging charged as virtual items (the tensor-core batch kernel): each row of
// x has per1 (phase 1) or per2 (phase 2) items and w1 or w2 virtual ones before them, the virtual
// items are split evenly, so a block whose range crosses into a new row — and stages that row
// too — gets that many items fewer. (The persistent kernel keeps ItemSplit: at m = 1 the mapping's
// few instructions before the first load cost the fused call ~0.1 µs, ninth session.)
struct RowSplit {
  ItemSplit virtual_items;  // the even split of the virtual items
  uint32_t per1 = 1, w1 = 0, per2 = 1, w2 = 0;
  DC_SPLIT_FN void phase1(uint32_t b, uint32_t& lo, uint32_t& hi) const {
    virtual_items.phase1(b, lo, hi);
    lo = virtual_to_item(lo, per1, w1);
    hi = virtual_to_item(hi, per1, w1);
  }
  DC_SPLIT_FN void phase2(uint32_t b, uint32_t& lo, uint32_t& hi) const {
    virtual_items.phase2(b, lo, hi);
    lo = virtual_to_item(lo, per2, w2);
    hi = virtual_to_item(hi, per2, w2);
  }
  // The first real item at or after virtual item v: row r's virtual items are
  // [r·(per + w), (r + 1)·(per + w)), the first w of them standing for its staging.
  DC_SPLIT_FN static uint32_t virtual_to_item(uint32_t v, uint32_t per, uint32_t w) {
    if (w == 0) return v;
    const uint32_t r = v / (per + w), off = v % (per + w);
    return r * per + (off > w ? off - w : 0u);
  }
};

// Phase 1 of the staged m = 1 kernel cut by band (apply_persist_kernel.cu says why): band k's V̂
// rows go to blocks [first, first + n) of the grid, q rows each and one more for the first rm of
// them, so that no block mixes bands; a band's blocks are in proportion to its rows times
// p1_row_weight, the cost of decoding a row of that width relative to a row of 2 bits. Desc: a
// delta descriptor (n_bands, t_stride, and per band bits, r0, r1, t_off, bands in t order and each
// padded to the next; DeltaDesc on the GPU).
struct BandBlocks {
  uint32_t first, q, rm;
};
DC_SPLIT_FN uint32_t p1_row_weight(uint32_t bits) { return bits <= 2 ? 1u : bits <= 4 ? 2u : 4u; }

// The bands' blocks for a grid of `blocks` (host); false where the cut does not apply: no band, more
// bands than blocks or DC_MAX_BANDS, or bands not laid out in order.
template <class Desc>
inline bool p1_band_blocks(const Desc& d, unsigned blocks, BandBlocks* bb, uint32_t max_bands) {
  if (d.n_bands == 0 || d.n_bands > max_bands || max_bands > 64 || blocks < d.n_bands) return false;
  uint64_t total = 0;
  uint32_t at = 0;
  for (uint32_t k = 0; k < d.n_bands; ++k) {
    const uint32_t nr = d.bands[k].r1 - d.bands[k].r0;
    if (nr == 0 || d.bands[k].t_off != at) return false;
    at = k + 1 < d.n_bands ? d.bands[k + 1].t_off : d.t_stride;
    if (at < d.bands[k].t_off + nr) return false;
    total += (uint64_t)nr * p1_row_weight(d.bands[k].bits);
  }
  uint64_t n[64] = {};  // blocks per band (max_bands ≤ 64)
  uint64_t sum = 0;
  uint32_t big = 0;  // the band with the most blocks
  for (uint32_t k = 0; k < d.n_bands; ++k) {  // the rounded share, at least one block
    const uint64_t w = (uint64_t)(d.bands[k].r1 - d.bands[k].r0) * p1_row_weight(d.bands[k].bits);
    n[k] = (2 * w * blocks + total) / (2 * total);
    if (n[k] == 0) n[k] = 1;
    sum += n[k];
    if (n[k] > n[big]) big = k;
  }
  n[big] += blocks > sum ? blocks - sum : 0;  // the largest band takes what rounding left over
  while (sum > blocks) {  // or gives back, one block at a time from the largest (each keeps one)
    uint32_t k = 0;
    for (uint32_t j = 1; j < d.n_bands; ++j)
      if (n[j] > n[k]) k = j;
    --n[k];
    --sum;
  }
  uint32_t first = 0;
  for (uint32_t k = 0; k < d.n_bands; ++k) {
    const uint32_t nr = d.bands[k].r1 - d.bands[k].r0;
    bb[k] = BandBlocks{first, nr / (uint32_t)n[k], nr % (uint32_t)n[k]};
    first += (uint32_t)n[k];
  }
  return true;
}

// Block b's columns [lo, hi) of t (its band's rows) and that band's index.
template <class Desc>
DC_SPLIT_FN uint32_t p1_band_range(const Desc& d, const BandBlocks* bb, uint32_t b, uint32_t& lo, uint32_t& hi) {
  uint32_t k = 0;
  while (k + 1 < d.n_bands && b >= bb[k + 1].first) ++k;
  const uint32_t i = b - bb[k].first;
  lo = d.bands[k].t_off + i * bb[k].q + ItemSplit::min_of(i, bb[k].rm);
  hi = lo + bb[k].q + (i < bb[k].rm);
  return k;
}

// The padding columns [lo, hi) of t that block b (of `blocks`, holding band k by p1_band_range)
// zeroes: its band's, from the band's last row up to the next band's first column (or t_stride),
// where b is the band's last block (true); every other block zeroes none (false, lo and hi left
// as they were). So each padding column is written once, by a block that writes columns of t anyway.
template <class Desc>
DC_SPLIT_FN bool p1_band_padding(const Desc& d, const BandBlocks* bb, uint32_t k, uint32_t b, uint32_t blocks,
                                 uint32_t& lo, uint32_t& hi) {
  if (k + 1 == d.n_bands ? b + 1 == blocks : b + 1 == bb[k + 1].first) {  // the band's last block
    lo = d.bands[k].t_off + (d.bands[k].r1 - d.bands[k].r0);
    hi = k + 1 == d.n_bands ? d.t_stride : d.bands[k + 1].t_off;
    return true;
  }
  return false;
}

inline ItemSplit split_items(uint64_t n1, uint64_t n2, unsigned blocks) {
  return ItemSplit{(uint32_t)(n1 / blocks), (uint32_t)(n1 % blocks), (uint32_t)(n2 / blocks), (uint32_t)(n2 % blocks)};
}

// A RowSplit of m rows of per1 and per2 items with staging weights w1 and w2; the weights drop to
// 0 where the virtual counts would not fit 32 bits.
inline RowSplit split_rows(uint64_t m, uint32_t per1, uint32_t w1, uint32_t per2, uint32_t w2, unsigned blocks) {
  if (m * ((uint64_t)per1 + w1) > UINT32_MAX) w1 = 0;
  if (m * ((uint64_t)per2 + w2) > UINT32_MAX) w2 = 0;
  RowSplit s;
  s.virtual_items = split_items(m * (per1 + w1), m * (per2 + w2), blocks);
  s.per1 = per1;
  s.w1 = w1;
  s.per2 = per2;
  s.w2 = w2;
  return s;
}

}  // namespace dcg
