// deltacome eval: for every 2-D tensor in a container, the error of base + compressed delta against
// the exact fine-tuned layer on random inputs (apply through the library, reference in float64).
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cli/args.h"
#include "format/safetensors.h"

namespace dc::cli {

int cmd_eval(int argc, char** argv) {
  Args a(argc, argv, 2, {"quiet"},
         {"base", "finetuned", "delta", "tokens", "backend", "threads", "seed", "quiet"});
  const std::string bp = a.require("base"), fp = a.require("finetuned"), dp = a.require("delta");
  const uint64_t m = (uint64_t)a.number("tokens", 8);
  DC_CHECK(m >= 1 && m <= 4096, DC_ERR_INVALID_ARGUMENT, "--tokens must be in [1, 4096]");
  const std::string backend = a.get("backend", "cpu");
  DC_CHECK(backend == "cpu", DC_ERR_UNSUPPORTED,
           "eval computes on host memory; --backend %s is not supported here (use bench/ for GPU backends)",
           backend.c_str());
  auto base = SafetensorsModel::open(bp), ft = SafetensorsModel::open(fp);
  ContainerPtr c = open_container(dp);
  check(dc_container_check_base_file(c.get(), bp.c_str()));
  ContextPtr ctx = cpu_context((int32_t)a.number("threads", 0));

  std::mt19937_64 rng((uint64_t)a.number("seed", 7));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::printf("%-52s %13s %-9s %12s %12s %12s\n", "tensor", "shape", "kind", "err/‖Δy‖", "err/‖y_ft‖", "base/‖y_ft‖");
  double sum_rel = 0, worst = 0;
  size_t count = 0;
  const uint64_t n = dc_container_tensor_count(c.get());
  for (uint64_t i = 0; i < n; ++i) {
    dc_tensor_info t{};
    t.struct_size = sizeof t;
    check(dc_container_tensor_info(c.get(), i, &t));
    if (t.cols < 2) continue;
    const StTensor* wb = base->find(t.name);
    const StTensor* wf = ft->find(t.name);
    DC_CHECK(wb && wf, DC_ERR_NOT_FOUND, "tensor '%s' is missing from the base or fine-tuned model", t.name);
    std::vector<float> x(m * t.cols), wbase(t.rows * t.cols), y(m * t.rows, 0.f);
    for (auto& v : x) v = nd(rng);
    for (uint64_t k = 0; k < wbase.size(); ++k) wbase[k] = (float)wb->get(k);
    dc_delta* d = nullptr;
    check(dc_delta_load_index(&d, ctx.get(), c.get(), i, nullptr));
    std::unique_ptr<dc_delta, decltype(&dc_delta_free)> delta(d, dc_delta_free);
    dc_apply_params p;
    dc_apply_params_init(&p);
    p.flags = DC_APPLY_INCLUDE_BASE;
    p.m = m;
    p.x = x.data();
    p.y = y.data();
    p.base_weight = wbase.data();
    check(dc_apply_delta_linear(delta.get(), &p));
    double err = 0, dnorm = 0, ynorm = 0, berr = 0;
    for (uint64_t r = 0; r < m; ++r)
      for (uint64_t o = 0; o < t.rows; ++o) {
        double yf = 0, yb = 0;
        for (uint64_t k = 0; k < t.cols; ++k) {
          yf += (double)x[r * t.cols + k] * wf->get(o * t.cols + k);
          yb += (double)x[r * t.cols + k] * wbase[o * t.cols + k];
        }
        const double e = y[r * t.rows + o] - yf;
        err += e * e;
        dnorm += (yf - yb) * (yf - yb);
        ynorm += yf * yf;
        berr += (yb - yf) * (yb - yf);
      }
    const double rel = dnorm > 0 ? std::sqrt(err / dnorm) : 0;
    char shape[32];
    std::snprintf(shape, sizeof shape, "%llux%llu", (unsigned long long)t.rows, (unsigned long long)t.cols);
    std::printf("%-52s %13s %-9s %12.4f %12.6f %12.6f\n", t.name, shape,
                t.kind == DC_KIND_LOWRANK ? "low-rank" : t.kind == DC_KIND_BITDELTA ? "bitdelta" : "dense", rel,
                ynorm > 0 ? std::sqrt(err / ynorm) : 0, ynorm > 0 ? std::sqrt(berr / ynorm) : 0);
    if (t.kind != DC_KIND_DENSE) {
      sum_rel += rel;
      worst = std::max(worst, rel);
      ++count;
    }
  }
  dc_container_info ci{};
  ci.struct_size = sizeof ci;
  check(dc_container_get_info(c.get(), &ci));
  uint64_t fp16 = 0;
  for (uint64_t i = 0; i < n; ++i) {
    dc_tensor_info t{};
    t.struct_size = sizeof t;
    check(dc_container_tensor_info(c.get(), i, &t));
    fp16 += t.fp16_bytes;
  }
  std::printf("\ncompressed layers: %zu; output error relative to the delta's own output: mean %.4f, worst %.4f\n"
              "container %s vs the fp16 deltas %s: %.1fx smaller\n",
              count, count ? sum_rel / count : 0.0, worst, human_bytes((double)ci.file_bytes).c_str(),
              human_bytes((double)fp16).c_str(), ci.file_bytes ? (double)fp16 / (double)ci.file_bytes : 0.0);
  return 0;
}

}  // namespace dc::cli
