// Helpers for the format tests: tensor generators, exact comparison, and RawFile — a test-side
// .dcz builder that writes its own preamble and FlatBuffers manifest (independent of the library's
// writer) so tests can craft files the writer would never produce.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <xxhash.h>
#include <zstd.h>

#include "common/error.h"
#include "common/half.h"
#include "common/packed_tensor.h"
#include "deltacome_generated.h"
#include "fixtures/random_packed.h"
#include "format/container.h"

namespace fmt_test {

// Runs `fn` and expects a dc::Error with `status`.
#define EXPECT_DC_STATUS(expr, want_status_)                                                              \
  do {                                                                                              \
    try {                                                                                           \
      (void)(expr);                                                                                 \
      ADD_FAILURE() << "expected " #want_status_ " from " #expr ", got success";                          \
    } catch (const dc::Error& e_) {                                                                 \
      EXPECT_EQ(e_.status(), want_status_) << "message: " << e_.what();                                   \
    }                                                                                               \
  } while (0)

using BandSpec = dc_fixture::BandSpec;

inline dc::PackedTensor make_lowrank(const std::string& name, uint64_t rows, uint64_t cols,
                                     const std::vector<BandSpec>& bands, bool with_perm, uint64_t seed) {
  return dc_fixture::random_lowrank(name, rows, cols, bands, with_perm, seed, {DC_DTYPE_BF16, -14, 100.f, false});
}

inline dc::PackedTensor make_bitdelta(const std::string& name, uint64_t rows, uint64_t cols, uint64_t seed) {
  return dc_fixture::random_bitdelta(name, rows, cols, seed);
}

inline dc::PackedTensor make_dense(const std::string& name, uint64_t rows, uint64_t cols, dc_dtype dtype,
                                   uint64_t seed) {
  std::mt19937_64 rng(seed);
  dc::PackedTensor t = dc_fixture::empty_tensor(name, rows, cols, DC_KIND_DENSE, dtype);
  t.dense.resize(rows * cols * dc::dtype_size(dtype));
  for (auto& b : t.dense) b = (uint8_t)rng();
  return t;
}

inline void expect_same_tensor(const dc::PackedTensor& a, const dc::PackedTensor& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.dtype, b.dtype);
  EXPECT_EQ(a.rank, b.rank);
  EXPECT_EQ(a.sigma, b.sigma);
  EXPECT_EQ(a.in_perm, b.in_perm);
  EXPECT_EQ(a.bitdelta_scale, b.bitdelta_scale);
  EXPECT_EQ(a.signs, b.signs);
  EXPECT_EQ(a.dense, b.dense);
  ASSERT_EQ(a.bands.size(), b.bands.size());
  for (size_t i = 0; i < a.bands.size(); ++i) {
    const dc::PackedBand &x = a.bands[i], &y = b.bands[i];
    EXPECT_EQ(x.desc.bits, y.desc.bits);
    EXPECT_EQ(x.desc.rank_begin, y.desc.rank_begin);
    EXPECT_EQ(x.desc.rank_end, y.desc.rank_end);
    EXPECT_EQ(x.desc.group_size, y.desc.group_size);
    EXPECT_EQ(x.v_codes, y.v_codes);
    EXPECT_EQ(x.u_codes, y.u_codes);
    ASSERT_EQ(x.v_qparams.size(), y.v_qparams.size());
    ASSERT_EQ(x.u_qparams.size(), y.u_qparams.size());
    for (size_t k = 0; k < x.v_qparams.size(); ++k) {
      ASSERT_EQ(x.v_qparams[k].scale, y.v_qparams[k].scale) << "band " << i << " V qparam " << k;
      ASSERT_EQ(x.v_qparams[k].zero, y.v_qparams[k].zero) << "band " << i << " V qparam " << k;
    }
    for (size_t k = 0; k < x.u_qparams.size(); ++k) {
      ASSERT_EQ(x.u_qparams[k].scale, y.u_qparams[k].scale) << "band " << i << " U qparam " << k;
      ASSERT_EQ(x.u_qparams[k].zero, y.u_qparams[k].zero) << "band " << i << " U qparam " << k;
    }
  }
}

// Little-endian field access for crafting preambles (FORMAT.md §1 offsets).
template <class T>
inline void put_le(std::vector<uint8_t>& img, size_t off, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) img[off + i] = (uint8_t)((uint64_t)v >> (8 * i));
}
template <class T>
inline T get_le(const std::vector<uint8_t>& img, size_t off) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= (uint64_t)img[off + i] << (8 * i);
  return (T)v;
}
inline void rehash_header(std::vector<uint8_t>& img) { put_le<uint64_t>(img, 72, XXH3_64bits(img.data(), 72)); }

inline std::vector<uint8_t> zstd_frame(const void* data, size_t n, bool with_content_size) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, with_content_size ? 1 : 0);
  std::vector<uint8_t> out(ZSTD_compressBound(n));
  size_t r;
  if (with_content_size) {
    r = ZSTD_compress2(c, out.data(), out.size(), data, n);
  } else {
    // Streaming without a pledged size: the frame header carries no content size.
    ZSTD_inBuffer in{data, n, 0};
    ZSTD_outBuffer o{out.data(), out.size(), 0};
    r = ZSTD_compressStream2(c, &o, &in, ZSTD_e_end);
    r = ZSTD_isError(r) ? r : o.pos;
  }
  ZSTD_freeCCtx(c);
  EXPECT_FALSE(ZSTD_isError(r));
  out.resize(r);
  return out;
}

inline std::vector<uint8_t> zstd_decode(const std::vector<uint8_t>& frame, size_t n) {
  std::vector<uint8_t> out(n);
  EXPECT_EQ(ZSTD_decompress(out.data(), n, frame.data(), frame.size()), n);
  return out;
}

