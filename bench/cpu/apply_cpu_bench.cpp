// dc_apply_delta_linear on the CPU backend (the embedded default) against two fp32 OpenBLAS paths
// of the same layer, in one process (Google Benchmark):
//   deltacome          y += x·ΔWᵀ from the packed delta: default bands at α = 1/16 (8-bit × 2,
//                      3-bit × 32, 2-bit for the rest of the budget, group 128), x and y fp32;
//   deltacome_decode   the same calls with the decode loops at every row count (the prefill path
//                      off: set_gemm_min_rows), to show what the prefill path gains;
//   dense_fp32         the same ΔW dequantized once into an fp32 matrix, y += x·ΔWᵀ by cblas_sgemm
//                      (what "dequantize, then matmul" costs per call once the dequantization is paid);
//   lowrank_fp32       the same delta's dequantized factors in fp32, t = x·V then y += t·Uᵀ (two
//                      cblas_sgemm: the fp32 low-rank form, the CPU analogue of the GPU bench's bmm).
// Every path rotates over copies of its data that together exceed 96 MB (3× this machine's 32 MiB
// L3), so each call reads its bytes from memory as a server switching between variants would. The
// CPU backend and OpenBLAS both use every core (dc_context_options.num_threads = 0; OpenBLAS's
// default). Before timing, each shape's deltacome result is checked against the float64 product
// of the same delta's dequantized factors (the benchmark exits non-zero past 1e-4 relative error).
// At the end a table gives each path's time and deltacome's speed-up over both, from this run
// (the median of the repetitions with --benchmark_repetitions=N).
// Usage: dc_bench_apply_cpu [--quick] [Google Benchmark flags]   (--quick: 4096×4096 only)
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <unistd.h>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "deltacome/deltacome.h"
#include "format/container.h"
#include "math/budget.h"
#include "common/half.h"
#include "synthetic_delta.h"

