// safetensors reader and writer (FORMAT.md §8), following huggingface/safetensors' own rules:
// 8-byte little-endian header length N <= 100,000,000, a JSON object header (first byte '{',
// space padding allowed), unique keys, `__metadata__` string -> string, offsets contiguous from 0
// that cover the whole byte buffer (no holes: no polyglot files), end - begin = numel * dtype size.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_set>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/checked.h"
#include "common/half.h"
#include "format/safetensors.h"

namespace dc {

using json = nlohmann::json;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100000000;
constexpr size_t kMaxDims = 64;
constexpr int kMaxJsonDepth = 16;

struct DtypeInfo {
  const char* name;
  StDtype dtype;
  uint32_t size;  // 0: unknown (no byte-size check possible)
};

// The dtypes this library converts, then other safetensors dtypes whose size we know (kept as
// OTHER: their bytes are validated but get() refuses them).
constexpr DtypeInfo kDtypes[] = {
    {"F64", StDtype::F64, 8},     {"F32", StDtype::F32, 4},       {"F16", StDtype::F16, 2},
    {"BF16", StDtype::BF16, 2},   {"I64", StDtype::I64, 8},       {"I32", StDtype::I32, 4},
    {"I16", StDtype::I16, 2},     {"I8", StDtype::I8, 1},         {"U8", StDtype::U8, 1},
    {"BOOL", StDtype::BOOL, 1},   {"U16", StDtype::OTHER, 2},     {"U32", StDtype::OTHER, 4},
    {"U64", StDtype::OTHER, 8},   {"F8_E4M3", StDtype::OTHER, 1}, {"F8_E5M2", StDtype::OTHER, 1},
    {"F8_E8M0", StDtype::OTHER, 1}};

const DtypeInfo* dtype_info(const std::string& name) {
  for (const DtypeInfo& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

// A read-only mapping of a whole file.
class Mapping {
 public:
  explicit Mapping(const std::string& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    DC_CHECK(fd >= 0, DC_ERR_IO, "cannot open '%s': %s", path.c_str(), std::strerror(errno));
    struct stat st;
    const bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (ok) size_ = (uint64_t)st.st_size;
    if (ok && size_ > 0) map_ = ::mmap(nullptr, (size_t)size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    DC_CHECK(ok, DC_ERR_IO, "'%s' is not a readable regular file", path.c_str());
    DC_CHECK(map_ != MAP_FAILED, DC_ERR_IO, "cannot mmap '%s': %s", path.c_str(), std::strerror(err));
  }
  ~Mapping() {
    if (map_ && map_ != MAP_FAILED) ::munmap(map_, (size_t)size_);
  }
  const uint8_t* data() const { return static_cast<const uint8_t*>(map_); }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  uint64_t size_ = 0;
};

// Parses JSON text, rejecting duplicate keys at any level (nlohmann keeps the last one silently)
// and nesting deeper than kMaxJsonDepth.
json parse_json_unique(const char* begin, const char* end, const std::string& file) {
  std::vector<std::unordered_set<std::string>> keys;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    DC_CHECK(depth <= kMaxJsonDepth, DC_ERR_CORRUPT, "'%s': JSON header nested deeper than %d", file.c_str(),
             kMaxJsonDepth);
    switch (ev) {
      case json::parse_event_t::object_start: keys.emplace_back(); break;
      case json::parse_event_t::object_end: keys.pop_back(); break;
      case json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        DC_CHECK(keys.back().insert(k).second, DC_ERR_DUPLICATE, "'%s': duplicate JSON key '%s'", file.c_str(),
                 k.c_str());
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return json::parse(begin, end, cb);
  } catch (const json::exception& e) {
    fail(DC_ERR_CORRUPT, format("'%s': invalid JSON header: %s", file.c_str(), e.what()));
  }
}

uint64_t json_u64(const json& v, const std::string& file, const std::string& tensor, const char* field) {
  DC_CHECK(v.is_number_unsigned(), DC_ERR_CORRUPT, "'%s': tensor '%s': %s holds a value that is not a 64-bit unsigned integer",
           file.c_str(), tensor.c_str(), field);
  return v.get<uint64_t>();
}

struct Shard {
  std::unique_ptr<Mapping> map;
  std::vector<StTensor> tensors;
  std::map<std::string, std::string> metadata;
};

Shard parse_shard(const std::string& path) {
  Shard s;
  s.map.reset(new Mapping(path));
  const char* f = path.c_str();
  const uint64_t size = s.map->size();
  const uint8_t* base = s.map->data();
  DC_CHECK(size >= 8, DC_ERR_TRUNCATED, "'%s': %llu bytes, too short for the 8-byte header length", f,
           (unsigned long long)size);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= (uint64_t)base[i] << (8 * i);
  DC_CHECK(n <= kMaxHeaderBytes, DC_ERR_LIMIT, "'%s': header of %llu bytes exceeds %llu", f, (unsigned long long)n,
           (unsigned long long)kMaxHeaderBytes);
  const uint64_t data_start = checked_add(n, 8, "safetensors header end");
  DC_CHECK(data_start <= size, DC_ERR_TRUNCATED, "'%s': file of %llu bytes ends inside the %llu-byte header", f,
           (unsigned long long)size, (unsigned long long)n);
  const char* hb = reinterpret_cast<const char*>(base + 8);
  DC_CHECK(n >= 2 && hb[0] == '{', DC_ERR_BAD_MAGIC, "'%s': not a safetensors file (header does not start with '{')", f);
  const json header = parse_json_unique(hb, hb + n, path);
  DC_CHECK(header.is_object(), DC_ERR_CORRUPT, "'%s': the header is not a JSON object", f);
  const uint64_t buffer = size - data_start;

  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      DC_CHECK(v.is_object(), DC_ERR_CORRUPT, "'%s': __metadata__ is not an object", f);
      for (auto m = v.begin(); m != v.end(); ++m) {
        DC_CHECK(m.value().is_string(), DC_ERR_CORRUPT, "'%s': __metadata__ value of '%s' is not a string", f,
                 m.key().c_str());
        s.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const char* t = name.c_str();
    DC_CHECK(v.is_object(), DC_ERR_CORRUPT, "'%s': tensor '%s' is not a JSON object", f, t);
    const auto dt = v.find("dtype"), sh = v.find("shape"), off = v.find("data_offsets");
    DC_CHECK(dt != v.end() && dt->is_string(), DC_ERR_CORRUPT, "'%s': tensor '%s' lacks a string dtype", f, t);
    DC_CHECK(sh != v.end() && sh->is_array(), DC_ERR_CORRUPT, "'%s': tensor '%s' lacks a shape array", f, t);
    DC_CHECK(off != v.end() && off->is_array() && off->size() == 2, DC_ERR_CORRUPT,
             "'%s': tensor '%s' lacks data_offsets [begin, end]", f, t);
    DC_CHECK(sh->size() <= kMaxDims, DC_ERR_LIMIT, "'%s': tensor '%s' has %zu dimensions (limit %zu)", f, t,
             sh->size(), kMaxDims);
    StTensor st;
    st.name = name;
    st.dtype_name = dt->get<std::string>();
    const DtypeInfo* info = dtype_info(st.dtype_name);
    st.dtype = info ? info->dtype : StDtype::OTHER;
    uint64_t numel = 1;
    const std::string what = format("'%s': tensor '%s' shape x dtype size", f, t);
    for (const json& d : *sh) {
      st.shape.push_back(json_u64(d, path, name, "shape"));
      numel = checked_mul(numel, st.shape.back(), what.c_str());
    }
    const uint64_t b = json_u64((*off)[0], path, name, "data_offsets"), e = json_u64((*off)[1], path, name, "data_offsets");
    DC_CHECK(b <= e, DC_ERR_CORRUPT, "'%s': tensor '%s': data_offsets [%llu, %llu) end before they begin", f, t,
             (unsigned long long)b, (unsigned long long)e);
    if (info) {
      const uint64_t bytes = checked_mul(numel, info->size, what.c_str());
      DC_CHECK(e - b == bytes, DC_ERR_CORRUPT, "'%s': tensor '%s' spans %llu bytes, its shape and %s need %llu", f, t,
               (unsigned long long)(e - b), st.dtype_name.c_str(), (unsigned long long)bytes);
    }
    st.bytes = e - b;
    ranges.push_back({b, e, s.tensors.size()});
    s.tensors.push_back(std::move(st));
  }

  // Contiguous from 0, covering the byte buffer exactly.
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t at = 0;
  for (const Range& r : ranges) {
    const char* t = s.tensors[r.index].name.c_str();
    DC_CHECK(r.begin <= at, DC_ERR_CORRUPT, "'%s': hole of %llu bytes before tensor '%s'", f,
             (unsigned long long)(r.begin - at), t);
    DC_CHECK(r.begin == at, DC_ERR_CORRUPT, "'%s': tensor '%s' at [%llu, %llu) overlaps the previous tensor", f, t,
             (unsigned long long)r.begin, (unsigned long long)r.end);
    DC_CHECK(r.end <= buffer, DC_ERR_TRUNCATED, "'%s': tensor '%s' ends at %llu, the file holds %llu data bytes", f, t,
             (unsigned long long)r.end, (unsigned long long)buffer);
    s.tensors[r.index].data = base + data_start + r.begin;
    at = r.end;
  }
  DC_CHECK(at == buffer, DC_ERR_CORRUPT, "'%s': %llu bytes after the last tensor are not indexed by the header", f,
           (unsigned long long)(buffer - at));
  return s;
}

std::string join_path(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class Model final : public SafetensorsModel {
 public:
  void add_shard(Shard&& s, const std::string& path) {
    for (StTensor& t : s.tensors) tensors_.push_back(std::move(t));
    for (auto& kv : s.metadata) metadata_.emplace(kv.first, kv.second);  // first shard wins
    maps_.push_back(std::move(s.map));
    (void)path;
  }
  void finalize() {
    std::sort(tensors_.begin(), tensors_.end(), [](const StTensor& a, const StTensor& b) { return a.name < b.name; });
    for (size_t i = 1; i < tensors_.size(); ++i)
      DC_CHECK(tensors_[i].name != tensors_[i - 1].name, DC_ERR_DUPLICATE, "tensor '%s' appears in two shards",
               tensors_[i].name.c_str());
  }
  const std::vector<StTensor>& tensors() const override { return tensors_; }
  const StTensor* find(const std::string& name) const override {
    auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                               [](const StTensor& t, const std::string& n) { return t.name < n; });
    return it != tensors_.end() && it->name == name ? &*it : nullptr;
  }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }

 private:
  std::vector<std::unique_ptr<Mapping>> maps_;
  std::vector<StTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

std::unique_ptr<SafetensorsModel> open_index(const std::string& index_path) {
  Mapping idx(index_path);
  const char* f = index_path.c_str();
  DC_CHECK(idx.size() <= kMaxHeaderBytes, DC_ERR_LIMIT, "'%s': index of %llu bytes exceeds %llu", f,
           (unsigned long long)idx.size(), (unsigned long long)kMaxHeaderBytes);
  const char* text = reinterpret_cast<const char*>(idx.data());
  const json j = parse_json_unique(text, text + idx.size(), index_path);
  DC_CHECK(j.is_object(), DC_ERR_CORRUPT, "'%s': the index is not a JSON object", f);
  const auto wm = j.find("weight_map");
  DC_CHECK(wm != j.end() && wm->is_object(), DC_ERR_CORRUPT, "'%s': no \"weight_map\" object", f);

  std::map<std::string, std::vector<std::string>> by_file;  // shard -> tensors the index places there
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    DC_CHECK(it.value().is_string(), DC_ERR_CORRUPT, "'%s': weight_map entry '%s' is not a file name", f,
             it.key().c_str());
    const std::string file = it.value().get<std::string>();
    DC_CHECK(!file.empty() && file.find('/') == std::string::npos && file.find('\\') == std::string::npos &&
                 file.find("..") == std::string::npos && file.find('\0') == std::string::npos,
             DC_ERR_CORRUPT, "'%s': shard name '%s' for tensor '%s' is not a plain file name", f, file.c_str(),
             it.key().c_str());
    by_file[file].push_back(it.key());
  }
  DC_CHECK(!by_file.empty(), DC_ERR_CORRUPT, "'%s': the weight_map is empty", f);

  std::unique_ptr<Model> model(new Model);
  const std::string dir = dir_of(index_path);
  for (auto& kv : by_file) {
    const std::string path = join_path(dir, kv.first);
    Shard s = parse_shard(path);
    std::unordered_set<std::string> names;
    for (const StTensor& t : s.tensors) names.insert(t.name);
    for (const std::string& t : kv.second)
      DC_CHECK(names.count(t), DC_ERR_CORRUPT, "'%s': the index places tensor '%s' in '%s', which does not hold it", f,
               t.c_str(), path.c_str());
    model->add_shard(std::move(s), path);
  }
  model->finalize();
  return model;
}

}  // namespace

uint32_t st_dtype_size(StDtype t) {
  for (const DtypeInfo& d : kDtypes)
    if (d.dtype == t && t != StDtype::OTHER) return d.size;
  return 0;
}

StDtype st_dtype_from_name(const std::string& name) {
  const DtypeInfo* d = dtype_info(name);
  return d ? d->dtype : StDtype::OTHER;
}

uint64_t StTensor::numel() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // overflow excluded when the header was parsed
  return n;
}

double StTensor::get(uint64_t i) const {
  DC_CHECK(i < numel(), DC_ERR_INVALID_ARGUMENT, "tensor '%s': element %llu out of range (%llu elements)", name.c_str(),
           (unsigned long long)i, (unsigned long long)numel());
  const uint32_t size = st_dtype_size(dtype);
  DC_CHECK(size != 0, DC_ERR_UNSUPPORTED, "tensor '%s': dtype %s cannot be converted", name.c_str(), dtype_name.c_str());
  const uint8_t* p = data + i * size;
  auto load = [p](auto v) {
    std::memcpy(&v, p, sizeof v);  // data is not necessarily aligned
    return v;
  };
  switch (dtype) {
    case StDtype::F64: return load(double());
    case StDtype::F32: return load(float());
    case StDtype::F16: return half_to_float(load(uint16_t()));
    case StDtype::BF16: return bf16_to_float(load(uint16_t()));
    case StDtype::I64: return (double)load(int64_t());
    case StDtype::I32: return load(int32_t());
    case StDtype::I16: return load(int16_t());
    case StDtype::I8: return load(int8_t());
    case StDtype::U8: return load(uint8_t());
    case StDtype::BOOL: return load(uint8_t()) != 0 ? 1.0 : 0.0;
    case StDtype::OTHER: break;
  }
  fail(DC_ERR_UNSUPPORTED, format("tensor '%s': dtype %s cannot be converted", name.c_str(), dtype_name.c_str()));
}

std::unique_ptr<SafetensorsModel> SafetensorsModel::open(const std::string& path) {
  struct stat st;
  DC_CHECK(::stat(path.c_str(), &st) == 0, DC_ERR_IO, "cannot open '%s': %s", path.c_str(), std::strerror(errno));
  if (S_ISDIR(st.st_mode)) {
    const std::string index = join_path(path, "model.safetensors.index.json");
    if (::stat(index.c_str(), &st) == 0) return open_index(index);
    const std::string single = join_path(path, "model.safetensors");
    DC_CHECK(::stat(single.c_str(), &st) == 0, DC_ERR_NOT_FOUND,
             "'%s' holds neither model.safetensors.index.json nor model.safetensors", path.c_str());
    return open(single);
  }
  if (ends_with(path, ".json")) return open_index(path);
  std::unique_ptr<Model> model(new Model);
  model->add_shard(parse_shard(path), path);
  model->finalize();
  return model;
}

void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const StWriteTensor*> sorted;
  for (const StWriteTensor& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const StWriteTensor* a, const StWriteTensor* b) { return a->name < b->name; });

  json header = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& kv : metadata) m[kv.first] = kv.second;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const StWriteTensor& t = *sorted[i];
    const char* n = t.name.c_str();
    DC_CHECK(!t.name.empty() && t.name != "__metadata__", DC_ERR_INVALID_ARGUMENT, "'%s': invalid tensor name '%s'",
             path.c_str(), n);
    DC_CHECK(i == 0 || sorted[i - 1]->name != t.name, DC_ERR_DUPLICATE, "'%s': tensor '%s' given twice", path.c_str(), n);
    const StDtype dt = st_dtype_from_name(t.dtype);
    DC_CHECK(dt != StDtype::OTHER, DC_ERR_INVALID_ARGUMENT, "'%s': tensor '%s' has unsupported dtype '%s'", path.c_str(),
             n, t.dtype.c_str());
    uint64_t numel = 1;
    for (uint64_t d : t.shape) numel = checked_mul(numel, d, n);
    const uint64_t bytes = checked_mul(numel, st_dtype_size(dt), n);
    DC_CHECK(bytes == t.bytes && (bytes == 0 || t.data != nullptr), DC_ERR_INVALID_ARGUMENT,
             "'%s': tensor '%s' has %llu bytes, its shape and dtype need %llu", path.c_str(), n,
             (unsigned long long)t.bytes, (unsigned long long)bytes);
    const uint64_t end = checked_add(offset, bytes, n);
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    fail(DC_ERR_INVALID_ARGUMENT, format("'%s': cannot encode the header: %s", path.c_str(), e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  DC_CHECK(text.size() <= kMaxHeaderBytes, DC_ERR_LIMIT, "'%s': header of %zu bytes exceeds %llu", path.c_str(),
           text.size(), (unsigned long long)kMaxHeaderBytes);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = (uint8_t)((uint64_t)text.size() >> (8 * i));
  AtomicFile out(path);
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (const StWriteTensor* t : sorted) out.write(t->data, t->bytes);
  out.commit();
}

}  // namespace dc
