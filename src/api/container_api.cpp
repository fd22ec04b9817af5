// dc_container_*: opening, listing, verifying containers and checking base fingerprints.
#include <cmath>
#include <cstring>

#include "api/api_internal.h"
#include "format/safetensors.h"

namespace {

dc_open_options default_open_options() {
  dc_open_options o{};
  o.struct_size = sizeof o;
  o.flags = 0;
  o.max_manifest_bytes = 256ull << 20;
  o.max_segment_bytes = 4ull << 30;
  return o;
}

dc::ReaderLimits limits_from(const dc_open_options& o) {
  dc::ReaderLimits l;
  l.max_manifest_bytes = o.max_manifest_bytes;
  l.max_segment_bytes = o.max_segment_bytes;
  return l;
}

const dc::TensorDesc& tensor_at(const dc_container* c, uint64_t index) {
  DC_CHECK(c, DC_ERR_INVALID_ARGUMENT, "container is NULL");
  const auto& ts = c->reader->tensors();
  DC_CHECK(index < ts.size(), DC_ERR_NOT_FOUND, "tensor index %llu out of range (container has %zu)",
           (unsigned long long)index, ts.size());
  return ts[index];
}

}  // namespace

extern "C" {

DC_API void dc_open_options_init(dc_open_options* opts) {
  if (opts) *opts = default_open_options();
}

DC_API dc_status dc_container_open(dc_container** out, const char* path, const dc_open_options* opts) {
  if (out) *out = nullptr;
  return dc::guard("dc_container_open", [&] {
    DC_CHECK(out, DC_ERR_INVALID_ARGUMENT, "out is NULL");
    DC_CHECK(path && *path, DC_ERR_INVALID_ARGUMENT, "path is NULL or empty");
    const dc_open_options o = dc::read_options(opts, default_open_options(), "dc_open_options");
    auto c = std::make_unique<dc_container>();
    c->reader = dc::ContainerReader::open_file(path, limits_from(o), !(o.flags & DC_OPEN_NO_MMAP));
    c->trusted = o.flags & DC_OPEN_TRUSTED;
    *out = c.release();
    return DC_OK;
  });
}

DC_API dc_status dc_container_open_memory(dc_container** out, const void* data, size_t size,
                                          const dc_open_options* opts) {
  if (out) *out = nullptr;
  return dc::guard("dc_container_open_memory", [&] {
    DC_CHECK(out, DC_ERR_INVALID_ARGUMENT, "out is NULL");
    DC_CHECK(data || size == 0, DC_ERR_INVALID_ARGUMENT, "data is NULL");
    const dc_open_options o = dc::read_options(opts, default_open_options(), "dc_open_options");
    auto c = std::make_unique<dc_container>();
    c->reader = dc::ContainerReader::open_memory(data, size, limits_from(o), o.flags & DC_OPEN_BORROW_MEMORY);
    c->trusted = o.flags & DC_OPEN_TRUSTED;
    *out = c.release();
    return DC_OK;
  });
}

DC_API void dc_container_close(dc_container* container) { delete container; }

DC_API dc_status dc_container_get_info(const dc_container* c, dc_container_info* info) {
  return dc::guard("dc_container_get_info", [&] {
    DC_CHECK(c, DC_ERR_INVALID_ARGUMENT, "container is NULL");
    DC_CHECK(info, DC_ERR_INVALID_ARGUMENT, "info is NULL");
    dc_container_info r{};
    r.struct_size = sizeof r;
    const auto& m = c->reader->meta();
    r.format_major = m.format_major;
    r.format_minor = m.format_minor;
    r.tensor_count = c->reader->tensors().size();
    r.file_bytes = c->reader->file_size();
    r.payload_bytes = c->reader->payload_size();
    r.model_name = m.model_name.c_str();
    r.base_model_name = m.base_model_name.c_str();
    r.tool_version = m.tool_version.c_str();
    r.recipe_json = m.recipe_json.c_str();
    const uint32_t n = info->struct_size ? std::min<uint32_t>(info->struct_size, sizeof r) : sizeof r;
    std::memcpy(info, &r, n);
    info->struct_size = n;
    return DC_OK;
  });
}

DC_API uint64_t dc_container_tensor_count(const dc_container* c) {
  return c ? c->reader->tensors().size() : 0;
}

DC_API dc_status dc_container_tensor_info(const dc_container* c, uint64_t index, dc_tensor_info* info) {
  return dc::guard("dc_container_tensor_info", [&] {
    const dc::TensorDesc& t = tensor_at(c, index);
    DC_CHECK(info, DC_ERR_INVALID_ARGUMENT, "info is NULL");
    dc_tensor_info r{};
    r.struct_size = sizeof r;
    r.name = t.name.c_str();
    r.rows = t.rows;
    r.cols = t.cols;
    r.kind = t.kind;
    r.dtype = t.dtype;
    r.rank = t.rank;
    r.band_count = (uint32_t)std::min<size_t>(t.bands.size(), DC_MAX_BANDS);
    for (uint32_t b = 0; b < r.band_count; ++b)
      r.bands[b] = {t.bands[b].bits, t.bands[b].rank_begin, t.bands[b].rank_end, t.bands[b].group_size};
    r.has_act_order = t.has_in_perm;
    r.stored_bytes = t.stored_bytes();
    r.packed_bytes = t.packed_bytes();
    r.fp16_bytes = t.rows * t.cols * 2;
    const uint32_t n = info->struct_size ? std::min<uint32_t>(info->struct_size, sizeof r) : sizeof r;
    std::memcpy(info, &r, n);
    info->struct_size = n;
    return DC_OK;
  });
}

DC_API dc_status dc_container_find_tensor(const dc_container* c, const char* name, uint64_t* index) {
  return dc::guard("dc_container_find_tensor", [&] {
    DC_CHECK(c, DC_ERR_INVALID_ARGUMENT, "container is NULL");
    DC_CHECK(name, DC_ERR_INVALID_ARGUMENT, "name is NULL");
    const int64_t i = c->reader->find(name);
    DC_CHECK(i >= 0, DC_ERR_NOT_FOUND, "no tensor named '%s' in the container", name);
    if (index) *index = (uint64_t)i;
    return DC_OK;
  });
}

DC_API dc_status dc_container_singular_values(const dc_container* c, uint64_t index, float* out,
                                              uint64_t capacity, uint64_t* count) {
  return dc::guard("dc_container_singular_values", [&] {
    const dc::TensorDesc& t = tensor_at(c, index);
    DC_CHECK(t.kind == DC_KIND_LOWRANK, DC_ERR_UNSUPPORTED, "tensor '%s' is not low-rank", t.name.c_str());
    if (count) *count = t.sigma.size();
    if (out) std::memcpy(out, t.sigma.data(), sizeof(float) * std::min<uint64_t>(capacity, t.sigma.size()));
    return DC_OK;
  });
}

DC_API dc_status dc_container_verify(const dc_container* c) {
  return dc::guard("dc_container_verify", [&] {
    DC_CHECK(c, DC_ERR_INVALID_ARGUMENT, "container is NULL");
    c->reader->verify_all();
    return DC_OK;
  });
}

DC_API dc_status dc_container_check_base_tensor(const dc_container* c, const char* name,
                                                const void* data, uint64_t bytes) {
  return dc::guard("dc_container_check_base_tensor", [&] {
    DC_CHECK(c && name, DC_ERR_INVALID_ARGUMENT, "container or name is NULL");
    DC_CHECK(data || bytes == 0, DC_ERR_INVALID_ARGUMENT, "data is NULL");
    for (const auto& f : c->reader->meta().base_fingerprint) {
      if (f.name != name) continue;
      const uint64_t h = dc::xxh3_64(data, bytes);
      DC_CHECK(h == f.xxh3, DC_ERR_BASE_MISMATCH,
               "base tensor '%s' differs from the one the delta was made against (XXH3 %016llx, expected %016llx)",
               name, (unsigned long long)h, (unsigned long long)f.xxh3);
      return DC_OK;
    }
    dc::fail(DC_ERR_NOT_FOUND, dc::format("tensor '%s' is not in the container's base fingerprint", name));
  });
}

DC_API dc_status dc_container_check_base_file(const dc_container* c, const char* path) {
  return dc::guard("dc_container_check_base_file", [&] {
    DC_CHECK(c && path, DC_ERR_INVALID_ARGUMENT, "container or path is NULL");
    const auto& fp = c->reader->meta().base_fingerprint;
    DC_CHECK(!fp.empty(), DC_ERR_NOT_FOUND, "the container has no base-model fingerprint");
    auto model = dc::SafetensorsModel::open(path);
    for (const auto& f : fp) {
      const dc::StTensor* t = model->find(f.name);
      DC_CHECK(t, DC_ERR_BASE_MISMATCH, "base tensor '%s' is missing from %s", f.name.c_str(), path);
      DC_CHECK(t->shape == f.shape, DC_ERR_BASE_MISMATCH, "base tensor '%s' has another shape in %s",
               f.name.c_str(), path);
      DC_CHECK(t->dtype_name == f.dtype, DC_ERR_BASE_MISMATCH, "base tensor '%s' is %s in %s, the delta expects %s",
               f.name.c_str(), t->dtype_name.c_str(), path, f.dtype.c_str());
      DC_CHECK(dc::xxh3_64(t->data, t->bytes) == f.xxh3, DC_ERR_BASE_MISMATCH,
               "base tensor '%s' in %s differs from the base the delta was made against", f.name.c_str(), path);
    }
    return DC_OK;
  });
}

}  // extern "C"
