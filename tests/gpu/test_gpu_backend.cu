// GPU backend tests (CUDA build; the HIP build shares every kernel line): each case loads a random
// packed delta through the module's dc_backend_ops, runs apply / batched apply / merge on the
// device, and compares with a float64 reference computed on the host from the same packed codes.
// test_gpu_vs_cpu.cu runs the same kind of inputs through the core's CPU backend table as a second
// reference (CMake target dc_test_gpu_cpu). Usage: dc_test_gpu [--quick]   (--quick: reduced set for compute-sanitizer).
#include <algorithm>
#include <chrono>
#include <string>

#include "gpu_test_util.h"
#include "vendors/cuda.h"

extern "C" const dc_backend_ops* dc_backend_module_get(uint32_t abi_version, const dc_backend_host* host);

using namespace gt;

namespace {

void on_error(const char* msg) { fprintf(stderr, "backend error: %s\n", msg); }
const dc_backend_host kHost = {DC_BACKEND_ABI_VERSION, on_error};

#define CU(expr)                                                                                  \
  do {                                                                                            \
    cudaError_t e_ = (expr);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #expr); \
      exit(2);                                                                                    \
    }                                                                                             \
  } while (0)

struct Gpu {
  const dc_backend_ops* ops = nullptr;
  void* dev = nullptr;
  const char* label = "";
};

template <class T = void>
T* dmalloc_copy(const void* host, size_t bytes) {
  void* p = nullptr;
  CU(cudaMalloc(&p, bytes ? bytes : 4));
  if (host && bytes) CU(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice));
  return static_cast<T*>(p);
}

std::vector<BandSpec> default_bands(uint64_t rows, uint64_t cols) {
  const uint64_t budget = rows * cols / (rows + cols);  // α·16·m·n/(m+n) bits·rank at α = 1/16
  const uint64_t rest = budget > 112 ? (budget - 112) / 2 : 1;
  return {{8, 2}, {3, 32}, {2, (uint32_t)rest}};
}

double tol_for(int dt) { return dt == DC_DTYPE_F32 ? 2e-5 : dt == DC_DTYPE_F16 ? 3e-3 : 2e-2; }

HostArray random_array(std::mt19937_64& rng, int dt, size_t n, float sd) {
  HostArray a(dt, n);
  std::normal_distribution<float> nd(0.f, sd);
  for (size_t i = 0; i < n; ++i) a.set(i, nd(rng));
  return a;
}

struct ApplyOpts {
  int xdt = DC_DTYPE_F16, ydt = DC_DTYPE_F16;
  bool base = false;
  int base_dt = DC_DTYPE_F16;
  float scale = 1.f;
  bool workspace = true;
  uint64_t pad = 0;  // extra elements in ldx / ldy (strided operands)
  uint64_t base_pad = 0;  // extra elements in ld_base (a strided base weight)
};

