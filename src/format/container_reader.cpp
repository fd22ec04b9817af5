// ContainerReader: opens a .dcz image (mmap, pread or memory) and validates every structure before
// anything is allocated from a declared size (FORMAT.md §6 lists the checks in order). Segment
// contents are checked lazily: read_segment / load_tensor / verify_all.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_map>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/checked.h"
#include "deltacome_generated.h"
#include "format/container.h"
#include "format/preamble.h"
#include "format/segment.h"

namespace dc {

namespace fb = ::deltacome::fb;

uint64_t TensorDesc::stored_bytes() const {
  uint64_t n = 0;
  for (const SegmentRef& s : segments) n += s.compressed_size;
  return n;
}

uint64_t TensorDesc::packed_bytes() const {
  uint64_t n = 0;
  for (const SegmentRef& s : segments) n += s.size;
  return n;
}

namespace {

// Where the bytes come from. view() returns [off, off + len) (the caller checked the range), either
// pointing into a mapping or read into `scratch`. Thread-safe.
class Source {
 public:
  virtual ~Source() = default;
  virtual const uint8_t* view(uint64_t off, uint64_t len, std::vector<uint8_t>& scratch) const = 0;
  uint64_t size = 0;
};

class MemorySource : public Source {
 public:
  MemorySource(const void* data, uint64_t n, bool borrow) {
    size = n;
    if (borrow) {
      data_ = static_cast<const uint8_t*>(data);
    } else {
      owned_.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + n);
      data_ = owned_.data();
    }
  }
  const uint8_t* view(uint64_t off, uint64_t, std::vector<uint8_t>&) const override { return data_ + off; }

 private:
  std::vector<uint8_t> owned_;
  const uint8_t* data_ = nullptr;
};

class MmapSource : public Source {
 public:
  MmapSource(int fd, uint64_t n, const std::string& path) {
    size = n;
    if (n == 0) return;
    map_ = ::mmap(nullptr, (size_t)n, PROT_READ, MAP_PRIVATE, fd, 0);
    DC_CHECK(map_ != MAP_FAILED, DC_ERR_IO, "cannot mmap '%s': %s", path.c_str(), std::strerror(errno));
  }
  ~MmapSource() override {
    if (map_ && map_ != MAP_FAILED) ::munmap(map_, (size_t)size);
  }
  const uint8_t* view(uint64_t off, uint64_t, std::vector<uint8_t>&) const override {
    return static_cast<const uint8_t*>(map_) + off;
  }

 private:
  void* map_ = nullptr;
};

class PreadSource : public Source {
 public:
  PreadSource(int fd, uint64_t n, std::string path) : fd_(fd), path_(std::move(path)) { size = n; }
  ~PreadSource() override { ::close(fd_); }
  const uint8_t* view(uint64_t off, uint64_t len, std::vector<uint8_t>& scratch) const override {
    scratch.resize(len);
    uint64_t done = 0;
    while (done < len) {
      const size_t chunk = (size_t)std::min<uint64_t>(len - done, 1u << 30);
      const ssize_t n = ::pread(fd_, scratch.data() + done, chunk, (off_t)(off + done));
      if (n < 0 && errno == EINTR) continue;
      DC_CHECK(n >= 0, DC_ERR_IO, "cannot read '%s' at %llu: %s", path_.c_str(), (unsigned long long)(off + done),
               std::strerror(errno));
      DC_CHECK(n > 0, DC_ERR_TRUNCATED, "'%s' shrank while open (ends before byte %llu)", path_.c_str(),
               (unsigned long long)(off + done));
      done += (uint64_t)n;
    }
    return scratch.data();
  }

 private:
  int fd_;
  std::string path_;
};

struct Span {
  uint64_t offset, end;  // payload-relative
  uint32_t tensor;
};

class Reader final : public ContainerReader {
 public:
  Reader(std::unique_ptr<Source> src, std::string name, const ReaderLimits& limits)
      : src_(std::move(src)), name_(std::move(name)), limits_(limits) {
    try {
      parse();
    } catch (const Error& e) {
      throw Error(e.status(), name_ + ": " + e.what());
    }
  }

  const ContainerMeta& meta() const override { return meta_; }
  const std::vector<TensorDesc>& tensors() const override { return tensors_; }
  uint64_t file_size() const override { return src_->size; }
  uint64_t payload_size() const override { return payload_size_; }

  int64_t find(const std::string& name) const override {
    auto it = index_.find(name);
    return it == index_.end() ? -1 : (int64_t)it->second;
  }

