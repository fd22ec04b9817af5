// Reading and writing .dcz containers (docs/FORMAT.md). The reader validates everything before it
// allocates: preamble, manifest checksum, FlatBuffers verification with bounded depth/tables, every
// size with overflow-checked arithmetic against the file size, segments sorted/aligned/hole-free,
// names unique, bands/shape consistent. A ContainerReader is immutable after open: all const
// methods are safe to call from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/packed_tensor.h"

namespace dc {

// The preamble at byte 0 of every .dcz file (little-endian), FORMAT.md §1.
constexpr uint8_t kDczMagic[8] = {0x89, 'D', 'C', 'Z', '\r', '\n', 0x1a, '\n'};
constexpr uint32_t kDczPreambleSize = 80;
constexpr uint64_t kDefaultSegmentAlignment = 4096;

enum class SegmentRole : uint8_t { VBand = 0, UBand = 1, InPerm = 2, Signs = 3, DenseData = 4 };

struct SegmentRef {
  uint64_t offset = 0;           // from the payload start
  uint64_t compressed_size = 0;
  uint64_t size = 0;             // decompressed
  uint64_t xxh3 = 0;
  SegmentRole role = SegmentRole::VBand;
  uint32_t band = 0;
};

// Everything the manifest says about one tensor (no payload).
struct TensorDesc {
  std::string name;
  uint64_t rows = 0, cols = 0;
  dc_tensor_kind kind = DC_KIND_LOWRANK;
  dc_dtype dtype = DC_DTYPE_F16;
  uint32_t rank = 0;
  std::vector<BandDesc> bands;
  std::vector<float> sigma;
  bool has_in_perm = false;
  float bitdelta_scale = 0.f;
  std::vector<SegmentRef> segments;
  uint64_t stored_bytes() const;  // sum of compressed sizes
  uint64_t packed_bytes() const;  // sum of decompressed sizes
};

struct BaseTensorFingerprint {
  std::string name;
  std::vector<uint64_t> shape;
  std::string dtype;  // safetensors dtype name
  uint64_t xxh3 = 0;
};

struct ContainerMeta {
  uint16_t format_major = 1, format_minor = 0;
  std::string tool_version, model_name, base_model_name, recipe_json = "{}";
  std::vector<BaseTensorFingerprint> base_fingerprint;
};

struct ReaderLimits {
  uint64_t max_manifest_bytes = 256ull << 20;
  uint64_t max_segment_bytes = 4ull << 30;
  uint32_t max_tensors = 1u << 20;
};

class ContainerReader {
 public:
  // Opens a file (mmap unless use_mmap is false: then the file is read with pread on demand).
  static std::unique_ptr<ContainerReader> open_file(const std::string& path, const ReaderLimits& limits,
                                                    bool use_mmap = true);
  // Opens an in-memory image; copies it unless `borrow` (then the caller keeps it alive).
  static std::unique_ptr<ContainerReader> open_memory(const void* data, uint64_t size,
                                                      const ReaderLimits& limits, bool borrow = false);
  virtual ~ContainerReader() = default;

  virtual const ContainerMeta& meta() const = 0;
  virtual const std::vector<TensorDesc>& tensors() const = 0;
  virtual uint64_t file_size() const = 0;
  virtual uint64_t payload_size() const = 0;
  // Index of `name`, or -1.
  virtual int64_t find(const std::string& name) const = 0;
  // Reads, decompresses and (if verify) checks the XXH3 of one segment. Thread-safe.
  virtual std::vector<uint8_t> read_segment(const SegmentRef& seg, bool verify) const = 0;
  // Reads every segment of tensor `index` and returns it validated (PackedTensor::validate()).
  virtual PackedTensor load_tensor(uint64_t index, bool verify) const = 0;
  // Checks every segment's size and XXH3, and that every padding byte is zero.
  virtual void verify_all() const = 0;
};

// Writes a container. Tensors are compressed as they are added (zstd, one frame per segment,
// level `zstd_level`) and held compressed in memory; finish() writes the file atomically
// (temporary file in the same directory, fsync, rename), so an interrupted write never leaves a
// file that looks valid.
class ContainerWriter {
 public:
  explicit ContainerWriter(ContainerMeta meta, uint64_t segment_alignment = kDefaultSegmentAlignment,
                           int zstd_level = 3);
  ~ContainerWriter();
  ContainerWriter(const ContainerWriter&) = delete;
  ContainerWriter& operator=(const ContainerWriter&) = delete;

  // Validates and compresses `t`. Throws DC_ERR_DUPLICATE if the name was already added.
  // Thread-safe (tensors may be added from several threads; the file keeps insertion order).
  void add_tensor(const PackedTensor& t);
  // Writes the file to `path` atomically. Returns the number of bytes written.
  uint64_t finish(const std::string& path);
  // The same image in memory (for tests and open_memory).
  std::vector<uint8_t> finish_to_memory();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// XXH3-64 (seed 0), the digest used everywhere in the format.
uint64_t xxh3_64(const void* data, uint64_t size);

}  // namespace dc
