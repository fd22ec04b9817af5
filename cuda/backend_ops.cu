// The CUDA/HIP backend module: fills dc_backend_ops (src/backends/backend.h) and exports
// dc_backend_module_get. The core library dlopens this module; nothing here links the core.
//
// Apply paths (dc_apply_delta_linear):
//   m = 1        : the persistent kernel (apply_persist_kernel.cu), one launch, with the base GEMV
//                  fused under DC_APPLY_INCLUDE_BASE; no allocation.
//   1 < m ≤ 64   : the base (cuBLAS) if asked, then, from 7 rows on (mma_min_m), the tensor-core
//                  batch kernel (apply_mma_kernel.cu) with every row in slot 0 of a one-delta table,
//                  two rows per tile decode: 34 µs at m = 16 and 77 µs at m = 64 (4096², H100; one
//                  row at a time 44 and 119 µs, the persistent kernel 71 and 243 µs); below 7 rows
//                  the persistent kernel, faster there, with each code decoded once per 4 rows where
//                  they fit (persist_rows_kernel; m = 2: 14.7 against 33.1 µs on the tensor cores,
//                  m = 5: 27.2 against 31.0; bench/RESULTS-h100.md, ninth to fourteenth sessions).
//                  Where neither runs (HIP, act-order, shard offsets, BitDelta): phase 1 (x·V̂ ⊙ σ
//                  into the device's t scratch) + phase 2 (t·Ûᵀ, with the base GEMV), two launches.
//   m > 64       : with a workspace of dc_apply_workspace_size bytes, Û and V̂ are dequantized into
//                  it and two GEMMs run (cuBLAS tensor cores, or the portable tiled GEMM on HIP);
//                  without one, the fused path runs in chunks of 64 rows (correct, slower).
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "apply_kernels.cuh"
#include "gemm_kernels.cuh"
#include "gpu_types.h"

