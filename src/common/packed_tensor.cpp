// PackedTensor::validate — the one check of a tensor's arrays against its shape and bands, used by
// the writer before compressing and by the reader after decompressing (FORMAT.md §5).
#include "common/packed_tensor.h"

#include <cmath>

#include "common/checked.h"
#include "common/half.h"

namespace dc {

namespace {

// Overflow-checked versions of the pack_layout.h counts.
uint64_t row_words(uint64_t len, uint32_t bits, const char* what) {
  return checked_mul(checked_add(len, DC_CODE_BLOCK - 1, what) / DC_CODE_BLOCK, bits, what);
}
uint64_t row_groups(uint64_t len, uint32_t g, const char* what) { return checked_add(len, g - 1, what) / g; }

void check_count(const char* tensor, const char* array, uint64_t have, uint64_t want) {
  DC_CHECK(have == want, DC_ERR_CORRUPT, "tensor '%s': %s has %llu entries, the shape implies %llu", tensor, array,
           (unsigned long long)have, (unsigned long long)want);
}

void check_qparams(const char* tensor, size_t band, const char* part, const std::vector<dc_qparam>& q,
                   uint32_t bits) {
  const float max_zero = (float)((1u << bits) - 1u);
  for (size_t i = 0; i < q.size(); ++i) {
    const float s = half_to_float(q[i].scale), z = half_to_float(q[i].zero);
    DC_CHECK(std::isfinite(s), DC_ERR_CORRUPT, "tensor '%s' band %zu: %s scale %zu is not finite", tensor, band, part,
             i);
    DC_CHECK(z >= 0.f && z <= max_zero && z == std::floor(z), DC_ERR_CORRUPT,
             "tensor '%s' band %zu: %s zero %zu = %g is not an integer in [0, %g]", tensor, band, part, i, (double)z,
             (double)max_zero);
  }
}

}  // namespace

void PackedTensor::validate() const {
  const char* n = name.c_str();
  DC_CHECK(!name.empty(), DC_ERR_CORRUPT, "a tensor has an empty name");
  DC_CHECK(name.size() <= 1024, DC_ERR_LIMIT, "tensor name of %zu bytes exceeds 1024", name.size());
  DC_CHECK(rows >= 1 && cols >= 1, DC_ERR_CORRUPT, "tensor '%s': shape %llu x %llu has a zero dimension", n,
           (unsigned long long)rows, (unsigned long long)cols);
  const uint64_t numel = checked_mul(rows, cols, n);
  DC_CHECK((unsigned)kind <= DC_KIND_DENSE, DC_ERR_CORRUPT, "tensor '%s': unknown kind %u", n, (unsigned)kind);
  DC_CHECK((unsigned)dtype <= DC_DTYPE_BF16, DC_ERR_CORRUPT, "tensor '%s': unknown dtype %u", n, (unsigned)dtype);

  if (kind != DC_KIND_LOWRANK) {
    DC_CHECK(rank == 0 && bands.empty() && sigma.empty() && in_perm.empty(), DC_ERR_CORRUPT,
             "tensor '%s': only low-rank tensors have rank, bands, sigma or a permutation", n);
  }
  if (kind != DC_KIND_BITDELTA) check_count(n, "signs", signs.size(), 0);
  if (kind != DC_KIND_DENSE) check_count(n, "dense data", dense.size(), 0);

  switch (kind) {
    case DC_KIND_DENSE:
      check_count(n, "dense data (bytes)", dense.size(), checked_mul(numel, dtype_size(dtype), n));
      break;
    case DC_KIND_BITDELTA:
      DC_CHECK(std::isfinite(bitdelta_scale), DC_ERR_CORRUPT, "tensor '%s': BitDelta scale is not finite", n);
      check_count(n, "signs", signs.size(), checked_mul(rows, row_words(cols, 1, n), n));
      break;
    case DC_KIND_LOWRANK: {
      DC_CHECK(rank <= rows && rank <= cols, DC_ERR_CORRUPT, "tensor '%s': rank %u exceeds min(%llu, %llu)", n, rank,
               (unsigned long long)rows, (unsigned long long)cols);
      DC_CHECK(bands.size() <= 255, DC_ERR_LIMIT, "tensor '%s': %zu bands exceed 255", n, bands.size());
      check_count(n, "sigma", sigma.size(), rank);
      for (size_t i = 0; i < sigma.size(); ++i)
        DC_CHECK(std::isfinite(sigma[i]), DC_ERR_CORRUPT, "tensor '%s': sigma[%zu] is not finite", n, i);
      uint32_t next = 0;
      for (size_t b = 0; b < bands.size(); ++b) {
        const BandDesc& d = bands[b].desc;
        DC_CHECK(dc_valid_band_bits(d.bits), DC_ERR_CORRUPT, "tensor '%s' band %zu: invalid bit width %u", n, b, d.bits);
        DC_CHECK(d.rank_begin == next && d.rank_end > d.rank_begin, DC_ERR_CORRUPT,
                 "tensor '%s' band %zu: rank range [%u, %u) is empty or not contiguous (expected begin %u)", n, b,
                 d.rank_begin, d.rank_end, next);
        next = d.rank_end;
        const bool quantized = d.bits != 16;
        if (quantized) {
          DC_CHECK(d.group_size >= DC_CODE_BLOCK && d.group_size % DC_CODE_BLOCK == 0, DC_ERR_CORRUPT,
                   "tensor '%s' band %zu: group size %u is not a positive multiple of 32", n, b, d.group_size);
          DC_CHECK(d.group_size <= DC_MAX_GROUP, DC_ERR_LIMIT, "tensor '%s' band %zu: group size %u exceeds %u", n, b,
                   d.group_size, DC_MAX_GROUP);
        } else {
          DC_CHECK(d.group_size == 0, DC_ERR_CORRUPT, "tensor '%s' band %zu: 16-bit bands have group size 0, not %u",
                   n, b, d.group_size);
        }
        const uint64_t r = d.rank();
        const PackedBand& pb = bands[b];
        check_count(n, "V codes", pb.v_codes.size(), checked_mul(r, row_words(cols, d.bits, n), n));
        check_count(n, "U codes", pb.u_codes.size(), checked_mul(rows, row_words(r, d.bits, n), n));
        check_count(n, "V qparams", pb.v_qparams.size(),
                    quantized ? checked_mul(r, row_groups(cols, d.group_size, n), n) : 0);
        check_count(n, "U qparams", pb.u_qparams.size(),
                    quantized ? checked_mul(rows, row_groups(r, d.group_size, n), n) : 0);
        if (quantized) {
          check_qparams(n, b, "V", pb.v_qparams, d.bits);
          check_qparams(n, b, "U", pb.u_qparams, d.bits);
        }
      }
      DC_CHECK(next == rank, DC_ERR_CORRUPT, "tensor '%s': bands cover rank [0, %u), the tensor has rank %u", n, next,
               rank);
      if (!in_perm.empty()) {
        check_count(n, "in_perm", in_perm.size(), cols);
        std::vector<bool> hit(in_perm.size(), false);
        for (size_t p = 0; p < in_perm.size(); ++p) {
          const uint32_t v = in_perm[p];
          DC_CHECK(v < in_perm.size() && !hit[v], DC_ERR_CORRUPT,
                   "tensor '%s': in_perm[%zu] = %u is out of range or repeated (not a permutation)", n, p, v);
          hit[v] = true;
        }
      }
      break;
    }
  }
}

uint64_t PackedTensor::packed_bytes() const {
  uint64_t bytes = sigma.size() * sizeof(float) + in_perm.size() * 4 + signs.size() * 4 + dense.size();
  for (const PackedBand& b : bands)
    bytes += (b.v_codes.size() + b.u_codes.size()) * 4 + (b.v_qparams.size() + b.u_qparams.size()) * sizeof(dc_qparam);
  return bytes;
}

}  // namespace dc
