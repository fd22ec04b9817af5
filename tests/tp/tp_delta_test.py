#!/usr/bin/env python3
"""Tensor-parallel delta test: every rank loads its shard of each layer's delta (deltacome through
ctypes, dc_load_options.shard), applies it next to its slice of the base layer (the base matmul in
torch, as an engine would), and completes the layer with the collective the engine already has:

  column-parallel (q, k, v, gate, up): shard = output rows [b, e)  ->  all-gather the slices
  row-parallel    (o, down)          : shard = input cols  [b, e)  ->  all-reduce the partial sums,
                                       then the bias (and its delta) once, after the all-reduce

The result must match the single-GPU unsharded apply, for every container (band width) made by
make_containers.py. Each rank also merges its shard into its slice of the base weight and checks it
against the slice of the whole merge. Prints per-rank device bytes, and the time of one TP step
(base slice + delta shard + collective) next to the base layer's own TP step and the unsharded layer.

Modes:
  --mode procs  : one process per rank (torch.multiprocessing), NCCL when every rank has its own GPU,
                  else gloo (ranks sharing GPU 0, or the CPU backend with host tensors);
  --mode single : all shards in one process on one device; the collectives are done in place
                  (concatenate / sum), which is what a one-GPU machine can check.

usage: tp_delta_test.py --containers DIR [--backend cuda|cpu] [--world N] [--mode procs|single]
"""
import argparse
import json
import os
import socket
import sys
import time
import zlib

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dc_ctypes as dc  # noqa: E402

TORCH_TO_DC = {torch.float32: dc.DC_DTYPE_F32, torch.float16: dc.DC_DTYPE_F16, torch.bfloat16: dc.DC_DTYPE_BF16}


# ------------------------------------------------------------------------------------------------
# Problem data: identical on every rank (seeded on the CPU, then moved)
# ------------------------------------------------------------------------------------------------
def base_weight(name, rows, cols, device, dtype):
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))  # the same in every process
    return (torch.randn(rows, cols, generator=g) / cols ** 0.5).to(device=device, dtype=dtype)


def base_bias(rows, device, dtype):
    g = torch.Generator().manual_seed(77)
    return (0.02 * torch.randn(rows, generator=g)).to(device=device, dtype=dtype)


def activations(m, cols, device, dtype, seed=5):
    g = torch.Generator().manual_seed(seed + cols)
    return torch.randn(m, cols, generator=g).to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# The engine side: one rank's part of a layer
# ------------------------------------------------------------------------------------------------
class Rank:
    def __init__(self, lib, backend, device, stream_fn):
        self.lib = lib
        self.device = device
        self.ctx = dc.Context(lib, backend, device=device.index if device.type == "cuda" else 0)
        self.stream_fn = stream_fn
        self.workspaces = {}

    def workspace(self, delta, m):
        n = delta.workspace_size(m)
        if n == 0:
            return None, 0
        buf = self.workspaces.get(n)
        if buf is None:
            buf = self.workspaces[n] = torch.empty(n, dtype=torch.uint8, device=self.device)
        return buf.data_ptr(), n

    def apply(self, delta, x, y, x_col0=0):
        """y += x[:, x_col0 : x_col0 + delta's shard width]·ΔW_shardᵀ, x read in place (ldx = x's stride)."""
        m = x.shape[0]
        ws, wsb = self.workspace(delta, m)
        delta.apply(m, x.data_ptr() + x_col0 * x.element_size(), TORCH_TO_DC[x.dtype], x.stride(0),
                    y.data_ptr(), TORCH_TO_DC[y.dtype], y.stride(0), stream=self.stream_fn(), workspace=ws,
                    workspace_bytes=wsb)

    def layer_shard(self, delta, style, x, w, with_delta=True):
        """This rank's local output before the collective: column-parallel y[:, b:e] of the layer,
        row-parallel the partial sum over inputs [b, e)."""
        b, e = delta.begin, delta.end
        if style == "column":
            y = x @ w[b:e].T
            if with_delta:
                self.apply(delta, x, y)
        else:
            y = x[:, b:e] @ w[:, b:e].T
            if with_delta:
                self.apply(delta, x, y, x_col0=b)
        return y


def shard_split(style):
    return dc.DC_SHARD_ROWS if style == "column" else dc.DC_SHARD_COLS


