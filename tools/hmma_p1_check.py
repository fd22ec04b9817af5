#!/usr/bin/env python3
"""Host check of the fragment layout that a tensor-core phase 1 for 2-bit V rows would use
(bench/RESULTS-h100.md, twenty-first session, "Next: phase 1 on the f16 tensor cores").

What it models, exactly as the device code would do it, with no GPU:
- up to 8 V rows of 2-bit codes in the packed layout (src/common/pack_layout.h: code 16w + q at bits
  2q of word w), one mma.m16n8k16 f16 tile per (chunk of 128 codes, position p = 0..7);
- B (16 x 8, column n = V row n): lane (g = lane / 4, j = lane % 4) holds row g's words 2j and 2j + 1
  of the chunk; for position p it masks the two codes at bits 2p and 16 + 2p of each word into the
  mantissas of an f16 pair with exponent 1024 (one LOP3), and subtracts 1024 from both halves (one
  HADD2): b0 = (code 32j + p, code 32j + 8 + p) and b1 = (code 32j + 16 + p, code 32j + 24 + p), each
  times 2^sh'. Positions p >= 5 take their codes from the word shifted right by 8 (sh' = 2p - 8),
  the others in place (sh' = 2p), so that no code reaches the f16 exponent;
- A (16 x 16, row 0 = x, rows 1..15 unused): a0 = a1 = (x[32j + p], x[32j + 8 + p]) and
  a2 = a3 = (x[32j + 16 + p], x[32j + 24 + p]) of the chunk, each times 2^(E + 8 - sh'), staged as f16,
  where max|x| < 2^ex and E = 6 - ex: max|x| * 2^(E + 8) < 2^14 (no f16 overflow, and a chunk of small
  values keeps its bits);
- D = A B + C in fp32 with the PTX fragment mapping (c0, c1: row g, columns 2j, 2j + 1), so D[0][n]
  = 2^(E + 8) * sum over the chunk of x_k * code_{n,k}.
It checks D[0][n] against that sum computed in float64 (exact here: every product is exact and the
sums are small), for random rows, x of several magnitudes and every lane, and that every x and every
code of the chunk is used exactly once. (A staged x·2^(E + 8 - sh') is inexact only where it falls
below f16's smallest normal, 2^-14, i.e. for |x| < ~2^-20 max|x| of its chunk: there it loses low bits,
an absolute error below 2^-34 max|x|. The check stops if a drawn x ever hits that case.)

It also checks phase 2's A, t split into f16 hi + lo parts after the same scaling: within 2^-21 of
the chunk's largest |t|.

  python3 tools/hmma_p1_check.py [--trials 200] [--seed 1]
"""
import argparse
import math
import random
import struct
import sys


def f16(v):
    """v rounded to IEEE half (raises OverflowError past 65504)."""
    return struct.unpack("<e", struct.pack("<e", v))[0]


def half_bits_to_float(h):
    return struct.unpack("<e", struct.pack("<H", h & 0xFFFF))[0]


