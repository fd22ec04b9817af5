// deltacome verify: every checksum, and optionally the base model's fingerprint.
#include <cstdio>
#include <memory>

#include "cli/args.h"

namespace dc::cli {

int cmd_verify(int argc, char** argv) {
  Args a(argc, argv, 2, {},
         {"base"});
  DC_CHECK(a.positional().size() == 1, DC_ERR_INVALID_ARGUMENT, "usage: deltacome verify FILE.dcz [--base B]");
  const std::string path = a.positional()[0];
  ContainerPtr c = open_container(path);
  check(dc_container_verify(c.get()));
  std::printf("%s: structure and %llu tensors' checksums OK\n", path.c_str(),
              (unsigned long long)dc_container_tensor_count(c.get()));
  if (a.has("base")) {
    check(dc_container_check_base_file(c.get(), a.get("base").c_str()));
    std::printf("%s: base model %s matches the fingerprint\n", path.c_str(), a.get("base").c_str());
  }
  return 0;
}

}  // namespace dc::cli