# ------------------------------------------------------------------------------------------------
# Collectives: torch.distributed (procs) or in place (single)
# ------------------------------------------------------------------------------------------------
class DistComm:
    def __init__(self, rank, world, backend):
        self.rank, self.world, self.backend = rank, world, backend

    def _host_if_gloo(self, t):
        return t.cpu() if self.backend == "gloo" and t.is_cuda else t

    def all_reduce(self, t):
        h = self._host_if_gloo(t)
        dist.all_reduce(h)
        if h is not t:
            t.copy_(h)
        return t

    def all_gather_rows(self, y, begins_ends, total):
        """y: this rank's [m × n_r] output columns; returns the [m × total] concatenation. Shards
        are ceil-divided (the last may be shorter): pad to the chunk, gather, trim."""
        chunk = max(e - b for b, e in begins_ends)
        pad = torch.zeros(y.shape[0], chunk, dtype=y.dtype, device=y.device)
        pad[:, : y.shape[1]] = y
        h = self._host_if_gloo(pad.contiguous())
        parts = [torch.empty_like(h) for _ in range(self.world)]
        dist.all_gather(parts, h)
        out = torch.cat([p[:, : e - b] for p, (b, e) in zip(parts, begins_ends)], dim=1)
        return out.to(y.device)

    def barrier(self):
        dist.barrier()


def shard_ranges(dim, world):
    chunk = (dim + world - 1) // world
    return [(min(dim, r * chunk), min(dim, (r + 1) * chunk)) for r in range(world)]


# ------------------------------------------------------------------------------------------------
# One rank's whole test (procs mode) / all ranks in one process (single mode)
# ------------------------------------------------------------------------------------------------
def scale_of(x, w):
    """max_i,o Σ_c |x_ic|·|w_oc|: what an fp32 dot product of this layer is rounded against."""
    return float((x.abs().double() @ w.abs().double().T).max())


def check_layer(rk, cont, name, rows, cols, style, bias_name, x, shard_ids, world, collect, report):
    """shard_ids: the shards this process computes (procs: [rank]; single: all). `collect` turns the
    list of local outputs into the layer output (gather or reduce). Appends results to `report`."""
    dev = rk.device
    w = base_weight(name, rows, cols, dev, torch.float32)
    whole = dc.Delta(rk.ctx, cont, name + ".weight", stream=rk.stream_fn())
    # Single-GPU unsharded result, and the merged weight (whose |·| sets the tolerance scale).
    y_ref = x @ w.T
    rk.apply(whole, x, y_ref)
    w_merged = w.clone()
    whole.merge(w_merged.data_ptr(), dc.DC_DTYPE_F32, 0, stream=rk.stream_fn())
    y_ref_delta = torch.zeros(x.shape[0], rows, device=dev)
    rk.apply(whole, x, y_ref_delta)
    dw = w_merged - w
    bias = None
    if bias_name and cont.has(bias_name):
        assert style == "row", "this test only gives row-parallel layers a bias"
        bias_delta = dc.Delta(rk.ctx, cont, bias_name, stream=rk.stream_fn())  # not split: see below
        bias = base_bias(rows, dev, torch.float32)
        rk.apply(bias_delta, x[:1], bias.view(1, -1))  # bias + Δbias (a 1-D delta adds to every row of y)
        y_ref += bias
    split = shard_split(style)
    shards = [dc.Delta(rk.ctx, cont, name + ".weight", split, s, world, stream=rk.stream_fn()) for s in shard_ids]
    ranges = shard_ranges(rows if style == "column" else cols, world)
    for d, s in zip(shards, shard_ids):
        assert (d.begin, d.end) == ranges[s], ((d.begin, d.end), ranges[s])

    y_tp = collect([rk.layer_shard(d, style, x, w) for d in shards], ranges, rows, style)
    if style == "row" and bias is not None:
        y_tp += bias  # once, after the all-reduce (or on one rank before it)
    y_tp_delta = collect([rk.layer_shard(d, style, x, torch.zeros_like(w)) for d in shards], ranges, rows, style)

    # Merge: each shard into its slice of the base weight, checked against the whole merge's slice.
    merge_err = 0.0
    for d in shards:
        b, e = d.begin, d.end
        sl = (slice(b, e), slice(None)) if style == "column" else (slice(None), slice(b, e))
        ws = w[sl].contiguous()
        d.merge(ws.data_ptr(), dc.DC_DTYPE_F32, 0, stream=rk.stream_fn())
        merge_err = max(merge_err, float((ws - w_merged[sl]).abs().max()))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)

    s_full, s_delta = scale_of(x, w_merged), scale_of(x, dw)
    err_full = float((y_tp - y_ref).abs().max()) / s_full
    err_delta = float((y_tp_delta - y_ref_delta).abs().max()) / s_delta
    err_merge = merge_err / max(float(dw.abs().max()), 1e-30)
    ok = err_full <= 1e-5 and err_delta <= 1e-4 and err_merge <= 1e-4
    report.append({"layer": name.split(".")[-1], "style": style, "rows": rows, "cols": cols,
                   "err_layer": err_full, "err_delta": err_delta, "err_merge": err_merge, "ok": ok,
                   "whole_bytes": whole.device_bytes,
                   "shard_bytes": {s: d.device_bytes for s, d in zip(shard_ids, shards)}})
    return whole, shards


