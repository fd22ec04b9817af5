// The GPU backend against the core library's CPU backend (dc_cpu_backend_ops): the same
// dc_tensor_view is loaded into both tables, the same inputs go through apply, apply_batched and
// merge, and the outputs must agree (both also have their own float64 checks: test_gpu_backend.cu
// for the GPU, tests/unit for the CPU). Exit 77 without a GPU.
#include <algorithm>

#include "gpu_test_util.h"
#include "vendors/cuda.h"

extern "C" const dc_backend_ops* dc_backend_module_get(uint32_t abi_version, const dc_backend_host* host);

using namespace gt;

namespace {

void on_error(const char* msg) { fprintf(stderr, "backend error: %s\n", msg); }
const dc_backend_host kHost = {DC_BACKEND_ABI_VERSION, on_error};

#define CU(expr)                                                                                 \
  do {                                                                                           \
    cudaError_t e_ = (expr);                                                                     \
    if (e_ != cudaSuccess) {                                                                     \
      fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      exit(2);                                                                                   \
    }                                                                                            \
  } while (0)

struct Both {
  const dc_backend_ops *gpu, *cpu;
  void *gdev, *cdev;
};

void* to_dev(const void* h, size_t n) {
  void* p;
  CU(cudaMalloc(&p, n ? n : 4));
  if (h && n) CU(cudaMemcpy(p, h, n, cudaMemcpyHostToDevice));
  return p;
}

HostArray rnd(std::mt19937_64& rng, int dt, size_t n, float sd) {
  HostArray a(dt, n);
  std::normal_distribution<float> nd(0.f, sd);
  for (size_t i = 0; i < n; ++i) a.set(i, nd(rng));
  return a;
}

// Relative error of the GPU's y against the CPU's y (both of dtype dt).
double compare(const HostArray& g, const HostArray& c) {
  std::vector<float> gf(g.size());
  std::vector<double> cf(c.size());
  for (size_t i = 0; i < g.size(); ++i) {
    gf[i] = g.get(i);
    cf[i] = c.get(i);
  }
  return rel_err(gf, cf);
}

double tol(int dt) { return dt == DC_DTYPE_F32 ? 1e-4 : dt == DC_DTYPE_F16 ? 4e-3 : 3e-2; }

// One apply (batched when slots is non-empty) through both backends; returns the relative error.
void apply_both(Both& b, std::mt19937_64& rng, const std::vector<const HostDelta*>& hs, uint64_t m, int xdt, int ydt,
                bool base, const std::vector<int32_t>& slots, const char* name) {
  const dc_tensor_view& v0 = hs[0]->view;
  std::vector<void*> gd(hs.size()), cd(hs.size());
  for (size_t i = 0; i < hs.size(); ++i) {
    uint64_t bytes;
    GT_CHECK(b.gpu->delta_load(b.gdev, &hs[i]->view, nullptr, &gd[i], &bytes) == DC_OK, "%s: gpu load", name);
    GT_CHECK(b.cpu->delta_load(b.cdev, &hs[i]->view, nullptr, &cd[i], &bytes) == DC_OK, "%s: cpu load", name);
  }
  HostArray x = rnd(rng, xdt, m * v0.cols, 1.f), y0 = rnd(rng, ydt, m * v0.rows, 0.1f);
  HostArray w = rnd(rng, DC_DTYPE_F16, v0.rows * v0.cols, 0.02f);
  void *dx = to_dev(x.data(), x.bytes.size()), *dy = to_dev(y0.data(), y0.bytes.size());
  void* dw = to_dev(w.data(), w.bytes.size());
  dc_apply_params p{};
  p.struct_size = sizeof p;
  p.flags = base ? DC_APPLY_INCLUDE_BASE : 0;
  p.m = m;
  p.x_dtype = (dc_dtype)xdt;
  p.y_dtype = (dc_dtype)ydt;
  p.base_dtype = DC_DTYPE_F16;
  p.scale = 0.8f;
  HostArray yc = y0;
  dc_apply_params pc = p, pg = p;
  pc.x = x.data();
  pc.y = yc.data();
  pc.base_weight = w.data();
  pg.x = dx;
  pg.y = dy;
  pg.base_weight = dw;
  if (slots.empty()) {
    GT_CHECK(b.cpu->apply(b.cdev, cd[0], &pc) == DC_OK, "%s: cpu apply", name);
    GT_CHECK(b.gpu->apply(b.gdev, gd[0], &pg) == DC_OK, "%s: gpu apply", name);
  } else {
    void *gb = nullptr, *cb = nullptr;
    GT_CHECK(b.gpu->batch_create(b.gdev, gd.data(), gd.size(), &gb) == DC_OK, "%s: gpu batch", name);
    GT_CHECK(b.cpu->batch_create(b.cdev, cd.data(), cd.size(), &cb) == DC_OK, "%s: cpu batch", name);
    int32_t* dslots = static_cast<int32_t*>(to_dev(slots.data(), slots.size() * 4));
    GT_CHECK(b.cpu->apply_batched(b.cdev, cb, slots.data(), &pc) == DC_OK, "%s: cpu batched", name);
    GT_CHECK(b.gpu->apply_batched(b.gdev, gb, dslots, &pg) == DC_OK, "%s: gpu batched", name);
    CU(cudaDeviceSynchronize());
    cudaFree(dslots);
    b.gpu->batch_free(b.gdev, gb);
    b.cpu->batch_free(b.cdev, cb);
  }
  CU(cudaDeviceSynchronize());
  HostArray yg(ydt, m * v0.rows);
  CU(cudaMemcpy(yg.data(), dy, yg.bytes.size(), cudaMemcpyDeviceToHost));
  const double err = compare(yg, yc);
  GT_CHECK(err <= tol(ydt), "%s m=%llu: gpu vs cpu rel err %.3g > %.3g", name, (unsigned long long)m, err, tol(ydt));
  printf("  %-48s m=%-3llu gpu vs cpu %.2e\n", name, (unsigned long long)m, err);
  cudaFree(dx);
  cudaFree(dy);
  cudaFree(dw);
  for (size_t i = 0; i < hs.size(); ++i) {
    b.gpu->delta_free(b.gdev, gd[i]);
    b.cpu->delta_free(b.cdev, cd[i]);
  }
}

void merge_both(Both& b, std::mt19937_64& rng, const HostDelta& h, int wdt, const char* name) {
  const dc_tensor_view& v = h.view;
  void *gd, *cd;
  uint64_t bytes;
  GT_CHECK(b.gpu->delta_load(b.gdev, &v, nullptr, &gd, &bytes) == DC_OK, "%s: gpu load", name);
  GT_CHECK(b.cpu->delta_load(b.cdev, &v, nullptr, &cd, &bytes) == DC_OK, "%s: cpu load", name);
  HostArray w0 = rnd(rng, wdt, v.rows * v.cols, 0.05f), wc = w0;
  void* dw = to_dev(w0.data(), w0.bytes.size());
  GT_CHECK(b.cpu->merge(b.cdev, cd, wc.data(), (dc_dtype)wdt, v.cols, 0.7f, nullptr) == DC_OK, "%s: cpu merge", name);
  GT_CHECK(b.gpu->merge(b.gdev, gd, dw, (dc_dtype)wdt, v.cols, 0.7f, nullptr) == DC_OK, "%s: gpu merge", name);
  CU(cudaDeviceSynchronize());
  HostArray wg(wdt, v.rows * v.cols);
  CU(cudaMemcpy(wg.data(), dw, wg.bytes.size(), cudaMemcpyDeviceToHost));
  const double err = compare(wg, wc);
  // One rounding of W in each backend: allow two ulps of the dtype relative to the weights.
  const double t = wdt == DC_DTYPE_F32 ? 1e-5 : wdt == DC_DTYPE_F16 ? 2e-3 : 1.5e-2;
  GT_CHECK(err <= t, "%s: merge gpu vs cpu rel err %.3g > %.3g", name, err, t);
  printf("  merge %-42s gpu vs cpu %.2e\n", name, err);
  cudaFree(dw);
  b.gpu->delta_free(b.gdev, gd);
  b.cpu->delta_free(b.cdev, cd);
}

}  // namespace

