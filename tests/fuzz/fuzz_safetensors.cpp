// libFuzzer target: an untrusted .safetensors file through dc::SafetensorsModel::open (the reader
// behind compress, merge, eval and dc_container_check_base_file). The reader maps a path, so every
// input is written to one memfd (an anonymous in-memory file) opened through /proc/self/fd: no
// disk traffic, and the reader runs exactly as on a real file.
//
// Invariants checked (abort = a finding): no crash or sanitizer report; only dc::Error escapes;
// a file that opens has tensors sorted by unique name whose byte ranges exactly tile the data
// buffer (no holes, no polyglots), every byte of which is readable, and whose convertible elements
// can be read through StTensor::get.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"
#include "format/safetensors.h"

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what);
  std::abort();
}

int memfd() {
  static int fd = [] {
    const int f = ::memfd_create("dc-fuzz-safetensors", MFD_CLOEXEC);
    if (f < 0) finding("memfd_create failed");
    return f;
  }();
  return fd;
}

void write_input(const uint8_t* data, size_t size) {
  const int fd = memfd();
  if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, (off_t)size) != 0) finding("ftruncate failed");
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, (off_t)done);
    if (n <= 0) finding("pwrite failed");
    done += (size_t)n;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_input(data, size);
  const std::string path = "/proc/self/fd/" + std::to_string(memfd());
  std::unique_ptr<dc::SafetensorsModel> model;
  try {
    model = dc::SafetensorsModel::open(path);
  } catch (const dc::Error& e) {
    if (e.status() == DC_OK || e.status() == DC_ERR_INTERNAL || e.what()[0] == '\0') finding(e.what());
    return 0;
  }  // anything else (std::exception from a library, ...) escapes and libFuzzer reports it

  // The header length and data buffer, from the input itself.
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= (uint64_t)data[i] << (8 * i);
  const uint64_t buffer = size - 8 - n;
  const auto& ts = model->tensors();
  // The lowest data pointer is where the mapped buffer starts (ranges tile it from offset 0).
  const uint8_t* start = nullptr;
  for (const dc::StTensor& t : ts)
    if (t.bytes > 0 && (start == nullptr || t.data < start)) start = t.data;
  uint64_t total = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const dc::StTensor& t = ts[i];
    if (i > 0 && !(ts[i - 1].name < t.name)) finding("tensors not sorted by unique name");
    if (model->find(t.name) != &t) finding("find() does not return the tensor");
    total += t.bytes;
    // The tensor's bytes are the input's bytes at the same offset: compare them all (this reads
    // every byte, so a range outside the mapping faults here).
    if (t.bytes > 0) {
      if (t.data == nullptr) finding("non-empty tensor without data");
      const uint64_t off = (uint64_t)(t.data - start);
      if (off > buffer || t.bytes > buffer - off) finding("tensor range outside the data buffer");
      if (std::memcmp(t.data, data + 8 + n + off, (size_t)t.bytes) != 0) finding("tensor bytes differ from the file");
    }
    const uint64_t numel = t.numel();
    if (dc::st_dtype_size(t.dtype) != 0 && numel > 0) {
      if (numel * dc::st_dtype_size(t.dtype) != t.bytes) finding("numel * dtype size != bytes");
      (void)t.get(0);
      (void)t.get(numel - 1);
    }
  }
  if (total != buffer) finding("tensor byte ranges do not tile the data buffer");
  (void)model->find("");
  (void)model->metadata().size();
  return 0;
}
