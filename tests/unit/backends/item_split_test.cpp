// dcg::ItemSplit and dcg::RowSplit (cuda/item_split.h): how the persistent GPU kernels cut each
// phase's items into one contiguous range per block, checked on the host (the same arithmetic runs
// in the kernels).
#include <gtest/gtest.h>

#include <cstdint>
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

TEST(ItemSplit, WeightsDropWhereCountsOverflow) {
  const dcg::RowSplit s = dcg::split_rows(64, UINT32_MAX / 64, 8, 4, 8, 264);
  EXPECT_EQ(s.w1, 0u);
  EXPECT_EQ(s.w2, 8u);
}

}  // namespace