int main() {
  const dc_backend_ops* gpu = dc_backend_module_get(DC_BACKEND_ABI_VERSION, &kHost);
  if (!gpu || gpu->device_count() == 0) {
    printf("no GPU: skipped\n");
    return 77;
  }
  const dc_backend_ops* cpu = dc_cpu_backend_ops(&kHost);
  GT_CHECK(cpu != nullptr, "no CPU backend table");
  Both b{gpu, cpu, nullptr, nullptr};
  GT_CHECK(gpu->device_open(&b.gdev, 0, 0) == DC_OK && cpu->device_open(&b.cdev, 0, 2) == DC_OK, "device_open");
  std::mt19937_64 rng(77);
  printf("[gpu vs cpu] apply\n");
  for (uint32_t bits : {2u, 3u, 4u, 8u, 16u}) {
    HostDelta h;
    make_lowrank(h, rng, 777, 1500, {{bits, 37}}, 128);
    for (uint64_t m : {1, 5, 64})
      apply_both(b, rng, {&h}, m, DC_DTYPE_F16, DC_DTYPE_F32, false, {}, ("lowrank bits " + std::to_string(bits)).c_str());
  }
  {
    HostDelta h;
    make_lowrank(h, rng, 1024, 4096, {{8, 2}, {3, 32}, {2, 200}}, 128);
    apply_both(b, rng, {&h}, 3, DC_DTYPE_BF16, DC_DTYPE_BF16, true, {}, "lowrank + base bf16");
    HostDelta s;
    make_lowrank(s, rng, 300, 500, {{4, 8}, {2, 40}}, 64, true, 0, 640);
    apply_both(b, rng, {&s}, 9, DC_DTYPE_F32, DC_DTYPE_F32, false, {}, "act-order shard");
    HostDelta bd;
    make_bitdelta(bd, rng, 500, 1000, 0.01f);
    apply_both(b, rng, {&bd}, 4, DC_DTYPE_F16, DC_DTYPE_F32, true, {}, "bitdelta + base");
    HostDelta bias, col;
    make_dense(bias, rng, 300, 1, DC_DTYPE_F16, true);
    make_dense(col, rng, 300, 1, DC_DTYPE_F16, false);
    apply_both(b, rng, {&bias}, 5, DC_DTYPE_F32, DC_DTYPE_F32, false, {}, "bias (is_vector)");
    apply_both(b, rng, {&col}, 5, DC_DTYPE_F32, DC_DTYPE_F32, false, {}, "dense 1-column shard");
  }
  printf("[gpu vs cpu] batched\n");
  {
    std::vector<HostDelta> hs(4);
    make_lowrank(hs[0], rng, 512, 2048, {{8, 2}, {3, 32}, {2, 90}}, 128);
    make_lowrank(hs[1], rng, 512, 2048, {{16, 4}, {4, 20}}, 64);
    make_bitdelta(hs[2], rng, 512, 2048, 0.005f);
    make_lowrank(hs[3], rng, 512, 2048, {{2, 50}}, 128, true, 0, 2048);
    std::vector<const HostDelta*> ptrs = {&hs[0], &hs[1], &hs[2], &hs[3]};
    for (uint64_t m : {1, 13, 40}) {
      std::vector<int32_t> slots(m);
      for (uint64_t i = 0; i < m; ++i) slots[i] = (int32_t)(rng() % 5) - 1;  // -1..3
      for (int base = 0; base < 2; ++base)
        apply_both(b, rng, ptrs, m, DC_DTYPE_F16, DC_DTYPE_F32, base, slots, base ? "batched + base" : "batched");
    }
    std::vector<int32_t> same(20, 1);  // one slot for every row: tiles of kTile rows
    apply_both(b, rng, ptrs, 20, DC_DTYPE_BF16, DC_DTYPE_F32, false, same, "batched, one slot for all rows");
  }
  printf("[gpu vs cpu] merge\n");
  {
    HostDelta h;
    make_lowrank(h, rng, 256, 700, {{8, 2}, {3, 32}, {2, 60}}, 128);
    for (int dt : {DC_DTYPE_F16, DC_DTYPE_BF16, DC_DTYPE_F32}) merge_both(b, rng, h, dt, "lowrank 256x700");
    HostDelta bd;
    make_bitdelta(bd, rng, 200, 300, 0.01f);
    merge_both(b, rng, bd, DC_DTYPE_F16, "bitdelta 200x300");
  }
  gpu->device_close(b.gdev);
  cpu->device_close(b.cdev);
  printf("%d checks, %d failures\n", checks(), failures());
  return failures() ? 1 : 0;
}