  std::vector<uint8_t> read_segment(const SegmentRef& seg, bool verify) const override {
    // Name the owning tensor in errors (the SegmentRef itself does not carry it).
    auto it = std::lower_bound(spans_.begin(), spans_.end(), seg.offset,
                               [](const Span& s, uint64_t off) { return s.offset < off; });
    const std::string owner = it != spans_.end() && it->offset == seg.offset ? tensors_[it->tensor].name : "?";
    return read(seg, verify, owner);
  }

  PackedTensor load_tensor(uint64_t index, bool verify) const override {
    DC_CHECK(index < tensors_.size(), DC_ERR_INVALID_ARGUMENT, "%s: tensor index %llu out of range (%zu tensors)",
             name_.c_str(), (unsigned long long)index, tensors_.size());
    const TensorDesc& d = tensors_[index];
    PackedTensor t;
    t.name = d.name;
    t.rows = d.rows;
    t.cols = d.cols;
    t.kind = d.kind;
    t.dtype = d.dtype;
    t.rank = d.rank;
    t.sigma = d.sigma;
    t.bitdelta_scale = d.bitdelta_scale;
    t.bands.resize(d.bands.size());
    for (size_t b = 0; b < d.bands.size(); ++b) t.bands[b].desc = d.bands[b];
    for (const SegmentRef& s : d.segments) deserialize_segment(d, s.role, s.band, read(s, verify, d.name), t);
    try {
      t.validate();
    } catch (const Error& e) {
      throw Error(e.status(), name_ + ": " + e.what());
    }
    return t;
  }

  void verify_all() const override {
    for (uint64_t i = 0; i < tensors_.size(); ++i) load_tensor(i, true);
    // Padding: between the manifest and the payload, and between segments.
    check_zero(manifest_end_, payload_offset_ - manifest_end_, "padding after the manifest");
    for (size_t i = 0; i < spans_.size(); ++i) {
      const uint64_t next = i + 1 < spans_.size() ? spans_[i + 1].offset : payload_size_;
      check_zero(payload_offset_ + spans_[i].end, next - spans_[i].end, "padding between segments");
    }
  }

 private:
  std::vector<uint8_t> read(const SegmentRef& seg, bool verify, const std::string& owner) const {
    const char* role = segment_role_name(seg.role);
    DC_CHECK(range_within(seg.offset, seg.compressed_size, payload_size_), DC_ERR_INVALID_ARGUMENT,
             "%s: tensor '%s' %s segment lies outside the payload", name_.c_str(), owner.c_str(), role);
    DC_CHECK(seg.size <= limits_.max_segment_bytes, DC_ERR_LIMIT, "%s: tensor '%s' %s segment of %llu bytes exceeds %llu",
             name_.c_str(), owner.c_str(), role, (unsigned long long)seg.size,
             (unsigned long long)limits_.max_segment_bytes);
    std::vector<uint8_t> scratch;
    const uint8_t* frame = src_->view(payload_offset_ + seg.offset, seg.compressed_size, scratch);
    std::vector<uint8_t> out(seg.size);
    zstd_decompress_frame(frame, seg.compressed_size, out.data(), seg.size,
                          format("%s: tensor '%s' %s segment (band %u)", name_.c_str(), owner.c_str(), role, seg.band));
    if (verify) {
      const uint64_t h = xxh3_64(out.data(), out.size());
      DC_CHECK(h == seg.xxh3, DC_ERR_CHECKSUM,
               "%s: tensor '%s' %s segment (band %u): checksum mismatch (XXH3 %016llx, the manifest says %016llx)", name_.c_str(),
               owner.c_str(), role, seg.band, (unsigned long long)h, (unsigned long long)seg.xxh3);
    }
    return out;
  }

  void check_zero(uint64_t off, uint64_t len, const char* what) const {
    if (len == 0) return;
    std::vector<uint8_t> scratch;
    const uint8_t* p = src_->view(off, len, scratch);
    for (uint64_t i = 0; i < len; ++i)
      DC_CHECK(p[i] == 0, DC_ERR_CORRUPT, "%s: non-zero byte in the %s at file offset %llu", name_.c_str(), what,
               (unsigned long long)(off + i));
  }

  void parse();
  void parse_manifest(const uint8_t* data, uint64_t size, const Preamble& h);
  void check_layout();