struct RawTensor {
  dc::TensorDesc desc;
  int raw_kind = -1, raw_dtype = -1;  // >= 0: stored instead of desc.kind / desc.dtype
  std::vector<std::vector<uint8_t>> frames;  // parallel to desc.segments
};

// A .dcz image built field by field. With auto_layout, segments are placed in order, aligned,
// and their offsets/compressed sizes filled in; otherwise desc.segments' offsets are used as is.
struct RawFile {
  std::vector<RawTensor> tensors;
  dc::ContainerMeta meta;
  uint16_t major = 1, minor = 0;
  uint32_t header_len = 80;
  uint32_t flags_required = 0, flags_optional = 0, alignment = 4096, reserved = 0;
  bool auto_layout = true;
  std::string identifier = "DCZM";
  uint64_t manifest_offset_at = 0;  // filled by build()
  uint64_t payload_offset_at = 0;

  // Takes tensors and frames out of a valid image (read with the library's reader).
  static RawFile from_image(const std::vector<uint8_t>& img) {
    RawFile f;
    auto r = dc::ContainerReader::open_memory(img.data(), img.size(), dc::ReaderLimits{});
    f.meta = r->meta();
    f.alignment = get_le<uint32_t>(img, 56);
    const uint64_t po = get_le<uint64_t>(img, 32);
    for (const dc::TensorDesc& d : r->tensors()) {
      RawTensor t;
      t.desc = d;
      for (const dc::SegmentRef& s : d.segments)
        t.frames.emplace_back(img.begin() + po + s.offset, img.begin() + po + s.offset + s.compressed_size);
      f.tensors.push_back(std::move(t));
    }
    return f;
  }

  std::vector<uint8_t> manifest() {
    namespace fb = deltacome::fb;
    flatbuffers::FlatBufferBuilder b;
    std::vector<flatbuffers::Offset<fb::Tensor>> ts;
    for (const RawTensor& t : tensors) {
      const dc::TensorDesc& d = t.desc;
      std::vector<flatbuffers::Offset<fb::Band>> bands;
      for (const dc::BandDesc& bd : d.bands)
        bands.push_back(fb::CreateBand(b, (uint8_t)bd.bits, bd.rank_begin, bd.rank_end, bd.group_size));
      std::vector<fb::Segment> segs;
      for (const dc::SegmentRef& s : d.segments)
        segs.emplace_back(s.offset, s.compressed_size, s.size, s.xxh3, (fb::SegmentRole)s.role, (uint8_t)s.band);
      const auto kind = (fb::TensorKind)(t.raw_kind >= 0 ? t.raw_kind : (int)d.kind);
      const auto dtype = (fb::DType)(t.raw_dtype >= 0 ? t.raw_dtype : (int)d.dtype);
      ts.push_back(fb::CreateTensorDirect(b, d.name.c_str(), d.rows, d.cols, kind, dtype, d.rank, &bands, &d.sigma, d.has_in_perm,
                                          d.bitdelta_scale, &segs));
    }
    auto root = fb::CreateManifestDirect(b, major, minor, meta.tool_version.c_str(), meta.model_name.c_str(),
                                         meta.base_model_name.c_str(), meta.recipe_json.c_str(), &ts);
    b.Finish(root, identifier.c_str());
    return std::vector<uint8_t>(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  }

  std::vector<uint8_t> build() {
    uint64_t cursor = 0, payload_size = 0;
    for (RawTensor& t : tensors)
      for (size_t i = 0; i < t.frames.size(); ++i) {
        dc::SegmentRef& s = t.desc.segments[i];
        if (auto_layout) {
          s.offset = (cursor + alignment - 1) / alignment * alignment;
          s.compressed_size = t.frames[i].size();
        }
        cursor = s.offset + t.frames[i].size();
        payload_size = std::max(payload_size, cursor);
      }
    const std::vector<uint8_t> m = manifest();
    const uint64_t manifest_end = header_len + m.size();
    const uint64_t payload_offset = (manifest_end + alignment - 1) / alignment * alignment;
    std::vector<uint8_t> img(payload_offset + payload_size, 0);
    std::memcpy(img.data(), dc::kDczMagic, 8);
    put_le<uint16_t>(img, 8, major);
    put_le<uint16_t>(img, 10, minor);
    put_le<uint32_t>(img, 12, header_len);
    put_le<uint64_t>(img, 16, header_len);
    put_le<uint64_t>(img, 24, m.size());
    put_le<uint64_t>(img, 32, payload_offset);
    put_le<uint64_t>(img, 40, payload_size);
    put_le<uint32_t>(img, 48, flags_required);
    put_le<uint32_t>(img, 52, flags_optional);
    put_le<uint32_t>(img, 56, alignment);
    put_le<uint32_t>(img, 60, reserved);
    put_le<uint64_t>(img, 64, XXH3_64bits(m.data(), m.size()));
    for (uint32_t i = 80; i < header_len; ++i) img[i] = 0xAB;  // unknown future header bytes
    std::memcpy(img.data() + header_len, m.data(), m.size());
    for (const RawTensor& t : tensors)
      for (size_t i = 0; i < t.frames.size(); ++i)
        std::memcpy(img.data() + payload_offset + t.desc.segments[i].offset, t.frames[i].data(), t.frames[i].size());
    rehash_header(img);
    manifest_offset_at = header_len;
    payload_offset_at = payload_offset;
    return img;
  }
};

inline std::unique_ptr<dc::ContainerReader> open_mem(const std::vector<uint8_t>& img,
                                                    const dc::ReaderLimits& limits = dc::ReaderLimits{}) {
  return dc::ContainerReader::open_memory(img.data(), img.size(), limits);
}

}  // namespace fmt_test
