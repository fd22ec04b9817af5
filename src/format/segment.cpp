// Segment helpers: zstd frames, XXH3, and the byte layout of every segment role (FORMAT.md §4).
#include "format/segment.h"

#include <cmath>
#include <cstring>

#include <xxhash.h>
#include <zstd.h>

#include "common/checked.h"

namespace dc {

static_assert(sizeof(dc_qparam) == 4, "a qparam is two little-endian fp16 values");

uint64_t xxh3_64(const void* data, uint64_t size) { return XXH3_64bits(data, (size_t)size); }

const char* segment_role_name(SegmentRole role) {
  switch (role) {
    case SegmentRole::VBand: return "VBand";
    case SegmentRole::UBand: return "UBand";
    case SegmentRole::InPerm: return "InPerm";
    case SegmentRole::Signs: return "Signs";
    case SegmentRole::DenseData: return "DenseData";
  }
  return "unknown-role";
}

namespace {

// One compression / decompression context per thread: contexts are not thread-safe, and creating
// one per call costs more than a small segment's compression.
struct CCtxHolder {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ~CCtxHolder() { ZSTD_freeCCtx(cctx); }
};
struct DCtxHolder {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ~DCtxHolder() { ZSTD_freeDCtx(dctx); }
};

ZSTD_CCtx* thread_cctx() {
  thread_local CCtxHolder h;
  DC_CHECK(h.cctx != nullptr, DC_ERR_OUT_OF_MEMORY, "zstd: cannot create a compression context");
  return h.cctx;
}

ZSTD_DCtx* thread_dctx() {
  thread_local DCtxHolder h;
  DC_CHECK(h.dctx != nullptr, DC_ERR_OUT_OF_MEMORY, "zstd: cannot create a decompression context");
  return h.dctx;
}

}  // namespace

std::vector<uint8_t> zstd_compress_frame(const void* data, uint64_t size, int level) {
  ZSTD_CCtx* cctx = thread_cctx();
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  size_t rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  if (!ZSTD_isError(rc)) rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
  // The manifest's XXH3 covers the decompressed bytes; zstd's own 32-bit checksum would add nothing.
  if (!ZSTD_isError(rc)) rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0);
  if (!ZSTD_isError(rc)) rc = ZSTD_CCtx_setPledgedSrcSize(cctx, size);
  DC_CHECK(!ZSTD_isError(rc), DC_ERR_INVALID_ARGUMENT, "zstd: bad compression parameter (level %d): %s", level,
           ZSTD_getErrorName(rc));
  std::vector<uint8_t> out(ZSTD_compressBound((size_t)size));
  const size_t n = ZSTD_compress2(cctx, out.data(), out.size(), data, (size_t)size);
  DC_CHECK(!ZSTD_isError(n), DC_ERR_INTERNAL, "zstd: compression of %llu bytes failed: %s",
           (unsigned long long)size, ZSTD_getErrorName(n));
  out.resize(n);
  out.shrink_to_fit();
  return out;
}

void zstd_decompress_frame(const uint8_t* src, uint64_t compressed_size, uint8_t* dst, uint64_t size,
                           const std::string& what) {
  const unsigned long long fcs = ZSTD_getFrameContentSize(src, (size_t)compressed_size);
  DC_CHECK(fcs != ZSTD_CONTENTSIZE_ERROR, DC_ERR_DECOMPRESS, "%s: not a valid zstd frame header", what.c_str());
  DC_CHECK(fcs != ZSTD_CONTENTSIZE_UNKNOWN, DC_ERR_DECOMPRESS,
           "%s: the zstd frame does not declare its content size", what.c_str());
  DC_CHECK(fcs == size, DC_ERR_DECOMPRESS, "%s: the zstd frame declares %llu bytes, the manifest %llu",
           what.c_str(), fcs, (unsigned long long)size);
  const size_t frame = ZSTD_findFrameCompressedSize(src, (size_t)compressed_size);
  DC_CHECK(!ZSTD_isError(frame), DC_ERR_DECOMPRESS, "%s: invalid zstd frame: %s", what.c_str(),
           ZSTD_getErrorName(frame));
  DC_CHECK(frame == compressed_size, DC_ERR_DECOMPRESS,
           "%s: the zstd frame spans %llu bytes, the manifest says %llu", what.c_str(),
           (unsigned long long)frame, (unsigned long long)compressed_size);
  const size_t n = ZSTD_decompressDCtx(thread_dctx(), dst, (size_t)size, src, (size_t)compressed_size);
  DC_CHECK(!ZSTD_isError(n), DC_ERR_DECOMPRESS, "%s: zstd decompression failed: %s", what.c_str(),
           ZSTD_getErrorName(n));
  DC_CHECK(n == size, DC_ERR_DECOMPRESS, "%s: zstd produced %llu bytes, expected %llu", what.c_str(),
           (unsigned long long)n, (unsigned long long)size);
}

