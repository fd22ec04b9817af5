#!/usr/bin/env python3
"""Host check of the tensor-core kernel's two-row fold (cuda/mma_int8.cuh, mma_group_sums with pair):
B columns 0..2 hold the balanced base-256 digits (hi, mid, lo) of vector a, columns 3..5 those of
vector b; C of mma.m16n8k32 sits in lane (g, q) as C[g][2q], C[g][2q+1], C[g+8][2q], C[g+8][2q+1]
(the PTX ISA layout the single-row path already relies on). Lanes q = 0 must rebuild Σ c·a and
lanes q = 1 Σ c·b exactly, from their own values and lane q + 1's (__shfl_down_sync by 1)."""
import random


def digits(v):
    lo = ((v + 128) & 255) - 128
    r = (v - lo) >> 8
    mid = ((r + 128) & 255) - 128
    hi = (r - mid) >> 8
    assert hi * 65536 + mid * 256 + lo == v
    return hi, mid, lo


def main():
    random.seed(1)
    K, trials = 32, 300
    for _ in range(trials):
        A = [[random.randint(0, 7) for _ in range(K)] for _ in range(16)]  # 2- and 3-bit codes
        va = [random.randint(-(1 << 22) + 1, (1 << 22) - 1) for _ in range(K)]
        vb = [random.randint(-(1 << 22) + 1, (1 << 22) - 1) for _ in range(K)]
        B = [[0] * 8 for _ in range(K)]
        for k in range(K):
            da, db = digits(va[k]), digits(vb[k])
            for n in range(3):
                B[k][n], B[k][3 + n] = da[n], db[n]
        C = [[sum(A[i][k] * B[k][n] for k in range(K)) for n in range(8)] for i in range(16)]
        acc = [[C[l // 4][2 * (l % 4)], C[l // 4][2 * (l % 4) + 1], C[l // 4 + 8][2 * (l % 4)],
                C[l // 4 + 8][2 * (l % 4) + 1]] for l in range(32)]
        for lane in range(32):
            g, q = lane // 4, lane % 4
            if q > 1:
                continue
            c, nx = acc[lane], acc[lane + 1]  # lane + 1: same g, q + 1
            if q == 0:
                x, y, v = c[0] * 65536 + c[1] * 256 + nx[0], c[2] * 65536 + c[3] * 256 + nx[2], va
            else:
                x, y, v = c[1] * 65536 + nx[0] * 256 + nx[1], c[3] * 65536 + nx[2] * 256 + nx[3], vb
            assert x == sum(A[g][k] * v[k] for k in range(K)), (lane, "row g")
            assert y == sum(A[g + 8][k] * v[k] for k in range(K)), (lane, "row g + 8")
    print(f"pair fold: {trials} random tiles, lanes q = 0 and 1 exact")


if __name__ == "__main__":
    main()