// One apply case against the float64 reference. Returns the relative error.
double apply_case(Gpu& g, std::mt19937_64& rng, const HostDelta& h, const RefFactors* f, uint64_t m,
                  const ApplyOpts& o, const std::string& name) {
  const dc_tensor_view& v = h.view;
  void* delta = nullptr;
  uint64_t dbytes = 0;
  GT_CHECK(g.ops->delta_load(g.dev, &v, nullptr, &delta, &dbytes) == DC_OK, "%s: load", name.c_str());
  if (!delta) return NAN;
  const uint64_t ldx = v.cols + o.pad, ldy = v.rows + o.pad;
  HostArray x = random_array(rng, o.xdt, m * ldx, 1.f);
  HostArray y0 = random_array(rng, o.ydt, m * ldy, 0.1f);
  if (o.base) for (size_t i = 0; i < y0.size(); ++i) y0.set(i, NAN);  // must be overwritten
  HostArray w;
  const uint64_t ldw = v.cols + o.base_pad;
  if (o.base) w = random_array(rng, o.base_dt, v.rows * ldw, 0.02f);
  void* dx = dmalloc_copy(x.data(), x.bytes.size());
  void* dy = dmalloc_copy(y0.data(), y0.bytes.size());
  void* dw = o.base ? dmalloc_copy(w.data(), w.bytes.size()) : nullptr;
  uint64_t ws_bytes = 0;
  g.ops->workspace_size(g.dev, delta, m, &ws_bytes);
  void* dws = (o.workspace && ws_bytes) ? dmalloc_copy(nullptr, ws_bytes) : nullptr;
  dc_apply_params p{};
  p.struct_size = sizeof p;
  p.flags = o.base ? DC_APPLY_INCLUDE_BASE : 0;
  p.m = m;
  p.x = dx;
  p.x_dtype = (dc_dtype)o.xdt;
  p.ldx = ldx;
  p.y = dy;
  p.y_dtype = (dc_dtype)o.ydt;
  p.ldy = ldy;
  p.base_weight = dw;
  p.base_dtype = (dc_dtype)o.base_dt;
  p.ld_base = o.base_pad ? ldw : 0;
  p.scale = o.scale;
  p.workspace = dws;
  p.workspace_bytes = dws ? ws_bytes : 0;
  GT_CHECK(g.ops->apply(g.dev, delta, &p) == DC_OK, "%s: apply", name.c_str());
  CU(cudaDeviceSynchronize());
  HostArray y(o.ydt, m * ldy);
  CU(cudaMemcpy(y.data(), dy, y.bytes.size(), cudaMemcpyDeviceToHost));
  // Reference on the unpadded, rounded inputs.
  std::vector<float> xf(m * v.cols);
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t c = 0; c < v.cols; ++c) xf[i * v.cols + c] = x.get(i * ldx + c);
  std::vector<double> ref;
  ref_delta_apply(v, f, xf, m, ref);
  std::vector<double> full(m * v.rows);
  std::vector<float> got(m * v.rows);
  for (uint64_t i = 0; i < m; ++i)
    for (uint64_t r = 0; r < v.rows; ++r) {
      double b;
      if (o.base) {
        b = 0;
        for (uint64_t c = 0; c < v.cols; ++c) b += (double)w.get(r * ldw + c) * xf[i * v.cols + c];
      } else {
        b = y0.get(i * ldy + r);
      }
      full[i * v.rows + r] = b + o.scale * ref[i * v.rows + r];
      got[i * v.rows + r] = y.get(i * ldy + r);
    }
  // Padding between rows must be untouched.
  bool pad_ok = true;
  for (uint64_t i = 0; i < m && !o.base; ++i)
    for (uint64_t r = v.rows; r < ldy; ++r) pad_ok &= y.get(i * ldy + r) == y0.get(i * ldy + r);
  const double err = rel_err(got, full);
  const bool prefill = dws != nullptr;
  const double tol = std::max(tol_for(o.ydt), prefill ? tol_for(o.xdt) * 1.5 : 0.0);
  // Where the result cancels (a code next to its zero point in a tiny group: the tests draw codes
  // and zero points independently), fp32 rounding of the folded terms s·(Σ c·x − z·Σ x) is ~eps·the
  // terms' magnitude, not ~eps·the result. Such a case passes when ‖got − ref‖ stays within 32
  // roundings of the magnitudes (any wrong or missing code costs far more).
  bool within = err <= tol;
  double allowance = 0;
  if (!within && std::isfinite(err) && v.kind == DC_KIND_LOWRANK && !o.base) {
    const RefFactors fm = ref_factors(v, true);
    std::vector<float> xa(xf.size());
    for (size_t i = 0; i < xf.size(); ++i) xa[i] = std::fabs(xf[i]);
    std::vector<double> mag;
    ref_delta_apply(v, &fm, xa, m, mag);
    double num = 0, den = 0, mg = 0;
    for (size_t i = 0; i < full.size(); ++i) {
      const double b = std::fabs((double)y0.get((i / v.rows) * ldy + i % v.rows)) + std::fabs(o.scale) * mag[i];
      num += (got[i] - full[i]) * (got[i] - full[i]);
      den += full[i] * full[i];
      mg += b * b;
    }
    allowance = 32 * 0x1p-24 * std::sqrt(mg);
    within = std::sqrt(num) <= tol * std::sqrt(den) + allowance;
  }
  GT_CHECK(within && pad_ok, "%s: rel err %.3g > %.3g (pad ok %d)", name.c_str(), err, tol, (int)pad_ok);
  printf("  %-58s m=%-4llu err %.2e %s%s\n", name.c_str(), (unsigned long long)m, err, prefill ? "(workspace)" : "",
         allowance > 0 ? " (cancels: within 32 fp32 roundings of the terms)" : "");
  cudaFree(dx);
  cudaFree(dy);
  cudaFree(dw);
  cudaFree(dws);
  g.ops->delta_free(g.dev, delta);
  return err;
}

std::string shape_name(const char* what, uint64_t r, uint64_t c) {
  char b[96];
  snprintf(b, sizeof b, "%s %llux%llu", what, (unsigned long long)r, (unsigned long long)c);
  return b;
}

void test_widths(Gpu& g, std::mt19937_64& rng, bool quick) {
  printf("[%s] band widths, dtypes, strides\n", g.label);
  const uint32_t widths[] = {2, 3, 4, 8, 16};
  for (uint32_t bits : widths) {
    HostDelta h;
    make_lowrank(h, rng, 1000, 3000, {{bits, 40}}, 128);
    const RefFactors f = ref_factors(h.view);
    for (int dt : {DC_DTYPE_F32, DC_DTYPE_F16, DC_DTYPE_BF16}) {
      ApplyOpts o;
      o.xdt = o.ydt = dt;
      o.scale = 0.75f;
      apply_case(g, rng, h, &f, 3, o, shape_name(("bits " + std::to_string(bits) + " " + dtype_name(dt)).c_str(), 1000, 3000));
      if (quick) break;
    }
  }
  {  // mixed dtypes, strided x/y, group 64 and 32
    HostDelta h;
    make_lowrank(h, rng, 257, 1000, {{8, 3}, {4, 5}, {3, 33}, {2, 70}}, 64);
    const RefFactors f = ref_factors(h.view);
    ApplyOpts o;
    o.xdt = DC_DTYPE_BF16;
    o.ydt = DC_DTYPE_F32;
    o.pad = 9;
    apply_case(g, rng, h, &f, 16, o, "mixed bands g64, x bf16 -> y f32, strided");
    apply_case(g, rng, h, &f, 4, o, "mixed bands g64, x bf16 -> y f32, strided");
    // m = 1 with x's row not 16-byte aligned: the staged instance with x's general staging (the
    // delta-only instance is launched for aligned x only)
    apply_case(g, rng, h, &f, 1, o, "mixed bands g64, x bf16 -> y f32, strided, m=1");
    HostDelta h2;
    make_lowrank(h2, rng, 33, 100, {{16, 2}, {8, 2}, {3, 5}, {2, 9}}, 32);
    const RefFactors f2 = ref_factors(h2.view);
    o.xdt = DC_DTYPE_F32;
    o.ydt = DC_DTYPE_F16;
    apply_case(g, rng, h2, &f2, 64, o, "all widths g32, x f32 -> y f16, strided");
  }
  {  // tiny odd shape
    HostDelta h;
    make_lowrank(h, rng, 7, 5, {{8, 1}, {3, 2}, {2, 3}}, 128);
    const RefFactors f = ref_factors(h.view);
    ApplyOpts o;
    o.xdt = o.ydt = DC_DTYPE_F32;
    for (uint64_t m : {1, 2, 3, 64}) apply_case(g, rng, h, &f, m, o, "7x5 f32");
  }
}

