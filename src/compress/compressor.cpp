#include "compress/compressor.h"

#include <algorithm>
#include <cstdio>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "compress/delta_error.h"
#include "format/container.h"
#include "format/safetensors.h"
#include "math/allocate.h"
#include "math/svd.h"

namespace dc {

Scheme parse_scheme(const std::string& s) {
  if (s == "deltacome") return Scheme::DeltaCoMe;
  if (s == "bitdelta") return Scheme::BitDelta;
  if (s == "lowrank") return Scheme::LowRank;
  if (s == "single") return Scheme::Single;
  fail(DC_ERR_INVALID_ARGUMENT, "unknown scheme '" + s + "' (deltacome, bitdelta, lowrank, single)");
}

const char* scheme_name(Scheme s) {
  switch (s) {
    case Scheme::DeltaCoMe: return "deltacome";
    case Scheme::BitDelta: return "bitdelta";
    case Scheme::LowRank: return "lowrank";
    case Scheme::Single: return "single";
  }
  return "?";
}

bool is_linear_weight(const std::string& name, const std::vector<uint64_t>& shape, bool include_embeddings) {
  if (shape.size() != 2 || shape[0] < 2 || shape[1] < 2) return false;
  if (name.size() < 7 || name.compare(name.size() - 7, 7, ".weight") != 0) return false;
  const bool embedding = name.find("embed") != std::string::npos || name.find("lm_head") != std::string::npos ||
                         name.find(".wte.") != std::string::npos || name.find(".wpe.") != std::string::npos;
  return include_embeddings || !embedding;
}

std::vector<BandDesc> scheme_bands(Scheme scheme, uint64_t rows, uint64_t cols, const BandRecipe& recipe,
                                   uint32_t single_bits) {
  switch (scheme) {
    case Scheme::DeltaCoMe: return bands_for_shape(rows, cols, recipe);
    case Scheme::LowRank: return lowrank_fp16_bands(rows, cols, recipe.alpha);
    case Scheme::Single: return single_precision_bands(rows, cols, recipe.alpha, single_bits, recipe.group_size);
    case Scheme::BitDelta: return {};
  }
  return {};
}

namespace {

dc_dtype dtype_of(const StTensor& t) {
  switch (t.dtype) {
    case StDtype::F32: return DC_DTYPE_F32;
    case StDtype::BF16: return DC_DTYPE_BF16;
    default: return DC_DTYPE_F16;
  }
}

bool is_float(StDtype t) { return t == StDtype::F32 || t == StDtype::F16 || t == StDtype::BF16 || t == StDtype::F64; }

// ΔW = W_ft − W_base, computed in double from the stored values and rounded once to float
// (the reference subtracts in bf16; we do not).
std::vector<float> delta_of(const StTensor& base, const StTensor& ft) {
  std::vector<float> d(ft.numel());
  for (uint64_t i = 0; i < d.size(); ++i) d[i] = (float)(ft.get(i) - base.get(i));
  return d;
}

struct Job {
  const StTensor* base;
  const StTensor* ft;
  bool linear;
};

std::vector<double> load_hessian(const SafetensorsModel* calib, const std::string& weight_name, uint64_t cols) {
  if (!calib) return {};
  const std::string module = weight_name.substr(0, weight_name.size() - 7);  // drop ".weight"
  const StTensor* h = calib->find(module + ".hessian");
  if (!h) return {};
  DC_CHECK(h->shape.size() == 2 && h->shape[0] == cols && h->shape[1] == cols, DC_ERR_SHAPE_MISMATCH,
           "calibration tensor '%s.hessian' should be %llux%llu", module.c_str(), (unsigned long long)cols,
           (unsigned long long)cols);
  std::vector<double> out(cols * cols);
  for (uint64_t i = 0; i < out.size(); ++i) out[i] = h->get(i);
  return out;
}

// Most singular vectors any allocation can keep: every one at the narrowest width.
uint64_t max_useful_rank(uint64_t rows, uint64_t cols, double alpha) {
  return std::min<uint64_t>(std::min(rows, cols), (uint64_t)(budget_bit_ranks(rows, cols, alpha) / 2) + 1);
}

AllocOptions alloc_options(const CompressConfig& cfg) {
  AllocOptions a;
  a.group_size = cfg.recipe.group_size;
  a.quantizer = cfg.quantizer;
  a.act_order = cfg.act_order;
  return a;
}

}  // namespace

CompressSummary compress_model(const CompressConfig& cfg, const ProgressFn& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds_since = [](std::chrono::steady_clock::time_point a) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
  };
  DC_CHECK(cfg.recipe.alpha > 0 && cfg.recipe.alpha <= 1, DC_ERR_INVALID_ARGUMENT, "alpha %g is not in (0, 1]",
           cfg.recipe.alpha);
  auto base = SafetensorsModel::open(cfg.base_path);
  auto ft = SafetensorsModel::open(cfg.finetuned_path);
  std::unique_ptr<SafetensorsModel> calib;
  if (!cfg.calib_path.empty()) calib = SafetensorsModel::open(cfg.calib_path);

