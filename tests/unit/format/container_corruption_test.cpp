// Damaged and hostile .dcz files: each must fail with its own status, at open or at load.
#include <gtest/gtest.h>

#include <cmath>

#include "format_test_util.h"

using namespace fmt_test;

namespace {

std::vector<uint8_t> two_tensor_image() {
  dc::ContainerWriter w(dc::ContainerMeta{});
  w.add_tensor(make_lowrank("lr", 100, 300, {{8, 2, 128}, {3, 6, 128}}, true, 1));
  w.add_tensor(make_dense("dense", 64, 64, DC_DTYPE_F32, 2));  // random bytes: zstd stores them raw
  return w.finish_to_memory();
}

}  // namespace

TEST(FormatCorruption, BadMagic) {
  auto img = two_tensor_image();
  img[1] = 'X';
  EXPECT_DC_STATUS(open_mem(img), DC_ERR_BAD_MAGIC);
  const std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
  EXPECT_DC_STATUS(open_mem(text), DC_ERR_BAD_MAGIC);
  const std::vector<uint8_t> safetensors_like(200, '{');
  EXPECT_DC_STATUS(open_mem(safetensors_like), DC_ERR_BAD_MAGIC);
}

TEST(FormatCorruption, TruncationAtEveryStructuralBoundary) {
  const auto img = two_tensor_image();
  const uint64_t msize = get_le<uint64_t>(img, 24), po = get_le<uint64_t>(img, 32);
  std::vector<uint64_t> cuts = {0, 4, 8, 40, 79, 80, 81, 80 + msize / 2, 80 + msize - 1, 80 + msize, po - 1, po};
  auto r = open_mem(img);
  for (const auto& t : r->tensors())
    for (const auto& s : t.segments) {
      cuts.push_back(po + s.offset + 1);
      cuts.push_back(po + s.offset + s.compressed_size / 2);
      cuts.push_back(po + s.offset + s.compressed_size - 1);
    }
  cuts.push_back(img.size() - 1);
  for (uint64_t cut : cuts) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    const std::vector<uint8_t> part(img.begin(), img.begin() + cut);
    EXPECT_DC_STATUS(open_mem(part), DC_ERR_TRUNCATED);
  }
}

TEST(FormatCorruption, TrailingBytesAreRejected) {
  auto img = two_tensor_image();
  img.push_back(0);
  EXPECT_DC_STATUS(open_mem(img), DC_ERR_CORRUPT);
}

TEST(FormatCorruption, FlippedSegmentByteFailsChecksum) {
  auto img = two_tensor_image();
  const uint64_t po = get_le<uint64_t>(img, 32);
  auto r0 = open_mem(img);
  const dc::SegmentRef s = r0->tensors()[1].segments[0];
  img[po + s.offset + s.compressed_size / 2] ^= 0x01;  // inside a raw block: zstd cannot notice
  auto r = open_mem(img);  // open does not read segment contents
  EXPECT_DC_STATUS(r->load_tensor(1, true), DC_ERR_CHECKSUM);
  EXPECT_DC_STATUS(r->read_segment(r->tensors()[1].segments[0], true), DC_ERR_CHECKSUM);
  EXPECT_DC_STATUS(r->verify_all(), DC_ERR_CHECKSUM);
  // Without verification the flipped byte comes through unnoticed (dense data has no value checks).
  const auto t = r->load_tensor(1, false);
  const auto t0 = r0->load_tensor(1, false);
  size_t diff = 0;
  for (size_t i = 0; i < t.dense.size(); ++i) diff += t.dense[i] != t0.dense[i];
  EXPECT_EQ(diff, 1u);
  try {
    r->load_tensor(1, true);
  } catch (const dc::Error& e) {
    EXPECT_NE(std::string(e.what()).find("dense"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("DenseData"), std::string::npos) << e.what();
  }
}

TEST(FormatCorruption, ManifestAndHeaderChecksums) {
  auto img = two_tensor_image();
  auto m = img;
  m[80 + 20] ^= 0x10;
  EXPECT_DC_STATUS(open_mem(m), DC_ERR_CHECKSUM);
  auto h = img;
  h[53] ^= 0x01;  // flags_optional: harmless by itself, but the header hash no longer matches
  EXPECT_DC_STATUS(open_mem(h), DC_ERR_CHECKSUM);
  auto x = img;
  x[75] ^= 0x01;  // the stored header hash itself
  EXPECT_DC_STATUS(open_mem(x), DC_ERR_CHECKSUM);
}

TEST(FormatCorruption, VersionsAndFlags) {
  RawFile f = RawFile::from_image(two_tensor_image());
  ASSERT_NO_THROW(open_mem(f.build()));
  f.major = 2;
  EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_UNSUPPORTED_VERSION);
  f.major = 0;
  EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_UNSUPPORTED_VERSION);
  f.major = 1;
  f.minor = 7;  // a newer minor is read
  auto r = open_mem(f.build());
  EXPECT_EQ(r->meta().format_minor, 7);
  r->verify_all();
  f.minor = 0;
  f.flags_required = 1u << 5;
  EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_UNSUPPORTED_VERSION);
  f.flags_required = 0;
  f.flags_optional = 0xffffffffu;  // ignored
  ASSERT_NO_THROW(open_mem(f.build())->verify_all());
  f.flags_optional = 0;
  f.header_len = 96;  // a longer header from a future minor: unknown bytes skipped
  ASSERT_NO_THROW(open_mem(f.build())->verify_all());
  f.header_len = 72;
  EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_CORRUPT);
  f.header_len = 80;
  f.reserved = 1;
  EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_CORRUPT);
  f.reserved = 0;
  f.identifier = "XXXX";
  EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_CORRUPT);
}

