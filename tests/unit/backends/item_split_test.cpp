// dcg::ItemSplit and dcg::RowSplit (cuda/item_split.h): how the persistent GPU kernels cut each
// phase's items into one contiguous range per block, checked on the host (the same arithmetic runs
// in the kernels).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "item_split.h"

namespace {

using dcg::ItemSplit;

struct Range {
  uint32_t lo, hi;
};

template <class Split>
std::vector<Range> ranges(const Split& s, unsigned blocks, bool phase2) {
  std::vector<Range> out(blocks);
  for (unsigned b = 0; b < blocks; ++b) {
    if (phase2) s.phase2(b, out[b].lo, out[b].hi);
    else s.phase1(b, out[b].lo, out[b].hi);
  }
  return out;
}

// Every item in exactly one block, in order; returns the largest range.
uint32_t check_partition(const std::vector<Range>& r, uint64_t items) {
  uint32_t next = 0, most = 0;
  for (const Range& x : r) {
    EXPECT_EQ(x.lo, next);
    EXPECT_LE(x.lo, x.hi);
    next = x.hi;
    most = std::max(most, x.hi - x.lo);
  }
  EXPECT_EQ(next, items);
  return most;
}

// Rows of x a block's range touches (each is staged once by the block).
uint32_t rows_touched(const Range& x, uint32_t per) {
  return x.hi == x.lo ? 0 : (x.hi - 1) / per - x.lo / per + 1;
}

TEST(ItemSplit, EvenSplitIsAPartition) {
  for (uint64_t n : {0ull, 1ull, 7ull, 264ull, 2080ull, 8192ull, 100003ull})
    for (unsigned blocks : {1u, 3u, 132u, 264u}) {
      const ItemSplit s = dcg::split_items(n, n * 3 + 1, blocks);
      const uint32_t most = check_partition(ranges(s, blocks, false), n);
      EXPECT_LE(most, (n + blocks - 1) / blocks);
      check_partition(ranges(s, blocks, true), n * 3 + 1);
    }
}

TEST(ItemSplit, WeightedSplitIsAPartition) {
  for (uint64_t m : {1ull, 2ull, 3ull, 16ull, 32ull, 64ull})
    for (uint32_t per : {1u, 2u, 5u, 65u, 256u, 688u})
      for (uint32_t w : {0u, 1u, 2u, 8u, 64u})
        for (unsigned blocks : {1u, 7u, 264u}) {
          const dcg::RowSplit s = dcg::split_rows(m, per, w, per + 3, 4 * w, blocks);
          check_partition(ranges(s, blocks, false), m * per);
          check_partition(ranges(s, blocks, true), m * (per + 3));
        }
}

TEST(ItemSplit, VirtualItemsMapOntoRows) {
  // row r: virtual [r·(per + w), (r + 1)·(per + w)); its first w stand for the staging
  const uint32_t per = 5, w = 2;
  const uint32_t expect[] = {0, 0, 0, 1, 2, 3, 4, 5, 5, 5, 6, 7, 8, 9, 10};
  for (uint32_t v = 0; v < 15; ++v) EXPECT_EQ(dcg::RowSplit::virtual_to_item(v, per, w), expect[v]) << v;
  for (uint32_t v = 0; v < 50; ++v) EXPECT_EQ(dcg::RowSplit::virtual_to_item(v, per, 0), v);
}

TEST(ItemSplit, BlocksStagingTwoRowsGetFewerItems) {
  // 32 tenants of the default 4096² delta on the tensor-core kernel: 65 phase-1 items per row,
  // 256 phase-2 tiles per row, 264 blocks, the default weights (2, 8)
  const unsigned blocks = 264;
  const dcg::RowSplit s = dcg::split_rows(32, 65, 2, 256, 8, blocks);
  for (int phase = 0; phase < 2; ++phase) {
    const uint32_t per = phase ? 256 : 65, w = phase ? 8 : 2;
    const auto r = ranges(s, blocks, phase == 1);
    check_partition(r, 32ull * per);
    // the cost a block carries: its items plus w per row staged beyond the first
    uint32_t lo_cost = UINT32_MAX, hi_cost = 0, two_rows = 0;
    for (const Range& x : r) {
      const uint32_t rows = rows_touched(x, per);
      if (rows == 0) continue;
      two_rows += rows > 1;
      const uint32_t cost = (x.hi - x.lo) + w * (rows - 1);
      lo_cost = std::min(lo_cost, cost);
      hi_cost = std::max(hi_cost, cost);
    }
    EXPECT_GT(two_rows, 0u);
    // no block carries more than its virtual share, ⌊32·(per + w) / blocks⌋ + 1
    const uint32_t share = 32 * (per + w) / blocks + 1;
    EXPECT_LE(hi_cost, share) << "phase " << phase + 1;
    EXPECT_GE(lo_cost + w + 1, share) << "phase " << phase + 1;
    // an even split of the items alone leaves the blocks that stage two rows above that share
    const ItemSplit even = dcg::split_items(32ull * 65, 32ull * 256, blocks);
    uint32_t most = 0;
    for (const Range& x : ranges(even, blocks, phase == 1))
      if (x.hi > x.lo) most = std::max(most, (x.hi - x.lo) + w * (rows_touched(x, per) - 1));
    EXPECT_GT(most, share) << "phase " << phase + 1;
  }
}

// A delta descriptor as p1_band_blocks, p1_band_range and p1_band_padding read it (DeltaDesc's field names).
struct MockBand {
  uint32_t bits, r0, r1, t_off;
};
struct MockDesc {
  uint32_t n_bands, t_stride;
  MockBand bands[8];
};
// Bands of the given (bits, rank) in order, each padded to 32 columns of t as the loader lays them.
MockDesc mock_desc(const std::vector<std::pair<uint32_t, uint32_t>>& bands) {
  MockDesc d{};
  uint32_t r = 0, t = 0;
  for (const auto& [bits, rank] : bands) {
    d.bands[d.n_bands++] = MockBand{bits, r, r + rank, t};
    r += rank;
    t += (rank + 31) / 32 * 32;
  }
  d.t_stride = t;
  return d;
}

// Every block's columns (p1_band_range) for a grid of `blocks`; each band's rows exactly once, in
// order, by its own run of blocks and by no other, and every padding column of t zeroed exactly
// once (p1_band_padding), by a block of that band; returns the most rows of band k in one block.
std::vector<uint32_t> check_band_cut(const MockDesc& d, unsigned blocks) {
  dcg::BandBlocks bb[8];
  EXPECT_TRUE(dcg::p1_band_blocks(d, blocks, bb, 8));
  std::vector<uint32_t> most(d.n_bands, 0), next(d.n_bands, 0);
  std::vector<int> written(d.t_stride, 0);  // times each column of t is written (rows and padding)
  uint32_t prev_band = 0;
  for (unsigned b = 0; b < blocks; ++b) {
    uint32_t lo, hi, plo = 0, phi = 0;
    const uint32_t k = dcg::p1_band_range(d, bb, b, lo, hi);
    const bool pads = dcg::p1_band_padding(d, bb, k, b, blocks, plo, phi);
    EXPECT_EQ(pads, k + 1 < d.n_bands ? b + 1 == bb[k + 1].first : b + 1 == blocks) << "block " << b;
    EXPECT_LE(plo, phi);
    if (phi > plo) {  // the band's own padding, after its rows
      EXPECT_EQ(plo, d.bands[k].t_off + (d.bands[k].r1 - d.bands[k].r0)) << "block " << b;
      EXPECT_EQ(phi, k + 1 < d.n_bands ? d.bands[k + 1].t_off : d.t_stride) << "block " << b;
    }
    for (uint32_t c = lo; c < hi && c < d.t_stride; ++c) ++written[c];
    for (uint32_t c = plo; c < phi && c < d.t_stride; ++c) ++written[c];
    EXPECT_GE(k, prev_band) << "block " << b;  // bands in order over the blocks
    prev_band = k;
    const MockBand& bd = d.bands[k];
    EXPECT_EQ(lo, bd.t_off + next[k]) << "block " << b;
    EXPECT_LE(lo, hi);
    EXPECT_LE(hi, bd.t_off + (bd.r1 - bd.r0)) << "block " << b;  // rows of its band only, no padding
    next[k] = hi - bd.t_off;
    most[k] = std::max(most[k], hi - lo);
  }
  for (uint32_t k = 0; k < d.n_bands; ++k) EXPECT_EQ(next[k], d.bands[k].r1 - d.bands[k].r0) << "band " << k;
  for (uint32_t c = 0; c < d.t_stride; ++c) EXPECT_EQ(written[c], 1) << "column " << c << " of t";
  return most;
}

TEST(ItemSplit, PhaseOneByBandOfTheDefaultDelta) {
  // the default 4096² delta at α = 1/16 (8-bit ×2, 3-bit ×32, 2-bit ×968) on one block per SM of an H100
  const MockDesc d = mock_desc({{8, 2}, {3, 32}, {2, 968}});
  ASSERT_EQ(d.t_stride, 32u + 32u + 992u);
  const std::vector<uint32_t> most = check_band_cut(d, 132);
  // four warps a row of 8 bits, two a row of 3 bits (split_of), one a row of 2 bits
  EXPECT_LE(most[0], 2u);
  EXPECT_LE(most[1], 4u);
  EXPECT_LE(most[2], 8u);
  // the equal count puts ~7.8 rows of the 3-bit band in a block (one warp a row)
  const ItemSplit even = dcg::split_items(d.t_stride, 1, 132);
  uint32_t most3 = 0;
  for (const Range& x : ranges(even, 132, false)) {
    const uint32_t lo = std::max(x.lo, 32u), hi = std::min(x.hi, 64u);
    most3 = std::max(most3, hi > lo ? hi - lo : 0u);
  }
  EXPECT_GE(most3, 7u);
  // the full grid (two blocks per SM)
  const std::vector<uint32_t> most264 = check_band_cut(d, 264);
  EXPECT_LE(most264[2], 4u);
}

TEST(ItemSplit, PhaseOneByBandCoversAnyBands) {
  std::mt19937 rng(7);
  const uint32_t widths[] = {1, 2, 3, 4, 8, 16};
  for (int iter = 0; iter < 300; ++iter) {
    std::vector<std::pair<uint32_t, uint32_t>> bands;
    const int nb = 1 + (int)(rng() % 6);
    for (int k = 0; k < nb; ++k) bands.push_back({widths[rng() % 6], 1 + (uint32_t)(rng() % 700)});
    const MockDesc d = mock_desc(bands);
    for (unsigned blocks : {8u, 13u, 132u, 264u, 3000u}) check_band_cut(d, blocks);
    dcg::BandBlocks bb[8];
    EXPECT_FALSE(dcg::p1_band_blocks(d, (unsigned)nb - 1, bb, 8));  // fewer blocks than bands
    EXPECT_FALSE(dcg::p1_band_blocks(d, 132, bb, (uint32_t)nb - 1));  // more bands than the table holds
  }
}

TEST(ItemSplit, WeightsDropWhereCountsOverflow) {
  const dcg::RowSplit s = dcg::split_rows(64, UINT32_MAX / 64, 8, 4, 8, 264);
  EXPECT_EQ(s.w1, 0u);
  EXPECT_EQ(s.w2, 8u);
}

}  // namespace
