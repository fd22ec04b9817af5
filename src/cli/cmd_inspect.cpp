// deltacome inspect: a table of tensors (or JSON), and a singular-value spectrum plot in text.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"

namespace dc::cli {
namespace {

const char* kind_name(dc_tensor_kind k) {
  return k == DC_KIND_LOWRANK ? "low-rank" : k == DC_KIND_BITDELTA ? "bitdelta" : "dense";
}
const char* dtype_name(dc_dtype t) { return t == DC_DTYPE_F32 ? "f32" : t == DC_DTYPE_F16 ? "f16" : "bf16"; }

std::string bands_of(const dc_tensor_info& t) {
  std::string s;
  for (uint32_t b = 0; b < t.band_count; ++b) {
    if (!s.empty()) s += " ";
    s += std::to_string(t.bands[b].bits) + "b×" + std::to_string(t.bands[b].rank_end - t.bands[b].rank_begin);
  }
  if (t.kind == DC_KIND_BITDELTA) s = "1b×all";
  return s.empty() ? "-" : s;
}

// Log-scale bar chart of σ, bucketed, with each band's width marked.
void print_spectrum(const dc_container* c, uint64_t index, const dc_tensor_info& t) {
  uint64_t n = 0;
  check(dc_container_singular_values(c, index, nullptr, 0, &n));
  std::vector<float> s(n);
  check(dc_container_singular_values(c, index, s.data(), n, &n));
  std::printf("singular values of %s (rank %llu), log scale:\n", t.name, (unsigned long long)n);
  if (n == 0) return;
  const int rows = (int)std::min<uint64_t>(n, 24);
  const double top = std::log10(std::max(s[0], 1e-30f)), bottom = std::log10(std::max(s[n - 1], 1e-30f));
  for (int r = 0; r < rows; ++r) {
    const uint64_t i = (uint64_t)((double)r / rows * n);
    uint32_t bits = 0;
    for (uint32_t b = 0; b < t.band_count; ++b)
      if (i >= t.bands[b].rank_begin && i < t.bands[b].rank_end) bits = t.bands[b].bits;
    const double v = std::log10(std::max(s[i], 1e-30f));
    const int width = top > bottom ? (int)(4 + 50 * (v - bottom) / (top - bottom)) : 50;
    std::printf("  σ[%5llu] %10.4g %2ub |%s\n", (unsigned long long)i, s[i], bits, std::string(width, '#').c_str());
  }
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  Args a(argc, argv, 2, {"json"},
         {"json", "spectrum"});
  DC_CHECK(a.positional().size() == 1, DC_ERR_INVALID_ARGUMENT, "usage: deltacome inspect FILE.dcz [--json]");
  ContainerPtr c = open_container(a.positional()[0]);
  dc_container_info ci{};
  ci.struct_size = sizeof ci;
  check(dc_container_get_info(c.get(), &ci));
  const uint64_t n = dc_container_tensor_count(c.get());

  if (a.has("spectrum")) {
    uint64_t index = 0;
    check(dc_container_find_tensor(c.get(), a.get("spectrum").c_str(), &index));
    dc_tensor_info t{};
    t.struct_size = sizeof t;
    check(dc_container_tensor_info(c.get(), index, &t));
    print_spectrum(c.get(), index, t);
    return 0;
  }

  uint64_t stored = 0, fp16 = 0;
  nlohmann::json j;
  if (a.has("json")) {
    j["format"] = std::to_string(ci.format_major) + "." + std::to_string(ci.format_minor);
    j["tool"] = ci.tool_version;
    j["model"] = ci.model_name;
    j["base_model"] = ci.base_model_name;
    j["recipe"] = nlohmann::json::parse(ci.recipe_json, nullptr, false);
    j["file_bytes"] = ci.file_bytes;
    j["tensors"] = nlohmann::json::array();
  } else {
    std::printf("%s: deltacome container v%u.%u by %s; model '%s' (base '%s')\nrecipe %s\n\n",
                a.positional()[0].c_str(), ci.format_major, ci.format_minor, ci.tool_version, ci.model_name,
                ci.base_model_name, ci.recipe_json);
    std::printf("%-52s %13s %-9s %-28s %11s %8s\n", "tensor", "shape", "kind", "bands", "bytes", "ratio");
  }
  for (uint64_t i = 0; i < n; ++i) {
    dc_tensor_info t{};
    t.struct_size = sizeof t;
    check(dc_container_tensor_info(c.get(), i, &t));
    stored += t.stored_bytes;
    fp16 += t.fp16_bytes;
    const double ratio = t.stored_bytes ? (double)t.fp16_bytes / (double)t.stored_bytes : 0;
    if (a.has("json")) {
      nlohmann::json bands = nlohmann::json::array();
      for (uint32_t b = 0; b < t.band_count; ++b)
        bands.push_back({{"bits", t.bands[b].bits}, {"rank_begin", t.bands[b].rank_begin},
                         {"rank_end", t.bands[b].rank_end}, {"group_size", t.bands[b].group_size}});
      j["tensors"].push_back({{"name", t.name}, {"rows", t.rows}, {"cols", t.cols}, {"kind", kind_name(t.kind)},
                              {"dtype", dtype_name(t.dtype)}, {"rank", t.rank}, {"bands", bands},
                              {"act_order", (bool)t.has_act_order}, {"stored_bytes", t.stored_bytes},
                              {"packed_bytes", t.packed_bytes}, {"fp16_bytes", t.fp16_bytes}, {"ratio", ratio}});
    } else {
      char shape[32];
      std::snprintf(shape, sizeof shape, "%llux%llu", (unsigned long long)t.rows, (unsigned long long)t.cols);
      std::printf("%-52s %13s %-9s %-28s %11s %7.1fx\n", t.name, shape, kind_name(t.kind), bands_of(t).c_str(),
                  human_bytes((double)t.stored_bytes).c_str(), ratio);
    }
  }
  const double total_ratio = ci.file_bytes ? (double)fp16 / (double)ci.file_bytes : 0;
  if (a.has("json")) {
    j["stored_bytes"] = stored;
    j["fp16_bytes"] = fp16;
    j["ratio"] = total_ratio;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("\n%llu tensors; payload %s, file %s; the same deltas in fp16: %s → %.1fx smaller\n",
                (unsigned long long)n, human_bytes((double)stored).c_str(), human_bytes((double)ci.file_bytes).c_str(),
                human_bytes((double)fp16).c_str(), total_ratio);
  }
  return 0;
}

}  // namespace dc::cli