TEST(FormatCorruption, BadAlignmentValue) {
  RawFile f = RawFile::from_image(two_tensor_image());
  for (uint32_t a : {0u, 32u, 100u, 2u << 20}) {
    auto img = f.build();
    put_le<uint32_t>(img, 56, a);
    rehash_header(img);
    EXPECT_DC_STATUS(open_mem(img), DC_ERR_CORRUPT);
  }
}

TEST(FormatCorruption, SizesThatOverflow) {
  const auto base = two_tensor_image();
  {
    auto img = base;  // payload_offset + payload_size overflows
    put_le<uint64_t>(img, 40, ~0ull - 100);
    rehash_header(img);
    EXPECT_DC_STATUS(open_mem(img), DC_ERR_OVERFLOW);
  }
  {
    auto img = base;  // manifest_offset + manifest_size: caught by the manifest limit first
    put_le<uint64_t>(img, 24, ~0ull - 10);
    rehash_header(img);
    EXPECT_DC_STATUS(open_mem(img), DC_ERR_LIMIT);
  }
  {
    RawFile f = RawFile::from_image(base);  // dense rows*cols overflows
    f.tensors[1].desc.rows = 1ull << 40;
    f.tensors[1].desc.cols = 1ull << 40;
    EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_OVERFLOW);
  }
  {
    RawFile f = RawFile::from_image(base);  // rows*cols fits, * dtype size does not
    f.tensors[1].desc.rows = 1ull << 32;
    f.tensors[1].desc.cols = 1ull << 31;
    EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_OVERFLOW);
  }
  {
    RawFile f = RawFile::from_image(base);  // cols near 2^64: the padded row length overflows
    f.tensors[0].desc.cols = ~0ull - 3;
    f.tensors[0].desc.rows = 1;
    f.tensors[0].desc.rank = 1;
    f.tensors[0].desc.bands.resize(1);
    f.tensors[0].desc.bands[0].rank_end = 1;
    f.tensors[0].desc.sigma.resize(1);
    f.tensors[0].desc.has_in_perm = false;
    f.tensors[0].desc.segments.resize(2);
    f.tensors[0].frames.resize(2);
    EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_OVERFLOW);
  }
  {
    RawFile f = RawFile::from_image(base);  // a segment's offset + size wraps around 2^64
    f.auto_layout = false;
    f.build();  // lays out once
    f.tensors[1].desc.segments[0].compressed_size = ~0ull - 4;
    EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_CORRUPT);
  }
}