namespace {

constexpr double kRotateBytes = 96.0 * 1024 * 1024;

int copies_for(double bytes_each) { return std::max(1, (int)std::ceil(kRotateBytes / bytes_each)); }

// One loaded delta: its container image (borrowed by the container), the container and the delta.
struct Loaded {
  std::vector<uint8_t> img;
  dc_container* c = nullptr;
  dc_delta* d = nullptr;
  ~Loaded() {
    dc_delta_free(d);
    dc_container_close(c);
  }
};

dc_context* cpu_context() {
  static dc_context* ctx = [] {
    dc_context_options o;
    dc_context_options_init(&o);
    o.backend = DC_BACKEND_CPU;
    dc_context* c = nullptr;
    if (dc_context_create(&c, &o) != DC_OK) {
      std::fprintf(stderr, "apply_cpu_bench: %s\n", dc_last_error_message());
      std::exit(1);
    }
    return c;
  }();
  return ctx;
}

std::unique_ptr<Loaded> load(const dc::PackedTensor& t) {
  auto l = std::make_unique<Loaded>();
  dc::ContainerWriter w(dc::ContainerMeta{});
  w.add_tensor(t);
  l->img = w.finish_to_memory();
  dc_open_options oo;
  dc_open_options_init(&oo);
  oo.flags = DC_OPEN_BORROW_MEMORY;
  if (dc_container_open_memory(&l->c, l->img.data(), l->img.size(), &oo) != DC_OK ||
      dc_delta_load(&l->d, cpu_context(), l->c, t.name.c_str(), nullptr) != DC_OK) {
    std::fprintf(stderr, "apply_cpu_bench: %s\n", dc_last_error_message());
    std::exit(1);
  }
  return l;
}

dc_status apply(const dc_delta* d, uint64_t m, const float* x, float* y) {
  dc_apply_params p;
  dc_apply_params_init(&p);
  p.m = m;
  p.x = x;
  p.x_dtype = DC_DTYPE_F32;
  p.y = y;
  p.y_dtype = DC_DTYPE_F32;
  return dc_apply_delta_linear(d, &p);
}

// A delta's dequantized factors: ΔW = U·Vᵀ with U rows × r (σ folded in) and V cols × r, row-major.
// Each entry s·(code − z) of fp16 s and z is exact in fp32; only the σ product rounds.
struct Factors {
  std::vector<float> u, v;
};
Factors dequantize(const dc::PackedTensor& t) {
  const uint64_t r = t.rank;
  Factors f{std::vector<float>(t.rows * r), std::vector<float>(t.cols * r)};
  const auto value = [](const uint32_t* row, uint64_t i, uint32_t bits, const dc_qparam* qp, uint32_t g) {
    const uint32_t c = dc_unpack_code(row, i, bits);
    if (bits == 16) return dc::half_to_float(static_cast<uint16_t>(c));
    const dc_qparam& q = qp[i / g];
    return dc::half_to_float(q.scale) * (static_cast<float>(c) - dc::half_to_float(q.zero));
  };
  for (const dc::PackedBand& b : t.bands) {
    const dc::BandDesc& d = b.desc;
    const uint32_t br = d.rank(), g = d.group_size ? d.group_size : 1;
    const uint64_t vw = dc_row_words(t.cols, d.bits), vg = d.bits == 16 ? 0 : dc_row_groups(t.cols, g);
    const uint64_t uw = dc_row_words(br, d.bits), ug = d.bits == 16 ? 0 : dc_row_groups(br, g);
    for (uint32_t j = 0; j < br; ++j)
      for (uint64_t p = 0; p < t.cols; ++p)
        f.v[p * r + d.rank_begin + j] =
            value(b.v_codes.data() + j * vw, p, d.bits, b.v_qparams.data() + j * vg, g);
    for (uint64_t o = 0; o < t.rows; ++o)
      for (uint32_t k = 0; k < br; ++k)
        f.u[o * r + d.rank_begin + k] =
            t.sigma[d.rank_begin + k] * value(b.u_codes.data() + o * uw, k, d.bits, b.u_qparams.data() + o * ug, g);
  }
  return f;
}

// One layer shape: the rotated deltas, and (built on first use) the fp32 baselines' data.
struct Layer {
  uint64_t rows, cols, rank = 0, packed = 0;
  Factors f0;  // copy 0's dequantized factors
  std::vector<std::unique_ptr<Loaded>> deltas;
  std::vector<std::vector<float>> dense;  // rows × cols, row-major
  std::vector<Factors> factors;
};

// The delta of copy 0 applied to 4 tokens against y = (x·V)·Uᵀ of its dequantized factors in float64.
double check(const Layer& L, const dc_delta* d) {
  const uint64_t m = 4, r = L.rank;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(m * L.cols), y(m * L.rows, 0.f);
  for (auto& v : x) v = nd(rng);
  if (apply(d, m, x.data(), y.data()) != DC_OK) {
    std::fprintf(stderr, "apply_cpu_bench: %s\n", dc_last_error_message());
    std::exit(1);
  }
  double err = 0, scale = 0;
  std::vector<double> t(r);
  for (uint64_t i = 0; i < m; ++i) {
    std::fill(t.begin(), t.end(), 0.0);
    for (uint64_t p = 0; p < L.cols; ++p)
      for (uint64_t j = 0; j < r; ++j) t[j] += (double)x[i * L.cols + p] * L.f0.v[p * r + j];
    for (uint64_t o = 0; o < L.rows; ++o) {
      double want = 0;
      for (uint64_t j = 0; j < r; ++j) want += t[j] * L.f0.u[o * r + j];
      err = std::fmax(err, std::fabs(want - y[i * L.rows + o]));
      scale = std::fmax(scale, std::fabs(want));
    }
  }
  return scale > 0 ? err / scale : err;
}

Layer& layer(uint64_t rows, uint64_t cols) {
  static std::map<std::pair<uint64_t, uint64_t>, Layer> layers;
  auto [it, fresh] = layers.try_emplace({rows, cols});
  Layer& L = it->second;
  if (!fresh) return L;
  L.rows = rows;
  L.cols = cols;
  const std::vector<dc::BandDesc> bands = dc::bands_for_shape(rows, cols, dc::BandRecipe{});
  const dc::PackedTensor t0 = bench_pool::random_lowrank("layer", rows, cols, bands, rows * 31 + cols);
  L.rank = t0.rank;
  L.packed = t0.packed_bytes();
  L.f0 = dequantize(t0);
  const int n = copies_for((double)L.packed);
  L.deltas.push_back(load(t0));
  const double err = check(L, L.deltas[0]->d);
  std::fprintf(stderr, "%llux%llu: rank %llu, %.2f MB packed, %d copies; max |y - float64| / max|y| = %.1e\n",
               (unsigned long long)rows, (unsigned long long)cols, (unsigned long long)L.rank, L.packed / 1e6, n, err);
  if (!(err < 1e-4)) {
    std::fprintf(stderr, "apply_cpu_bench: the CPU backend's result is off (%.3g)\n", err);
    std::exit(1);
  }
  for (int k = 1; k < n; ++k)
    L.deltas.push_back(load(bench_pool::random_lowrank("layer", rows, cols, bands, rows * 31 + cols + k)));
  return L;
}

// Copy 0's ΔW = U·Vᵀ in fp32 (one sgemm), and rescaled copies of it: their values do not matter
// for the time, only that each is its own memory.
void dense_data(Layer& L) {
  if (!L.dense.empty()) return;
  const int n = copies_for((double)L.rows * L.cols * 4);
  for (int k = 0; k < n; ++k) {
    std::vector<float> w(L.rows * L.cols);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)L.rows, (int)L.cols, (int)L.rank, 1.f + 1e-3f * k,
                L.f0.u.data(), (int)L.rank, L.f0.v.data(), (int)L.rank, 0.f, w.data(), (int)L.cols);
    L.dense.push_back(std::move(w));
  }
}

