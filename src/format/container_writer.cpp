// ContainerWriter: validates and compresses tensors as they arrive, then lays out
// preamble + FlatBuffers manifest + aligned zstd segments (FORMAT.md §1-§4).
#include <functional>
#include <mutex>
#include <unordered_set>

#include "common/checked.h"
#include "deltacome_generated.h"
#include "format/container.h"
#include "format/preamble.h"
#include "format/safetensors.h"
#include "format/segment.h"

namespace dc {

namespace fb = ::deltacome::fb;

namespace {

struct Entry {
  TensorDesc desc;  // segments filled once compressed (offsets at finish)
  std::vector<std::vector<uint8_t>> frames;
  bool ready = false;
  bool failed = false;
};

using Sink = std::function<void(const void*, uint64_t)>;

}  // namespace

struct ContainerWriter::Impl {
  ContainerMeta meta;
  uint64_t alignment;
  int level;
  std::mutex mu;
  // Slots in insertion order: a slot is reserved under the lock before compression starts, so the
  // file order is the order of add_tensor calls even when compression finishes out of order.
  std::vector<std::unique_ptr<Entry>> entries;
  std::unordered_set<std::string> names;

  void emit(const Sink& sink, uint64_t* total);
};

ContainerWriter::ContainerWriter(ContainerMeta meta, uint64_t segment_alignment, int zstd_level)
    : impl_(new Impl) {
  DC_CHECK(valid_segment_alignment(segment_alignment), DC_ERR_INVALID_ARGUMENT,
           "segment alignment %llu is not a power of two in [64, 1 MiB]", (unsigned long long)segment_alignment);
  impl_->meta = std::move(meta);
  impl_->meta.format_major = 1;
  impl_->meta.format_minor = 0;
  impl_->alignment = segment_alignment;
  impl_->level = zstd_level;
}

ContainerWriter::~ContainerWriter() = default;

void ContainerWriter::add_tensor(const PackedTensor& t) {
  t.validate();
  Entry* slot;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    DC_CHECK(impl_->names.insert(t.name).second, DC_ERR_DUPLICATE, "tensor '%s' was already added", t.name.c_str());
    impl_->entries.emplace_back(new Entry);
    slot = impl_->entries.back().get();
  }
  try {
    TensorDesc d = describe_tensor(t);
    std::vector<std::vector<uint8_t>> raw = serialize_segments(t, d);
    const std::vector<SegmentSlot> slots = expected_segments(d);
    std::vector<std::vector<uint8_t>> frames;
    for (size_t i = 0; i < raw.size(); ++i) {
      SegmentRef s;
      s.role = slots[i].role;
      s.band = slots[i].band;
      s.size = raw[i].size();
      s.xxh3 = xxh3_64(raw[i].data(), raw[i].size());
      frames.push_back(zstd_compress_frame(raw[i].data(), raw[i].size(), impl_->level));
      s.compressed_size = frames.back().size();
      d.segments.push_back(s);
      std::vector<uint8_t>().swap(raw[i]);  // release the uncompressed copy early
    }
    std::lock_guard<std::mutex> lock(impl_->mu);
    slot->desc = std::move(d);
    slot->frames = std::move(frames);
    slot->ready = true;
  } catch (...) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    slot->failed = true;
    impl_->names.erase(t.name);
    throw;
  }
}

