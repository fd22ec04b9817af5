// deltacome compress: base + fine-tuned checkpoints → .dcz, with per-tensor progress on stderr.
#include <cstdio>
#include <string>

#include "cli/args.h"
#include "compress/compressor.h"

namespace dc::cli {

std::string bands_text(const std::vector<BandDesc>& bands) {
  std::string s;
  for (const auto& b : bands) {
    if (!s.empty()) s += " ";
    s += std::to_string(b.bits) + "b×" + std::to_string(b.rank());
  }
  return s.empty() ? "-" : s;
}

int cmd_compress(int argc, char** argv) {
  Args a(argc, argv, 2, {"act-order", "lowrank-embeddings", "quiet"},
         {"base", "finetuned", "output", "scheme", "alpha", "bits", "group-size", "quantizer", "allocate", "calib",
           "act-order", "lowrank-embeddings", "name", "base-name", "threads", "zstd-level", "quiet"});
  CompressConfig c;
  c.base_path = a.require("base");
  c.finetuned_path = a.require("finetuned");
  c.output_path = a.require("output");
  c.scheme = parse_scheme(a.get("scheme", "deltacome"));
  c.recipe.alpha = a.number("alpha", 1.0 / 16);
  c.single_bits = (uint32_t)a.number("bits", 2);
  DC_CHECK(c.single_bits == 2 || c.single_bits == 3 || c.single_bits == 4 || c.single_bits == 8 ||
               c.single_bits == 16,
           DC_ERR_INVALID_ARGUMENT, "--bits must be 2, 3, 4, 8 or 16");
  c.recipe.group_size = (uint32_t)a.number("group-size", 128);
  DC_CHECK(c.recipe.group_size >= 32 && c.recipe.group_size % 32 == 0 && c.recipe.group_size <= DC_MAX_GROUP,
           DC_ERR_INVALID_ARGUMENT, "--group-size must be a multiple of 32 in [32, %u]", DC_MAX_GROUP);
  const std::string q = a.get("quantizer", "gptq");
  DC_CHECK(q == "gptq" || q == "rtn", DC_ERR_INVALID_ARGUMENT, "--quantizer must be gptq or rtn");
  c.quantizer = q == "gptq" ? Quantizer::Gptq : Quantizer::Rtn;
  const std::string alloc = a.get("allocate", "fixed");
  DC_CHECK(alloc == "fixed" || alloc == "optimal" || alloc == "global", DC_ERR_INVALID_ARGUMENT,
           "--allocate must be fixed, optimal (per layer) or global (one budget across layers)");
  c.allocation = alloc == "fixed" ? Allocation::Fixed : alloc == "optimal" ? Allocation::Layer : Allocation::Global;
  c.calib_path = a.get("calib");
  c.act_order = a.has("act-order");
  c.lowrank_embeddings = a.has("lowrank-embeddings");
  c.model_name = a.get("name");
  c.base_model_name = a.get("base-name");
  c.threads = (unsigned)a.number("threads", 0);
  c.zstd_level = (int)a.number("zstd-level", 3);
  c.quiet = a.has("quiet");

  auto progress = [&](const TensorReport& r, size_t done, size_t total, double elapsed) {
    if (c.quiet) return;
    const double eta = done ? elapsed / done * (total - done) : 0;
    std::fprintf(stderr, "[%4zu/%zu] %-48s %6llux%-6llu %-9s %-22s err %.4f  %5.1fs  ETA %.0fs\n", done, total,
                 r.name.c_str(), (unsigned long long)r.rows, (unsigned long long)r.cols,
                 r.kind == DC_KIND_LOWRANK ? "low-rank" : r.kind == DC_KIND_BITDELTA ? "bitdelta" : "dense",
                 bands_text(r.bands).c_str(), r.rel_error, r.seconds, eta);
  };
  const CompressSummary s = compress_model(c, progress);
  std::printf("wrote %s: %zu tensors (%llu unchanged, left out), %s; fp16 delta %s → ratio %.1fx, in %.1f s\n",
              c.output_path.c_str(), s.tensors.size(), (unsigned long long)s.unchanged,
              human_bytes((double)s.file_bytes).c_str(), human_bytes((double)s.fp16_delta_bytes).c_str(),
              s.file_bytes ? (double)s.fp16_delta_bytes / (double)s.file_bytes : 0.0, s.seconds);
  return 0;
}

}  // namespace dc::cli