uint64_t checked_row_words(uint64_t len, uint32_t bits, const char* what) {
  return checked_mul(checked_add(len, DC_CODE_BLOCK - 1, what) / DC_CODE_BLOCK, bits, what);
}

uint64_t checked_row_groups(uint64_t len, uint32_t group_size, const char* what) {
  return checked_add(len, group_size - 1, what) / group_size;
}

std::vector<SegmentSlot> expected_segments(const TensorDesc& d) {
  std::vector<SegmentSlot> s;
  switch (d.kind) {
    case DC_KIND_LOWRANK:
      for (uint32_t b = 0; b < d.bands.size(); ++b) {
        s.push_back({SegmentRole::VBand, b});
        s.push_back({SegmentRole::UBand, b});
      }
      if (d.has_in_perm) s.push_back({SegmentRole::InPerm, 0});
      break;
    case DC_KIND_BITDELTA: s.push_back({SegmentRole::Signs, 0}); break;
    case DC_KIND_DENSE: s.push_back({SegmentRole::DenseData, 0}); break;
  }
  return s;
}

namespace {

// Bytes of `n` rows of packed codes plus their qparams for rows of `len` codes.
uint64_t band_part_bytes(uint64_t n, uint64_t len, const BandDesc& b, const char* what) {
  const uint64_t words = checked_mul(n, checked_row_words(len, b.bits, what), what);
  uint64_t groups = 0;
  if (b.bits != 16) groups = checked_mul(n, checked_row_groups(len, b.group_size, what), what);
  return checked_mul(checked_add(words, groups, what), 4, what);
}

}  // namespace

uint64_t expected_segment_size(const TensorDesc& d, SegmentRole role, uint32_t band) {
  const char* what = d.name.c_str();
  switch (role) {
    case SegmentRole::VBand: return band_part_bytes(d.bands[band].rank(), d.cols, d.bands[band], what);
    case SegmentRole::UBand: return band_part_bytes(d.rows, d.bands[band].rank(), d.bands[band], what);
    case SegmentRole::InPerm: return checked_mul(d.cols, 4, what);
    case SegmentRole::Signs: return checked_mul(checked_mul(d.rows, checked_row_words(d.cols, 1, what), what), 4, what);
    case SegmentRole::DenseData: return checked_mul(checked_mul(d.rows, d.cols, what), dtype_size(d.dtype), what);
  }
  fail(DC_ERR_CORRUPT, format("tensor '%s': unknown segment role %u", what, (unsigned)role));
}

