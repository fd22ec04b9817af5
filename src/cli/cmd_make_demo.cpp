// deltacome make-demo: a small Llama-shaped base/fine-tuned pair, made on the fly. The deltas of
// the linear layers have a long-tail singular spectrum (σ_k ∝ 1/(1 + k/8)), as real fine-tunes do;
// norms and embeddings change a little, densely.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <sys/stat.h>

#include "cli/args.h"
#include "common/half.h"
#include "format/safetensors.h"

namespace dc::cli {
namespace {

struct Tensor {
  std::string name;
  uint64_t rows, cols;  // cols == 0: 1-D of length rows
  std::vector<float> base, ft;
};

std::vector<float> gaussian(uint64_t n, double stddev, std::mt19937_64& rng) {
  std::normal_distribution<double> d(0.0, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = (float)d(rng);
  return v;
}

// Base weight N(0, 1/cols) and a long-tail low-rank-dominated delta of relative size ~3%.
void linear(Tensor& t, std::mt19937_64& rng) {
  const uint64_t m = t.rows, n = t.cols, r = std::min(m, n);
  t.base = gaussian(m * n, 1.0 / std::sqrt((double)n), rng);
  const std::vector<float> u = gaussian(m * r, 1.0 / std::sqrt((double)m), rng);
  const std::vector<float> v = gaussian(n * r, 1.0 / std::sqrt((double)n), rng);
  const double total = 0.03 * std::sqrt((double)m);  // ‖ΔW‖_F ≈ 3% of ‖W‖_F
  std::vector<double> sigma(r);
  double norm = 0;
  for (uint64_t k = 0; k < r; ++k) norm += std::pow(sigma[k] = 1.0 / (1.0 + k / 8.0), 2);
  for (auto& s : sigma) s *= total / std::sqrt(norm);
  std::vector<double> row(n);
  t.ft.resize(m * n);
  for (uint64_t o = 0; o < m; ++o) {
    std::fill(row.begin(), row.end(), 0.0);
    for (uint64_t k = 0; k < r; ++k) {
      const double a = sigma[k] * u[o * r + k];
      const float* vk = &v[k * n];  // right singular vector k
      for (uint64_t c = 0; c < n; ++c) row[c] += a * vk[c];
    }
    for (uint64_t c = 0; c < n; ++c) t.ft[o * n + c] = (float)(t.base[o * n + c] + row[c]);
  }
}

void dense(Tensor& t, double mean, double stddev, double delta, std::mt19937_64& rng) {
  const uint64_t n = t.rows * std::max<uint64_t>(t.cols, 1);
  t.base = gaussian(n, stddev, rng);
  for (auto& x : t.base) x += (float)mean;
  const std::vector<float> d = gaussian(n, delta, rng);
  t.ft.resize(n);
  for (uint64_t i = 0; i < n; ++i) t.ft[i] = t.base[i] + d[i];
}

std::vector<uint16_t> to_half(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = float_to_half(v[i]);
  return h;
}

}  // namespace

int cmd_make_demo(int argc, char** argv) {
  Args a(argc, argv, 2, {},
         {"out", "layers", "hidden", "seed", "vocab"});
  const std::string dir = a.require("out");
  const uint64_t layers = (uint64_t)a.number("layers", 2), hidden = (uint64_t)a.number("hidden", 256);
  const uint64_t vocab = (uint64_t)a.number("vocab", 1000), seed = (uint64_t)a.number("seed", 1);
  DC_CHECK(layers >= 1 && layers <= 64 && hidden >= 32 && hidden <= 4096 && hidden % 32 == 0, DC_ERR_INVALID_ARGUMENT,
           "--layers must be in [1, 64] and --hidden a multiple of 32 in [32, 4096]");
  const uint64_t inter = (hidden * 43 / 16 + 31) / 32 * 32, kv = hidden / 4;  // Llama-2 ratios, GQA 4:1
  mkdir(dir.c_str(), 0755);
  std::mt19937_64 rng(seed);
  std::vector<Tensor> ts;
  ts.push_back({"model.embed_tokens.weight", vocab, hidden, {}, {}});
  dense(ts.back(), 0, 0.02, 0.0005, rng);
  for (uint64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::pair<const char*, std::pair<uint64_t, uint64_t>> lin[] = {
        {"self_attn.q_proj", {hidden, hidden}}, {"self_attn.k_proj", {kv, hidden}},
        {"self_attn.v_proj", {kv, hidden}},     {"self_attn.o_proj", {hidden, hidden}},
        {"mlp.gate_proj", {inter, hidden}},     {"mlp.up_proj", {inter, hidden}},
        {"mlp.down_proj", {hidden, inter}}};
    for (const auto& [n, shape] : lin) {
      ts.push_back({p + n + ".weight", shape.first, shape.second, {}, {}});
      linear(ts.back(), rng);
    }
    for (const char* n : {"input_layernorm", "post_attention_layernorm"}) {
      ts.push_back({p + n + ".weight", hidden, 0, {}, {}});
      dense(ts.back(), 1.0, 0.05, 0.002, rng);
    }
  }
  ts.push_back({"model.norm.weight", hidden, 0, {}, {}});
  dense(ts.back(), 1.0, 0.05, 0.002, rng);
  ts.push_back({"lm_head.weight", vocab, hidden, {}, {}});
  dense(ts.back(), 0, 0.02, 0.0005, rng);

  for (int which = 0; which < 2; ++which) {
    std::vector<std::vector<uint16_t>> halves;
    std::vector<StWriteTensor> out;
    halves.reserve(ts.size());
    for (const auto& t : ts) {
      halves.push_back(to_half(which ? t.ft : t.base));
      std::vector<uint64_t> shape = t.cols ? std::vector<uint64_t>{t.rows, t.cols} : std::vector<uint64_t>{t.rows};
      out.push_back({t.name, "F16", shape, halves.back().data(), halves.back().size() * 2});
    }
    const std::string path = dir + (which ? "/finetuned.safetensors" : "/base.safetensors");
    write_safetensors(path, out, {{"format", "pt"}, {"generator", "deltacome make-demo"}});
  }
  std::printf("wrote %s/base.safetensors and %s/finetuned.safetensors: %llu layers, hidden %llu, intermediate %llu, "
              "%zu tensors\n",
              dir.c_str(), dir.c_str(), (unsigned long long)layers, (unsigned long long)hidden,
              (unsigned long long)inter, ts.size());
  return 0;
}

}  // namespace dc::cli