namespace dcg {
namespace {

const dc_backend_host* g_host = nullptr;

dc_status fail(dc_status st, const char* fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (g_host && g_host->set_error) g_host->set_error(msg);
  return st;
}

dc_status gpu_fail(cudaError_t e, const char* what) {
  return fail(e == cudaErrorMemoryAllocation ? DC_ERR_OUT_OF_MEMORY : DC_ERR_BACKEND, "%s: %s (%s)",
              DC_GPU_BACKEND_NAME, what, cudaGetErrorString(e));
}

#define DC_GPU_TRY(expr, what)             \
  do {                                     \
    cudaError_t e_ = (expr);               \
    if (e_ != cudaSuccess) return gpu_fail(e_, what); \
  } while (0)

constexpr uint64_t kAlign = 256;
uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
bool env_flag(const char* name) {
  const char* v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}
// Tuning: a pair of split weights "w1,w2" (each 0..64) from `name`, if set and well-formed (true).
bool env_weights(const char* name, unsigned* w1, unsigned* w2) {
  const char* v = getenv(name);
  unsigned a = 0, b = 0;
  if (!v || sscanf(v, "%u,%u", &a, &b) != 2 || a > 64 || b > 64) return false;
  *w1 = a;
  *w2 = b;
  return true;
}

// Makes `ordinal` current on the calling thread. Hosts (Go, thread pools) move a context between OS
// threads, and the current device is per thread: every entry point that touches the device calls
// this first. cudaGetDevice is a thread-local read, so the common case costs no driver call.
cudaError_t select_device(int ordinal) {
  int cur = -1;
  if (cudaGetDevice(&cur) == cudaSuccess && cur == ordinal) return cudaSuccess;
  return cudaSetDevice(ordinal);
}

// ---- devices -----------------------------------------------------------------------------------
int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

void device_close(void* p) {
  auto* dev = static_cast<GpuDevice*>(p);
  if (!dev) return;
  select_device(dev->ordinal);
  cudaDeviceSynchronize();
  if (dev->trace) {  // diagnostics (DELTACOME_GPU_PERSIST_TRACE=1): the last persistent launch
    std::vector<unsigned long long> h(kTraceBlocks * kTraceSlots);
    cudaMemcpy(h.data(), dev->trace, h.size() * 8, cudaMemcpyDeviceToHost);
    auto at = [&](int b, int k) { return h[(size_t)b * kTraceSlots + k]; };
    unsigned long long g0 = ~0ull, g1 = 0;
    int n = 0;
    for (int b = 0; b < kTraceBlocks; ++b)
      if (at(b, 0)) { g0 = std::min(g0, at(b, 0)); g1 = std::max(g1, at(b, 0)); ++n; }
    fprintf(stderr, "persist trace: %d blocks, start skew %.2f us (globaltimer)\n", n, (g1 - g0) / 1e3);
    // DELTACOME_GPU_PERSIST_TRACE_DUMP=path: every traced block's marks, one line each — the block,
    // its start in ns after the first block's (globaltimer), then each slot's cycles since its
    // start (slots 1..23; 0 where unmarked, and for slot 6, the start clock) — for offline analysis
    if (const char* path = std::getenv("DELTACOME_GPU_PERSIST_TRACE_DUMP")) {
      if (FILE* f = std::fopen(path, "w")) {
        for (int b = 0; b < kTraceBlocks; ++b) {
          if (!at(b, 0)) continue;
          std::fprintf(f, "%d %llu", b, at(b, 0) - g0);
          for (int k = 1; k < kTraceSlots; ++k)
            std::fprintf(f, " %lld", k == 6 || !at(b, k) ? 0ll : (long long)(at(b, k) - at(b, 6)));
          std::fprintf(f, "\n");
        }
        std::fclose(f);
      } else {
        std::fprintf(stderr, "persist trace: cannot write DELTACOME_GPU_PERSIST_TRACE_DUMP=%s\n", path);
      }
    }
    auto line = [&](const char* name, std::vector<double> v) {
      std::sort(v.begin(), v.end());
      if (!v.empty())
        fprintf(stderr, "  %-32s cycles min %.0f median %.0f max %.0f\n", name, v.front(), v[v.size() / 2], v.back());
    };
    const char* names[] = {"", "prologue+pdl", "phase 1 (x staged, t written)", "barrier (+ base rows, fused)", "t staged", "phase 2 end"};
    for (int k = 1; k <= 5; ++k) {
      std::vector<double> v;
      for (int b = 0; b < kTraceBlocks; ++b)
        if (at(b, 0)) v.push_back((double)(at(b, k) - at(b, k == 1 ? 6 : k - 1)));
      line(names[k], v);
    }
    // The barrier waits for the last block, and the launch for the last block's end: phase 1's end
    // and the block's end since its start, with the slowest blocks.
    for (int k : {2, 5}) {
      std::vector<std::pair<double, int>> e;
      for (int b = 0; b < kTraceBlocks; ++b)
        if (at(b, 0)) e.push_back({(double)(at(b, k) - at(b, 6)), b});
      std::sort(e.begin(), e.end());
      if (!e.empty()) {
        fprintf(stderr, "  %s since start: p10 %.0f median %.0f p90 %.0f max %.0f; slowest blocks:",
                k == 2 ? "phase 1 end" : "block end", e[e.size() / 10].first, e[e.size() / 2].first,
                e[e.size() * 9 / 10].first, e.back().first);
        for (size_t i = e.size() > 6 ? e.size() - 6 : 0; i < e.size(); ++i) fprintf(stderr, " %d (%.0f)", e[i].second, e[i].first);
        fprintf(stderr, "\n");
      }
    }
    for (int k = 8; k < kTraceSlots; ++k) {  // extra marks (trace_mark k >= 8): cycles since the block's start
      std::vector<double> v;
      for (int b = 0; b < kTraceBlocks; ++b)
        if (at(b, 0) && at(b, k)) v.push_back((double)(at(b, k) - at(b, 6)));
      char name[32];
      snprintf(name, sizeof name, "extra mark %d (since start)", k);
      line(name, v);
    }
    cudaFree(dev->trace);
  }
  delete dev->arena;  // gives its chunks back, deltas the host did not free included
  dev->arena = nullptr;
#if defined(DC_HAVE_BLAS)
  if (dev->blas) cublasDestroy(dev->blas);
  cudaFree(dev->blas_workspace);
#endif
  cudaFree(dev->t_scratch);
  cudaFree(dev->barrier);
  cudaFree(dev->slot_zero);
  if (dev->upload_done) cudaEventDestroy(dev->upload_done);
  cudaFreeHost(dev->pinned);
  delete dev;
}

dc_status device_open(void** out, int32_t device, int32_t /*num_threads*/) {
  *out = nullptr;
  const int n = device_count();
  if (device < 0 || device >= n)
    return fail(DC_ERR_NOT_FOUND, "%s: device %d does not exist (%d visible)", DC_GPU_BACKEND_NAME, device, n);
  auto* dev = new (std::nothrow) GpuDevice();
  if (!dev) return fail(DC_ERR_OUT_OF_MEMORY, "%s: out of host memory", DC_GPU_BACKEND_NAME);
  dev->ordinal = device;
  cudaError_t e = cudaSetDevice(device);
  cudaDeviceProp prop;
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, device);
  if (e == cudaSuccess) e = cudaEventCreate(&dev->upload_done);
  if (e != cudaSuccess) {
    device_close(dev);
    return gpu_fail(e, "opening the device");
  }
  // Deltas are sub-allocated from 64 MiB chunks (device_arena.h says why). The callbacks select the
  // device themselves: the arena may grow or shrink from any entry point's thread.
  dev->arena = new (std::nothrow) DeviceArena(
      [dev](size_t bytes) -> void* {
        void* p = nullptr;
        cudaError_t ce = select_device(dev->ordinal);
        if (ce == cudaSuccess) ce = cudaMalloc(&p, bytes);
        dev->arena_error = ce;
        if (ce != cudaSuccess) {
          cudaGetLastError();  // a failed chunk is reported by delta_load, not by the next launch check
          return nullptr;
        }
        return p;
      },
      [dev](void* chunk) {
        select_device(dev->ordinal);
        cudaFree(chunk);
      });
  if (!dev->arena) {
    device_close(dev);
    return fail(DC_ERR_OUT_OF_MEMORY, "%s: out of host memory", DC_GPU_BACKEND_NAME);
  }
  // Logical warp = the hardware warp (64 on CDNA). DELTACOME_GPU_GROUP=64 forces the wave64 code
  // path on a 32-wide GPU (tests); DELTACOME_GPU_PORTABLE_GEMM=1 forces the HIP build's GEMM.
  dev->group = prop.warpSize >= 64 || env_flag("DELTACOME_GPU_GROUP_64") ? 64 : 32;
  if (const char* g = getenv("DELTACOME_GPU_GROUP")) dev->group = atoi(g) == 64 ? 64 : dev->group;
  dev->portable_gemm = env_flag("DELTACOME_GPU_PORTABLE_GEMM");
#if !defined(DC_USE_HIP)
  dev->pdl = prop.major >= 9 && !env_flag("DELTACOME_GPU_NO_PDL");
  dev->sms = prop.multiProcessorCount;
  dev->coop = !env_flag("DELTACOME_GPU_NO_COOP");
  dev->persist_multi = !env_flag("DELTACOME_GPU_TILED");
  dev->mma_batch = prop.major >= 8 && !env_flag("DELTACOME_GPU_NO_MMA");  // integer mma.sync: sm_80+
  dev->mma_multi = dev->mma_batch && !env_flag("DELTACOME_GPU_NO_MMA_MULTI");
  dev->mma_pairs = !env_flag("DELTACOME_GPU_MMA_NO_PAIRS");
  env_weights("DELTACOME_GPU_MMA_STAGE_W", &dev->mma_stage_w1, &dev->mma_stage_w2);
  if (const char* mm = getenv("DELTACOME_GPU_MMA_MIN_M")) dev->mma_min_m = (unsigned)atoi(mm);
  if (env_weights("DELTACOME_GPU_MMA_PAIR_STAGE_W", &dev->mma_pair_w1, &dev->mma_pair_w2))
    dev->mma_pair_small_m = 0;  // the weights given, at every m
  if (const char* sm = getenv("DELTACOME_GPU_MMA_PAIR_SMALL_M")) dev->mma_pair_small_m = (unsigned)atoi(sm);
  if (const char* fs = getenv("DELTACOME_GPU_FUSED_SPEC")) dev->fused_spec = (unsigned)atoi(fs);  // 1..7 delta warps
  if (const char* pb = getenv("DELTACOME_GPU_PERSIST_BLOCKS")) dev->persist_blocks = (unsigned)atoi(pb);
  if (const char* pc = getenv("DELTACOME_GPU_PERSIST_COMPACT")) dev->persist_compact = atoi(pc) != 0;
  dev->stage_codes = !env_flag("DELTACOME_GPU_PERSIST_NO_STAGE");
  dev->persist_rows = !env_flag("DELTACOME_GPU_PERSIST_NO_ROWS");
  if (const char* tc = getenv("DELTACOME_GPU_PERSIST_T_COPIES")) dev->t_copies = (unsigned)atoi(tc);
  dev->y_early = !env_flag("DELTACOME_GPU_PERSIST_Y_LATE");
  dev->p1_by_band = !env_flag("DELTACOME_GPU_PERSIST_P1_EVEN");
  dev->launch_plan = !env_flag("DELTACOME_GPU_PERSIST_NO_PLAN");
  if (const char* wp = getenv("DELTACOME_GPU_PERSIST_WPARTS")) dev->persist_wparts = (unsigned)atoi(wp);
  if (env_flag("DELTACOME_GPU_PERSIST_TRACE") && cudaMalloc(&dev->trace, kTraceBlocks * kTraceSlots * 8) == cudaSuccess)
    cudaMemset(dev->trace, 0, kTraceBlocks * kTraceSlots * 8);
  if (!env_flag("DELTACOME_GPU_NO_FUSED")) {
    e = cudaMalloc(&dev->barrier, kBarrierBytes);
    if (e == cudaSuccess) e = cudaMemset(dev->barrier, 0, kBarrierBytes);
    if (e != cudaSuccess) {
      device_close(dev);
      return gpu_fail(e, "allocating the grid-barrier counter");
    }
    e = cudaMalloc(&dev->slot_zero, kMaxTokens * sizeof(int32_t));
    if (e == cudaSuccess) e = cudaMemset(dev->slot_zero, 0, kMaxTokens * sizeof(int32_t));
    if (e != cudaSuccess) {
      device_close(dev);
      return gpu_fail(e, "allocating the slot table of single applies");
    }
    dev->fused = true;
  }
#endif
#if defined(DC_HAVE_BLAS)
  const size_t ws = 32u << 20;
  if (cublasCreate(&dev->blas) != CUBLAS_STATUS_SUCCESS) {
    dev->blas = nullptr;
    device_close(dev);
    return fail(DC_ERR_BACKEND, "cuda: cublasCreate failed on device %d", device);
  }
  e = cudaMalloc(&dev->blas_workspace, ws);
  if (e != cudaSuccess) {
    device_close(dev);
    return gpu_fail(e, "allocating the cuBLAS workspace");
  }
  cublasSetWorkspace(dev->blas, dev->blas_workspace, ws);
#endif
  *out = dev;
  return DC_OK;
}

// Grows the t scratch to `floats` (load time only: frees the old one after the device is idle).
dc_status ensure_scratch(GpuDevice* dev, uint64_t floats) {
  if (floats <= dev->t_capacity) return DC_OK;
  if (dev->t_scratch) {
    DC_GPU_TRY(cudaDeviceSynchronize(), "waiting before growing the apply scratch");
    cudaFree(dev->t_scratch);
    dev->t_scratch = nullptr;
    dev->t_capacity = 0;
  }
  DC_GPU_TRY(cudaMalloc(&dev->t_scratch, floats * sizeof(float)), "allocating the apply scratch");
  dev->t_capacity = floats;
  return DC_OK;
}

dc_status ensure_pinned(GpuDevice* dev, size_t bytes) {
  DC_GPU_TRY(cudaEventSynchronize(dev->upload_done), "waiting for the previous upload");  // staging is free again
  if (bytes <= dev->pinned_capacity) return DC_OK;
  cudaFreeHost(dev->pinned);
  dev->pinned = nullptr;
  dev->pinned_capacity = 0;
  DC_GPU_TRY(cudaMallocHost(&dev->pinned, bytes), "allocating pinned staging memory");
  dev->pinned_capacity = bytes;
  return DC_OK;
}

// ---- loading ---------------------------------------------------------------------------------------
// Lays the view's arrays out in one allocation (256-byte aligned pieces, so the kernels' 16-byte
// loads are aligned), stages them in pinned memory and uploads them with one async copy.
struct Piece {
  const void* src;
  uint64_t bytes, offset;
};

LaunchCfg launch_cfg(const GpuDevice* dev, cudaStream_t s);  // (below)

// The selection of one loaded delta alone (its plan, if the upload has made it yet).
DeltaSel single_sel(const GpuDelta* gd) {
  const DeltaDesc& d = gd->desc;
  DeltaSel sel{d, nullptr, 1, nullptr, d.kind == DC_KIND_LOWRANK ? d.t_stride : 0, d.v_len, p1_blocks_of(d)};
  sel.one_dev = gd->ddesc;
  sel.plan_dev = gd->dplan;
  sel.plan_host = gd->dplan ? gd->hplan : nullptr;
  return sel;
}

dc_status delta_load(void* devp, const dc_tensor_view* v, void* stream, void** out, uint64_t* out_bytes) {
  auto* dev = static_cast<GpuDevice*>(devp);
  *out = nullptr;
  DC_GPU_TRY(select_device(dev->ordinal), "selecting the device");
  auto* d = new (std::nothrow) GpuDelta();
  if (!d) return fail(DC_ERR_OUT_OF_MEMORY, "%s: out of host memory", DC_GPU_BACKEND_NAME);
  DeltaDesc& s = d->desc;
  s.rows = v->rows;
  s.cols = v->cols;
  s.kind = v->kind;
  s.dtype = v->dtype;
  Piece pieces[4 + 4 * DC_MAX_BANDS];
  const void** targets[4 + 4 * DC_MAX_BANDS];
  int np = 0;
  uint64_t total = 0;
  auto add = [&](const void* src, uint64_t bytes, const void** target) {
    if (!src || bytes == 0) return;
    pieces[np] = Piece{src, bytes, total};
    targets[np++] = target;
    total = align_up(total + bytes);
  };
  if (v->kind == DC_KIND_LOWRANK) {
    s.rank = v->rank;
    s.n_bands = v->n_bands;
    s.v_len = v->v_len;
    s.v_col_offset = v->v_col_offset;
    add(v->sigma, (uint64_t)v->rank * 4, reinterpret_cast<const void**>(&s.sigma));
    uint32_t t_off = 0;  // t columns: each band padded to a whole block of 32 (aligned vector reads)
    for (uint32_t b = 0; b < v->n_bands; ++b) {
      s.bands[b].t_off = t_off;
      t_off += (v->bands[b].rank_end - v->bands[b].rank_begin + 31) & ~31u;
    }
    s.t_stride = t_off;
    add(v->in_perm, v->v_len * 4, reinterpret_cast<const void**>(&s.perm));
    for (uint32_t b = 0; b < v->n_bands; ++b) {
      const dc_band_view& bv = v->bands[b];
      BandDesc& bd = s.bands[b];
      const uint64_t rb = bv.rank_end - bv.rank_begin;
      bd.bits = bv.bits;
      bd.r0 = bv.rank_begin;
      bd.r1 = bv.rank_end;
      bd.group_size = bv.bits == 16 ? 0 : bv.group_size;
      bd.v_row_words = (uint32_t)dc_row_words(v->v_len, bv.bits);
      bd.u_row_words = (uint32_t)dc_row_words(rb, bv.bits);
      bd.v_row_groups = bv.bits == 16 ? 0 : (uint32_t)dc_row_groups(v->v_len, bv.group_size);
      bd.u_row_groups = bv.bits == 16 ? 0 : (uint32_t)dc_row_groups(rb, bv.group_size);
      add(bv.v_codes, rb * bd.v_row_words * 4, reinterpret_cast<const void**>(&bd.v_codes));
      add(bv.u_codes, v->rows * bd.u_row_words * 4, reinterpret_cast<const void**>(&bd.u_codes));
      if (bv.bits != 16) {
        add(bv.v_qparams, rb * bd.v_row_groups * sizeof(dc_qparam), reinterpret_cast<const void**>(&bd.v_qp));
        add(bv.u_qparams, v->rows * bd.u_row_groups * sizeof(dc_qparam), reinterpret_cast<const void**>(&bd.u_qp));
      }
    }
  } else if (v->kind == DC_KIND_BITDELTA) {
    s.bitdelta_scale = v->bitdelta_scale;
    s.sign_row_words = (uint32_t)dc_row_words(v->cols, 1);
    add(v->signs, v->rows * s.sign_row_words * 4, reinterpret_cast<const void**>(&s.signs));
  } else {
    add(v->dense, v->rows * v->cols * dtype_size(v->dtype), &s.dense);
  }
  d->vector = v->kind == DC_KIND_DENSE && v->is_vector != 0;
  // The descriptor itself goes last, so kernels (and batches) read it from device memory; then the
  // staged m = 1 launch's plan (staged_plan), when that launch applies to this delta.
  const uint64_t desc_off = total;
  total = align_up(total + sizeof(DeltaDesc));
  const size_t plan_bytes = staged_plan_bytes();
  const uint64_t plan_off = total;
  const bool plan_room = v->kind == DC_KIND_LOWRANK && plan_bytes > 0 && plan_bytes <= kPlanBytesMax;
  if (plan_room) total = align_up(total + plan_bytes);
  size_t held = 0;  // what the delta really occupies: total, or a whole own chunk above 64 MiB
  dev->arena_error = cudaSuccess;
  d->mem = dev->arena->alloc(total, &held);
  if (!d->mem) {
    delete d;
    const cudaError_t ae = dev->arena_error;  // cudaSuccess: the host ran out, not the device
    return fail(ae == cudaSuccess || ae == cudaErrorMemoryAllocation ? DC_ERR_OUT_OF_MEMORY : DC_ERR_BACKEND,
                "%s: allocating device memory for a delta (%llu bytes): %s", DC_GPU_BACKEND_NAME,
                (unsigned long long)total, ae == cudaSuccess ? "out of host memory" : cudaGetErrorString(ae));
  }
  d->bytes = held;
  dc_status st = ensure_pinned(dev, total);
  if (st == DC_OK && v->kind == DC_KIND_LOWRANK)  // (kMmaTParts copies of t: the tensor-core batch kernel's phase 1)
    st = ensure_scratch(dev, (uint64_t)kMmaTParts * kMaxTokens * (s.t_stride ? s.t_stride : 32));
  if (st != DC_OK) {
    dev->arena->free(d->mem);
    delete d;
    return st;
  }
  for (int i = 0; i < np; ++i) {
    memcpy(static_cast<char*>(dev->pinned) + pieces[i].offset, pieces[i].src, pieces[i].bytes);
    *targets[i] = static_cast<char*>(d->mem) + pieces[i].offset;
  }
  memcpy(static_cast<char*>(dev->pinned) + desc_off, &s, sizeof(DeltaDesc));
  d->ddesc = reinterpret_cast<const DeltaDesc*>(static_cast<char*>(d->mem) + desc_off);
  const auto s_ = static_cast<cudaStream_t>(stream);
  if (plan_room && dev->launch_plan) {  // the arguments launch_persist would pass at m = 1 for a typical call
    RowsArgs r{};  // (the call's own fields, which the plan leaves out, stay zero)
    r.m = 1;
    r.rows = s.rows;
    r.cols = s.cols;
    r.x = d->mem;  // 256-byte aligned, as apply's default ldx keeps every row
    r.xdt = DC_DTYPE_F16;
    r.ldx = s.cols;
    r.ldt = s.t_stride;
    if (staged_plan(launch_cfg(dev, s_), single_sel(d), r, dev->barrier, dev->sms, d->hplan)) {
      memcpy(static_cast<char*>(dev->pinned) + plan_off, d->hplan, plan_bytes);
      d->dplan = static_cast<char*>(d->mem) + plan_off;
    }
  }
  cudaError_t e = cudaMemcpyAsync(d->mem, dev->pinned, total, cudaMemcpyHostToDevice, s_);
  if (e == cudaSuccess) e = cudaEventRecord(dev->upload_done, s_);
  if (e != cudaSuccess) {
    cudaStreamSynchronize(s_);  // the range goes back to the arena: no copy into it may be left in flight
    dev->arena->free(d->mem);
    delete d;
    return gpu_fail(e, "uploading a delta");
  }
  *out = d;
  *out_bytes = d->bytes;
  return DC_OK;
}

void delta_free(void* devp, void* p) {
  auto* dev = static_cast<GpuDevice*>(devp);
  auto* d = static_cast<GpuDelta*>(p);
  if (!d) return;
  // Unlike cudaFree, this does not synchronise: the range can go to the next delta at once. Kernels
  // reading this delta are complete (the caller's contract); its upload, if still in flight, is the
  // last one, which the next delta_load waits for (ensure_pinned) before it uploads into the range.
  select_device(dev->ordinal);
  dev->arena->free(d->mem);
  delete d;
}

// ---- GEMM (row-major C[M×N] = alpha·A·Bᵀ + beta·C) ---------------------------------------------------
// The device's launch settings (warp width, PDL, the persistent kernel's switches) for stream s.
LaunchCfg launch_cfg(const GpuDevice* dev, cudaStream_t s) {
  return LaunchCfg{dev->group, s, dev->pdl, dev->coop, dev->persist_blocks, dev->persist_compact, dev->trace,
                   dev->stage_codes, dev->persist_wparts, dev->mma_stage_w1, dev->mma_stage_w2,
                   dev->mma_pairs, dev->mma_pair_w1, dev->mma_pair_w2, dev->mma_pair_small_m, dev->fused_spec,
                   dev->persist_rows, dev->t_copies, dev->y_early, dev->p1_by_band};
}

dc_status gemm_nt(GpuDevice* dev, cudaStream_t s, uint64_t M, uint64_t N, uint64_t K, const void* A, uint64_t lda,
                  const void* B, uint64_t ldb, int abdt, void* C, int cdt, uint64_t ldc, float alpha, float beta) {
#if defined(DC_HAVE_BLAS)
  if (!dev->portable_gemm) {
    auto ty = [](int dt) { return dt == DC_DTYPE_F16 ? CUDA_R_16F : dt == DC_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F; };
    cublasSetStream(dev->blas, s);
    // Column-major view: Cᵀ[N×M] = B[N×K]·Aᵀ, i.e. op(B) = T on the K×N column-major B.
    const cublasStatus_t st =
        cublasGemmEx(dev->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, B, ty(abdt), (int)ldb, A,
                     ty(abdt), (int)lda, &beta, C, ty(cdt), (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
      return fail(DC_ERR_BACKEND, "cuda: cublasGemmEx failed (status %d, M=%llu N=%llu K=%llu)", (int)st,
                  (unsigned long long)M, (unsigned long long)N, (unsigned long long)K);
    return DC_OK;
  }
#endif
  DC_GPU_TRY(launch_gemm_nt(s, M, N, K, A, lda, B, ldb, abdt, C, cdt, ldc, alpha, beta), "tiled GEMM");
  return DC_OK;
}

// ---- apply -------------------------------------------------------------------------------------------
struct PrefillLayout {
  uint64_t vd, ud, t32, tc, y32, total;
};
PrefillLayout prefill_layout(const DeltaDesc& d, uint64_t m) {
  PrefillLayout l{};
  uint64_t at = 0;
  l.vd = at; at = align_up(at + (uint64_t)d.rank * d.cols * 4);
  l.ud = at; at = align_up(at + d.rows * d.rank * 4);
  l.t32 = at; at = align_up(at + m * d.rank * 4);
  l.tc = at; at = align_up(at + m * d.rank * 4);
  l.y32 = at; at = align_up(at + m * d.rows * 4);
  l.total = at;
  return l;
}

dc_status workspace_size(void*, const void* p, uint64_t m, uint64_t* out) {
  const auto* d = static_cast<const GpuDelta*>(p);
  *out = (d->desc.kind == DC_KIND_LOWRANK && m > (uint64_t)kMaxTokens) ? prefill_layout(d->desc, m).total : 0;
  return DC_OK;
}

dc_status apply_prefill(GpuDevice* dev, const DeltaDesc& d, const dc_apply_params* p, cudaStream_t s, uint64_t ldx,
                        uint64_t ldy, uint64_t ldb) {
  const PrefillLayout l = prefill_layout(d, p->m);
  char* ws = static_cast<char*>(p->workspace);
  const int xdt = p->x_dtype;
  const bool with_base = (p->flags & DC_APPLY_INCLUDE_BASE) != 0;
  DC_GPU_TRY(cudaMemsetAsync(ws + l.vd, 0, (uint64_t)d.rank * d.cols * dtype_size(xdt), s), "clearing workspace");
  DC_GPU_TRY(launch_dequant_v(s, d, ws + l.vd, xdt, d.cols, 1, p->scale), "dequantizing V");
  DC_GPU_TRY(launch_dequant_u(s, d, ws + l.ud, xdt, d.rank), "dequantizing U");
  auto* t32 = reinterpret_cast<float*>(ws + l.t32);
  auto* y32 = reinterpret_cast<float*>(ws + l.y32);
  dc_status st = gemm_nt(dev, s, p->m, d.rank, d.cols, p->x, ldx, ws + l.vd, d.cols, xdt, t32, DC_DTYPE_F32, d.rank,
                         1.f, 0.f);
  if (st != DC_OK) return st;
  DC_GPU_TRY(launch_store_f32(s, t32, d.rank, ws + l.tc, xdt, d.rank, p->m, d.rank, false), "converting t");
  float beta = 0.f;
  bool accumulate = true;
  if (with_base && p->base_dtype == xdt) {
    st = gemm_nt(dev, s, p->m, d.rows, d.cols, p->x, ldx, p->base_weight, ldb, xdt, y32, DC_DTYPE_F32, d.rows, 1.f, 0.f);
    if (st != DC_OK) return st;
    beta = 1.f;
    accumulate = false;
  } else if (with_base) {  // base in another dtype than x: our GEMV writes y = x·Wᵀ first
    const LaunchCfg c = launch_cfg(dev, s);
    DC_GPU_TRY(launch_gemv(c, p->base_weight, p->base_dtype, ldb, d.rows, d.cols, p->x, xdt, ldx, p->m, p->y,
                           p->y_dtype, ldy, 1.f, false),
               "base GEMV");
  }
  st = gemm_nt(dev, s, p->m, d.rows, d.rank, ws + l.tc, d.rank, ws + l.ud, d.rank, xdt, y32, DC_DTYPE_F32, d.rows, 1.f,
               beta);
  if (st != DC_OK) return st;
  DC_GPU_TRY(launch_store_f32(s, y32, d.rows, p->y, p->y_dtype, ldy, p->m, d.rows, accumulate), "writing y");
  return DC_OK;
}

// y = x·Wᵀ for the rows of `a`: cuBLAS (tensor cores) when x and W share a dtype, else the GEMV.
dc_status base_layer(GpuDevice* dev, const LaunchCfg& c, const RowsArgs& a) {
  if (a.xdt == a.wdt) return gemm_nt(dev, c.stream, a.m, a.rows, a.cols, a.x, a.ldx, a.W, a.ldw, a.xdt, a.y, a.ydt, a.ldy, 1.f, 0.f);
  DC_GPU_TRY(launch_gemv(c, a.W, a.wdt, a.ldw, a.rows, a.cols, a.x, a.xdt, a.ldx, a.m, a.y, a.ydt, a.ldy, 1.f, false),
             "base GEMV");
  return DC_OK;
}

// The same call with the base layer already in y (y += delta).
RowsArgs without_base(RowsArgs a) {
  a.W = nullptr;
  a.accumulate = true;
  return a;
}

dc_status apply(void* devp, const void* dp, const dc_apply_params* p) {
  auto* dev = static_cast<GpuDevice*>(devp);
  const auto* gd = static_cast<const GpuDelta*>(dp);
  const DeltaDesc& d = gd->desc;
  if (p->m == 0) return DC_OK;
  DC_GPU_TRY(select_device(dev->ordinal), "selecting the device");
  const auto s = static_cast<cudaStream_t>(p->stream);
  const LaunchCfg c = launch_cfg(dev, s);
  const uint64_t ldx = p->ldx ? p->ldx : d.cols, ldy = p->ldy ? p->ldy : d.rows, ldb = p->ld_base ? p->ld_base : d.cols;
  const bool with_base = (p->flags & DC_APPLY_INCLUDE_BASE) != 0;
  const size_t xes = dtype_size(p->x_dtype), yes = dtype_size(p->y_dtype);
  if (d.kind == DC_KIND_LOWRANK || d.kind == DC_KIND_BITDELTA) {
    if (d.kind == DC_KIND_LOWRANK && p->m > (uint64_t)kMaxTokens && p->workspace &&
        p->workspace_bytes >= prefill_layout(d, p->m).total)
      return apply_prefill(dev, d, p, s, ldx, ldy, ldb);
    const DeltaSel sel = single_sel(gd);
    for (uint64_t i0 = 0; i0 < p->m; i0 += kMaxTokens) {
      const uint64_t n = p->m - i0 < (uint64_t)kMaxTokens ? p->m - i0 : (uint64_t)kMaxTokens;
      const void* x = static_cast<const char*>(p->x) + i0 * ldx * xes;
      void* y = static_cast<char*>(p->y) + i0 * ldy * yes;
      RowsArgs a{};
      a.m = n;
      a.rows = d.rows;
      a.cols = d.cols;
      a.x = x;
      a.xdt = p->x_dtype;
      a.ldx = ldx;
      a.t = dev->t_scratch;
      a.ldt = d.t_stride;
      a.y = y;
      a.ydt = p->y_dtype;
      a.ldy = ldy;
      a.W = with_base ? p->base_weight : nullptr;
      a.wdt = p->base_dtype;
      a.ldw = ldb;
      a.alpha_w = 1.f;
      a.scale = p->scale;
      a.accumulate = !with_base;  // with the base, y = x·Wᵀ + delta (y's old value is not read)
      if (dev->fused && (n == 1 || dev->mma_multi || dev->persist_multi) &&
          persist_supported(sel, n > 1 ? without_base(a) : a)) {
        // One launch; with several rows the base is one GEMM first.
        if (a.W && n > 1) {
          const dc_status st = base_layer(dev, c, a);
          if (st != DC_OK) return st;
          a = without_base(a);
        }
        cudaError_t e = cudaErrorNotSupported;
        const char* what = "persistent apply kernel";
        // Several rows of one delta: the tensor-core batch kernel with every row in slot 0 of a
        // one-entry table (the delta's device descriptor). Each row still decodes the codes, but
        // from L2 after the first, at ~0.05 instructions per code instead of ~3.
        const bool mma_ok = n > 1 && dev->mma_multi;
        auto run_mma = [&] {
          const DeltaSel ms{DeltaDesc{}, gd->ddesc, 1, dev->slot_zero, d.t_stride, d.v_len, sel.max_p1_blocks, mma_items1(d)};
          what = "tensor-core apply kernel";
          return launch_persist_mma(c, ms, a, dev->barrier, dev->sms, true);
        };
        // Below mma_min_m rows (7) the persistent fp32 kernels are faster: one row after another
        // their cost grows by ~7 µs a row from 10.7 at m = 1, while the tensor-core kernel costs ~31
        // µs from m = 2 to 6 (H100, eleventh session, delta only: m = 2: 16.7 vs 33.1; 3: 25.1 vs
        // 30.9; 4: 26.7 vs 31.4; 5: 31.7 vs 30.5; 6: 34.5 vs 31.2); with one decode for up to 4
        // rows (persist_rows_kernel) 14.7, 17.5 and 19.9 µs at m = 2, 3, 4 (twelfth), and in groups
        // of 4 rows 27.4 and 29.8 at m = 5, 6 against 30.8–31.1 and 31.4–31.6, but 35.2–35.5 at
        // m = 8 against 32.6–32.7 (thirteenth). Above 4 rows only that kernel beats the
        // tensor-core one (rows_only).
        if (mma_ok && n >= dev->mma_min_m) e = run_mma();
        if (e == cudaErrorNotSupported && (n == 1 || dev->persist_multi)) {
          e = launch_persist(c, sel, a, dev->barrier, dev->sms, mma_ok);
          what = "persistent apply kernel";
        }
        if (e == cudaErrorNotSupported && mma_ok && n < dev->mma_min_m) e = run_mma();  // the persistent kernel declined
        if (e == cudaSuccess) continue;
        if (e != cudaErrorNotSupported) return gpu_fail(e, what);
      }
      if (n == 1) {  // decode without the persistent kernel: the two one-token kernels
        DC_GPU_TRY(launch_vec(c, &sel, a), "one-token apply kernels");
        continue;
      }
      if (sel.max_t_stride > 0)
        DC_GPU_TRY(launch_phase1(c, sel, x, p->x_dtype, ldx, n, dev->t_scratch, d.t_stride, p->scale), "phase-1 kernel");
      DC_GPU_TRY(launch_rows(c, &sel, a), "phase-2 kernel");
    }
    return DC_OK;
  }
  if (with_base)
    DC_GPU_TRY(launch_gemv(c, p->base_weight, p->base_dtype, ldb, d.rows, d.cols, p->x, p->x_dtype, ldx, p->m, p->y,
                           p->y_dtype, ldy, 1.f, false),
               "base GEMV");
  if (gd->vector) {  // 1-D dense (bias): dc_tensor_view.is_vector, not cols == 1 (a column shard can be 1 wide)
    DC_GPU_TRY(launch_bias(c, d, p->m, p->y, p->y_dtype, ldy, p->scale), "bias kernel");
  } else {
    DC_GPU_TRY(launch_gemv(c, d.dense, d.dtype, d.cols, d.rows, d.cols, p->x, p->x_dtype, ldx, p->m, p->y, p->y_dtype,
                           ldy, p->scale, true),
               "dense delta GEMV");
  }
  return DC_OK;
}

// ---- multi-tenant ----------------------------------------------------------------------------------
dc_status batch_create(void* devp, const void* const* deltas, uint64_t count, void** out) {
  auto* dev = static_cast<GpuDevice*>(devp);
  *out = nullptr;
  DC_GPU_TRY(select_device(dev->ordinal), "selecting the device");
  auto* b = new (std::nothrow) GpuBatch();
  DeltaDesc* host = new (std::nothrow) DeltaDesc[count ? count : 1];
  if (!b || !host) {
    delete b;
    delete[] host;
    return fail(DC_ERR_OUT_OF_MEMORY, "%s: out of host memory", DC_GPU_BACKEND_NAME);
  }
  b->count = (uint32_t)count;
  b->persist_ok = count > 0;
  for (uint64_t i = 0; i < count; ++i) {
    host[i] = static_cast<const GpuDelta*>(deltas[i])->desc;
    b->rows = host[i].rows;
    b->cols = host[i].cols;
    if (host[i].kind == DC_KIND_LOWRANK) {
      b->any_lowrank = true;
      if (host[i].v_len > b->max_v_len) b->max_v_len = host[i].v_len;
      if (host[i].t_stride > b->max_rank) b->max_rank = host[i].t_stride;
      b->max_p1_blocks = std::max(b->max_p1_blocks, p1_blocks_of(host[i]));
      b->max_mma_items1 = std::max(b->max_mma_items1, mma_items1(host[i]));
    }
    if (host[i].kind != DC_KIND_LOWRANK || host[i].perm != nullptr || host[i].v_col_offset != 0) b->persist_ok = false;
  }
  cudaError_t e = cudaMalloc(&b->table, sizeof(DeltaDesc) * (count ? count : 1));
  if (e == cudaSuccess) e = cudaMemcpy(b->table, host, sizeof(DeltaDesc) * count, cudaMemcpyHostToDevice);
  delete[] host;
  if (e != cudaSuccess) {
    cudaFree(b->table);
    delete b;
    return gpu_fail(e, "building the batch descriptor table");
  }
  *out = b;
  return DC_OK;
}

void batch_free(void* devp, void* p) {
  auto* b = static_cast<GpuBatch*>(p);
  if (!b) return;
  select_device(static_cast<GpuDevice*>(devp)->ordinal);
  cudaFree(b->table);
  delete b;
}

dc_status apply_batched(void* devp, const void* bp, const int32_t* row_slot, const dc_apply_params* p) {
  auto* dev = static_cast<GpuDevice*>(devp);
  const auto* b = static_cast<const GpuBatch*>(bp);
  if (p->m == 0) return DC_OK;
  DC_GPU_TRY(select_device(dev->ordinal), "selecting the device");
  const auto s = static_cast<cudaStream_t>(p->stream);
  const LaunchCfg c = launch_cfg(dev, s);
  const uint64_t ldx = p->ldx ? p->ldx : b->cols, ldy = p->ldy ? p->ldy : b->rows, ldb = p->ld_base ? p->ld_base : b->cols;
  if (p->flags & DC_APPLY_INCLUDE_BASE) {  // the base once for all rows, then y += each row's delta
    RowsArgs base{};
    base.m = p->m;
    base.rows = b->rows;
    base.cols = b->cols;
    base.x = p->x;
    base.xdt = p->x_dtype;
    base.ldx = ldx;
    base.y = p->y;
    base.ydt = p->y_dtype;
    base.ldy = ldy;
    base.W = p->base_weight;
    base.wdt = p->base_dtype;
    base.ldw = ldb;
    const dc_status st = base_layer(dev, c, base);
    if (st != DC_OK) return st;
  }
  const uint64_t ldt = b->max_rank ? b->max_rank : 1;
  const size_t xes = dtype_size(p->x_dtype), yes = dtype_size(p->y_dtype);
  for (uint64_t i0 = 0; i0 < p->m; i0 += kMaxTokens) {
    const uint64_t n = p->m - i0 < (uint64_t)kMaxTokens ? p->m - i0 : (uint64_t)kMaxTokens;
    const void* x = static_cast<const char*>(p->x) + i0 * ldx * xes;
    void* y = static_cast<char*>(p->y) + i0 * ldy * yes;
    const DeltaSel sel{DeltaDesc{}, b->table, b->count, row_slot + i0, b->any_lowrank ? b->max_rank : 0, b->max_v_len,
                       b->max_p1_blocks, b->max_mma_items1};
    RowsArgs a{};
    a.m = n;
    a.rows = b->rows;
    a.cols = b->cols;
    a.x = x;
    a.xdt = p->x_dtype;
    a.ldx = ldx;
    a.t = dev->t_scratch;
    a.ldt = ldt;
    a.y = y;
    a.ydt = p->y_dtype;
    a.ldy = ldy;
    a.alpha_w = 1.f;
    a.scale = p->scale;
    a.accumulate = true;
    // Each row's delta is read once per row. Decode batches have one token per tenant, where this
    // is exact; a tenant with several rows re-reads its codes (from L2).
    if (dev->fused && b->persist_ok && dev->mma_batch) {  // 2- and 3-bit bands on the tensor cores
      const cudaError_t e = launch_persist_mma(c, sel, a, dev->barrier, dev->sms);
      if (e == cudaSuccess) continue;
      if (e != cudaErrorNotSupported) return gpu_fail(e, "tensor-core batched apply kernel");
    }
    if (dev->fused && b->persist_ok) {
      const cudaError_t e = launch_persist(c, sel, a, dev->barrier, dev->sms);
      if (e == cudaSuccess) continue;
      if (e != cudaErrorNotSupported) return gpu_fail(e, "persistent batched apply kernel");
    }
    DC_GPU_TRY(launch_vec(c, &sel, a), "batched apply kernels");
  }
  return DC_OK;
}

// ---- merge -------------------------------------------------------------------------------------------
dc_status merge(void* devp, const void* dp, void* W, dc_dtype wdt, uint64_t ld, float scale, void* stream) {
  auto* dev = static_cast<GpuDevice*>(devp);
  const DeltaDesc& d = static_cast<const GpuDelta*>(dp)->desc;
  DC_GPU_TRY(select_device(dev->ordinal), "selecting the device");
  const auto s = static_cast<cudaStream_t>(stream);
  if (ld == 0) ld = d.cols;
  if (d.kind != DC_KIND_LOWRANK) {
    DC_GPU_TRY(launch_merge_elementwise(s, d, W, wdt, ld, scale), "merge kernel");
    return DC_OK;
  }
  if (d.rank == 0) return DC_OK;
  // W += Û·(scale·σ⊙V̂) as one GEMM in W's dtype; the dequantized factors live only for this call
  // (stream-ordered allocation: no device-wide synchronisation).
  const size_t es = dtype_size(wdt);
  void *ud = nullptr, *vdt = nullptr;
  DC_GPU_TRY(cudaMallocAsync(&ud, d.rows * d.rank * es, s), "allocating merge scratch");
  cudaError_t e = cudaMallocAsync(&vdt, d.cols * d.rank * es, s);
  if (e != cudaSuccess) {
    cudaFreeAsync(ud, s);
    return gpu_fail(e, "allocating merge scratch");
  }
  dc_status st = DC_OK;
  e = cudaMemsetAsync(vdt, 0, d.cols * d.rank * es, s);
  if (e == cudaSuccess) e = launch_dequant_v(s, d, vdt, wdt, 1, d.rank, scale);
  if (e == cudaSuccess) e = launch_dequant_u(s, d, ud, wdt, d.rank);
  if (e != cudaSuccess) st = gpu_fail(e, "dequantizing for merge");
  if (st == DC_OK) st = gemm_nt(dev, s, d.rows, d.cols, d.rank, ud, d.rank, vdt, d.rank, wdt, W, wdt, ld, 1.f, 1.f);
  cudaFreeAsync(vdt, s);
  cudaFreeAsync(ud, s);
  return st;
}

const dc_backend_ops kOps = {
    DC_BACKEND_ABI_VERSION, DC_GPU_BACKEND_NAME, device_count, device_open, device_close, delta_load, delta_free,
    workspace_size,         apply,               batch_create, batch_free,  apply_batched, merge,
};

}  // namespace
}  // namespace dcg

extern "C" __attribute__((visibility("default"))) const dc_backend_ops* dc_backend_module_get(
    uint32_t abi_version, const dc_backend_host* host) {
  if (abi_version != DC_BACKEND_ABI_VERSION) return nullptr;
  dcg::g_host = host;
  return &dcg::kOps;
}