// Copy 0's factors in fp32, and rescaled copies of them.
void factor_data(Layer& L) {
  if (!L.factors.empty()) return;
  const int n = copies_for((double)(L.rows + L.cols) * L.rank * 4);
  for (int k = 0; k < n; ++k) {
    Factors f = L.f0;
    for (float& e : f.u) e *= 1.f + 1e-3f * k;
    L.factors.push_back(std::move(f));
  }
}

std::vector<float> random_x(uint64_t m, uint64_t cols) {
  std::mt19937_64 rng(m * 1000 + cols);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(m * cols);
  for (auto& v : x) v = nd(rng);
  return x;
}

// The timed loop of both deltacome rows: one apply of the next delta copy per iteration.
void time_applies(benchmark::State& st, Layer& L) {
  const uint64_t m = st.range(2);
  const std::vector<float> x = random_x(m, L.cols);
  std::vector<float> y(m * L.rows, 0.f);
  size_t k = 0;
  for (auto _ : st) {
    if (apply(L.deltas[k]->d, m, x.data(), y.data()) != DC_OK) {
      st.SkipWithError(dc_last_error_message());
      break;
    }
    benchmark::ClobberMemory();
    k = (k + 1) % L.deltas.size();
  }
  st.counters["GB/s"] = benchmark::Counter((double)L.packed, benchmark::Counter::kIsIterationInvariantRate,
                                           benchmark::Counter::kIs1000);
}

void BM_deltacome(benchmark::State& st) { time_applies(st, layer(st.range(0), st.range(1))); }

// The same with the decode loops at every row count.
void BM_deltacome_decode(benchmark::State& st) {
  Layer& L = layer(st.range(0), st.range(1));
  const uint32_t keep = dc::cpu::gemm_min_rows();
  dc::cpu::set_gemm_min_rows(UINT32_MAX);
  time_applies(st, L);
  dc::cpu::set_gemm_min_rows(keep);
}

void BM_dense_fp32(benchmark::State& st) {
  Layer& L = layer(st.range(0), st.range(1));
  dense_data(L);
  const uint64_t m = st.range(2);
  const std::vector<float> x = random_x(m, L.cols);
  std::vector<float> y(m * L.rows, 0.f);
  size_t k = 0;
  for (auto _ : st) {
    // y[m × rows] += x[m × cols] · Wᵀ, W rows × cols row-major
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)L.rows, (int)L.cols, 1.f, x.data(),
                (int)L.cols, L.dense[k].data(), (int)L.cols, 1.f, y.data(), (int)L.rows);
    benchmark::ClobberMemory();
    k = (k + 1) % L.dense.size();
  }
  st.counters["GB/s"] = benchmark::Counter((double)L.rows * L.cols * 4, benchmark::Counter::kIsIterationInvariantRate,
                                           benchmark::Counter::kIs1000);
}