  std::unique_ptr<Source> src_;
  std::string name_;
  ReaderLimits limits_;
  ContainerMeta meta_;
  std::vector<TensorDesc> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<Span> spans_;  // every segment, sorted by offset
  uint64_t manifest_end_ = 0, payload_offset_ = 0, payload_size_ = 0, alignment_ = 0;
};

void Reader::parse() {
  const uint64_t file_size = src_->size;
  std::vector<uint8_t> scratch;
  // 1. Magic, then version, then the header checksum (a newer major may lay out the rest differently).
  const uint64_t probe = std::min<uint64_t>(file_size, 8);
  const uint8_t* head = src_->view(0, probe, scratch);
  DC_CHECK(probe == 0 || std::memcmp(head, kDczMagic, (size_t)probe) == 0, DC_ERR_BAD_MAGIC,
           "not a .dcz container (bad magic)");
  DC_CHECK(file_size >= kDczPreambleSize, DC_ERR_TRUNCATED, "file of %llu bytes ends inside the %u-byte preamble",
           (unsigned long long)file_size, kDczPreambleSize);
  uint8_t pre[kDczPreambleSize];
  std::memcpy(pre, src_->view(0, kDczPreambleSize, scratch), kDczPreambleSize);
  const Preamble h = decode_preamble(pre);
  DC_CHECK(h.major == 1, DC_ERR_UNSUPPORTED_VERSION, "format version %u.%u is not supported (this reader reads 1.x)",
           h.major, h.minor);
  DC_CHECK(xxh3_64(pre, kDczHeaderHashedBytes) == h.header_xxh3, DC_ERR_CHECKSUM, "preamble checksum mismatch");
  DC_CHECK((h.flags_required & ~kDczKnownRequiredFlags) == 0, DC_ERR_UNSUPPORTED_VERSION,
           "required feature flags 0x%08x are not supported", h.flags_required & ~kDczKnownRequiredFlags);
  DC_CHECK(h.reserved == 0, DC_ERR_CORRUPT, "reserved preamble field is %u, not 0", h.reserved);
  DC_CHECK(h.header_len >= kDczPreambleSize, DC_ERR_CORRUPT, "header_len %u is smaller than %u", h.header_len,
           kDczPreambleSize);
  DC_CHECK(valid_segment_alignment(h.segment_alignment), DC_ERR_CORRUPT,
           "segment alignment %u is not a power of two in [64, 1 MiB]", h.segment_alignment);
  DC_CHECK(h.manifest_offset == h.header_len, DC_ERR_CORRUPT, "manifest_offset %llu differs from header_len %u",
           (unsigned long long)h.manifest_offset, h.header_len);
  alignment_ = h.segment_alignment;

  // 2. Sizes against limits and the file length, before reading or allocating anything.
  DC_CHECK(h.manifest_size <= limits_.max_manifest_bytes && h.manifest_size < (1ull << 31), DC_ERR_LIMIT,
           "manifest of %llu bytes exceeds the limit %llu", (unsigned long long)h.manifest_size,
           (unsigned long long)std::min<uint64_t>(limits_.max_manifest_bytes, (1ull << 31) - 1));
  DC_CHECK(h.manifest_size >= 8, DC_ERR_CORRUPT, "manifest of %llu bytes is too small", (unsigned long long)h.manifest_size);
  manifest_end_ = checked_add(h.manifest_offset, h.manifest_size, "manifest end");
  DC_CHECK(manifest_end_ <= file_size, DC_ERR_TRUNCATED, "file of %llu bytes ends inside the manifest (ends at %llu)",
           (unsigned long long)file_size, (unsigned long long)manifest_end_);
  DC_CHECK(h.payload_offset == align_up(manifest_end_, alignment_, "payload offset"), DC_ERR_CORRUPT,
           "payload_offset %llu is not the manifest end %llu rounded up to %llu", (unsigned long long)h.payload_offset,
           (unsigned long long)manifest_end_, (unsigned long long)alignment_);
  const uint64_t payload_end = checked_add(h.payload_offset, h.payload_size, "payload end");
  DC_CHECK(payload_end <= file_size, DC_ERR_TRUNCATED, "file of %llu bytes ends before the payload end %llu",
           (unsigned long long)file_size, (unsigned long long)payload_end);
  DC_CHECK(payload_end == file_size, DC_ERR_CORRUPT, "%llu trailing bytes after the payload end %llu",
           (unsigned long long)(file_size - payload_end), (unsigned long long)payload_end);
  payload_offset_ = h.payload_offset;
  payload_size_ = h.payload_size;

  // 3. Manifest checksum, then FlatBuffers verification on an aligned private copy.
  const uint8_t* m = src_->view(h.manifest_offset, h.manifest_size, scratch);
  DC_CHECK(xxh3_64(m, h.manifest_size) == h.manifest_xxh3, DC_ERR_CHECKSUM, "manifest checksum mismatch");
  std::vector<uint64_t> aligned((size_t)(h.manifest_size + 7) / 8);
  std::memcpy(aligned.data(), m, (size_t)h.manifest_size);
  std::vector<uint8_t>().swap(scratch);
  parse_manifest(reinterpret_cast<const uint8_t*>(aligned.data()), h.manifest_size, h);
  check_layout();
}

// The FlatBuffers verifier checks a vector's length prefix (4-byte aligned) but not that 8-byte
// elements are 8-byte aligned; reading a misaligned uint64 is undefined behaviour (found by fuzzing).
// The manifest sits in an 8-aligned copy, so a well-formed (flatc-built) manifest always passes.
static void check_element_alignment(const void* p, size_t align, const char* what) {
  DC_CHECK(reinterpret_cast<uintptr_t>(p) % align == 0, DC_ERR_CORRUPT,
           "manifest %s is misaligned for its %zu-byte elements", what, align);
}

void Reader::parse_manifest(const uint8_t* data, uint64_t size, const Preamble& h) {
  DC_CHECK(fb::ManifestBufferHasIdentifier(data), DC_ERR_CORRUPT, "manifest lacks the file identifier \"DCZM\"");
  flatbuffers::Verifier::Options opts;
  opts.max_depth = 16;
  // Every table costs at least 4 bytes, so this bound never rejects a well-formed manifest.
  opts.max_tables = (flatbuffers::uoffset_t)(size / 4 + 16);
  flatbuffers::Verifier verifier(data, (size_t)size, opts);
  DC_CHECK(fb::VerifyManifestBuffer(verifier), DC_ERR_CORRUPT, "manifest fails FlatBuffers verification");
  const fb::Manifest* man = fb::GetManifest(data);

  DC_CHECK(man->format_major() == h.major && man->format_minor() == h.minor, DC_ERR_CORRUPT,
           "manifest says format %u.%u, the preamble %u.%u", man->format_major(), man->format_minor(), h.major, h.minor);
  auto str = [](const flatbuffers::String* s, const char* dflt) { return s ? s->str() : std::string(dflt); };
  meta_.format_major = h.major;
  meta_.format_minor = h.minor;
  meta_.tool_version = str(man->tool_version(), "");
  meta_.model_name = str(man->model_name(), "");
  meta_.base_model_name = str(man->base_model_name(), "");
  meta_.recipe_json = str(man->recipe_json(), "{}");

  if (const auto* base = man->base_fingerprint()) {
    DC_CHECK(base->size() <= limits_.max_tensors, DC_ERR_LIMIT, "%u base fingerprint entries exceed the limit %u",
             base->size(), limits_.max_tensors);
    for (const fb::BaseTensor* b : *base) {
      BaseTensorFingerprint f;
      f.name = str(b->name(), "");
      if (b->shape()) {
        check_element_alignment(b->shape()->Data(), 8, "base fingerprint shape");
        f.shape.assign(b->shape()->begin(), b->shape()->end());
      }
      f.dtype = str(b->dtype(), "");
      f.xxh3 = b->xxh3();
      meta_.base_fingerprint.push_back(std::move(f));
    }
  }

  const auto* ts = man->tensors();
  const uint32_t count = ts ? ts->size() : 0;
  DC_CHECK(count <= limits_.max_tensors, DC_ERR_LIMIT, "%u tensors exceed the limit %u", count, limits_.max_tensors);
  tensors_.reserve(count);
  index_.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    const fb::Tensor* t = ts->Get(i);
    TensorDesc d;
    d.name = str(t->name(), "");
    d.rows = t->rows();
    d.cols = t->cols();
    // Range-check the raw enum bytes before they become C enums (out-of-range enum values are UB).
    const unsigned kind = (uint8_t)t->kind(), dtype = (uint8_t)t->dtype();
    DC_CHECK(kind <= DC_KIND_DENSE, DC_ERR_CORRUPT, "tensor '%s': unknown kind %u", d.name.c_str(), kind);
    DC_CHECK(dtype <= DC_DTYPE_BF16, DC_ERR_CORRUPT, "tensor '%s': unknown dtype %u", d.name.c_str(), dtype);
    d.kind = (dc_tensor_kind)kind;
    d.dtype = (dc_dtype)dtype;
    d.rank = t->rank();
    if (const auto* bands = t->bands()) {
      DC_CHECK(bands->size() <= 255, DC_ERR_LIMIT, "tensor '%s': %u bands exceed 255", d.name.c_str(), bands->size());
      for (const fb::Band* b : *bands) d.bands.push_back({b->bits(), b->rank_begin(), b->rank_end(), b->group_size()});
    }
    if (t->sigma()) d.sigma.assign(t->sigma()->begin(), t->sigma()->end());
    d.has_in_perm = t->has_in_perm();
    d.bitdelta_scale = t->bitdelta_scale();
    if (const auto* segs = t->segments()) {
      check_element_alignment(segs->Data(), alignof(fb::Segment), "segment table");
      for (const fb::Segment* s : *segs) {
        SegmentRef r;
        r.offset = s->offset();
        r.compressed_size = s->compressed_size();
        r.size = s->size();
        r.xxh3 = s->xxh3();
        r.role = (SegmentRole)(uint8_t)s->role();
        r.band = s->band();
        d.segments.push_back(r);
      }
    }
    validate_tensor_desc(d, limits_.max_segment_bytes);
    for (const SegmentRef& s : d.segments) {
      DC_CHECK(range_within(s.offset, s.compressed_size, payload_size_), DC_ERR_CORRUPT,
               "tensor '%s': %s segment [%llu, +%llu) lies outside the %llu-byte payload", d.name.c_str(),
               segment_role_name(s.role), (unsigned long long)s.offset, (unsigned long long)s.compressed_size,
               (unsigned long long)payload_size_);
      spans_.push_back({s.offset, s.offset + s.compressed_size, i});
    }
    DC_CHECK(index_.emplace(d.name, i).second, DC_ERR_DUPLICATE, "tensor name '%s' appears twice", d.name.c_str());
    tensors_.push_back(std::move(d));
  }
}

