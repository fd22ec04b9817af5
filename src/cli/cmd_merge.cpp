// deltacome merge: base checkpoint + .dcz → the fine-tuned checkpoint (one .safetensors file),
// computed on the CPU backend and written atomically. The base is checked against the
// container's fingerprint first, so a delta is never merged into the wrong model.
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cli/args.h"
#include "format/safetensors.h"

namespace dc::cli {

int cmd_merge(int argc, char** argv) {
  Args a(argc, argv, 2, {"quiet"},
         {"base", "delta", "output", "threads", "quiet"});
  const std::string base_path = a.require("base"), delta_path = a.require("delta"), out = a.require("output");
  ContainerPtr c = open_container(delta_path);
  check(dc_container_check_base_file(c.get(), base_path.c_str()));
  auto base = SafetensorsModel::open(base_path);

  ContextPtr ctx = cpu_context((int32_t)a.number("threads", 0));

  const uint64_t n = dc_container_tensor_count(c.get());
  for (uint64_t i = 0; i < n; ++i) {
    dc_tensor_info t{};
    t.struct_size = sizeof t;
    check(dc_container_tensor_info(c.get(), i, &t));
    DC_CHECK(base->find(t.name), DC_ERR_BASE_MISMATCH, "delta tensor '%s' is not in the base model", t.name);
  }

  std::vector<std::vector<uint8_t>> buffers;
  std::vector<StWriteTensor> tensors;
  buffers.reserve(base->tensors().size());
  size_t merged = 0;
  for (const StTensor& b : base->tensors()) {
    buffers.emplace_back(b.data, b.data + b.bytes);
    uint64_t index = 0;
    if (dc_container_find_tensor(c.get(), b.name.c_str(), &index) == DC_OK) {
      dc_dtype dt;
      switch (b.dtype) {
        case StDtype::F32: dt = DC_DTYPE_F32; break;
        case StDtype::F16: dt = DC_DTYPE_F16; break;
        case StDtype::BF16: dt = DC_DTYPE_BF16; break;
        default: fail(DC_ERR_UNSUPPORTED, "base tensor '" + b.name + "' is " + b.dtype_name + "; merge supports F32, F16, BF16");
      }
      dc_delta* d = nullptr;
      check(dc_delta_load_index(&d, ctx.get(), c.get(), index, nullptr));
      std::unique_ptr<dc_delta, decltype(&dc_delta_free)> delta(d, dc_delta_free);
      check(dc_merge_delta(delta.get(), buffers.back().data(), dt, 0, 1.0f, nullptr));
      ++merged;
      if (!a.has("quiet")) std::fprintf(stderr, "[%4zu/%llu] merged %s\n", merged, (unsigned long long)n, b.name.c_str());
    }
    tensors.push_back({b.name, b.dtype_name, b.shape, buffers.back().data(), b.bytes});
  }
  write_safetensors(out, tensors, base->metadata());
  std::printf("wrote %s: %zu tensors, %zu with their delta merged\n", out.c_str(), tensors.size(), merged);
  return 0;
}

}  // namespace dc::cli