void validate_tensor_desc(const TensorDesc& d, uint64_t max_segment_bytes) {
  const char* n = d.name.c_str();
  DC_CHECK(!d.name.empty(), DC_ERR_CORRUPT, "a tensor has an empty name");
  DC_CHECK(d.name.size() <= 1024, DC_ERR_LIMIT, "tensor name of %zu bytes exceeds 1024", d.name.size());
  DC_CHECK(d.name.find('\0') == std::string::npos, DC_ERR_CORRUPT, "tensor name contains a NUL byte");
  DC_CHECK(d.rows >= 1 && d.cols >= 1, DC_ERR_CORRUPT, "tensor '%s': shape %llu x %llu has a zero dimension", n,
           (unsigned long long)d.rows, (unsigned long long)d.cols);
  checked_mul(d.rows, d.cols, n);
  DC_CHECK((unsigned)d.kind <= DC_KIND_DENSE, DC_ERR_CORRUPT, "tensor '%s': unknown kind %u", n, (unsigned)d.kind);
  DC_CHECK((unsigned)d.dtype <= DC_DTYPE_BF16, DC_ERR_CORRUPT, "tensor '%s': unknown dtype %u", n,
           (unsigned)d.dtype);
  if (d.kind == DC_KIND_LOWRANK) {
    DC_CHECK(d.rank <= d.rows && d.rank <= d.cols, DC_ERR_CORRUPT, "tensor '%s': rank %u exceeds min(%llu, %llu)",
             n, d.rank, (unsigned long long)d.rows, (unsigned long long)d.cols);
    DC_CHECK(d.bands.size() <= 255, DC_ERR_LIMIT, "tensor '%s': %zu bands exceed 255", n, d.bands.size());
    uint32_t next = 0;
    for (size_t b = 0; b < d.bands.size(); ++b) {
      const BandDesc& bd = d.bands[b];
      DC_CHECK(dc_valid_band_bits(bd.bits), DC_ERR_CORRUPT, "tensor '%s' band %zu: invalid bit width %u", n, b,
               bd.bits);
      DC_CHECK(bd.rank_begin == next && bd.rank_end > bd.rank_begin, DC_ERR_CORRUPT,
               "tensor '%s' band %zu: rank range [%u, %u) is empty or not contiguous (expected begin %u)", n, b,
               bd.rank_begin, bd.rank_end, next);
      if (bd.bits == 16) {
        DC_CHECK(bd.group_size == 0, DC_ERR_CORRUPT, "tensor '%s' band %zu: 16-bit bands have group size 0, not %u",
                 n, b, bd.group_size);
      } else {
        DC_CHECK(bd.group_size >= DC_CODE_BLOCK && bd.group_size % DC_CODE_BLOCK == 0, DC_ERR_CORRUPT,
                 "tensor '%s' band %zu: group size %u is not a positive multiple of 32", n, b, bd.group_size);
        DC_CHECK(bd.group_size <= DC_MAX_GROUP, DC_ERR_LIMIT, "tensor '%s' band %zu: group size %u exceeds %u", n,
                 b, bd.group_size, DC_MAX_GROUP);
      }
      next = bd.rank_end;
    }
    DC_CHECK(next == d.rank, DC_ERR_CORRUPT, "tensor '%s': bands cover rank [0, %u), the tensor has rank %u", n,
             next, d.rank);
    DC_CHECK(d.sigma.size() == d.rank, DC_ERR_CORRUPT, "tensor '%s': %zu singular values for rank %u", n,
             d.sigma.size(), d.rank);
    for (size_t i = 0; i < d.sigma.size(); ++i)
      DC_CHECK(std::isfinite(d.sigma[i]), DC_ERR_CORRUPT, "tensor '%s': sigma[%zu] is not finite", n, i);
  } else {
    DC_CHECK(d.rank == 0 && d.bands.empty() && d.sigma.empty() && !d.has_in_perm, DC_ERR_CORRUPT,
             "tensor '%s': a %s tensor has no rank, bands, sigma or permutation", n,
             d.kind == DC_KIND_DENSE ? "dense" : "BitDelta");
    if (d.kind == DC_KIND_BITDELTA)
      DC_CHECK(std::isfinite(d.bitdelta_scale), DC_ERR_CORRUPT, "tensor '%s': BitDelta scale is not finite", n);
  }

  // Exactly the expected segments, each once, each of its exact size.
  const std::vector<SegmentSlot> want = expected_segments(d);
  std::vector<bool> seen(want.size(), false);
  for (const SegmentRef& s : d.segments) {
    DC_CHECK((unsigned)s.role <= (unsigned)SegmentRole::DenseData, DC_ERR_CORRUPT,
             "tensor '%s': unknown segment role %u", n, (unsigned)s.role);
    size_t k = 0;
    while (k < want.size() && !(want[k].role == s.role && want[k].band == s.band)) ++k;
    DC_CHECK(k < want.size(), DC_ERR_CORRUPT, "tensor '%s': unexpected %s segment (band %u) for this kind/bands", n,
             segment_role_name(s.role), s.band);
    DC_CHECK(!seen[k], DC_ERR_CORRUPT, "tensor '%s': %s segment (band %u) appears twice", n,
             segment_role_name(s.role), s.band);
    seen[k] = true;
    const uint64_t size = expected_segment_size(d, s.role, s.band);
    DC_CHECK(size <= max_segment_bytes, DC_ERR_LIMIT, "tensor '%s': %s segment of %llu bytes exceeds the limit %llu",
             n, segment_role_name(s.role), (unsigned long long)size, (unsigned long long)max_segment_bytes);
    DC_CHECK(s.size == size, DC_ERR_CORRUPT, "tensor '%s': %s segment (band %u) holds %llu bytes, the shape implies %llu",
             n, segment_role_name(s.role), s.band, (unsigned long long)s.size, (unsigned long long)size);
    DC_CHECK(s.compressed_size >= 1, DC_ERR_CORRUPT, "tensor '%s': %s segment has a compressed size of 0", n,
             segment_role_name(s.role));
  }
  for (size_t k = 0; k < want.size(); ++k)
    DC_CHECK(seen[k], DC_ERR_CORRUPT, "tensor '%s': missing %s segment (band %u)", n, segment_role_name(want[k].role),
             want[k].band);
}

