// PackedTensor::validate and packed_bytes, and the segment size rules (FORMAT.md §4-§5).
#include <gtest/gtest.h>

#include <cmath>

#include "format/segment.h"
#include "format_test_util.h"

using namespace fmt_test;

TEST(FormatPackedTensor, ValidTensorsPass) {
  EXPECT_NO_THROW(make_lowrank("a", 7, 5, {{8, 1, 32}, {3, 1, 32}, {2, 1, 32}, {4, 1, 32}, {16, 1, 0}}, true, 1).validate());
  EXPECT_NO_THROW(make_bitdelta("b", 3, 33, 2).validate());
  EXPECT_NO_THROW(make_dense("c", 5, 1, DC_DTYPE_BF16, 3).validate());
  // rank 0: an empty low-rank delta is structurally valid.
  dc::PackedTensor z;
  z.name = "z";
  z.rows = z.cols = 4;
  EXPECT_NO_THROW(z.validate());
}

TEST(FormatPackedTensor, PackedBytesCountsEveryArray) {
  const auto t = make_lowrank("a", 100, 70, {{4, 3, 64}, {16, 2, 0}}, true, 1);
  // Independent count: band 0 (4-bit, g=64): V 3 rows * ceil(70/32)=3 blocks * 4 words, 3 * 2 groups;
  // U 100 rows * 1 block * 4 words, 100 * 1 group. Band 1 (16-bit): V 2*3*16 words, U 100*1*16 words.
  const uint64_t words = 3 * 3 * 4 + 100 * 1 * 4 + 2 * 3 * 16 + 100 * 16;
  const uint64_t qparams = 3 * 2 + 100 * 1;
  EXPECT_EQ(t.packed_bytes(), words * 4 + qparams * 4 + 70 * 4 /*perm*/ + 5 * 4 /*sigma*/);
  EXPECT_EQ(make_bitdelta("b", 3, 33, 2).packed_bytes(), 3u * 2 * 4);
  EXPECT_EQ(make_dense("c", 5, 3, DC_DTYPE_F32, 3).packed_bytes(), 60u);
}

TEST(FormatPackedTensor, EachDefectHasItsStatus) {
  const auto good = make_lowrank("t", 40, 70, {{8, 2, 32}, {3, 4, 64}}, true, 7);
  auto expect = [&](std::function<void(dc::PackedTensor&)> edit, dc_status st, const char* what) {
    SCOPED_TRACE(what);
    dc::PackedTensor t = good;
    edit(t);
    EXPECT_DC_STATUS(t.validate(), st);
  };
  expect([](dc::PackedTensor& t) { t.name.clear(); }, DC_ERR_CORRUPT, "empty name");
  expect([](dc::PackedTensor& t) { t.name.assign(1025, 'x'); }, DC_ERR_LIMIT, "long name");
  expect([](dc::PackedTensor& t) { t.cols = 0; }, DC_ERR_CORRUPT, "zero cols");
  expect([](dc::PackedTensor& t) { t.rows = t.cols = 1ull << 33; }, DC_ERR_OVERFLOW, "rows*cols");
  // 3 lies in the C enums' value range (0..3) without being a kind or dtype.
  expect([](dc::PackedTensor& t) { t.kind = (dc_tensor_kind)3; }, DC_ERR_CORRUPT, "kind");
  expect([](dc::PackedTensor& t) { t.dtype = (dc_dtype)3; }, DC_ERR_CORRUPT, "dtype");
  expect([](dc::PackedTensor& t) { t.bands[1].desc.bits = 1; }, DC_ERR_CORRUPT, "1-bit band");
  expect([](dc::PackedTensor& t) { t.bands[1].desc.group_size = 48; }, DC_ERR_CORRUPT, "group 48");
  expect([](dc::PackedTensor& t) { t.bands[1].desc.group_size = 0; }, DC_ERR_CORRUPT, "group 0");
  expect([](dc::PackedTensor& t) { t.bands[1].desc.group_size = 8192; }, DC_ERR_LIMIT, "group 8192");
  expect([](dc::PackedTensor& t) { t.bands[1].desc.rank_begin = 1; }, DC_ERR_CORRUPT, "overlapping bands");
  expect([](dc::PackedTensor& t) { t.rank = 7; }, DC_ERR_CORRUPT, "rank vs bands");
  expect([](dc::PackedTensor& t) { t.rank = 70; t.bands[1].desc.rank_end = 70; t.sigma.resize(70); },
         DC_ERR_CORRUPT, "rank > rows");
  expect([](dc::PackedTensor& t) { t.sigma[2] = INFINITY; }, DC_ERR_CORRUPT, "sigma inf");
  expect([](dc::PackedTensor& t) { t.sigma.pop_back(); }, DC_ERR_CORRUPT, "sigma count");
  expect([](dc::PackedTensor& t) { t.bands[0].v_codes.pop_back(); }, DC_ERR_CORRUPT, "V codes");
  expect([](dc::PackedTensor& t) { t.bands[0].u_codes.push_back(0); }, DC_ERR_CORRUPT, "U codes");
  expect([](dc::PackedTensor& t) { t.bands[1].v_qparams.pop_back(); }, DC_ERR_CORRUPT, "V qparams");
  expect([](dc::PackedTensor& t) { t.bands[1].u_qparams[3].zero = dc::float_to_half(8.f); }, DC_ERR_CORRUPT,
         "3-bit zero 8");
  expect([](dc::PackedTensor& t) { t.bands[1].u_qparams[3].zero = dc::float_to_half(-1.f); }, DC_ERR_CORRUPT,
         "negative zero point");
  expect([](dc::PackedTensor& t) { t.bands[0].v_qparams[0].scale = 0x7e00; }, DC_ERR_CORRUPT, "nan scale");
  expect([](dc::PackedTensor& t) { t.in_perm[5] = t.in_perm[6]; }, DC_ERR_CORRUPT, "perm repeat");
  expect([](dc::PackedTensor& t) { t.in_perm[5] = 70; }, DC_ERR_CORRUPT, "perm range");
  expect([](dc::PackedTensor& t) { t.in_perm.pop_back(); }, DC_ERR_CORRUPT, "perm length");
  expect([](dc::PackedTensor& t) { t.signs.push_back(1); }, DC_ERR_CORRUPT, "signs on low-rank");

  auto bd = make_bitdelta("b", 3, 33, 2);
  bd.signs.pop_back();
  EXPECT_DC_STATUS(bd.validate(), DC_ERR_CORRUPT);
  bd = make_bitdelta("b", 3, 33, 2);
  bd.bitdelta_scale = NAN;
  EXPECT_DC_STATUS(bd.validate(), DC_ERR_CORRUPT);
  bd = make_bitdelta("b", 3, 33, 2);
  bd.rank = 1;
  EXPECT_DC_STATUS(bd.validate(), DC_ERR_CORRUPT);
  auto dn = make_dense("d", 3, 3, DC_DTYPE_F16, 2);
  dn.dense.push_back(0);
  EXPECT_DC_STATUS(dn.validate(), DC_ERR_CORRUPT);
  dn = make_dense("d", 1ull << 32, 1ull << 31, DC_DTYPE_F16, 0);  // no data: size check overflows first
  EXPECT_DC_STATUS(dn.validate(), DC_ERR_OVERFLOW);
}