def pack_rows(codes):
    """codes[n][i] (2-bit) -> words[n][w] in the packed layout."""
    words = []
    for row in codes:
        ws = [0] * (len(row) // 16)
        for i, c in enumerate(row):
            ws[i // 16] |= c << (2 * (i % 16))
        words.append(ws)
    return words


def b_pair(word, p):
    """The f16 pair lane code builds for position p of one word: (lo, hi) values and sh'."""
    src, sh = (word, 2 * p) if p <= 4 else (word >> 8, 2 * p - 8)
    mask = (3 << sh) | (3 << (16 + sh))
    v = (src & mask) | 0x64006400  # LOP3: mask, then OR the exponent of 1024 into both halves
    lo = half_bits_to_float(v) - 1024.0  # HADD2 with (-1024, -1024): exact
    hi = half_bits_to_float(v >> 16) - 1024.0
    return lo, hi, sh


def check_chunk(codes, x, rows):
    """One chunk of 128 codes: returns the largest |D[0][n] - expected| over n (0 when exact)."""
    words = pack_rows(codes)
    ex = math.frexp(max(abs(v) for v in x))[1]  # max|x| < 2^ex (ex = 0 for an all-zero chunk)
    e = 6 - ex  # max|x| * 2^(E + 8) < 2^14: no overflow, and small chunks keep their bits
    d = [0.0] * 8
    used_x = [0] * 128
    used_c = [[0] * 128 for _ in range(8)]
    for p in range(8):
        # the fragments of every lane for this k-tile
        A = [[0.0] * 16 for _ in range(16)]
        B = [[0.0] * 8 for _ in range(16)]
        for lane in range(32):
            g, j = lane // 4, lane % 4
            if g < rows:
                lo0, hi0, sh = b_pair(words[g][2 * j], p)
                lo1, hi1, _ = b_pair(words[g][2 * j + 1], p)
            else:
                lo0 = hi0 = lo1 = hi1 = 0.0
                sh = 2 * p if p <= 4 else 2 * p - 8
            B[2 * j][g], B[2 * j + 1][g], B[2 * j + 8][g], B[2 * j + 9][g] = lo0, hi0, lo1, hi1
            ks = [32 * j + p, 32 * j + 8 + p, 32 * j + 16 + p, 32 * j + 24 + p]
            sc = 2.0 ** (e + 8 - sh)
            av = [f16(x[k] * sc) for k in ks]
            for k, v in zip(ks, av):
                if v != x[k] * sc:
                    sys.exit(f"A not exact: x {x[k]} scale {sc}")
            A[g][2 * j], A[g][2 * j + 1], A[g][2 * j + 8], A[g][2 * j + 9] = av
            A[g + 8][2 * j], A[g + 8][2 * j + 1], A[g + 8][2 * j + 8], A[g + 8][2 * j + 9] = av
            if g == 0:
                for k in ks:
                    used_x[k] += 1
            if g < rows:
                for k in ks:
                    used_c[g][k] += 1
            # the codes B holds are the codes at the x positions A holds, times 2^sh
            for kk, k in zip((2 * j, 2 * j + 1, 2 * j + 8, 2 * j + 9), ks):
                if g < rows and B[kk][g] != codes[g][k] * 2.0 ** sh:
                    sys.exit(f"B mismatch lane {lane} p {p} k {k}: {B[kk][g]} vs {codes[g][k]} * 2^{sh}")
        for n in range(8):  # D[0][n] += sum_k A[0][k] B[k][n]
            d[n] += sum(A[0][k] * B[k][n] for k in range(16))
    if any(u != 1 for u in used_x):
        sys.exit("an x of the chunk is used other than once")
    for g in range(rows):
        if any(u != 1 for u in used_c[g]):
            sys.exit(f"a code of row {g} is used other than once")
    worst = 0.0
    for n in range(rows):
        want = 2.0 ** (e + 8) * sum(xv * c for xv, c in zip(x, codes[n]))
        worst = max(worst, abs(d[n] - want) / max(1.0, abs(want)))
    return worst


def check_hi_lo(rng, trials):
    """Phase 2's A: t (fp32) after the chunk's scaling as f16 hi + f16 lo. Returns the worst error of
    hi + lo against the scaled value, relative to the chunk's largest |t| (the MMA then sums exact
    products of these parts with the codes)."""
    worst = 0.0
    for _ in range(trials):
        mag = 10.0 ** rng.uniform(-6, 4)
        t = [struct.unpack("<f", struct.pack("<f", rng.uniform(-mag, mag)))[0] for _ in range(128)]
        ex = math.frexp(max(abs(v) for v in t))[1]
        e = 6 - ex
        for v in t:
            for p in range(8):
                sh = 2 * p if p <= 4 else 2 * p - 8
                sv = v * 2.0 ** (e + 8 - sh)
                hi = f16(sv)
                lo = f16(sv - hi)
                worst = max(worst, abs(hi + lo - sv) / (mag * 2.0 ** (e + 8 - sh)))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    worst = 0.0
    for t in range(a.trials):
        rows = rng.randint(1, 8)
        mag = 10.0 ** rng.uniform(-3, 3.5)
        x = [f16(rng.uniform(-mag, mag)) for _ in range(128)]
        codes = [[rng.randrange(4) for _ in range(128)] for _ in range(rows)]
        worst = max(worst, check_chunk(codes, x, rows))
    print(f"{a.trials} chunks: worst relative error {worst:.3g}")
    if worst > 1e-12:
        sys.exit("FAILED")
    print("ok: every x and every code used once, D[0][n] = 2^(E+8) * sum x*code exactly")
    hl = check_hi_lo(rng, max(1, a.trials // 10))
    print(f"phase 2's t as f16 hi + lo: worst error {hl:.3g} of the chunk's largest |t| (2^-21 = {2.0 ** -21:.3g})")
    if hl > 2.0 ** -21:
        sys.exit("FAILED")


if __name__ == "__main__":
    main()