void ContainerWriter::Impl::emit(const Sink& sink, uint64_t* total) {
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& e : entries)
    DC_CHECK(e->ready || e->failed, DC_ERR_INVALID_ARGUMENT,
             "ContainerWriter::finish called while add_tensor is still running");

  // Segment offsets: insertion order, each aligned; the payload ends with the last frame.
  uint64_t cursor = 0;
  std::vector<const Entry*> live;
  for (const auto& e : entries) {
    if (!e->ready) continue;
    live.push_back(e.get());
    for (size_t i = 0; i < e->frames.size(); ++i) {
      SegmentRef& s = e->desc.segments[i];
      s.offset = align_up(cursor, alignment, "payload offset");
      cursor = checked_add(s.offset, s.compressed_size, "payload size");
    }
  }
  const uint64_t payload_size = cursor;

  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  std::vector<flatbuffers::Offset<fb::Tensor>> tensors;
  for (const Entry* e : live) {
    const TensorDesc& d = e->desc;
    std::vector<flatbuffers::Offset<fb::Band>> bands;
    for (const BandDesc& b : d.bands) bands.push_back(fb::CreateBand(fbb, (uint8_t)b.bits, b.rank_begin, b.rank_end, b.group_size));
    std::vector<fb::Segment> segs;
    for (const SegmentRef& s : d.segments)
      segs.emplace_back(s.offset, s.compressed_size, s.size, s.xxh3, (fb::SegmentRole)s.role, (uint8_t)s.band);
    tensors.push_back(fb::CreateTensorDirect(fbb, d.name.c_str(), d.rows, d.cols, (fb::TensorKind)d.kind,
                                             (fb::DType)d.dtype, d.rank, &bands, &d.sigma, d.has_in_perm,
                                             d.bitdelta_scale, &segs));
  }
  std::vector<flatbuffers::Offset<fb::BaseTensor>> base;
  for (const BaseTensorFingerprint& b : meta.base_fingerprint)
    base.push_back(fb::CreateBaseTensorDirect(fbb, b.name.c_str(), &b.shape, b.dtype.c_str(), b.xxh3));
  auto root = fb::CreateManifestDirect(fbb, meta.format_major, meta.format_minor, meta.tool_version.c_str(),
                                       meta.model_name.c_str(), meta.base_model_name.c_str(),
                                       meta.recipe_json.c_str(), &tensors, &base);
  fb::FinishManifestBuffer(fbb, root);
  const uint64_t manifest_size = fbb.GetSize();
  const ReaderLimits defaults;
  DC_CHECK(manifest_size <= defaults.max_manifest_bytes, DC_ERR_LIMIT,
           "manifest of %llu bytes exceeds the %llu readers accept by default", (unsigned long long)manifest_size,
           (unsigned long long)defaults.max_manifest_bytes);

  Preamble h;
  h.manifest_offset = kDczPreambleSize;
  h.manifest_size = manifest_size;
  h.payload_offset = align_up(kDczPreambleSize + manifest_size, alignment, "payload offset");
  h.payload_size = payload_size;
  h.segment_alignment = (uint32_t)alignment;
  h.manifest_xxh3 = xxh3_64(fbb.GetBufferPointer(), manifest_size);
  uint8_t pre[kDczPreambleSize];
  encode_preamble(h, pre);

  const std::vector<uint8_t> zeros(alignment, 0);
  uint64_t at = 0;
  auto put = [&](const void* p, uint64_t n) {
    if (n) sink(p, n);
    at += n;
  };
  put(pre, sizeof pre);
  put(fbb.GetBufferPointer(), manifest_size);
  put(zeros.data(), h.payload_offset - at);
  for (const Entry* e : live)
    for (size_t i = 0; i < e->frames.size(); ++i) {
      put(zeros.data(), h.payload_offset + e->desc.segments[i].offset - at);
      put(e->frames[i].data(), e->frames[i].size());
    }
  DC_CHECK(at == h.payload_offset + payload_size, DC_ERR_INTERNAL, "container layout mismatch");
  *total = at;
}

uint64_t ContainerWriter::finish(const std::string& path) {
  AtomicFile out(path);
  uint64_t total = 0;
  impl_->emit([&](const void* p, uint64_t n) { out.write(p, n); }, &total);
  out.commit();
  return total;
}

std::vector<uint8_t> ContainerWriter::finish_to_memory() {
  std::vector<uint8_t> image;
  uint64_t total = 0;
  impl_->emit([&](const void* p, uint64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    image.insert(image.end(), b, b + n);
  }, &total);
  return image;
}

}  // namespace dc