void test_shapes(Gpu& g, std::mt19937_64& rng, bool quick) {
  printf("[%s] shapes and token counts (default budget, group 128)\n", g.label);
  struct S {
    uint64_t r, c;
    std::vector<uint64_t> ms;
  };
  // (m = 5 at 4096 columns: the rows kernel in two groups; at 11008 columns it declines and the
  // tensor-core kernel takes it)
  std::vector<S> shapes = {{4096, 4096, {1, 2, 3, 4, 5, 16, 64, 257}},
                           {11008, 4096, {1, 4, 16}},
                           {4096, 11008, {1, 2, 5, 16}},
                           {1024, 4096, {1, 3, 16, 64, 257}},
                           {1000, 3000, {1, 2, 3, 4, 6, 8, 16, 64, 257}}};
  if (quick) shapes = {{1024, 4096, {1, 2, 3, 4, 6, 8, 257}}};
  for (const S& s : shapes) {
    HostDelta h;
    make_lowrank(h, rng, s.r, s.c, default_bands(s.r, s.c), 128);
    const RefFactors f = ref_factors(h.view);
    for (uint64_t m : s.ms) {
      for (int dt : {DC_DTYPE_F16, DC_DTYPE_BF16}) {
        ApplyOpts o;
        o.xdt = o.ydt = dt;
        apply_case(g, rng, h, &f, m, o, shape_name((std::string("lowrank ") + dtype_name(dt)).c_str(), s.r, s.c));
        if (m == 257 && dt == DC_DTYPE_F16) {  // the chunked fused path without a workspace
          o.workspace = false;
          apply_case(g, rng, h, &f, m, o, shape_name("lowrank f16 no-workspace", s.r, s.c));
        }
      }
    }
  }
}

void test_base_and_kinds(Gpu& g, std::mt19937_64& rng, bool quick) {
  printf("[%s] include_base, BitDelta, dense, shards\n", g.label);
  HostDelta h;
  make_lowrank(h, rng, 1024, 4096, default_bands(1024, 4096), 128);
  const RefFactors f = ref_factors(h.view);
  for (uint64_t m : {1, 16, 257}) {
    ApplyOpts o;
    o.base = true;
    apply_case(g, rng, h, &f, m, o, "include_base lowrank 1024x4096 f16");
    if (quick) break;
    o.base_dt = DC_DTYPE_BF16;  // base dtype differs from x: separate GEMV
    o.xdt = DC_DTYPE_F32;
    o.ydt = DC_DTYPE_F32;
    apply_case(g, rng, h, &f, m, o, "include_base lowrank W bf16, x/y f32");
  }
  // The fused base at m = 1 (one kernel: delta + x·Wᵀ, the base rows streamed between the grid
  // barrier's arrive and wait): square and long rows (11008 columns), tall W in bf16, a ragged
  // 1000-row shape, and strided base weights (ld_base > cols).
  if (!quick) {
    struct F {
      uint64_t r, c, pad;
      int dt;
    };
    for (const F& s : {F{4096, 4096, 0, DC_DTYPE_F16}, F{4096, 11008, 0, DC_DTYPE_F16}, F{11008, 4096, 0, DC_DTYPE_BF16},
                       F{1000, 3000, 0, DC_DTYPE_BF16}, F{1000, 3000, 8, DC_DTYPE_F16}, F{24, 11008, 16, DC_DTYPE_F16}}) {
      HostDelta hf;
      make_lowrank(hf, rng, s.r, s.c, default_bands(s.r, s.c), 128);
      const RefFactors ff = ref_factors(hf.view);
      ApplyOpts o;
      o.base = true;
      o.xdt = o.ydt = o.base_dt = s.dt;
      o.base_pad = s.pad;
      apply_case(g, rng, hf, &ff, 1, o,
                 shape_name((std::string("include_base m=1 ") + dtype_name(s.dt) + (s.pad ? " strided W" : "")).c_str(), s.r, s.c));
    }
  }
  {
    HostDelta b;
    make_bitdelta(b, rng, 1000, 3000, 0.01f);
    for (uint64_t m : {1, 16, 257}) {
      ApplyOpts o;
      apply_case(g, rng, b, nullptr, m, o, "bitdelta 1000x3000 f16");
      o.base = true;
      o.xdt = o.ydt = o.base_dt = DC_DTYPE_BF16;
      apply_case(g, rng, b, nullptr, m, o, "bitdelta + base bf16");
      if (quick) break;
    }
  }
  for (int dt : {DC_DTYPE_F32, DC_DTYPE_F16, DC_DTYPE_BF16}) {
    HostDelta d;
    make_dense(d, rng, 300, 1000, dt);
    ApplyOpts o;
    o.xdt = o.ydt = DC_DTYPE_F32;
    o.scale = 0.5f;
    apply_case(g, rng, d, nullptr, 5, o, std::string("dense 300x1000 ") + dtype_name(dt));
    HostDelta bias;
    make_dense(bias, rng, 300, 1, dt, true);
    apply_case(g, rng, bias, nullptr, 5, o, std::string("bias 300 ") + dtype_name(dt));
    HostDelta col;  // a one-column shard of a dense matrix: cols == 1 but not a vector (a GEMV)
    make_dense(col, rng, 300, 1, dt, false);
    apply_case(g, rng, col, nullptr, 5, o, std::string("dense column shard 300x1 ") + dtype_name(dt));
    o.base = true;
    o.base_dt = DC_DTYPE_F32;
    apply_case(g, rng, bias, nullptr, 5, o, std::string("bias + base 300 ") + dtype_name(dt));
    if (quick) break;
  }
  {  // tensor-parallel shards: column offset and act-order permutation
    HostDelta s1;
    make_lowrank(s1, rng, 512, 700, {{8, 2}, {3, 32}, {2, 100}}, 128, false, 37, 37 + 700 + 20);
    const RefFactors f1 = ref_factors(s1.view);
    ApplyOpts o;
    for (uint64_t m : {1, 16, 257}) apply_case(g, rng, s1, &f1, m, o, "col shard v_col_offset=37 512x700");
    HostDelta s2;
    make_lowrank(s2, rng, 512, 700, {{8, 2}, {3, 32}, {2, 100}}, 128, true, 0, 1024);
    const RefFactors f2 = ref_factors(s2.view);
    for (uint64_t m : {1, 16, 257}) apply_case(g, rng, s2, &f2, m, o, "act-order in_perm (v_len 1024) 512x700");
  }
}