TEST(FormatCorruption, Limits) {
  const auto img = two_tensor_image();
  dc::ReaderLimits l;
  l.max_manifest_bytes = 64;
  EXPECT_DC_STATUS(open_mem(img, l), DC_ERR_LIMIT);
  l = dc::ReaderLimits{};
  l.max_tensors = 1;
  EXPECT_DC_STATUS(open_mem(img, l), DC_ERR_LIMIT);
  l = dc::ReaderLimits{};
  l.max_segment_bytes = 1000;  // the dense segment holds 16384 bytes
  EXPECT_DC_STATUS(open_mem(img, l), DC_ERR_LIMIT);
  RawFile f = RawFile::from_image(img);  // 4 TiB dense tensor: fits 64 bits, not the 4 GiB default
  f.tensors[1].desc.rows = 1 << 20;
  f.tensors[1].desc.cols = 1 << 20;
  EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_LIMIT);
  RawFile g = RawFile::from_image(img);
  g.tensors[1].desc.name = std::string(1025, 'n');
  EXPECT_DC_STATUS(open_mem(g.build()), DC_ERR_LIMIT);
}

TEST(FormatCorruption, OverlapMisalignmentAndHoles) {
  const auto img = two_tensor_image();
  RawFile base = RawFile::from_image(img);
  base.build();  // fills offsets
  base.auto_layout = false;
  ASSERT_NO_THROW(open_mem(base.build())->verify_all());
  auto segs = [](RawFile& f) {
    std::vector<dc::SegmentRef*> v;
    for (auto& t : f.tensors)
      for (auto& s : t.desc.segments) v.push_back(&s);
    return v;
  };
  {
    RawFile f = base;  // second segment placed on top of the first
    segs(f)[1]->offset = segs(f)[0]->offset;
    EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_OVERLAP);
  }
  {
    RawFile f = base;  // the last segment 64 bytes late: not a multiple of 4096
    segs(f).back()->offset += 64;
    EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_OVERLAP);
  }
  {
    RawFile f = base;  // the last segment one alignment unit late: a hole
    segs(f).back()->offset += 4096;
    EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_OVERLAP);
  }
  {
    RawFile f = base;  // all segments shifted: hole at the payload start
    for (auto* s : segs(f)) s->offset += 4096;
    EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_OVERLAP);
  }
  {
    // Compressed size declared 1 byte short: still a legal layout (the byte becomes padding), but
    // the frame no longer ends where the manifest says.
    RawFile f = base;
    segs(f)[0]->compressed_size -= 1;
    auto r = open_mem(f.build());
    EXPECT_DC_STATUS(r->load_tensor(0, false), DC_ERR_DECOMPRESS);
    EXPECT_NO_THROW(r->load_tensor(1, true));
  }
  {
    auto bad = img;  // payload_size larger than the last segment's end (file grown to match)
    put_le<uint64_t>(bad, 40, get_le<uint64_t>(bad, 40) + 4096);
    bad.resize(bad.size() + 4096, 0);
    rehash_header(bad);
    EXPECT_DC_STATUS(open_mem(bad), DC_ERR_OVERLAP);
  }
}

TEST(FormatCorruption, NonZeroPaddingFoundByVerifyAll) {
  auto img = two_tensor_image();
  const uint64_t msize = get_le<uint64_t>(img, 24);
  img[80 + msize + 3] = 0x77;  // between the manifest and the payload
  auto r = open_mem(img);
  r->load_tensor(0, true);
  EXPECT_DC_STATUS(r->verify_all(), DC_ERR_CORRUPT);

  auto img2 = two_tensor_image();
  auto r2 = open_mem(img2);
  const auto& s = r2->tensors()[0].segments[0];
  img2[get_le<uint64_t>(img2, 32) + s.offset + s.compressed_size] = 1;  // between segments
  EXPECT_DC_STATUS(open_mem(img2)->verify_all(), DC_ERR_CORRUPT);
}

TEST(FormatCorruption, DuplicateNames) {
  RawFile f = RawFile::from_image(two_tensor_image());
  f.tensors[1].desc.name = "lr";
  EXPECT_DC_STATUS(open_mem(f.build()), DC_ERR_DUPLICATE);
}