  CompressSummary summary;
  std::vector<Job> jobs;
  for (const StTensor& f : ft->tensors()) {
    const StTensor* b = base->find(f.name);
    DC_CHECK(b, DC_ERR_SHAPE_MISMATCH, "tensor '%s' of the fine-tuned model is not in the base model",
             f.name.c_str());
    DC_CHECK(b->shape == f.shape, DC_ERR_SHAPE_MISMATCH,
             "tensor '%s' has different shapes in base and fine-tuned model (resized vocabulary?)", f.name.c_str());
    DC_CHECK(is_float(f.dtype) && is_float(b->dtype), DC_ERR_UNSUPPORTED,
             "tensor '%s' is %s; only floating-point tensors can be delta-compressed", f.name.c_str(),
             f.dtype_name.c_str());
    if (b->bytes == f.bytes && std::equal(b->data, b->data + b->bytes, f.data)) {
      ++summary.unchanged;
      continue;
    }
    jobs.push_back({b, &f, is_linear_weight(f.name, f.shape, cfg.lowrank_embeddings)});
  }

  ContainerMeta meta;
  meta.tool_version = std::string("deltacome ") + dc_version_string();
  meta.model_name = cfg.model_name;
  meta.base_model_name = cfg.base_model_name;
  nlohmann::json recipe = {
      {"scheme", scheme_name(cfg.scheme)},
      {"alpha", cfg.recipe.alpha},
      {"group_size", cfg.recipe.group_size},
      {"quantizer", cfg.quantizer == Quantizer::Gptq ? "gptq" : "rtn"},
      {"allocate", cfg.allocation == Allocation::Fixed ? "fixed" : cfg.allocation == Allocation::Layer ? "optimal" : "global"},
      {"act_order", cfg.act_order},
      {"calibration", cfg.calib_path.empty() ? nlohmann::json(nullptr) : nlohmann::json(cfg.calib_path)},
      {"lowrank_embeddings", cfg.lowrank_embeddings}};
  if (cfg.scheme == Scheme::DeltaCoMe) {
    recipe["leading"] = cfg.recipe.leading;
    recipe["rest_bits"] = cfg.recipe.rest_bits;
  }
  if (cfg.scheme == Scheme::Single) recipe["bits"] = cfg.single_bits;
  meta.recipe_json = recipe.dump();
  for (const StTensor& b : base->tensors())
    meta.base_fingerprint.push_back({b.name, b.shape, b.dtype_name, xxh3_64(b.data, b.bytes)});

  ContainerWriter writer(meta, kDefaultSegmentAlignment, cfg.zstd_level);

  // Workers compress tensors in any order; the writer receives them in checkpoint order.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::optional<PackedTensor>> ready(jobs.size());
  std::vector<TensorReport> reports(jobs.size());
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  size_t finished = 0;
  const unsigned nthreads =
      std::max(1u, std::min<unsigned>(cfg.threads ? cfg.threads : std::thread::hardware_concurrency(), 64u));

