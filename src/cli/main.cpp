// deltacome — command-line toolkit: compress, inspect, verify, eval, merge, make-demo.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/args.h"

namespace {

const char* kUsage =
    "deltacome %s — Delta-CoMe delta compression for fine-tuned LLMs\n"
    "\n"
    "usage: deltacome <command> [options]\n"
    "\n"
    "commands:\n"
    "  compress  --base B --finetuned F -o OUT.dcz [--scheme deltacome|bitdelta|lowrank|single]\n"
    "            [--alpha 0.0625] [--bits K] [--group-size 128] [--quantizer gptq|rtn] [--allocate fixed|optimal|global]\n"
    "            [--calib H.safetensors] [--act-order] [--lowrank-embeddings] [--name NAME] [--base-name NAME]\n"
    "            [--threads N] [--zstd-level L] [--quiet]\n"
    "            B and F are .safetensors files, model.safetensors.index.json files, or directories.\n"
    "  inspect   FILE.dcz [--json] [--spectrum TENSOR]   tensors, bands, sizes, ratios\n"
    "  verify    FILE.dcz [--base B]                     checksums, and the base fingerprint\n"
    "  eval      --base B --finetuned F --delta D [--tokens M] [--backend cpu|cuda|hip|auto]\n"
    "            output error of every layer on random inputs, against the exact fine-tuned layer\n"
    "  merge     --base B --delta D -o OUT.safetensors   the fine-tuned model back\n"
    "  make-demo --out DIR [--layers N] [--hidden H] [--seed S]   a small base/fine-tuned pair\n"
    "\n"
    "Every error exits non-zero with a one-line reason.\n";

}  // namespace

namespace dc::cli {
std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", b, units[u]);
  return buf;
}
}  // namespace dc::cli

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::printf(kUsage, dc_version_string());
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("deltacome %s\n", dc_version_string());
    return 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "compress") return dc::cli::cmd_compress(argc, argv);
    if (cmd == "inspect") return dc::cli::cmd_inspect(argc, argv);
    if (cmd == "verify") return dc::cli::cmd_verify(argc, argv);
    if (cmd == "eval") return dc::cli::cmd_eval(argc, argv);
    if (cmd == "merge") return dc::cli::cmd_merge(argc, argv);
    if (cmd == "make-demo") return dc::cli::cmd_make_demo(argc, argv);
    std::fprintf(stderr, "deltacome: error: unknown command '%s' (see deltacome --help)\n", cmd.c_str());
    return 2;
  } catch (const dc::Error& e) {
    std::fprintf(stderr, "deltacome %s: error: %s\n", cmd.c_str(), e.what());
    return e.status() == DC_ERR_INVALID_ARGUMENT ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "deltacome %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
