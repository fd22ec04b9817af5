"""python3 -m unittest test_pool  (tests/packaging/run.sh runs it against the installed library).

The experimental delta pool (deltacome.Pool) on the CPU backend, with two variants of one base: the
demo pair compressed with Delta-CoMe (model.dcz, low-rank) and with BitDelta (bitdelta.dcz).
Fixtures: $DELTACOME_FIXTURES, or made here with the CLI ($DELTACOME_CLI, else
$DELTACOME_DIR/bin/deltacome, else deltacome on PATH); bitdelta.dcz is made here when missing.
The first function is the usage shown in docs/bindings.md (tests/packaging/check_snippets.py)."""
import gc
import os
import shutil
import subprocess
import tempfile
import threading
import unittest

import numpy as np

import deltacome as dc

# snippet-begin
def serve_two_variants(path_a, path_b, tensor):
    """Rows of one batch served by two variants of one base: y[i] += x[i] @ ΔW(ids[i])ᵀ."""
    a, b = dc.Container.open(path_a), dc.Container.open(path_b)
    ctx = dc.Context(dc.BACKEND_CPU)
    with dc.Pool(ctx, budget_bytes=16 << 20) as pool:  # keeps ctx, a and b alive
        pool.register("a", a)
        pool.register("b", b)
        info = a.tensor_info(a.find(tensor))
        x = np.sin(0.37 * np.arange(4 * info.cols, dtype=np.float32)).reshape(4, info.cols)
        y = np.zeros((4, info.rows), np.float32)
        pool.apply_batched(tensor, ["a", None, "b", "a"], x, y)  # row 1: base model only
        with pool.acquire("b", tensor) as d:  # a Delta, resident until the block ends
            assert (d.model_id, pool.query("b", tensor)) == ("b", (dc.POOL_RESIDENT, 1))
        return y, pool.stats()  # hits, misses, resident_bytes, evictions, ...
# snippet-end


FP32_TOL = 1e-4
Q0 = "model.layers.0.self_attn.q_proj.weight"
DOWN1 = "model.layers.1.mlp.down_proj.weight"  # 128 × 352: rows ≠ cols


def setUpModule():
    global FIX, BITDELTA, _tmp
    _tmp = tempfile.mkdtemp(prefix="deltacome-py-pool-")
    cli = os.environ.get("DELTACOME_CLI") or (
        os.path.join(os.environ["DELTACOME_DIR"], "bin", "deltacome") if os.environ.get("DELTACOME_DIR")
        else "deltacome")
    FIX = os.environ.get("DELTACOME_FIXTURES")
    if not FIX:
        FIX = _tmp
        subprocess.run([cli, "make-demo", "--out", FIX, "--layers", "2", "--hidden", "128", "--seed", "7"],
                       check=True, capture_output=True)
        subprocess.run([cli, "compress", "--base", os.path.join(FIX, "base.safetensors"), "--finetuned",
                        os.path.join(FIX, "finetuned.safetensors"), "-o", os.path.join(FIX, "model.dcz")],
                       check=True, capture_output=True)
    BITDELTA = os.path.join(FIX, "bitdelta.dcz")
    if not os.path.exists(BITDELTA):
        BITDELTA = os.path.join(_tmp, "bitdelta.dcz")
        subprocess.run([cli, "compress", "--quiet", "--scheme", "bitdelta", "--base",
                        os.path.join(FIX, "base.safetensors"), "--finetuned", os.path.join(FIX, "finetuned.safetensors"),
                        "-o", BITDELTA], check=True, capture_output=True)


def tearDownModule():
    shutil.rmtree(_tmp)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def counts(s):
    return (s.hits, s.misses, s.loads, s.evictions, s.resident_deltas, s.referenced_deltas, s.resident_bytes)


