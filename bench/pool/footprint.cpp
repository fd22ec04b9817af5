// Per-variant footprint of a Llama-2-7B-shaped model under Delta-CoMe (issue 8, item 3).
//
// Builds one synthetic delta per distinct layer shape — bands from dc::bands_for_shape at α = 1/16
// (8-bit ×2, 3-bit ×32, 2-bit for the rest), random codes and quantization parameters, no SVD — so
// every size is exact: the packed bytes a loaded delta holds (PackedTensor::packed_bytes), the
// bytes the CPU backend reports (dc_delta_info.device_bytes, via the public API on a real
// container), and the .dcz bytes (zstd; random codes barely compress, so this is an upper bound).
// Then sums them per variant: 32 layers × {q, k, v, o, gate, up, down}, plus the non-linear deltas
// (embeddings, lm_head, 65 RMSNorm vectors) stored dense fp16, or, alternatively, embeddings and
// lm_head as low-rank at the same α.
//
// Usage: dc_bench_pool_footprint [--alpha A] [--gpu-gb G] [--markdown]
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "deltacome/deltacome.h"
#include "format/container.h"
#include "math/budget.h"
#include "synthetic_delta.h"

namespace {

struct Sizes {
  uint64_t packed = 0, device = 0, stored = 0, fp16 = 0;
  uint32_t rank = 0;
};

// Exact sizes of one tensor: packed, CPU-backend device bytes (real container + dc_delta_load), stored.
Sizes measure(const dc::PackedTensor& t, dc_context* ctx) {
  Sizes s;
  s.packed = t.packed_bytes();
  s.fp16 = t.rows * t.cols * 2;
  s.rank = t.rank;
  dc::ContainerWriter w(dc::ContainerMeta{});
  w.add_tensor(t);
  const std::vector<uint8_t> img = w.finish_to_memory();
  dc_container* c = nullptr;
  dc_delta* d = nullptr;
  dc_open_options oo;
  dc_open_options_init(&oo);
  oo.flags = DC_OPEN_BORROW_MEMORY;
  if (dc_container_open_memory(&c, img.data(), img.size(), &oo) != DC_OK ||
      dc_delta_load(&d, ctx, c, t.name.c_str(), nullptr) != DC_OK) {
    std::fprintf(stderr, "footprint: %s\n", dc_last_error_message());
    std::exit(1);
  }
  dc_tensor_info ti{};
  ti.struct_size = sizeof ti;
  dc_container_tensor_info(c, 0, &ti);
  s.stored = ti.stored_bytes;
  dc_delta_info di{};
  di.struct_size = sizeof di;
  dc_delta_get_info(d, &di);
  s.device = di.device_bytes;
  dc_delta_free(d);
  dc_container_close(c);
  return s;
}

double gb(uint64_t b) { return (double)b / 1e9; }

}  // namespace

