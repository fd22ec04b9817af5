// dc_delta_get_info for shards (range, device bytes) and the shard option's validation.
//
// Device bytes: the CPU backend keeps the packed arrays of the view as they are, plus bookkeeping
// that depends only on the band list, so whole − shard must equal exactly the packed bytes the
// shard leaves out, computed here from pack_layout.h independently of src/api/shard_view.cpp.
#include <cstdio>

#include "api/shard_view.h"
#include "math/budget.h"
#include "unit/shard/shard_fixture.h"

namespace dc_test {
namespace {

uint64_t band_u_bytes(const dc::BandDesc& d, uint64_t rows) {
  const uint64_t r = d.rank();
  return rows * (dc_row_words(r, d.bits) * 4 + (d.bits == 16 ? 0 : dc_row_groups(r, d.group_size) * 4));
}
uint64_t band_v_bytes(const dc::BandDesc& d, uint64_t len) {
  const uint64_t r = d.rank();
  return r * (dc_row_words(len, d.bits) * 4 + (d.bits == 16 ? 0 : dc_row_groups(len, d.group_size) * 4));
}

// V positions a column shard [b, e) keeps: the blocks of lcm(32, groups) positions holding one of
// its inputs (contiguous without a permutation, scattered with one).
uint64_t kept_v_len(const dc::PackedTensor& t, uint64_t b, uint64_t e) {
  uint64_t align = 32;
  for (const auto& band : t.bands)
    if (band.desc.bits != 16) align = std::lcm<uint64_t>(align, band.desc.group_size);
  uint64_t len = 0;
  for (uint64_t k = 0; k * align < t.cols; ++k) {
    const uint64_t p0 = k * align, p1 = std::min(t.cols, p0 + align);
    bool need = false;
    for (uint64_t p = p0; p < p1 && !need; ++p) {
      const uint64_t c = t.in_perm.empty() ? p : t.in_perm[p];
      need = c >= b && c < e;
    }
    if (need) len += p1 - p0;
  }
  return len;
}

// Packed bytes the whole tensor holds that shard [b, e) does not.
uint64_t bytes_left_out(const dc::PackedTensor& t, dc_shard_split split, uint64_t b, uint64_t e) {
  const uint64_t n = e - b;
  uint64_t out = 0;
  switch (t.kind) {
    case DC_KIND_LOWRANK:
      if (split == DC_SHARD_ROWS) {
        for (const auto& band : t.bands) out += band_u_bytes(band.desc, t.rows - n);
      } else {
        const uint64_t len = kept_v_len(t, b, e);
        for (const auto& band : t.bands) out += band_v_bytes(band.desc, t.cols) - band_v_bytes(band.desc, len);
        if (!t.in_perm.empty()) out += (t.cols - len) * 4;
      }
      break;
    case DC_KIND_BITDELTA:
      out = split == DC_SHARD_ROWS ? (t.rows - n) * dc_row_words(t.cols, 1) * 4
                                   : t.rows * (dc_row_words(t.cols, 1) - dc_row_words(n, 1)) * 4;
      break;
    default:
      out = (split == DC_SHARD_ROWS ? (t.rows - n) * t.cols : t.rows * (t.cols - n)) * dc::dtype_size(t.dtype);
  }
  return out;
}

TEST(ShardInfo, ReportsRangeAndExactlyTheBytesTheShardKeeps) {
  const BandSpec mixed{"8+3+2", {{8, 2}, {3, 8}, {2, 14}}, {}};
  std::vector<ShardCase> cases;
  cases.push_back(lowrank_case(136, 328, mixed, ActOrder::None, 1));
  cases.push_back(lowrank_case(136, 328, mixed, ActOrder::Gptq, 1));
  cases.push_back(lowrank_case(136, 328, mixed, ActOrder::BlockLocal, 1));
  cases.push_back(lowrank_case(136, 328, {"16bit", {{16, 8}}, {}}, ActOrder::None, 1));
  cases.push_back(bitdelta_case(136, 328, 2));
  cases.push_back(dense_case(136, 328, DC_DTYPE_BF16, 2));
  ContextPtr ctx = cpu_context(1);
  ASSERT_TRUE(ctx);
  for (const ShardCase& c : cases) {
    SCOPED_TRACE(c.label);
    DeltaPtr whole = load_shard(ctx.get(), c, shard_of(DC_SHARD_NONE, 0, 1));
    ASSERT_TRUE(whole);
    const dc_delta_info wi = info_of(whole.get());
    EXPECT_EQ(wi.split, DC_SHARD_NONE);
    EXPECT_EQ(wi.shard_begin, 0u);
    EXPECT_GE(wi.device_bytes, c.t.packed_bytes());
    for (dc_shard_split split : {DC_SHARD_ROWS, DC_SHARD_COLS})
      for (const Partition& part : partitions(split, split == DC_SHARD_ROWS ? c.t.rows : c.t.cols))
        for (const dc_shard& sh : part.shards) {
          SCOPED_TRACE(part.label + " " + describe(sh));
          if (c.t.kind == DC_KIND_DENSE && split == DC_SHARD_COLS && sh.end == sh.begin + 1) continue;  // refused
          DeltaPtr d = load_shard(ctx.get(), c, sh);
          ASSERT_TRUE(d);
          const dc_delta_info si = info_of(d.get());
          EXPECT_EQ(si.split, split);
          EXPECT_EQ(si.rows, c.t.rows);
          EXPECT_EQ(si.cols, c.t.cols);
          EXPECT_STREQ(si.name, c.t.name.c_str());
          if (sh.end > sh.begin) {
            EXPECT_EQ(si.shard_begin, sh.begin);
            EXPECT_EQ(si.shard_end, sh.end);
          } else {  // ceil-divided chunks
            const uint64_t dim = split == DC_SHARD_ROWS ? c.t.rows : c.t.cols;
            const uint64_t chunk = (dim + sh.count - 1) / sh.count;
            EXPECT_EQ(si.shard_begin, sh.index * chunk);
            EXPECT_EQ(si.shard_end, std::min(dim, (sh.index + 1) * chunk));
          }
          const uint64_t left_out = bytes_left_out(c.t, split, si.shard_begin, si.shard_end);
          EXPECT_EQ(wi.device_bytes - si.device_bytes, left_out)
              << "whole " << wi.device_bytes << " shard " << si.device_bytes;
          // A shard smaller than the layer holds fewer bytes wherever the format allows: always
          // for row shards; for column shards unless every V block (low-rank) or every sign word
          // (BitDelta, 32 columns a word) is still needed.
          const uint64_t n = si.shard_end - si.shard_begin, dim = split == DC_SHARD_ROWS ? c.t.rows : c.t.cols;
          const bool format_allows =
              n < dim && (split == DC_SHARD_ROWS || c.t.kind == DC_KIND_DENSE ||
                          (c.t.kind == DC_KIND_LOWRANK && kept_v_len(c.t, si.shard_begin, si.shard_end) < dim) ||
                          (c.t.kind == DC_KIND_BITDELTA && dc_row_words(n, 1) < dc_row_words(dim, 1)));
          if (format_allows) EXPECT_LT(si.device_bytes, wi.device_bytes);
        }
  }
}

// Column shards of a plain tensor keep only their V blocks; with a GPTQ act-order permutation
// every shard of 8 still needs every block (the inputs are scattered), but a permutation that stays
// within the 128-wide blocks keeps the shard's blocks only.
TEST(ShardInfo, ActOrderColumnShardsKeepOnlyBlocksHoldingTheirInputs) {
  const BandSpec mixed{"8+3+2", {{8, 2}, {3, 8}, {2, 14}}, {}};
  const ShardCase plain = lowrank_case(136, 512, mixed, ActOrder::None, 3);
  const ShardCase scattered = lowrank_case(136, 512, mixed, ActOrder::Gptq, 3);
  const ShardCase local = lowrank_case(136, 512, mixed, ActOrder::BlockLocal, 3);
  EXPECT_EQ(kept_v_len(plain.t, 128, 256), 128u);
  EXPECT_EQ(kept_v_len(plain.t, 100, 130), 256u);
  EXPECT_EQ(kept_v_len(scattered.t, 128, 256), 512u);
  EXPECT_EQ(kept_v_len(local.t, 128, 256), 128u);
  EXPECT_EQ(kept_v_len(local.t, 100, 130), 256u);
  ContextPtr ctx = cpu_context(1);
  ASSERT_TRUE(ctx);
  for (const ShardCase* c : {&plain, &scattered, &local}) {
    DeltaPtr whole = load_shard(ctx.get(), *c, shard_of(DC_SHARD_NONE, 0, 1));
    DeltaPtr quarter = load_shard(ctx.get(), *c, shard_of(DC_SHARD_COLS, 1, 4));
    ASSERT_TRUE(whole && quarter);
    const uint64_t wb = info_of(whole.get()).device_bytes, qb = info_of(quarter.get()).device_bytes;
    std::printf("  %-22s whole %llu B, column shard 1/4 %llu B\n", c->label.c_str(), (unsigned long long)wb,
                (unsigned long long)qb);
    EXPECT_EQ(wb - qb, bytes_left_out(c->t, DC_SHARD_COLS, 128, 256));
    if (c == &scattered) EXPECT_EQ(wb, qb) << "a scattered permutation needs every V block";
    else EXPECT_LT(qb, wb);
  }
}

TEST(ShardInfo, InvalidShardsAreRefusedWithSpecificErrors) {
  const ShardCase c = lowrank_case(136, 328, {"2bit", {{2, 8}}, {}}, ActOrder::None, 4);
  ContextPtr ctx = cpu_context(1);
  ContainerPtr cont = open_image(c.image);
  ASSERT_TRUE(ctx && cont);
  struct Bad {
    dc_shard shard;
    dc_status want;
    const char* says;
  };
  const Bad bad[] = {
      {{(dc_shard_split)7, 0, 1, 0, 0}, DC_ERR_INVALID_ARGUMENT, "split"},
      {{DC_SHARD_ROWS, 2, 2, 0, 0}, DC_ERR_INVALID_ARGUMENT, "index 2 of count 2"},
      {{DC_SHARD_ROWS, 0, 0, 0, 0}, DC_ERR_INVALID_ARGUMENT, "count 0"},
      {{DC_SHARD_ROWS, 0, 1, 0, 137}, DC_ERR_INVALID_ARGUMENT, "exceeds the 136 rows"},
      {{DC_SHARD_COLS, 0, 1, 300, 329}, DC_ERR_INVALID_ARGUMENT, "exceeds the 328 columns"},
      {{DC_SHARD_COLS, 0, 1, 40, 40}, DC_ERR_INVALID_ARGUMENT, "empty or reversed"},
      {{DC_SHARD_ROWS, 0, 1, 50, 10}, DC_ERR_INVALID_ARGUMENT, "empty or reversed"},
      {{DC_SHARD_ROWS, 136, 137, 0, 0}, DC_ERR_INVALID_ARGUMENT, "is empty"},  // chunk 1: shard 136 empty
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(describe(b.shard));
    dc_load_options lo;
    dc_load_options_init(&lo);
    lo.shard = b.shard;
    dc_delta* d = reinterpret_cast<dc_delta*>(1);
    EXPECT_EQ(dc_delta_load(&d, ctx.get(), cont.get(), "layer.w", &lo), b.want);
    EXPECT_EQ(d, nullptr);
    const std::string msg = dc_last_error_message();
    EXPECT_NE(msg.find(b.says), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer.w"), std::string::npos) << msg;
  }
  // dc_delta_load_all loads whole tensors only.
  dc_load_options lo;
  dc_load_options_init(&lo);
  lo.shard = shard_of(DC_SHARD_ROWS, 0, 2);
  dc_delta* all[1] = {nullptr};
  EXPECT_EQ(dc_delta_load_all(all, ctx.get(), cont.get(), &lo), DC_ERR_INVALID_ARGUMENT);
  // A shard's operands have the shard's shape: x narrower than the column shard is refused.
  lo.shard = shard_of(DC_SHARD_COLS, 0, 2);
  dc_delta* d = nullptr;
  ASSERT_EQ(dc_delta_load(&d, ctx.get(), cont.get(), "layer.w", &lo), DC_OK) << dc_last_error_message();
  DeltaPtr owned(d);
  std::vector<float> x(164), y(136);
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = 1;
  p.x = x.data();
  p.ldx = 163;
  p.y = y.data();
  EXPECT_EQ(dc_apply_delta_linear(d, &p), DC_ERR_SHAPE_MISMATCH);
  p.ldx = 164;
  EXPECT_EQ(dc_apply_delta_linear(d, &p), DC_OK) << dc_last_error_message();
}

// docs/TENSOR_PARALLEL.md's table: bytes per shard of Llama-7B-shaped layers at α = 1/16 (the
// default bands), for TP = 1, 2, 4, 8. Byte counts depend only on shape and bands, so the codes are
// zeros (the container stays small). "decompressed" is what every shard reads and inflates today:
// its tensor's whole U and V segments.
TEST(ShardInfo, BytesPerShardTableForLlamaLayers) {
  ContextPtr ctx = cpu_context(1);
  ASSERT_TRUE(ctx);
  std::printf("  | layer (rows x cols) | split | TP | device bytes per shard | vs TP=1 | decompressed per shard |\n");
  std::printf("  |---|---|---|---|---|---|\n");
  struct Layer {
    uint64_t rows, cols;
    bool act_order;
  };
  for (const Layer& l : {Layer{4096, 4096, false}, Layer{11008, 4096, false}, Layer{4096, 11008, false},
                         Layer{4096, 4096, true}}) {
    dc::PackedTensor t;
    t.name = "layer.w";
    t.rows = l.rows;
    t.cols = l.cols;
    t.kind = DC_KIND_LOWRANK;
    const auto bands = dc::bands_for_shape(l.rows, l.cols, dc::BandRecipe{});
    t.rank = bands.back().rank_end;
    t.sigma.assign(t.rank, 1.f);
    for (const auto& d : bands) {
      dc::PackedBand pb;
      pb.desc = d;
      pb.v_codes.assign(d.rank() * dc_row_words(l.cols, d.bits), 0u);
      pb.v_qparams.assign(d.rank() * dc_row_groups(l.cols, d.group_size), dc_qparam{0, 0});
      pb.u_codes.assign(l.rows * dc_row_words(d.rank(), d.bits), 0u);
      pb.u_qparams.assign(l.rows * dc_row_groups(d.rank(), d.group_size), dc_qparam{0, 0});
      t.bands.push_back(std::move(pb));
    }
    if (l.act_order) {  // a scattered permutation, as GPTQ's act-order produces
      t.in_perm.resize(l.cols);
      std::iota(t.in_perm.begin(), t.in_perm.end(), 0u);
      std::shuffle(t.in_perm.begin(), t.in_perm.end(), std::mt19937_64(1));
    }
    ShardCase c;  // no float64 reference: only bytes are looked at (and it would cost seconds)
    c.label = "table";
    c.image = image_of({t});
    c.t = std::move(t);
    ASSERT_EQ(c.t.bands.size(), 3u);  // 8-bit ×2, 3-bit ×32, 2-bit for the rest
    DeltaPtr whole = load_shard(ctx.get(), c, shard_of(DC_SHARD_NONE, 0, 1));
    ASSERT_TRUE(whole);
    const uint64_t wb = info_of(whole.get()).device_bytes;
    const std::string shape = std::to_string(l.rows) + " x " + std::to_string(l.cols) + " (rank " +
                              std::to_string(c.t.rank) + (l.act_order ? ", act-order" : "") + ")";
    for (dc_shard_split split : {DC_SHARD_ROWS, DC_SHARD_COLS})
      for (uint32_t tp : {1u, 2u, 4u, 8u}) {
        uint64_t most = 0;
        for (uint32_t s = 0; s < tp; ++s) {
          DeltaPtr d = load_shard(ctx.get(), c, shard_of(split, s, tp));
          ASSERT_TRUE(d);
          const dc_delta_info info = info_of(d.get());
          most = std::max(most, info.device_bytes);
          EXPECT_EQ(wb - info.device_bytes, bytes_left_out(c.t, split, info.shard_begin, info.shard_end));
        }
        std::printf("  | %s | %s | %u | %.3f MiB | %.3f | %.3f MiB |\n", shape.c_str(),
                    split == DC_SHARD_ROWS ? "rows (column-parallel)" : "cols (row-parallel)", tp,
                    most / 1048576.0, (double)most / wb, c.t.packed_bytes() / 1048576.0);
        if (tp > 1 && !(split == DC_SHARD_COLS && l.act_order)) EXPECT_LT(most, wb);
      }
  }
}

}  // namespace
}  // namespace dc_test