def time_layer(rk, cont, name, rows, cols, style, world, shard_ids, m, dtype, iters, comm):
    """Times (ms, CUDA events or wall clock) of: the unsharded base layer, the unsharded base + delta,
    and per shard the TP step (base slice [+ delta shard] + collective when comm is given)."""
    dev = rk.device
    w = base_weight(name, rows, cols, dev, dtype)
    x = activations(m, cols, dev, dtype)
    whole = dc.Delta(rk.ctx, cont, name + ".weight", stream=rk.stream_fn())
    shards = [dc.Delta(rk.ctx, cont, name + ".weight", shard_split(style), s, world, stream=rk.stream_fn())
              for s in shard_ids]
    ranges = shard_ranges(rows if style == "column" else cols, world)

    def collective(y):
        if comm is None:
            return y
        return comm.all_reduce(y) if style == "row" else comm.all_gather_rows(y, ranges, rows)

    def timed(fn):
        for _ in range(3):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(iters):
                fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b) / iters
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) * 1e3 / iters

    def whole_step(with_delta):
        y = x @ w.T
        if with_delta:
            rk.apply(whole, x, y)
        return y

    out = {"layer": name.split(".")[-1], "style": style, "m": m, "dtype": str(dtype).replace("torch.", "")}
    if comm is not None:
        comm.barrier()
    out["base_1gpu_ms"] = timed(lambda: whole_step(False))
    out["base_delta_1gpu_ms"] = timed(lambda: whole_step(True))
    tb, td = [], []
    for d in shards:
        if comm is not None:
            comm.barrier()
        tb.append(timed(lambda: collective(rk.layer_shard(d, style, x, w, with_delta=False))))
        if comm is not None:
            comm.barrier()
        td.append(timed(lambda: collective(rk.layer_shard(d, style, x, w, with_delta=True))))
    out["tp_base_ms"] = max(tb)
    out["tp_base_delta_ms"] = max(td)
    return out


def run_rank(rank, world, a, mode, comm_backend):
    """The whole test for one process. procs mode: rank `rank` of `world`; single mode: all shards."""
    use_cuda = a.backend == "cuda"
    if use_cuda:
        ngpu = torch.cuda.device_count()
        dev = torch.device("cuda", rank % ngpu if mode == "procs" else 0)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        stream_fn = lambda: torch.cuda.current_stream(dev).cuda_stream  # noqa: E731
    else:
        dev = torch.device("cpu")
        stream_fn = lambda: None  # noqa: E731
    lib = dc.Library(a.lib)
    backend = dc.DC_BACKEND_CUDA if use_cuda else dc.DC_BACKEND_CPU
    rk = Rank(lib, backend, dev, stream_fn)

    comm = None
    if mode == "procs":
        comm = DistComm(rank, world, comm_backend)
        shard_ids = [rank]

        def collect(ys, ranges, rows, style):
            y = ys[0]
            return comm.all_reduce(y) if style == "row" else comm.all_gather_rows(y, ranges, rows)
    else:
        shard_ids = list(range(world))

        def collect(ys, ranges, rows, style):
            if style == "row":
                out = ys[0].clone()
                for y in ys[1:]:
                    out += y
                return out
            return torch.cat(ys, dim=1)

    with open(os.path.join(a.containers, "layers.json")) as f:
        meta = json.load(f)
    schemes = a.schemes.split(",") if a.schemes else meta["schemes"]
    results = {"rank": rank, "world": world, "mode": mode, "device": str(dev), "checks": [], "times": []}
    if use_cuda:
        results["gpu"] = torch.cuda.get_device_name(dev)
    for scheme in schemes:
        cont = dc.Container(lib, os.path.join(a.containers, scheme + ".dcz"))
        for name, (rows, cols, style) in meta["layers"].items():
            x = activations(a.m, cols, dev, torch.float32)
            rep = []
            bias_name = name + ".bias" if (name + ".bias") in meta["biases"] else None
            check_layer(rk, cont, name, rows, cols, style, bias_name, x, shard_ids, world, collect, rep)
            for r in rep:
                r["scheme"] = scheme
            results["checks"] += rep
        if scheme in a.time_schemes.split(","):
            for name, (rows, cols, style) in meta["layers"].items():
                for m in [int(v) for v in a.time_m.split(",")]:
                    t = time_layer(rk, cont, name, rows, cols, style, world, shard_ids, m,
                                   torch.float16 if use_cuda else torch.float32, a.iters, comm)
                    t["scheme"] = scheme
                    results["times"].append(t)
        cont.close()
    return results


