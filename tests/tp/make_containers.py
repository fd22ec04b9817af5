#!/usr/bin/env python3
"""Writes the tensor-parallel test's inputs: a one-block Llama-shaped base / fine-tuned pair (fp16
safetensors) and one .dcz per band width, compressed with the deltacome CLI:

  deltacome-8-3-2.dcz   Delta-CoMe's default bands (8-bit ×2, 3-bit ×32, 2-bit for the rest)
  single-{2,3,4,8,16}.dcz  one band of that width (--scheme single --bits K)
  actorder-8-3-2.dcz    default bands, GPTQ with act-order (V̂ stored in a permutation of the inputs)
  bitdelta.dcz          BitDelta (sign × scale)

Layers: q_proj and up_proj are column-parallel (output rows split), o_proj and down_proj row-parallel
(input columns split); o_proj also has a bias (to show where a row-parallel bias goes).

usage: make_containers.py OUT_DIR [--cli PATH] [--hidden 1024] [--inter 2816]
"""
import argparse
import json
import os
import struct
import subprocess
import sys

import torch

LAYERS = {  # name: (rows, cols, parallel style)
    "model.layers.0.self_attn.q_proj": ("H", "H", "column"),
    "model.layers.0.self_attn.o_proj": ("H", "H", "row"),
    "model.layers.0.mlp.up_proj": ("I", "H", "column"),
    "model.layers.0.mlp.down_proj": ("H", "I", "row"),
}
BIASES = {"model.layers.0.self_attn.o_proj.bias": "H"}  # a row-parallel layer's bias

SCHEMES = {
    "deltacome-8-3-2": ["--scheme", "deltacome"],
    "single-2": ["--scheme", "single", "--bits", "2"],
    "single-3": ["--scheme", "single", "--bits", "3"],
    "single-4": ["--scheme", "single", "--bits", "4"],
    "single-8": ["--scheme", "single", "--bits", "8"],
    "single-16": ["--scheme", "single", "--bits", "16"],
    "actorder-8-3-2": ["--scheme", "deltacome", "--quantizer", "gptq", "--act-order"],
    "bitdelta": ["--scheme", "bitdelta"],
}

_ST_DTYPE = {torch.float16: "F16", torch.float32: "F32"}


def write_safetensors(path, tensors):
    """Minimal safetensors writer: 8-byte little-endian header size, JSON header, raw data."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": _ST_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def long_tail_delta(m, n, g, rel=0.03):
    """ΔW = Σ_k σ_k u_k v_kᵀ with σ_k ∝ 1/(1 + k/8): a fine-tune's long-tail spectrum."""
    r = min(m, n)
    u = torch.randn(m, r, generator=g) / m ** 0.5
    v = torch.randn(r, n, generator=g) / n ** 0.5
    s = 1.0 / (1.0 + torch.arange(r, dtype=torch.float32) / 8.0)
    s *= rel * m ** 0.5 / s.norm()
    return (u * s) @ v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--cli", default=None, help="the deltacome CLI (default: build-*/deltacome)")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--inter", type=int, default=2816)
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    dims = {"H": a.hidden, "I": a.inter}
    g = torch.Generator().manual_seed(1234)
    base, ft, calib = {}, {}, {}
    for name, (r, c, _) in LAYERS.items():
        m, n = dims[r], dims[c]
        w = torch.randn(m, n, generator=g) / n ** 0.5
        base[name + ".weight"] = w.half()
        ft[name + ".weight"] = (w + long_tail_delta(m, n, g)).half()
        # A Hessian E[x xᵀ] with inputs of uneven scale, so act-order really permutes.
        x = torch.randn(n, 2 * n, generator=g) * (0.2 + 3 * torch.rand(n, 1, generator=g))
        calib[name + ".hessian"] = (x @ x.T / (2 * n)).float()
    for name, r in BIASES.items():
        b = 0.02 * torch.randn(dims[r], generator=g)
        base[name] = b.half()
        ft[name] = (b + 0.01 * torch.randn(dims[r], generator=g)).half()
    bp, fp, cp = (os.path.join(a.out, f) for f in ("base.safetensors", "finetuned.safetensors", "calib.safetensors"))
    write_safetensors(bp, base)
    write_safetensors(fp, ft)
    write_safetensors(cp, calib)

    cli = a.cli
    if cli is None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        cli = next((os.path.join(root, d, "deltacome") for d in ("build-gpu", "build-tp", "build")
                    if os.path.exists(os.path.join(root, d, "deltacome"))), "deltacome")
    for s in a.schemes.split(","):
        args = [cli, "compress", "--base", bp, "--finetuned", fp, "-o", os.path.join(a.out, s + ".dcz"), "--quiet"]
        args += SCHEMES[s]
        if "--act-order" in SCHEMES[s]:
            args += ["--calib", cp]
        elif "--quantizer" not in SCHEMES[s]:
            args += ["--quantizer", "rtn"]
        print("+", " ".join(args[1:2] + SCHEMES[s]), flush=True)
        subprocess.run(args, check=True)
    for f in (bp, fp, cp):  # the test makes its own base weights; only the deltas are needed
        os.remove(f)
    with open(os.path.join(a.out, "layers.json"), "w") as f:
        json.dump({"hidden": a.hidden, "inter": a.inter, "layers": {n: [dims[r], dims[c], p] for n, (r, c, p) in
                                                                    LAYERS.items()},
                   "biases": {n: dims[r] for n, r in BIASES.items()}, "schemes": a.schemes.split(",")}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
