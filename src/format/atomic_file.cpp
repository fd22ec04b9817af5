// AtomicFile: write to `path`.tmp-XXXXXX in the target's directory, fsync, rename over `path`, fsync
// the directory. A crash at any point leaves either the old file or the complete new one, never a
// partial file under the final name.
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "format/safetensors.h"

namespace dc {

namespace {

std::string errno_text() { return std::strerror(errno); }

std::string parent_dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  DC_CHECK(!path.empty(), DC_ERR_INVALID_ARGUMENT, "AtomicFile: empty path");
  std::string templ = path + ".tmp-XXXXXX";
  fd_ = ::mkstemp(&templ[0]);
  DC_CHECK(fd_ >= 0, DC_ERR_IO, "cannot create a temporary file for '%s': %s", path.c_str(), errno_text().c_str());
  tmp_ = templ;
  // mkstemp creates 0600; a written model should be readable like any file the user creates.
  ::fchmod(fd_, 0644);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, uint64_t size) {
  DC_CHECK(fd_ >= 0 && !committed_, DC_ERR_INVALID_ARGUMENT, "AtomicFile '%s': write after commit", path_.c_str());
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const size_t chunk = size > (1u << 30) ? (1u << 30) : (size_t)size;
    const ssize_t n = ::write(fd_, p, chunk);
    if (n < 0 && errno == EINTR) continue;
    DC_CHECK(n > 0, DC_ERR_IO, "cannot write '%s': %s", tmp_.c_str(), n < 0 ? errno_text().c_str() : "no progress");
    p += n;
    size -= (uint64_t)n;
  }
}

void AtomicFile::commit() {
  DC_CHECK(fd_ >= 0 && !committed_, DC_ERR_INVALID_ARGUMENT, "AtomicFile '%s': commit twice", path_.c_str());
  DC_CHECK(::fsync(fd_) == 0, DC_ERR_IO, "cannot fsync '%s': %s", tmp_.c_str(), errno_text().c_str());
  const int fd = fd_;
  fd_ = -1;
  DC_CHECK(::close(fd) == 0, DC_ERR_IO, "cannot close '%s': %s", tmp_.c_str(), errno_text().c_str());
  DC_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, DC_ERR_IO, "cannot rename '%s' to '%s': %s", tmp_.c_str(),
           path_.c_str(), errno_text().c_str());
  committed_ = true;
  // Make the rename itself durable. Some file systems refuse fsync on a directory: not an error.
  const int dfd = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace dc