TEST(FormatCorruption, InconsistentManifests) {
  const RawFile base = RawFile::from_image(two_tensor_image());
  auto expect = [&](std::function<void(RawFile&)> mutate, dc_status st, const char* what) {
    SCOPED_TRACE(what);
    RawFile f = base;
    mutate(f);
    EXPECT_DC_STATUS(open_mem(f.build()), st);
  };
  expect([](RawFile& f) { f.tensors[0].desc.name = ""; }, DC_ERR_CORRUPT, "empty name");
  expect([](RawFile& f) { f.tensors[0].desc.rows = 0; }, DC_ERR_CORRUPT, "zero rows");
  expect([](RawFile& f) { f.tensors[0].raw_kind = 7; }, DC_ERR_CORRUPT, "kind");
  expect([](RawFile& f) { f.tensors[1].raw_dtype = 3; }, DC_ERR_CORRUPT, "dtype");
  expect([](RawFile& f) { f.tensors[1].raw_dtype = 255; }, DC_ERR_CORRUPT, "dtype 255");
  expect([](RawFile& f) { f.tensors[0].desc.bands[1].bits = 5; }, DC_ERR_CORRUPT, "bits");
  expect([](RawFile& f) { f.tensors[0].desc.bands[1].group_size = 100; }, DC_ERR_CORRUPT, "group");
  expect([](RawFile& f) { f.tensors[0].desc.bands[1].group_size = 8192; }, DC_ERR_LIMIT, "group limit");
  expect([](RawFile& f) { f.tensors[0].desc.bands[1].rank_begin = 3; }, DC_ERR_CORRUPT, "band gap");
  expect([](RawFile& f) { f.tensors[0].desc.rank = 9; }, DC_ERR_CORRUPT, "rank vs bands");
  expect([](RawFile& f) { f.tensors[0].desc.sigma.pop_back(); }, DC_ERR_CORRUPT, "sigma count");
  expect([](RawFile& f) { f.tensors[0].desc.sigma[0] = NAN; }, DC_ERR_CORRUPT, "sigma nan");
  expect([](RawFile& f) { f.tensors[0].desc.has_in_perm = false; }, DC_ERR_CORRUPT, "stray InPerm");
  expect([](RawFile& f) { f.tensors[0].desc.segments[0].size += 4; }, DC_ERR_CORRUPT, "segment size");
  expect([](RawFile& f) { f.tensors[0].desc.segments[1].role = dc::SegmentRole::VBand; }, DC_ERR_CORRUPT,
         "segment twice");
  expect([](RawFile& f) { f.tensors[0].desc.segments[0].band = 9; }, DC_ERR_CORRUPT, "band index");
  expect([](RawFile& f) { f.tensors[1].desc.segments[0].role = (dc::SegmentRole)9; }, DC_ERR_CORRUPT, "role");
  expect(
      [](RawFile& f) {
        f.tensors[0].desc.segments.pop_back();
        f.tensors[0].frames.pop_back();
      },
      DC_ERR_CORRUPT, "missing segment");
  expect([](RawFile& f) { f.tensors[1].desc.rank = 1; }, DC_ERR_CORRUPT, "dense with rank");
  expect([](RawFile& f) { f.tensors[0].desc.rank = f.tensors[0].desc.bands[1].rank_end = 101; },
         DC_ERR_CORRUPT, "rank > rows");

  // Random bytes with a valid checksum are still not a manifest.
  RawFile f = base;
  auto img = f.build();
  const uint64_t msize = get_le<uint64_t>(img, 24);
  std::mt19937 rng(1);
  for (uint64_t i = 8; i < msize; ++i) img[80 + i] = (uint8_t)rng();
  put_le<uint64_t>(img, 64, XXH3_64bits(img.data() + 80, msize));
  rehash_header(img);
  EXPECT_DC_STATUS(open_mem(img), DC_ERR_CORRUPT);
}