TEST(FormatSegment, SizesFollowTheShape) {
  dc::TensorDesc d;
  d.name = "t";
  d.rows = 1000;
  d.cols = 3000;
  d.kind = DC_KIND_LOWRANK;
  d.rank = 13;
  d.bands = {{8, 0, 2, 128}, {3, 2, 12, 64}, {16, 12, 13, 0}};
  // V band 0: 2 rows * ceil(3000/32)=94 blocks * 8 words * 4 B + 2 * ceil(3000/128)=24 groups * 4 B
  EXPECT_EQ(dc::expected_segment_size(d, dc::SegmentRole::VBand, 0), 2u * 94 * 8 * 4 + 2u * 24 * 4);
  // U band 1: 1000 rows * 1 block * 3 words * 4 B + 1000 * 1 group * 4 B
  EXPECT_EQ(dc::expected_segment_size(d, dc::SegmentRole::UBand, 1), 1000u * 3 * 4 + 1000u * 4);
  // 16-bit band 2: no qparams. V: 1 * 94 * 16 words; U: 1000 * 1 * 16 words.
  EXPECT_EQ(dc::expected_segment_size(d, dc::SegmentRole::VBand, 2), 94u * 16 * 4);
  EXPECT_EQ(dc::expected_segment_size(d, dc::SegmentRole::UBand, 2), 1000u * 16 * 4);
  EXPECT_EQ(dc::expected_segment_size(d, dc::SegmentRole::InPerm, 0), 3000u * 4);
  EXPECT_EQ(dc::expected_segment_size(d, dc::SegmentRole::Signs, 0), 1000u * 94 * 4);
  d.dtype = DC_DTYPE_BF16;
  EXPECT_EQ(dc::expected_segment_size(d, dc::SegmentRole::DenseData, 0), 1000u * 3000 * 2);
  d.dtype = DC_DTYPE_F32;
  EXPECT_EQ(dc::expected_segment_size(d, dc::SegmentRole::DenseData, 0), 1000u * 3000 * 4);
  EXPECT_DC_STATUS(dc::checked_row_words(~0ull - 5, 8, "x"), DC_ERR_OVERFLOW);
  EXPECT_DC_STATUS(dc::checked_row_groups(~0ull, 128, "x"), DC_ERR_OVERFLOW);
}

TEST(FormatSegment, ZstdFrameRoundTripAndStrictChecks) {
  std::vector<uint8_t> data(10000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = (uint8_t)(i * 7 % 13);
  const auto frame = dc::zstd_compress_frame(data.data(), data.size(), 3);
  EXPECT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), data.size());
  std::vector<uint8_t> out(data.size());
  dc::zstd_decompress_frame(frame.data(), frame.size(), out.data(), out.size(), "test");
  EXPECT_EQ(out, data);
  EXPECT_DC_STATUS(dc::zstd_decompress_frame(frame.data(), frame.size(), out.data(), out.size() - 1, "test"),
                   DC_ERR_DECOMPRESS);
  EXPECT_DC_STATUS(dc::zstd_decompress_frame(frame.data(), frame.size() - 1, out.data(), out.size(), "test"),
                   DC_ERR_DECOMPRESS);
  const auto nosize = zstd_frame(data.data(), data.size(), false);
  EXPECT_EQ(ZSTD_getFrameContentSize(nosize.data(), nosize.size()), ZSTD_CONTENTSIZE_UNKNOWN);
  EXPECT_DC_STATUS(dc::zstd_decompress_frame(nosize.data(), nosize.size(), out.data(), out.size(), "test"),
                   DC_ERR_DECOMPRESS);
  EXPECT_EQ(dc::xxh3_64(data.data(), data.size()), XXH3_64bits(data.data(), data.size()));
  EXPECT_EQ(dc::xxh3_64("", 0), 0x2D06800538D394C2ull);  // XXH3-64 of the empty input, seed 0
}
