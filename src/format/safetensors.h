// safetensors reading and writing, with the format's own validation rules: header length capped
// (100 MB) and overflow-checked, UTF-8 JSON object, unique names, offsets contiguous from 0 with no
// holes and covering the whole buffer, byte size = shape product × dtype size (checked_mul).
// Sharded checkpoints are opened through their model.safetensors.index.json.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dc {

enum class StDtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, OTHER };

struct StTensor {
  std::string name;
  StDtype dtype = StDtype::OTHER;
  std::string dtype_name;       // as written in the header ("F16", ...)
  std::vector<uint64_t> shape;
  const uint8_t* data = nullptr;  // mapped bytes, valid while the SafetensorsFile lives
  uint64_t bytes = 0;
  uint64_t numel() const;
  // Element i converted to double (F64/F32/F16/BF16 and integer types).
  double get(uint64_t i) const;
};

uint32_t st_dtype_size(StDtype t);  // bytes per element (0 for OTHER)
StDtype st_dtype_from_name(const std::string& name);

// A checkpoint: one .safetensors file, or all shards listed by a model.safetensors.index.json
// (pass the index path, or a directory holding either file).
class SafetensorsModel {
 public:
  static std::unique_ptr<SafetensorsModel> open(const std::string& path);
  virtual ~SafetensorsModel() = default;
  virtual const std::vector<StTensor>& tensors() const = 0;  // sorted by name
  virtual const StTensor* find(const std::string& name) const = 0;
  virtual const std::map<std::string, std::string>& metadata() const = 0;  // __metadata__
};

// One tensor to write: raw little-endian bytes.
struct StWriteTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", ...
  std::vector<uint64_t> shape;
  const void* data = nullptr;
  uint64_t bytes = 0;
};

// Writes a single-file checkpoint atomically (temporary file, fsync, rename); tensors are laid
// out sorted by name, header padded to 8 bytes.
void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes `bytes` to `path` atomically: `path`.tmp-XXXXXX in the same directory, fsync, rename,
// fsync of the directory. Throws DC_ERR_IO naming the path on failure (the temporary is removed).
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();  // removes the temporary unless commit() succeeded
  void write(const void* data, uint64_t size);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace dc