TensorDesc describe_tensor(const PackedTensor& t) {
  TensorDesc d;
  d.name = t.name;
  d.rows = t.rows;
  d.cols = t.cols;
  d.kind = t.kind;
  d.dtype = t.dtype;
  d.rank = t.rank;
  for (const PackedBand& b : t.bands) d.bands.push_back(b.desc);
  d.sigma = t.sigma;
  d.has_in_perm = !t.in_perm.empty();
  d.bitdelta_scale = t.bitdelta_scale;
  return d;
}

namespace {

template <class T>
void append(std::vector<uint8_t>& out, const std::vector<T>& v) {
  const size_t at = out.size();
  out.resize(at + v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data() + at, v.data(), v.size() * sizeof(T));
}

template <class T>
void take(const std::vector<uint8_t>& in, uint64_t& at, uint64_t bytes, std::vector<T>& v) {
  DC_CHECK(bytes % sizeof(T) == 0 && at + bytes <= in.size(), DC_ERR_INTERNAL, "segment split out of range");
  v.resize(bytes / sizeof(T));
  if (bytes) std::memcpy(v.data(), in.data() + at, bytes);
  at += bytes;
}

}  // namespace

std::vector<std::vector<uint8_t>> serialize_segments(const PackedTensor& t, const TensorDesc& d) {
  std::vector<std::vector<uint8_t>> out;
  for (const SegmentSlot& s : expected_segments(d)) {
    std::vector<uint8_t> bytes;
    switch (s.role) {
      case SegmentRole::VBand:
        append(bytes, t.bands[s.band].v_codes);
        append(bytes, t.bands[s.band].v_qparams);
        break;
      case SegmentRole::UBand:
        append(bytes, t.bands[s.band].u_codes);
        append(bytes, t.bands[s.band].u_qparams);
        break;
      case SegmentRole::InPerm: append(bytes, t.in_perm); break;
      case SegmentRole::Signs: append(bytes, t.signs); break;
      case SegmentRole::DenseData: append(bytes, t.dense); break;
    }
    DC_CHECK(bytes.size() == expected_segment_size(d, s.role, s.band), DC_ERR_INTERNAL,
             "tensor '%s': %s segment serialised to %zu bytes", t.name.c_str(), segment_role_name(s.role),
             bytes.size());
    out.push_back(std::move(bytes));
  }
  return out;
}

void deserialize_segment(const TensorDesc& d, SegmentRole role, uint32_t band, const std::vector<uint8_t>& bytes,
                         PackedTensor& t) {
  uint64_t at = 0;
  switch (role) {
    case SegmentRole::VBand:
    case SegmentRole::UBand: {
      const BandDesc& b = d.bands[band];
      const bool v = role == SegmentRole::VBand;
      const uint64_t n = v ? b.rank() : d.rows, len = v ? d.cols : b.rank();
      const uint64_t code_bytes = n * dc_row_words(len, b.bits) * 4;  // sizes already checked
      PackedBand& pb = t.bands[band];
      take(bytes, at, code_bytes, v ? pb.v_codes : pb.u_codes);
      take(bytes, at, bytes.size() - code_bytes, v ? pb.v_qparams : pb.u_qparams);
      break;
    }
    case SegmentRole::InPerm: take(bytes, at, bytes.size(), t.in_perm); break;
    case SegmentRole::Signs: take(bytes, at, bytes.size(), t.signs); break;
    case SegmentRole::DenseData: take(bytes, at, bytes.size(), t.dense); break;
  }
}

}  // namespace dc
