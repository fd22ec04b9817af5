// A small command-line parser: `--key value`, `--key=value`, `--flag`, and positionals.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "deltacome/deltacome.h"

namespace dc::cli {

class Args {
 public:
  // `flags` are options that take no value; `known` lists every accepted option (flags included):
  // anything else is refused as unknown, by name.
  Args(int argc, char** argv, int first, const std::set<std::string>& flags, const std::set<std::string>& known) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
        std::string key = a.substr(2), value;
        const auto eq = key.find('=');
        if (eq != std::string::npos) {
          value = key.substr(eq + 1);
          key = key.substr(0, eq);
          DC_CHECK(known.count(key), DC_ERR_INVALID_ARGUMENT, "unknown option --%s (see deltacome --help)", key.c_str());
        } else if (!known.count(key)) {
          fail(DC_ERR_INVALID_ARGUMENT, format("unknown option --%s (see deltacome --help)", key.c_str()));
        } else if (flags.count(key)) {
          value = "1";
        } else {
          DC_CHECK(i + 1 < argc, DC_ERR_INVALID_ARGUMENT, "option --%s needs a value", key.c_str());
          value = argv[++i];
        }
        options_[key] = value;
      } else if (a == "-o") {
        DC_CHECK(i + 1 < argc, DC_ERR_INVALID_ARGUMENT, "option -o needs a value");
        options_["output"] = argv[++i];
      } else {
        positional_.push_back(a);
      }
    }
  }
  bool has(const std::string& k) const { return options_.count(k) > 0; }
  std::string get(const std::string& k, const std::string& def = "") const {
    auto it = options_.find(k);
    return it == options_.end() ? def : it->second;
  }
  std::string require(const std::string& k) const {
    DC_CHECK(has(k), DC_ERR_INVALID_ARGUMENT, "missing required option --%s", k.c_str());
    return get(k);
  }
  double number(const std::string& k, double def) const {
    if (!has(k)) return def;
    const std::string v = get(k);
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    DC_CHECK(end && *end == 0 && !v.empty(), DC_ERR_INVALID_ARGUMENT, "--%s expects a number, got '%s'", k.c_str(),
             v.c_str());
    return d;
  }
  const std::vector<std::string>& positional() const { return positional_; }
 private:
  std::map<std::string, std::string> options_;
  std::vector<std::string> positional_;
};

// Throws the last library error if `s` failed.
inline void check(dc_status s) {
  if (s != DC_OK) throw Error(s, dc_last_error_message());
}

using ContainerPtr = std::unique_ptr<dc_container, decltype(&dc_container_close)>;
using ContextPtr = std::unique_ptr<dc_context, decltype(&dc_context_destroy)>;

// Opens a container, throwing the library's error.
inline ContainerPtr open_container(const std::string& path) {
  dc_container* c = nullptr;
  check(dc_container_open(&c, path.c_str(), nullptr));
  return ContainerPtr(c, dc_container_close);
}

// A CPU context with `threads` workers (0 = all cores), throwing the library's error.
inline ContextPtr cpu_context(int32_t threads) {
  dc_context_options co;
  dc_context_options_init(&co);
  co.backend = DC_BACKEND_CPU;
  co.num_threads = threads;
  dc_context* ctx = nullptr;
  check(dc_context_create(&ctx, &co));
  return ContextPtr(ctx, dc_context_destroy);
}

int cmd_compress(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_verify(int argc, char** argv);
int cmd_merge(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_make_demo(int argc, char** argv);

std::string human_bytes(double bytes);

}  // namespace dc::cli