def worker(rank, world, a, comm_backend, port, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(comm_backend, rank=rank, world_size=world)
    try:
        res = run_rank(rank, world, a, "procs", comm_backend)
        with open(os.path.join(out_dir, "rank%d.json" % rank), "w") as f:
            json.dump(res, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def print_report(all_results, world):
    r0 = all_results[0]
    print("== world %d, mode %s, %s%s" % (world, r0["mode"], r0["device"], (" (%s)" % r0["gpu"]) if "gpu" in r0 else ""))
    print("%-16s %-10s %-6s %-11s %10s %10s %10s  %s" % ("scheme", "layer", "style", "shape", "err_layer",
                                                           "err_delta", "err_merge", "ok"))
    failures = 0
    for c in r0["checks"]:
        # every rank computed the same full output (after the collective): take the worst
        same = [r for res in all_results for r in res["checks"] if r["scheme"] == c["scheme"] and r["layer"] == c["layer"]]
        el, ed, em = (max(r[k] for r in same) for k in ("err_layer", "err_delta", "err_merge"))
        ok = all(r["ok"] for r in same)
        failures += not ok
        print("%-16s %-10s %-6s %5dx%-5d %10.2e %10.2e %10.2e  %s" % (c["scheme"], c["layer"], c["style"], c["rows"],
                                                                      c["cols"], el, ed, em, "ok" if ok else "FAIL"))
    print("\ndevice bytes per rank (its shards of the 4 layers) vs the unsharded deltas:")
    schemes = sorted({c["scheme"] for c in r0["checks"]}, key=[c["scheme"] for c in r0["checks"]].index)
    for s in schemes:
        whole = sum(c["whole_bytes"] for c in r0["checks"] if c["scheme"] == s)
        per_rank = {}
        for res in all_results:
            for c in res["checks"]:
                if c["scheme"] == s:
                    for rank, b in c["shard_bytes"].items():
                        per_rank[int(rank)] = per_rank.get(int(rank), 0) + b
        print("  %-16s whole %9.3f MiB | %s" % (s, whole / 2 ** 20, "  ".join(
            "rank%d %.3f MiB (%.2f)" % (r, b / 2 ** 20, b / whole) for r, b in sorted(per_rank.items()))))
    if r0["times"]:
        print("\ntimes (ms, the slowest rank): unsharded base | unsharded base+delta | TP base step | TP base+delta step")
        for i, t in enumerate(r0["times"]):
            tb = max(res["times"][i]["tp_base_ms"] for res in all_results)
            td = max(res["times"][i]["tp_base_delta_ms"] for res in all_results)
            print("  %-16s %-10s %-6s m=%-5d %-8s %8.4f %8.4f | %8.4f %8.4f" % (
                t["scheme"], t["layer"], t["style"], t["m"], t["dtype"], t["base_1gpu_ms"], t["base_delta_1gpu_ms"],
                tb, td))
    n = len(r0["checks"])
    print("\n%d passed, %d failed" % (n - failures, failures))
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--containers", required=True)
    ap.add_argument("--backend", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--mode", choices=["procs", "single"], default="procs")
    ap.add_argument("--dist", choices=["auto", "nccl", "gloo"], default="auto")
    ap.add_argument("--lib", default=None, help="libdeltacome.so (default: $DELTACOME_LIB or build-*/)")
    ap.add_argument("--schemes", default="", help="comma-separated container names (default: all)")
    ap.add_argument("--m", type=int, default=5, help="tokens for the correctness checks")
    ap.add_argument("--time-schemes", default="deltacome-8-3-2")
    ap.add_argument("--time-m", default="1,16,512")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json", default=None, help="write every rank's results here")
    a = ap.parse_args()

    if a.mode == "single":
        results = [run_rank(0, a.world, a, "single", None)]
    else:
        comm_backend = a.dist
        if comm_backend == "auto":
            own_gpus = a.backend == "cuda" and torch.cuda.device_count() >= a.world
            comm_backend = "nccl" if own_gpus else "gloo"
        out_dir = a.json + ".d" if a.json else "/tmp/tp_delta_test.%d" % os.getpid()
        os.makedirs(out_dir, exist_ok=True)
        import torch.multiprocessing as mp
        mp.spawn(worker, args=(a.world, a, comm_backend, free_port(), out_dir), nprocs=a.world, join=True)
        results = []
        for r in range(a.world):
            with open(os.path.join(out_dir, "rank%d.json" % r)) as f:
                results.append(json.load(f))
        results[0]["mode"] = "procs/%s" % comm_backend
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if print_report(results, a.world) else 0


if __name__ == "__main__":
    sys.exit(main())