// Segments of all tensors, sorted by offset: aligned, non-overlapping, separated only by padding
// shorter than the alignment, the first at 0 and the last ending at payload_size.
void Reader::check_layout() {
  std::sort(spans_.begin(), spans_.end(), [](const Span& a, const Span& b) { return a.offset < b.offset; });
  uint64_t prev_end = 0;
  for (size_t i = 0; i < spans_.size(); ++i) {
    const Span& s = spans_[i];
    const char* n = tensors_[s.tensor].name.c_str();
    DC_CHECK(s.offset % alignment_ == 0, DC_ERR_OVERLAP, "tensor '%s': segment offset %llu is not a multiple of %llu", n,
             (unsigned long long)s.offset, (unsigned long long)alignment_);
    DC_CHECK(s.offset >= prev_end, DC_ERR_OVERLAP, "tensor '%s': segment at %llu overlaps the previous one (ends at %llu)",
             n, (unsigned long long)s.offset, (unsigned long long)prev_end);
    DC_CHECK(s.offset == align_up(prev_end, alignment_, "segment offset"), DC_ERR_OVERLAP,
             "tensor '%s': hole before the segment at %llu (previous data ends at %llu)", n,
             (unsigned long long)s.offset, (unsigned long long)prev_end);
    prev_end = s.end;
  }
  DC_CHECK(prev_end == payload_size_, DC_ERR_OVERLAP, "the segments end at %llu, the payload at %llu (hole)",
           (unsigned long long)prev_end, (unsigned long long)payload_size_);
}

