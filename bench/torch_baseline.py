#!/usr/bin/env python3
"""Baseline (b) of bench_gpu_apply: the unfused PyTorch path for one Delta-CoMe delta applied at M=1.

The delta (4096x4096, bands 8-bit x2, 3-bit x32, 2-bit x968, group 128) is held in deltacome's packed
layout (src/common/pack_layout.h: rows padded to blocks of 32 codes, 3-bit = 2 low-bit words + 1
high-bit word); every call unpacks U and V with tensor ops, dequantizes (scale*(code-zero) per group),
then runs x @ V^T * sigma @ U^T. Copies rotate so the packed data is cold. Prints the median us per
call and writes it to the file given as the first argument (read by bench_gpu_apply --torch-us).
"""
import sys

import torch

R = C = 4096
BANDS = [(8, 2), (3, 32), (2, 968)]
GROUP = 128
dev = "cuda"


def unpack(words, bits, length):
    """words: int32 [n, blocks*bits] -> int codes [n, blocks*32] (truncated to length)."""
    n = words.shape[0]
    blocks = words.shape[1] // bits
    w = words.view(n, blocks, bits)
    if bits == 3:
        lo = (w[:, :, 0:2].unsqueeze(-1) >> torch.arange(0, 32, 2, device=dev, dtype=torch.int32)) & 3
        hi = (w[:, :, 2:3] >> torch.arange(32, device=dev, dtype=torch.int32)) & 1
        codes = lo.reshape(n, blocks, 32) | (hi << 2)
    else:
        per = 32 // bits
        shifts = torch.arange(0, 32, bits, device=dev, dtype=torch.int32)
        codes = ((w.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).reshape(n, blocks, bits * per)
    return codes.reshape(n, blocks * 32)[:, :length]


def dequant(words, scale, zero, bits, length):
    codes = unpack(words, bits, length).to(torch.float16)
    n = codes.shape[0]
    groups = scale.shape[1]
    pad = groups * GROUP - length
    c = torch.nn.functional.pad(codes, (0, pad)).view(n, groups, GROUP)
    return ((c - zero.unsqueeze(-1)) * scale.unsqueeze(-1)).view(n, groups * GROUP)[:, :length]


def make_band(n, length, bits):
    blocks = (length + 31) // 32
    words = torch.randint(-2**31, 2**31 - 1, (n, blocks * bits), dtype=torch.int32, device=dev)
    groups = (length + GROUP - 1) // GROUP
    scale = (torch.rand(n, groups, device=dev) * 0.02 + 0.01).half()
    zero = torch.randint(0, 1 << bits, (n, groups), device=dev).half()
    return words, scale, zero


def make_delta():
    bands = []
    for bits, r in BANDS:
        bands.append((bits, r, make_band(r, C, bits), make_band(R, r, bits)))
    sigma = torch.rand(sum(r for _, r in BANDS), device=dev).half()
    return bands, sigma


def apply(x, delta):
    bands, sigma = delta
    V = torch.cat([dequant(*v, bits, C) for bits, r, v, u in bands], 0)
    U = torch.cat([dequant(*u, bits, r) for bits, r, v, u in bands], 1)
    return ((x @ V.t()) * sigma) @ U.t()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else None
    torch.manual_seed(0)
    copies = [make_delta() for _ in range(16)]
    x = torch.randn(1, C, device=dev, dtype=torch.float16)
    for d in copies[:3]:
        apply(x, d)
    torch.cuda.synchronize()
    times = []
    for rep in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for d in copies:
            apply(x, d)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / len(copies))
    times.sort()
    us = times[len(times) // 2]
    print(f"(b) unfused PyTorch dequantize-then-matmul, 4096x4096 M=1: {us:.1f} us per call "
          f"(torch {torch.__version__}, {torch.cuda.get_device_name()})")
    if out:
        with open(out, "w") as f:
            f.write(f"{us}\n")


if __name__ == "__main__":
    main()