void BM_lowrank_fp32(benchmark::State& st) {
  Layer& L = layer(st.range(0), st.range(1));
  factor_data(L);
  const uint64_t m = st.range(2);
  const std::vector<float> x = random_x(m, L.cols);
  std::vector<float> t(m * L.rank), y(m * L.rows, 0.f);
  size_t k = 0;
  for (auto _ : st) {
    const std::vector<float>&u = L.factors[k].u, &v = L.factors[k].v;
    // t[m × r] = x[m × cols] · V[cols × r]; y[m × rows] += t · Uᵀ (U rows × r)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)L.rank, (int)L.cols, 1.f, x.data(),
                (int)L.cols, v.data(), (int)L.rank, 0.f, t.data(), (int)L.rank);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)L.rows, (int)L.rank, 1.f, t.data(),
                (int)L.rank, u.data(), (int)L.rank, 1.f, y.data(), (int)L.rows);
    benchmark::ClobberMemory();
    k = (k + 1) % L.factors.size();
  }
  st.counters["GB/s"] = benchmark::Counter((double)(L.rows + L.cols) * L.rank * 4,
                                           benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// The console output as usual, and each run's real time per iteration kept for the closing table:
// with --benchmark_repetitions=N the median of the N (reported after them, so it overwrites).
class TableReporter : public benchmark::ConsoleReporter {
 public:
  // colours only on a terminal (the reporter is ours, so --benchmark_color does not reach it)
  TableReporter() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_Defaults : OO_Tabular) {}
  std::map<std::string, double> us;  // "path/rows/cols/m/…" → µs
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs)
      if (!r.error_occurred && (r.run_type == Run::RT_Iteration || r.aggregate_name == "median"))
        us[r.run_name.str()] = r.GetAdjustedRealTime();  // in the benchmark's unit (µs)
  }
};

std::vector<std::tuple<int64_t, int64_t, int64_t>> g_cases;

void register_all(bool quick) {
  std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 4096}};
  if (!quick) shapes.insert(shapes.end(), {{11008, 4096}, {4096, 11008}});
  for (auto [r, c] : shapes)
    for (int64_t m : {1, 4, 8, 16, 64, 256}) g_cases.emplace_back(r, c, m);
  for (auto [name, fn] : {std::pair{"deltacome", &BM_deltacome}, std::pair{"deltacome_decode", &BM_deltacome_decode},
                          std::pair{"dense_fp32", &BM_dense_fp32}, std::pair{"lowrank_fp32", &BM_lowrank_fp32}}) {
    auto* b = benchmark::RegisterBenchmark(name, fn);
    for (auto [r, c, m] : g_cases) b->Args({r, c, m});
    b->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(0.3);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else args.push_back(argv[i]);
  }
  int n = (int)args.size();
  benchmark::Initialize(&n, args.data());
  register_all(quick);
  TableReporter rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  std::printf("\nprefill path from %u rows (gemm_min_rows); decode loops: the same calls without it\n",
              dc::cpu::gemm_min_rows());
  std::printf("| layer | m | deltacome µs | decode loops µs | dense fp32 µs | speed-up | low-rank fp32 µs | speed-up |\n"
              "|---|---|---|---|---|---|---|---|\n");
  for (auto [r, c, m] : g_cases) {
    const std::string tail = "/" + std::to_string(r) + "/" + std::to_string(c) + "/" + std::to_string(m) +
                             "/min_time:0.300/real_time";
    const auto get = [&](const char* p) {
      const auto it = rep.us.find(p + tail);
      return it == rep.us.end() ? NAN : it->second;
    };
    const double a = get("deltacome"), pa = get("deltacome_decode"), d = get("dense_fp32"), l = get("lowrank_fp32");
    if (std::isnan(a)) continue;  // filtered out
    std::printf("| %lldx%lld | %lld | %.1f | %.1f | %.1f | %.2fx | %.1f | %.2fx |\n", (long long)r, (long long)c,
                (long long)m, a, pa, d, d / a, l, l / a);
  }
  benchmark::Shutdown();
  return 0;
}