int main(int argc, char** argv) {
  double alpha = 1.0 / 16, gpu_gb = 80.0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--alpha") && i + 1 < argc) alpha = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--gpu-gb") && i + 1 < argc) gpu_gb = std::atof(argv[++i]);
  }
  dc_context_options co;
  dc_context_options_init(&co);
  co.backend = DC_BACKEND_CPU;
  co.num_threads = 1;
  dc_context* ctx = nullptr;
  if (dc_context_create(&ctx, &co) != DC_OK) return 1;

  dc::BandRecipe recipe;
  recipe.alpha = alpha;
  const uint64_t H = 4096, I = 11008, V = 32000, L = 32;
  struct Linear {
    const char* name;
    uint64_t rows, cols, per_layer;
  } linears[] = {{"q/k/v/o_proj", H, H, 4}, {"gate/up_proj", I, H, 2}, {"down_proj", H, I, 1}};

  std::printf("# Llama-2-7B-shaped variant, Delta-CoMe alpha = %.6g (8-bit x2, 3-bit x32, 2-bit rest, group %u)\n\n",
              alpha, recipe.group_size);
  std::printf("| tensor (out x in) | count | bands (bits:rank) | rank | packed bytes | device bytes (CPU) | .dcz bytes | fp16 bytes | ratio |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  uint64_t lin_packed = 0, lin_device = 0, lin_stored = 0, lin_fp16 = 0;
  uint64_t seed = 1;
  auto row = [&](const char* name, uint64_t rows, uint64_t cols, uint64_t count, const std::vector<dc::BandDesc>& bands,
                 const Sizes& s) {
    std::string bs;
    for (const auto& b : bands) bs += (bs.empty() ? "" : " ") + std::to_string(b.bits) + ":" + std::to_string(b.rank());
    if (bands.empty()) bs = "dense fp16";
    std::printf("| %s (%" PRIu64 "x%" PRIu64 ") | %" PRIu64 " | %s | %u | %" PRIu64 " | %" PRIu64 " | %" PRIu64
                " | %" PRIu64 " | %.2fx |\n",
                name, rows, cols, count, bs.c_str(), s.rank, s.packed, s.device, s.stored, s.fp16,
                (double)s.fp16 / (double)s.device);
  };
  for (const Linear& l : linears) {
    const auto bands = dc::bands_for_shape(l.rows, l.cols, recipe);
    const Sizes s = measure(bench_pool::random_lowrank(l.name, l.rows, l.cols, bands, seed++), ctx);
    const uint64_t n = L * l.per_layer;
    row(l.name, l.rows, l.cols, n, bands, s);
    lin_packed += n * s.packed;
    lin_device += n * s.device;
    lin_stored += n * s.stored;
    lin_fp16 += n * s.fp16;
  }
  // Non-linear deltas.
  const auto emb_bands = dc::bands_for_shape(V, H, recipe);
  const Sizes emb_lr = measure(bench_pool::random_lowrank("embed (low-rank)", V, H, emb_bands, seed++), ctx);
  row("embed_tokens / lm_head, low-rank", V, H, 2, emb_bands, emb_lr);
  const Sizes emb_dense = measure(bench_pool::random_dense("embed (dense)", V, H, seed++), ctx);
  row("embed_tokens / lm_head, dense", V, H, 2, {}, emb_dense);
  const Sizes norm = measure(bench_pool::random_dense("norm", H, 1, seed++), ctx);
  row("RMSNorm weights", H, 1, 2 * L + 1, {}, norm);
  const uint64_t norms = (2 * L + 1) * norm.device;

  const uint64_t base_linear_fp16 = lin_fp16;
  const uint64_t base_fp16 = lin_fp16 + 2 * emb_dense.fp16 + (2 * L + 1) * H * 2;
  std::printf("\n| per variant | device bytes | GB |\n|---|---|---|\n");
  std::printf("| 224 linear deltas | %" PRIu64 " | %.3f |\n", lin_device, gb(lin_device));
  const uint64_t with_dense = lin_device + 2 * emb_dense.device + norms;
  const uint64_t with_lr = lin_device + 2 * emb_lr.device + norms;
  std::printf("| + embeddings & lm_head dense fp16 + norms | %" PRIu64 " | %.3f |\n", with_dense, gb(with_dense));
  std::printf("| + embeddings & lm_head low-rank + norms | %" PRIu64 " | %.3f |\n", with_lr, gb(with_lr));
  std::printf("| uncompressed fp16 variant (all weights) | %" PRIu64 " | %.3f |\n", base_fp16, gb(base_fp16));
  std::printf("\n(.dcz of the linear deltas: %.3f GB; fp16 linear weights: %.3f GB; linear ratio %.2fx)\n",
              gb(lin_stored), gb(base_linear_fp16), (double)base_linear_fp16 / (double)lin_device);

  // Capacity: the nominal "80 GB" (80e9 bytes, the method's table) and what an H100 80GB HBM3
  // actually has (81559 MiB as nvidia-smi reports it), both before the CUDA context and activations.
  const double caps[2] = {gpu_gb * 1e9, 81559.0 * 1048576.0};
  auto fits = [&](double cap, uint64_t per) {
    return per && cap > (double)base_fp16 ? (uint64_t)((cap - (double)base_fp16) / (double)per) : 0;
  };
  std::printf("\nVariants that fit next to the fp16 base (%.3f GB), weights only (no KV cache, activations,\n"
              "CUDA context or workspace):\n", gb(base_fp16));
  std::printf("| storage of a variant | GB per variant | in %.0f GB (%.0fe9 B) | in 81559 MiB (H100 80GB HBM3) |\n"
              "|---|---|---|---|\n", gpu_gb, gpu_gb);
  struct Option {
    const char* name;
    uint64_t bytes;
  } options[] = {{"uncompressed fp16 (a full copy)", base_fp16},
                 {"Delta-CoMe linear + dense fp16 embeddings/lm_head + norms", with_dense},
                 {"Delta-CoMe linear + low-rank embeddings/lm_head + norms", with_lr},
                 {"Delta-CoMe linear only (embeddings/lm_head shared with the base)", lin_device + norms}};
  for (const Option& o : options)
    std::printf("| %s | %.3f | %" PRIu64 " | %" PRIu64 " |\n", o.name, gb(o.bytes), fits(caps[0], o.bytes),
                fits(caps[1], o.bytes));
  dc_context_destroy(ctx);
  return 0;
}