int open_or_throw(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DC_CHECK(fd >= 0, DC_ERR_IO, "cannot open '%s': %s", path.c_str(), std::strerror(errno));
  return fd;
}

}  // namespace

std::unique_ptr<ContainerReader> ContainerReader::open_file(const std::string& path, const ReaderLimits& limits,
                                                            bool use_mmap) {
  const int fd = open_or_throw(path);
  struct stat st;
  const bool stat_ok = ::fstat(fd, &st) == 0;
  const int err = stat_ok ? 0 : errno;
  if (!stat_ok || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(DC_ERR_IO, format("'%s' is not a readable regular file%s%s", path.c_str(), err ? ": " : "",
                           err ? std::strerror(err) : ""));
  }
  std::unique_ptr<Source> src;
  if (use_mmap) {
    try {
      src.reset(new MmapSource(fd, (uint64_t)st.st_size, path));
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);  // the mapping keeps the file alive
  } else {
    src.reset(new PreadSource(fd, (uint64_t)st.st_size, path));
  }
  return std::unique_ptr<ContainerReader>(new Reader(std::move(src), path, limits));
}

std::unique_ptr<ContainerReader> ContainerReader::open_memory(const void* data, uint64_t size,
                                                              const ReaderLimits& limits, bool borrow) {
  DC_CHECK(data != nullptr || size == 0, DC_ERR_INVALID_ARGUMENT, "open_memory: NULL data");
  return std::unique_ptr<ContainerReader>(
      new Reader(std::unique_ptr<Source>(new MemorySource(data, size, borrow)), "<memory>", limits));
}

}  // namespace dc