  // --allocate global: one budget for all linear layers. A first pass models every layer's vectors
  // (SVD + probes; only the K×5 error table is kept), then one greedy allocation spans them all.
  std::vector<std::vector<BandDesc>> global_bands(jobs.size());
  if (cfg.allocation == Allocation::Global && cfg.scheme == Scheme::DeltaCoMe) {
    std::vector<VectorErrorModel> models;
    std::vector<size_t> owner;
    double total_bits = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (!jobs[i].linear) continue;
      const uint64_t rows = jobs[i].ft->shape[0], cols = jobs[i].ft->shape[1];
      const std::vector<float> delta = delta_of(*jobs[i].base, *jobs[i].ft);
      const std::vector<double> h = load_hessian(calib.get(), jobs[i].ft->name, cols);
      const Svd svd = svd_topk(delta.data(), rows, cols, max_useful_rank(rows, cols, cfg.recipe.alpha));
      models.push_back(model_vector_errors(jobs[i].ft->name, svd, h.empty() ? nullptr : h.data(), 0, alloc_options(cfg)));
      owner.push_back(i);
      total_bits += cfg.recipe.alpha * 16.0 * (double)rows * (double)cols;
      if (!cfg.quiet) std::fprintf(stderr, "[alloc %zu] modelled %s\n", models.size(), jobs[i].ft->name.c_str());
    }
    const auto bands = allocate_global(models, total_bits, cfg.recipe.group_size);
    for (size_t k = 0; k < owner.size(); ++k) global_bands[owner[k]] = bands[k];
  }

  auto work = [&] {
    for (;;) {
      const size_t i = next.fetch_add(1);
      if (i >= jobs.size()) return;
      {
        std::lock_guard<std::mutex> lk(mu);
        if (failure) return;
      }
      try {
        const auto ts = std::chrono::steady_clock::now();
        const Job& j = jobs[i];
        const uint64_t rows = j.ft->shape.empty() ? 1 : j.ft->shape[0];
        const uint64_t cols = j.ft->numel() / std::max<uint64_t>(rows, 1);
        std::vector<float> delta = delta_of(*j.base, *j.ft);
        PackedTensor t;
        std::vector<BandDesc> bands;
        if (j.linear && cfg.scheme != Scheme::BitDelta)
          bands = scheme_bands(cfg.scheme, rows, cols, cfg.recipe, cfg.single_bits);
        if (j.linear && cfg.scheme == Scheme::BitDelta) {
          t = compress_bitdelta(j.ft->name, delta.data(), rows, cols, dtype_of(*j.base));
        } else if (j.linear && !bands.empty()) {
          LowRankOptions o;
          o.bands = bands;
          o.quantizer = cfg.quantizer;
          o.act_order = cfg.act_order;
          o.base_dtype = dtype_of(*j.base);
          std::vector<double> h = load_hessian(calib.get(), j.ft->name, cols);
          o.hessian = h.empty() ? nullptr : h.data();
          if (cfg.allocation != Allocation::Fixed && cfg.scheme == Scheme::DeltaCoMe) {
            // Bits per singular vector chosen from the predicted output error (math/allocate.h).
            const Svd svd = svd_topk(delta.data(), rows, cols, max_useful_rank(rows, cols, cfg.recipe.alpha));
            if (cfg.allocation == Allocation::Global) {
              o.bands = global_bands[i];
            } else {
              const VectorErrorModel model = model_vector_errors(j.ft->name, svd, o.hessian, 0, alloc_options(cfg));
              o.bands = allocate_layer(model, budget_bit_ranks(rows, cols, cfg.recipe.alpha), cfg.recipe.group_size);
            }
            t = o.bands.empty() ? make_dense(j.ft->name, delta.data(), rows, cols, dtype_of(*j.base))
                                : compress_lowrank(j.ft->name, delta.data(), rows, cols, o, &svd);
          } else {
            t = compress_lowrank(j.ft->name, delta.data(), rows, cols, o);
          }
        } else {
          // Norms, biases, embeddings, and layers too small for a rank-1 budget: the delta stored
          // dense in the base's dtype (zstd then squeezes unchanged rows, e.g. unused token embeddings).
          t = make_dense(j.ft->name, delta.data(), rows, cols, dtype_of(*j.base));
        }
        TensorReport r;
        r.name = t.name;
        r.rows = rows;
        r.cols = cols;
        r.kind = t.kind;
        for (const auto& b : t.bands) r.bands.push_back(b.desc);
        r.rel_error = relative_error_sampled(t, delta.data());
        r.packed_bytes = t.packed_bytes();
        r.seconds = seconds_since(ts);
        std::lock_guard<std::mutex> lk(mu);
        reports[i] = r;
        ready[i] = std::move(t);
        cv.notify_all();
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (!failure) failure = std::current_exception();
        cv.notify_all();
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned k = 0; k < nthreads; ++k) pool.emplace_back(work);

  try {
  for (size_t i = 0; i < jobs.size(); ++i) {
    std::optional<PackedTensor> t;
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return ready[i].has_value() || failure; });
      if (failure) break;
      t = std::move(ready[i]);
      ready[i].reset();
    }
    writer.add_tensor(*t);
    summary.fp16_delta_bytes += reports[i].rows * reports[i].cols * 2;
    ++finished;
    if (progress) progress(reports[i], finished, jobs.size(), seconds_since(t0));
  }
  } catch (...) {
    std::lock_guard<std::mutex> lk(mu);
    if (!failure) failure = std::current_exception();
  }
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);

  summary.file_bytes = writer.finish(cfg.output_path);
  summary.tensors = std::move(reports);
  summary.seconds = seconds_since(t0);
  return summary;
}

}  // namespace dc