class PoolTest(unittest.TestCase):
    def setUp(self):
        self.a = dc.Container.open(os.path.join(FIX, "model.dcz"))
        self.b = dc.Container.open(BITDELTA)
        self.ctx = dc.Context(dc.BACKEND_CPU)
        self.rng = np.random.default_rng(5)

    def pool(self, budget=64 << 20):
        p = dc.Pool(self.ctx, budget_bytes=budget)
        p.register("a", self.a)
        p.register("b", self.b)
        self.addCleanup(p.close)
        return p

    def test_snippet(self):
        y, s = serve_two_variants(os.path.join(FIX, "model.dcz"), BITDELTA, Q0)
        self.assertTrue(np.any(y[0] != 0))
        self.assertTrue(np.all(y[1] == 0))
        self.assertEqual((s.hits, s.misses, s.loads, s.resident_deltas, s.referenced_deltas), (1, 2, 2, 2, 0))

    def test_stats_struct_matches_the_library(self):
        # struct_size 0 asks for the whole struct: the library writes back its own sizeof.
        p = self.pool()
        s = dc._PoolStats()
        s.struct_size = 0
        dc._check(dc._lib.dc_pool_get_stats(p._h, dc.C.byref(s)))
        self.assertEqual(s.struct_size, dc.C.sizeof(dc._PoolStats))
        self.assertEqual(s.budget_bytes, 64 << 20)
        o = dc._PoolOptions()
        dc._lib.dc_pool_options_init(dc.C.byref(o))
        self.assertEqual(o.struct_size, dc.C.sizeof(dc._PoolOptions))
        self.assertEqual(o.device_budget_bytes, 1 << 30)

    def test_acquire_release_and_stats(self):
        p = self.pool()
        self.assertEqual(p.stats(), dc.PoolStats(64 << 20, *[0] * 12))
        self.assertEqual(p.query("a", Q0), (dc.POOL_ABSENT, 0))
        d1 = p.acquire("a", Q0)
        self.assertEqual((d1.model_id, d1.info.kind, d1.name), ("a", dc.KIND_LOWRANK, Q0))
        size_a = d1.info.device_bytes
        self.assertEqual(counts(p.stats()), (0, 1, 1, 0, 1, 1, size_a))
        d2 = p.acquire("a", Q0)  # a hit on the same delta
        self.assertEqual(d2._h.value, d1._h.value)
        self.assertEqual(p.query("a", Q0), (dc.POOL_RESIDENT, 2))
        self.assertEqual(counts(p.stats()), (1, 1, 1, 0, 1, 1, size_a))

        # The pooled delta computes what the same tensor loaded with the stable API does.
        x = self.rng.standard_normal((3, d1.info.cols)).astype(np.float32)
        y_pool = d1.apply(x, np.zeros((3, d1.info.rows), np.float32))
        y_direct = self.ctx.load(self.a, Q0).apply(x, np.zeros((3, d1.info.rows), np.float32))
        self.assertLess(rel_err(y_pool, y_direct), FP32_TOL)

        d1.release()
        d1.release()  # twice: no-op
        with self.assertRaises(dc.Error):
            d1.apply(x, y_pool)
        self.assertEqual(p.query("a", Q0), (dc.POOL_RESIDENT, 1))
        with d2:
            pass  # released on exit
        self.assertEqual(p.query("a", Q0), (dc.POOL_RESIDENT, 0))

        with p.acquire("b", Q0) as db:
            self.assertEqual(db.info.kind, dc.KIND_BITDELTA)
            size_b = db.info.device_bytes
            self.assertEqual(counts(p.stats()), (1, 2, 2, 0, 2, 1, size_a + size_b))
        self.assertEqual(p.stats().referenced_deltas, 0)

        # A registered container refuses close(); unregistering frees its deltas and allows it.
        with self.assertRaises(dc.Error) as e:
            self.a.close()
        self.assertEqual(e.exception.status, dc.ERR_BUSY)
        p.unregister("a")
        self.assertEqual(counts(p.stats()), (1, 2, 2, 0, 1, 0, size_b))
        self.a.close()

    def test_budget_evicts_least_recently_used(self):
        big = self.pool()
        with big.acquire("a", Q0) as da, big.acquire("b", Q0) as db:
            size_a, size_b = da.info.device_bytes, db.info.device_bytes
        big.close()
        p = self.pool(max(size_a, size_b) + min(size_a, size_b) // 2)  # room for either, not both
        p.acquire("a", Q0).release()
        db = p.acquire("b", Q0)  # evicts a
        self.assertEqual(counts(p.stats()), (0, 2, 2, 1, 1, 1, size_b))
        self.assertEqual(p.query("a", Q0), (dc.POOL_ABSENT, 0))
        with self.assertRaises(dc.Error) as e:  # b is referenced: no room, nothing evicted
            p.acquire("a", Q0)
        self.assertEqual(e.exception.status, dc.ERR_BUDGET)
        self.assertTrue(e.exception.message.startswith("dc_pool_acquire: "), e.exception.message)
        self.assertEqual(p.stats().evictions, 1)
        db.release()
        with p.acquire("a", Q0) as da:  # now b goes
            self.assertEqual(da.info.device_bytes, size_a)
        s = p.stats()
        self.assertEqual((s.evictions, s.resident_deltas, s.resident_bytes), (2, 1, size_a))

    def test_apply_batched_matches_per_delta_apply(self):
        p = self.pool()
        da, db = self.ctx.load(self.a, DOWN1), self.ctx.load(self.b, DOWN1)
        rows, cols = da.info.rows, da.info.cols
        ids = ["a", "b", None, "b", "a", "a"]
        m = len(ids)
        x = self.rng.standard_normal((m, cols)).astype(np.float32)
        y0 = self.rng.standard_normal((m, rows)).astype(np.float32)  # y += ...: non-zero start
        for pass_, scale in enumerate([1.0, 1.0, 0.5]):
            y = p.apply_batched(DOWN1, ids, x, y0.copy(), scale=scale)
            for i, model_id in enumerate(ids):
                want = y0[i:i + 1].copy()
                if model_id is None:
                    np.testing.assert_array_equal(y[i], y0[i])
                    continue
                {"a": da, "b": db}[model_id].apply(x[i:i + 1], want, scale=scale)
                self.assertLess(rel_err(y[i:i + 1], want), FP32_TOL, (pass_, i, model_id))
            # The variants differ: a row routed to the wrong one would not have matched.
            wrong = db.apply(x[:1], y0[:1].copy(), scale=scale)
            self.assertGreater(rel_err(wrong, y[:1]), 1e-3)
            s = p.stats()
            # One acquisition per distinct id and call; the batch and row→slot table are reused.
            self.assertEqual((s.misses, s.hits, s.loads, s.referenced_deltas), (2, 2 * pass_, 2, 0))
            self.assertEqual((s.batch_builds, s.slot_uploads), (1, 1))
        # float16 activations, a float32 output.
        x16 = x[:2].astype(np.float16)
        y = p.apply_batched(DOWN1, ["b", "a"], x16, np.zeros((2, rows), np.float32))
        want = np.concatenate([db.apply(x16[:1], np.zeros((1, rows), np.float32)),
                               da.apply(x16[1:], np.zeros((1, rows), np.float32))])
        self.assertLess(rel_err(y, want), FP32_TOL)
        # Every id None: nothing happens.
        y = p.apply_batched(DOWN1, [None] * m, x, y0.copy())
        np.testing.assert_array_equal(y, y0)

    def test_errors_carry_status_and_library_message(self):
        p = self.pool()
        with self.assertRaises(dc.Error) as e:
            p.acquire("nope", Q0)
        self.assertEqual((e.exception.status, e.exception.status_name), (dc.ERR_NOT_FOUND, "NOT_FOUND"))
        self.assertEqual(e.exception.message, "dc_pool_acquire: model id 'nope' is not registered")
        with self.assertRaises(dc.Error) as e:
            p.acquire("a", "no.such.tensor")
        self.assertEqual(e.exception.status, dc.ERR_NOT_FOUND)
        self.assertIn("no tensor named 'no.such.tensor'", e.exception.message)
        with self.assertRaises(dc.Error) as e:
            p.query("nope", Q0)
        self.assertEqual(e.exception.message, "dc_pool_query: model id 'nope' is not registered")

        x, y = np.ones((2, 128), np.float32), np.zeros((2, 128), np.float32)
        with self.assertRaises(dc.Error) as e:
            p.apply_batched(Q0, ["a", "nope"], x, y)
        self.assertEqual(e.exception.status, dc.ERR_NOT_FOUND)
        self.assertEqual(e.exception.message, "dc_pool_apply_batched: model id 'nope' is not registered")
        before = p.stats()
        with self.assertRaises(dc.Error) as e:  # checked before the library is called
            p.apply_batched(Q0, ["a", "a"], x, y[:1])
        self.assertEqual(e.exception.status, dc.ERR_SHAPE_MISMATCH)
        with self.assertRaises(dc.Error) as e:
            p.apply_batched(Q0, ["a"], x, y)
        self.assertEqual(e.exception.status, dc.ERR_SHAPE_MISMATCH)
        self.assertEqual(p.stats(), before)

        for bad_id, status in (("a", dc.ERR_DUPLICATE), ("", dc.ERR_INVALID_ARGUMENT)):
            with self.assertRaises(dc.Error) as e:
                p.register(bad_id, self.b)
            self.assertEqual(e.exception.status, status)
        d = p.acquire("b", Q0)
        with self.assertRaises(dc.Error) as e:
            p.unregister("b")
        self.assertEqual(e.exception.status, dc.ERR_BUSY)
        d.release()
        p.unregister("b")
        with self.assertRaises(dc.Error) as e:
            p.unregister("b")
        self.assertEqual(e.exception.status, dc.ERR_NOT_FOUND)
        with self.assertRaises(dc.Error) as e:
            dc.Pool(self.ctx, budget_bytes=0)
        self.assertEqual(e.exception.status, dc.ERR_INVALID_ARGUMENT)
        self.assertIn("device_budget_bytes", e.exception.message)

    def test_prefetch_and_threads(self):
        p = self.pool()
        p.prefetch("a")  # every tensor of a
        p.wait()
        n = len(self.a)
        s = p.stats()
        self.assertEqual((s.prefetch_loaded, s.loads, s.resident_deltas, s.prefetch_pending), (n, n, n, 0))
        self.assertEqual(p.query("a", DOWN1), (dc.POOL_RESIDENT, 0))
        p.acquire("a", DOWN1).release()
        self.assertEqual(p.stats().hits, 1)
        # The thread-safe calls from other threads, while this one holds an acquired delta.
        errors = []

        def worker():
            try:
                p.prefetch("b", Q0)
                p.stats()
                p.query("a", Q0)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        with p.acquire("a", Q0):
            threads = [threading.Thread(target=worker) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.assertEqual(errors, [])
        p.wait()
        self.assertEqual(p.query("b", Q0), (dc.POOL_RESIDENT, 0))
        with self.assertRaises(dc.Error) as e:
            p.prefetch("nope")
        self.assertEqual(e.exception.status, dc.ERR_NOT_FOUND)

    def test_lifetimes(self):
        # A collected PoolDelta releases its reference.
        p = self.pool()
        p.acquire("a", Q0)
        gc.collect()
        self.assertEqual(p.stats().referenced_deltas, 0)
        # Closing the pool invalidates what is still acquired and unlocks the containers.
        d = p.acquire("a", Q0)
        p.close()
        with self.assertRaises(dc.Error):
            d.apply(np.ones((1, 128), np.float32), np.zeros((1, 128), np.float32))
        d.release()
        with self.assertRaises(dc.Error):
            p.stats()
        # Closing the context closes its pools first.
        p2 = dc.Pool(self.ctx)
        p2.register("b", self.b)
        self.ctx.close()
        self.assertIsNone(p2._h)
        self.b.close()


if __name__ == "__main__":
    unittest.main()