TEST(FormatCorruption, ZstdFramesMustDeclareTheRightSize) {
  const RawFile base = RawFile::from_image(two_tensor_image());
  const dc::SegmentRef s = base.tensors[1].desc.segments[0];
  const std::vector<uint8_t> raw = zstd_decode(base.tensors[1].frames[0], s.size);
  {
    RawFile f = base;  // no content size in the frame header
    f.tensors[1].frames[0] = zstd_frame(raw.data(), raw.size(), false);
    auto r = open_mem(f.build());
    EXPECT_DC_STATUS(r->load_tensor(1, false), DC_ERR_DECOMPRESS);
    EXPECT_DC_STATUS(r->verify_all(), DC_ERR_DECOMPRESS);
    r->load_tensor(0, true);
  }
  {
    RawFile f = base;  // declares 4 bytes fewer than the manifest
    f.tensors[1].frames[0] = zstd_frame(raw.data(), raw.size() - 4, true);
    EXPECT_DC_STATUS(open_mem(f.build())->load_tensor(1, false), DC_ERR_DECOMPRESS);
  }
  {
    RawFile f = base;  // a second frame after the first inside the segment
    auto frame = zstd_frame(raw.data(), raw.size(), true);
    auto extra = zstd_frame(raw.data(), 8, true);
    frame.insert(frame.end(), extra.begin(), extra.end());
    f.tensors[1].frames[0] = frame;
    EXPECT_DC_STATUS(open_mem(f.build())->load_tensor(1, false), DC_ERR_DECOMPRESS);
  }
  {
    RawFile f = base;  // not a zstd frame at all
    f.tensors[1].frames[0] = std::vector<uint8_t>(64, 0x42);
    EXPECT_DC_STATUS(open_mem(f.build())->load_tensor(1, false), DC_ERR_DECOMPRESS);
  }
}

TEST(FormatCorruption, LoadValidatesValuesBehindGoodChecksums) {
  const RawFile base = RawFile::from_image(two_tensor_image());
  const dc::TensorDesc& d = base.tensors[0].desc;
  // Segment order for "lr": V0 U0 V1 U1 InPerm.
  auto replace = [&](size_t seg, std::function<void(std::vector<uint8_t>&)> edit) {
    RawFile f = base;
    std::vector<uint8_t> raw = zstd_decode(f.tensors[0].frames[seg], d.segments[seg].size);
    edit(raw);
    f.tensors[0].frames[seg] = zstd_frame(raw.data(), raw.size(), true);
    f.tensors[0].desc.segments[seg].xxh3 = XXH3_64bits(raw.data(), raw.size());
    return f.build();
  };
  {
    auto img = replace(4, [](std::vector<uint8_t>& raw) { std::memcpy(raw.data(), raw.data() + 4, 4); });
    EXPECT_DC_STATUS(open_mem(img)->load_tensor(0, true), DC_ERR_CORRUPT);  // perm not a bijection
  }
  {
    auto img = replace(4, [](std::vector<uint8_t>& raw) { put_le<uint32_t>(raw, 0, 300); });
    EXPECT_DC_STATUS(open_mem(img)->load_tensor(0, true), DC_ERR_CORRUPT);  // perm entry out of range
  }
  {
    // V0 (8-bit, 2 x 300): codes 2*ceil(300/32)*8 words, then qparams; zero = 256 is out of range.
    const size_t qoff = 2 * dc_row_words(300, 8) * 4;
    auto img = replace(0, [&](std::vector<uint8_t>& raw) { put_le<uint16_t>(raw, qoff + 2, dc::float_to_half(256.f)); });
    EXPECT_DC_STATUS(open_mem(img)->load_tensor(0, true), DC_ERR_CORRUPT);
    auto img2 = replace(0, [&](std::vector<uint8_t>& raw) { put_le<uint16_t>(raw, qoff + 2, dc::float_to_half(2.5f)); });
    EXPECT_DC_STATUS(open_mem(img2)->load_tensor(0, true), DC_ERR_CORRUPT);
    auto img3 = replace(0, [&](std::vector<uint8_t>& raw) { put_le<uint16_t>(raw, qoff, 0x7c00); });  // inf scale
    EXPECT_DC_STATUS(open_mem(img3)->load_tensor(0, true), DC_ERR_CORRUPT);
    auto ok = replace(0, [&](std::vector<uint8_t>& raw) { put_le<uint16_t>(raw, qoff + 2, dc::float_to_half(255.f)); });
    EXPECT_NO_THROW(open_mem(ok)->load_tensor(0, true));
  }
}