// Batched: several deltas of one shape, rows of x with mixed slots (-1 and out-of-range = none).
void test_batched(Gpu& g, std::mt19937_64& rng, bool quick, bool graph) {
  printf("[%s] multi-tenant batched apply%s\n", g.label, graph ? " (CUDA graph)" : "");
  const uint64_t rows = 1024, cols = 4096;
  std::vector<HostDelta> hs(5);
  make_lowrank(hs[0], rng, rows, cols, default_bands(rows, cols), 128);
  make_lowrank(hs[1], rng, rows, cols, {{8, 4}, {4, 16}, {2, 200}}, 128);
  make_bitdelta(hs[2], rng, rows, cols, 0.002f);
  make_lowrank(hs[3], rng, rows, cols, {{16, 8}, {3, 64}}, 64);
  make_lowrank(hs[4], rng, rows, cols, {{2, 30}}, 128, true, 0, cols);
  std::vector<RefFactors> fs(5);
  std::vector<void*> ds(5);
  for (int i = 0; i < 5; ++i) {
    if (hs[i].view.kind == DC_KIND_LOWRANK) fs[i] = ref_factors(hs[i].view);
    uint64_t b;
    GT_CHECK(g.ops->delta_load(g.dev, &hs[i].view, nullptr, &ds[i], &b) == DC_OK, "batch load %d", i);
  }
  // All five kinds (the one-token kernels serve the batch), then only the low-rank deltas without
  // act-order (the persistent one-launch kernel serves it; CUDA), with different bands and groups.
  const std::vector<std::vector<int>> comps = {{0, 1, 2, 3, 4}, {0, 1, 3}};
  for (const auto& comp : comps) {
    const int n = (int)comp.size();
    std::vector<void*> sel;
    for (int i : comp) sel.push_back(ds[i]);
    void* batch = nullptr;
    GT_CHECK(g.ops->batch_create(g.dev, sel.data(), n, &batch) == DC_OK, "batch_create");
    std::vector<uint64_t> ms = quick ? std::vector<uint64_t>{7} : std::vector<uint64_t>{1, 7, 32, 70};
    for (uint64_t m : ms) {
      for (int base = 0; base < 2; ++base) {
        std::vector<int32_t> slots(m);
        for (uint64_t i = 0; i < m; ++i) slots[i] = (int32_t)(rng() % (n + 2)) - 1;  // -1..n (n: out of range)
        if (m == 1) slots[0] = 0;
        HostArray x = random_array(rng, DC_DTYPE_F16, m * cols, 1.f);
        HostArray y0 = random_array(rng, DC_DTYPE_F32, m * rows, 0.1f);
        HostArray w = random_array(rng, DC_DTYPE_F16, rows * cols, 0.02f);
        void* dx = dmalloc_copy(x.data(), x.bytes.size());
        void* dy = dmalloc_copy(y0.data(), y0.bytes.size());
        void* dw = dmalloc_copy(w.data(), w.bytes.size());
        int32_t* dslot = dmalloc_copy<int32_t>(slots.data(), m * 4);
        dc_apply_params p{};
        p.struct_size = sizeof p;
        p.flags = base ? DC_APPLY_INCLUDE_BASE : 0;
        p.m = m;
        p.x = dx;
        p.x_dtype = DC_DTYPE_F16;
        p.y = dy;
        p.y_dtype = DC_DTYPE_F32;
        p.base_weight = dw;
        p.base_dtype = DC_DTYPE_F16;
        p.scale = 0.9f;
        cudaStream_t s;
        CU(cudaStreamCreate(&s));
        p.stream = s;
        if (graph) {
          cudaGraph_t gr;
          cudaGraphExec_t ge;
          CU(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
          GT_CHECK(g.ops->apply_batched(g.dev, batch, dslot, &p) == DC_OK, "apply_batched (capture)");
          CU(cudaStreamEndCapture(s, &gr));
          CU(cudaGraphInstantiate(&ge, gr, 0));
          CU(cudaGraphLaunch(ge, s));
          CU(cudaStreamSynchronize(s));
          cudaGraphExecDestroy(ge);
          cudaGraphDestroy(gr);
        } else {
          GT_CHECK(g.ops->apply_batched(g.dev, batch, dslot, &p) == DC_OK, "apply_batched");
        }
        CU(cudaStreamSynchronize(s));
        CU(cudaStreamDestroy(s));
        HostArray y(DC_DTYPE_F32, m * rows);
        CU(cudaMemcpy(y.data(), dy, y.bytes.size(), cudaMemcpyDeviceToHost));
        std::vector<double> full(m * rows);
        std::vector<float> got(m * rows);
        for (uint64_t i = 0; i < m; ++i) {
          std::vector<float> xf(cols);
          for (uint64_t c = 0; c < cols; ++c) xf[c] = x.get(i * cols + c);
          std::vector<double> ref(rows, 0.0);
          const int s2 = slots[i];
          if (s2 >= 0 && s2 < n) ref_delta_apply(hs[comp[s2]].view, &fs[comp[s2]], xf, 1, ref);
          for (uint64_t r = 0; r < rows; ++r) {
            double b = 0;
            if (base) for (uint64_t c = 0; c < cols; ++c) b += (double)w.get(r * cols + c) * xf[c];
            else b = y0.get(i * rows + r);
            full[i * rows + r] = b + 0.9 * ref[r];
            got[i * rows + r] = y.get(i * rows + r);
          }
        }
        const double err = rel_err(got, full);
        GT_CHECK(err < 1e-4, "batched %d slots m=%llu base=%d rel err %.3g", n, (unsigned long long)m, base, err);
        printf("  batched %d slots (%s) m=%-3llu base=%d err %.2e\n", n,
               n == 5 ? "lowrank x4 incl. act-order, bitdelta" : "lowrank x3, 2/3/4/8/16-bit", (unsigned long long)m, base,
               err);
        cudaFree(dx);
        cudaFree(dy);
        cudaFree(dw);
        cudaFree(dslot);
      }
    }
    g.ops->batch_free(g.dev, batch);
  }
  for (void* d : ds) g.ops->delta_free(g.dev, d);
}

// Batches on the tensor-core batch kernel (CUDA): odd shapes (rows not a multiple of the 16-row
// tile, cols and ranks not multiples of the 128-code chunk), 2- and 3-bit bands with groups of 128
// and 256 next to bands of other widths, x in every dtype (one row scaled by 1000: the digits'
// per-row scale), every row its own slot or none.
void test_batched_shapes(Gpu& g, std::mt19937_64& rng, bool quick) {
  printf("[%s] multi-tenant batched apply, odd shapes\n", g.label);
  struct Shape { uint64_t rows, cols; };
  for (const Shape sh : {Shape{1000, 1000}, Shape{37, 300}, Shape{1032, 4096}}) {
    std::vector<HostDelta> hs(4);
    make_lowrank(hs[0], rng, sh.rows, sh.cols, {{8, 2}, {3, 37}, {2, 101}}, 128);
    make_lowrank(hs[1], rng, sh.rows, sh.cols, {{2, 50}}, 256);
    make_lowrank(hs[2], rng, sh.rows, sh.cols, {{3, 20}, {2, 17}}, 128);
    make_lowrank(hs[3], rng, sh.rows, sh.cols, {{4, 40}, {2, 33}}, 128);
    std::vector<RefFactors> fs(hs.size());
    std::vector<void*> ds(hs.size());
    for (size_t i = 0; i < hs.size(); ++i) {
      fs[i] = ref_factors(hs[i].view);
      uint64_t b;
      GT_CHECK(g.ops->delta_load(g.dev, &hs[i].view, nullptr, &ds[i], &b) == DC_OK, "batch load %zu", i);
    }
    const int n = (int)hs.size();
    void* batch = nullptr;
    GT_CHECK(g.ops->batch_create(g.dev, ds.data(), n, &batch) == DC_OK, "batch_create");
    const std::vector<uint64_t> ms = quick ? std::vector<uint64_t>{5} : std::vector<uint64_t>{1, 5, 64};
    int k = 0;
    for (uint64_t m : ms) {
      for (int xdt : {DC_DTYPE_F16, DC_DTYPE_F32, DC_DTYPE_BF16}) {
        std::vector<int32_t> slots(m);
        for (uint64_t i = 0; i < m; ++i) slots[i] = (int32_t)((i + k) % (n + 1)) - (i % 7 == 6 ? n + 1 : 0);
        ++k;
        HostArray x = random_array(rng, xdt, m * sh.cols, 1.f);
        for (uint64_t c = 0; c < sh.cols; ++c) x.set(c, x.get(c) * 1000.f);
        HostArray y0 = random_array(rng, DC_DTYPE_F32, m * sh.rows, 0.1f);
        void* dx = dmalloc_copy(x.data(), x.bytes.size());
        void* dy = dmalloc_copy(y0.data(), y0.bytes.size());
        int32_t* dslot = dmalloc_copy<int32_t>(slots.data(), m * 4);
        dc_apply_params p{};
        p.struct_size = sizeof p;
        p.m = m;
        p.x = dx;
        p.x_dtype = (dc_dtype)xdt;
        p.y = dy;
        p.y_dtype = DC_DTYPE_F32;
        p.scale = 0.7f;
        GT_CHECK(g.ops->apply_batched(g.dev, batch, dslot, &p) == DC_OK, "apply_batched");
        CU(cudaDeviceSynchronize());
        HostArray y(DC_DTYPE_F32, m * sh.rows);
        CU(cudaMemcpy(y.data(), dy, y.bytes.size(), cudaMemcpyDeviceToHost));
        std::vector<double> full(m * sh.rows);
        std::vector<float> got(m * sh.rows);
        for (uint64_t i = 0; i < m; ++i) {
          std::vector<float> xf(sh.cols);
          for (uint64_t c = 0; c < sh.cols; ++c) xf[c] = x.get(i * sh.cols + c);
          std::vector<double> ref(sh.rows, 0.0);
          const int s2 = slots[i];
          if (s2 >= 0 && s2 < n) ref_delta_apply(hs[s2].view, &fs[s2], xf, 1, ref);
          for (uint64_t r = 0; r < sh.rows; ++r) {
            full[i * sh.rows + r] = y0.get(i * sh.rows + r) + 0.7 * ref[r];
            got[i * sh.rows + r] = y.get(i * sh.rows + r);
          }
        }
        const double err = rel_err(got, full);
        GT_CHECK(err < 1e-4, "batched %llux%llu m=%llu x %s rel err %.3g", (unsigned long long)sh.rows,
                 (unsigned long long)sh.cols, (unsigned long long)m, dtype_name(xdt), err);
        printf("  batched %llux%llu (2/3-bit g128/g256 + 4/8-bit) m=%-3llu x %-4s err %.2e\n",
               (unsigned long long)sh.rows, (unsigned long long)sh.cols, (unsigned long long)m, dtype_name(xdt), err);
        cudaFree(dx);
        cudaFree(dy);
        cudaFree(dslot);
      }
    }
    g.ops->batch_free(g.dev, batch);
    for (void* d : ds) g.ops->delta_free(g.dev, d);
  }
}

void test_graph_single(Gpu& g, std::mt19937_64& rng) {
  printf("[%s] single apply captured in a CUDA graph, replayed 3x\n", g.label);
  HostDelta h;
  make_lowrank(h, rng, 1024, 4096, default_bands(1024, 4096), 128);
  const RefFactors f = ref_factors(h.view);
  void* delta;
  uint64_t b;
  GT_CHECK(g.ops->delta_load(g.dev, &h.view, nullptr, &delta, &b) == DC_OK, "load");
  const uint64_t m = 4;
  HostArray x = random_array(rng, DC_DTYPE_F16, m * 4096, 1.f);
  HostArray y0(DC_DTYPE_F32, m * 1024);
  for (size_t i = 0; i < y0.size(); ++i) y0.set(i, 0.25f);
  void* dx = dmalloc_copy(x.data(), x.bytes.size());
  void* dy = dmalloc_copy(y0.data(), y0.bytes.size());
  cudaStream_t s;
  CU(cudaStreamCreate(&s));
  CU(cudaStreamSynchronize(nullptr));
  dc_apply_params p{};
  p.struct_size = sizeof p;
  p.m = m;
  p.x = dx;
  p.x_dtype = DC_DTYPE_F16;
  p.y = dy;
  p.y_dtype = DC_DTYPE_F32;
  p.scale = 1.f;
  p.stream = s;
  cudaGraph_t gr;
  cudaGraphExec_t ge;
  CU(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  GT_CHECK(g.ops->apply(g.dev, delta, &p) == DC_OK, "apply (capture)");
  CU(cudaStreamEndCapture(s, &gr));
  CU(cudaGraphInstantiate(&ge, gr, 0));
  for (int r = 0; r < 3; ++r) CU(cudaGraphLaunch(ge, s));
  CU(cudaStreamSynchronize(s));
  HostArray y(DC_DTYPE_F32, m * 1024);
  CU(cudaMemcpy(y.data(), dy, y.bytes.size(), cudaMemcpyDeviceToHost));
  std::vector<float> xf(m * 4096);
  for (size_t i = 0; i < xf.size(); ++i) xf[i] = x.get(i);
  std::vector<double> ref;
  ref_delta_apply(h.view, &f, xf, m, ref);
  std::vector<double> full(ref.size());
  std::vector<float> got(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    full[i] = 0.25 + 3 * ref[i];
    got[i] = y.get(i);
  }
  const double err = rel_err(got, full);
  GT_CHECK(err < 1e-4, "graph replay rel err %.3g", err);
  printf("  graph x3 err %.2e\n", err);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(gr);
  CU(cudaStreamDestroy(s));
  cudaFree(dx);
  cudaFree(dy);
  g.ops->delta_free(g.dev, delta);
}

void merge_case(Gpu& g, std::mt19937_64& rng, const HostDelta& h, const RefFactors* f, int wdt, uint64_t pad,
                const std::string& name) {
  const dc_tensor_view& v = h.view;
  void* delta;
  uint64_t b;
  GT_CHECK(g.ops->delta_load(g.dev, &v, nullptr, &delta, &b) == DC_OK, "load");
  const uint64_t ld = v.cols + pad;
  HostArray w0 = random_array(rng, wdt, v.rows * ld, 0.05f);
  void* dw = dmalloc_copy(w0.data(), w0.bytes.size());
  const float scale = 0.7f;
  GT_CHECK(g.ops->merge(g.dev, delta, dw, (dc_dtype)wdt, ld, scale, nullptr) == DC_OK, "merge");
  CU(cudaDeviceSynchronize());
  HostArray w(wdt, v.rows * ld);
  CU(cudaMemcpy(w.data(), dw, w.bytes.size(), cudaMemcpyDeviceToHost));
  // Reference ΔW row by row: the delta applied to unit vectors would be slow; build it directly.
  std::vector<double> full(v.rows * v.cols);
  std::vector<float> got(v.rows * v.cols);
  std::vector<float> e(v.cols, 0.f);
  for (uint64_t o = 0; o < v.rows; ++o)
    for (uint64_t c = 0; c < v.cols; ++c) {
      double dv = 0;
      if (v.kind == DC_KIND_LOWRANK) {
        for (uint64_t k = 0; k < f->rank; ++k) dv += f->u[o * f->rank + k] * f->vs[k * f->cols + c];
      } else if (v.kind == DC_KIND_BITDELTA) {
        dv = (dc_unpack_code(v.signs + o * dc_row_words(v.cols, 1), c, 1) ? 1.0 : -1.0) * v.bitdelta_scale;
      } else {
        dv = h.dense.get(o * v.cols + c);
      }
      full[o * v.cols + c] = w0.get(o * ld + c) + scale * dv;
      got[o * v.cols + c] = w.get(o * ld + c);
    }
  bool pad_ok = true;
  for (uint64_t o = 0; o < v.rows; ++o)
    for (uint64_t c = v.cols; c < ld; ++c) pad_ok &= w.get(o * ld + c) == w0.get(o * ld + c);
  const double err = rel_err(got, full);
  const double tol = wdt == DC_DTYPE_F32 ? 1e-5 : wdt == DC_DTYPE_F16 ? 2e-3 : 1.5e-2;
  GT_CHECK(err <= tol && pad_ok, "%s: merge rel err %.3g > %.3g (pad ok %d)", name.c_str(), err, tol, (int)pad_ok);
  printf("  merge %-40s W %-4s err %.2e\n", name.c_str(), dtype_name(wdt), err);
  cudaFree(dw);
  g.ops->delta_free(g.dev, delta);
}

void test_merge(Gpu& g, std::mt19937_64& rng, bool quick) {
  printf("[%s] merge W += scale*dW\n", g.label);
  HostDelta h;
  make_lowrank(h, rng, 512, 1000, {{8, 2}, {3, 32}, {2, 150}}, 128);
  const RefFactors f = ref_factors(h.view);
  for (int dt : {DC_DTYPE_F16, DC_DTYPE_BF16, DC_DTYPE_F32}) {
    merge_case(g, rng, h, &f, dt, 3, "lowrank 512x1000");
    if (quick) break;
  }
  HostDelta p;
  make_lowrank(p, rng, 200, 300, {{4, 10}, {2, 40}}, 64, true, 0, 384);
  const RefFactors fp = ref_factors(p.view);
  merge_case(g, rng, p, &fp, DC_DTYPE_F32, 0, "lowrank act-order 200x300");
  HostDelta b;
  make_bitdelta(b, rng, 300, 1000, 0.01f);
  merge_case(g, rng, b, nullptr, DC_DTYPE_F16, 0, "bitdelta 300x1000");
  HostDelta d;
  make_dense(d, rng, 300, 100, DC_DTYPE_BF16);
  merge_case(g, rng, d, nullptr, DC_DTYPE_F32, 0, "dense bf16 300x100");
}

void test_memory(Gpu& g, std::mt19937_64& rng) {
  printf("[%s] device memory released after free\n", g.label);
  size_t free0, free1, free2, total;
  CU(cudaDeviceSynchronize());
  CU(cudaMemGetInfo(&free0, &total));
  std::vector<HostDelta> hs(8);
  std::vector<void*> ds(8);
  uint64_t sum = 0;
  for (int i = 0; i < 8; ++i) {
    make_lowrank(hs[i], rng, 4096, 4096, default_bands(4096, 4096), 128);
    uint64_t b = 0;
    GT_CHECK(g.ops->delta_load(g.dev, &hs[i].view, nullptr, &ds[i], &b) == DC_OK, "load");
    sum += b;
  }
  CU(cudaDeviceSynchronize());
  CU(cudaMemGetInfo(&free1, &total));
  for (void* d : ds) g.ops->delta_free(g.dev, d);
  CU(cudaDeviceSynchronize());
  CU(cudaMemGetInfo(&free2, &total));
  printf("  8 deltas 4096x4096: reported %.2f MiB, free dropped %.2f MiB, after free %+.2f MiB\n", sum / 1048576.0,
         ((double)free0 - (double)free1) / 1048576.0, ((double)free2 - (double)free0) / 1048576.0);
  GT_CHECK(sum / 8 < 3u * 1024 * 1024, "4096x4096 delta takes %.2f MiB on the device", sum / 8 / 1048576.0);
  GT_CHECK(free2 + (4u << 20) >= free0, "memory not released: %zu -> %zu", free0, free2);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
  const dc_backend_ops* ops = dc_backend_module_get(DC_BACKEND_ABI_VERSION, &kHost);
  if (!ops || ops->device_count() == 0) {
    printf("no GPU: skipped\n");
    return 77;
  }
  GT_CHECK(dc_backend_module_get(DC_BACKEND_ABI_VERSION + 1, &kHost) == nullptr, "wrong ABI accepted");
  cudaDeviceProp prop;
  CU(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s (warp %d)\n", prop.name, prop.warpSize);
  std::mt19937_64 rng(20240611);
  const auto t0 = std::chrono::steady_clock::now();
  {
    Gpu g{ops, nullptr, "native warp"};
    GT_CHECK(ops->device_open(&g.dev, 0, 0) == DC_OK, "device_open");
    test_widths(g, rng, quick);
    test_shapes(g, rng, quick);
    test_base_and_kinds(g, rng, quick);
    test_batched(g, rng, quick, false);
    test_batched(g, rng, true, true);
    test_batched_shapes(g, rng, quick);
    test_graph_single(g, rng);
    test_merge(g, rng, quick);
    if (!quick) test_memory(g, rng);
    ops->device_close(g.dev);
  }
  // Device configurations besides the default: each opens the device under its settings, which are
  // unset afterwards.
  using Env = std::vector<std::pair<const char*, const char*>>;
  auto configuration = [&](const Env& env, const std::string& label, auto&& body) {
    for (const auto& e : env) setenv(e.first, e.second, 1);
    Gpu g{ops, nullptr, label.c_str()};
    GT_CHECK(ops->device_open(&g.dev, 0, 0) == DC_OK, "device_open (%s)", label.c_str());
    if (g.dev) {
      body(g);
      ops->device_close(g.dev);
    }
    for (const auto& e : env) unsetenv(e.first);
  };
  // one delta at 1 < m ≤ 64 on the persistent kernel (by default the tensor-core kernel serves it)
  configuration({{"DELTACOME_GPU_NO_MMA_MULTI", "1"}}, "persistent kernel for m > 1", [&](Gpu& g) {
    test_widths(g, rng, true);
    test_base_and_kinds(g, rng, true);
  });
  // one delta at 2–6 rows one row after another (by default each code is decoded once per 4 rows)
  configuration({{"DELTACOME_GPU_PERSIST_NO_ROWS", "1"}}, "persistent kernel, rows one by one", [&](Gpu& g) {
    test_widths(g, rng, true);
    test_shapes(g, rng, true);
  });
  // one delta at 5–8 rows on the rows kernel too, in groups of 4 (by default the tensor-core kernel)
  configuration({{"DELTACOME_GPU_MMA_MIN_M", "9"}}, "rows kernel up to 8 rows", [&](Gpu& g) {
    test_widths(g, rng, true);
    test_shapes(g, rng, true);
  });
  // one delta at every 1 < m ≤ 64 on the tensor-core kernel (by default m < 7 stays on the persistent one)
  configuration({{"DELTACOME_GPU_MMA_MIN_M", "2"}}, "tensor-core kernel from m = 2", [&](Gpu& g) {
    test_widths(g, rng, true);
    test_shapes(g, rng, true);
    test_base_and_kinds(g, rng, true);
  });
  // one delta at 1 < m ≤ 64 on the tensor-core kernel one row at a time (by default two rows share each tile)
  configuration({{"DELTACOME_GPU_MMA_NO_PAIRS", "1"}, {"DELTACOME_GPU_MMA_MIN_M", "2"}},
                "tensor-core kernel, rows unpaired", [&](Gpu& g) { test_widths(g, rng, true); });
  // the staged m = 1 kernel with t in 1 copy and y's old values read at the end (defaults: 4 copies,
  // early), on the full grid (a grid knob above occupancy × SMs; by default a delta-only m = 1 launch
  // with PDL takes one block per SM)
  configuration({{"DELTACOME_GPU_PERSIST_T_COPIES", "1"}, {"DELTACOME_GPU_PERSIST_Y_LATE", "1"},
                 {"DELTACOME_GPU_PERSIST_BLOCKS", "100000"}},
                "m = 1 on the full grid, one copy of t, y read late", [&](Gpu& g) {
                  test_widths(g, rng, true);
                  test_shapes(g, rng, true);
                  test_base_and_kinds(g, rng, true);
                  test_graph_single(g, rng);
                });
  // a lone delta at m = 1 with phase 1 cut into equal counts of t's columns (by default by band,
  // each band's padding zeroed by its last block)
  configuration({{"DELTACOME_GPU_PERSIST_P1_EVEN", "1"}}, "m = 1, phase 1 in equal counts", [&](Gpu& g) {
    test_widths(g, rng, true);
    test_shapes(g, rng, true);
  });
  // a lone delta at m = 1 without its upload's plan: the staged delta-only instance with all of its
  // arguments (by default persist_slim_kernel, 56 bytes of them and the rest from the plan)
  configuration({{"DELTACOME_GPU_PERSIST_NO_PLAN", "1"}}, "m = 1 without the launch plan", [&](Gpu& g) {
    test_widths(g, rng, true);
    test_shapes(g, rng, true);
    test_graph_single(g, rng);
  });
  // the fused m = 1 call: by default warp-specialized with 4 delta warps; also with 2, and with
  // every warp running both parts (DELTACOME_GPU_FUSED_SPEC=0)
  for (const char* spec : {"0", "2"})
    configuration({{"DELTACOME_GPU_FUSED_SPEC", spec}},
                  std::string("fused m = 1, ") + (spec[0] == '0' ? "unspecialized" : "2 delta warps"),
                  [&](Gpu& g) { test_base_and_kinds(g, rng, false); });  // (not quick: its fused m = 1 shapes)
  // the wave64 code path (logical groups of 64 = two NVIDIA warps) and the portable GEMM
  configuration({{"DELTACOME_GPU_GROUP", "64"}, {"DELTACOME_GPU_PORTABLE_GEMM", "1"}}, "group 64 + portable GEMM",
                [&](Gpu& g) {
                  test_widths(g, rng, true);
                  test_base_and_kinds(g, rng, quick);
                  test_batched(g, rng, true, false);
                  test_merge(g, rng, quick);
                });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("%d checks, %d failures (%.1f s)\n", checks(), failures(), secs);
  return failures() ? 1 : 0;
}
