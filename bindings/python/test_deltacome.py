"""python3 -m unittest test_deltacome  (tests/packaging/run.sh runs it against the installed library).

Fixtures: $DELTACOME_FIXTURES (model.dcz, base.safetensors, finetuned.safetensors), or made here with
the CLI ($DELTACOME_CLI, else $DELTACOME_DIR/bin/deltacome, else deltacome on PATH)."""
import json
import os
import shutil
import struct
import subprocess
import tempfile
import unittest

import numpy as np

import deltacome as dc

COMPRESSION_TOL = 0.75  # ‖ΔŴ − ΔW‖/‖ΔW‖ allowed (a useless reconstruction is ≥ 1)
FP32_TOL = 1e-4


def setUpModule():
    global FIX, _tmp
    FIX, _tmp = os.environ.get("DELTACOME_FIXTURES"), None
    if not FIX:
        _tmp = FIX = tempfile.mkdtemp(prefix="deltacome-py-")
        cli = os.environ.get("DELTACOME_CLI") or (
            os.path.join(os.environ["DELTACOME_DIR"], "bin", "deltacome") if os.environ.get("DELTACOME_DIR")
            else "deltacome")
        subprocess.run([cli, "make-demo", "--out", FIX, "--layers", "2", "--hidden", "128", "--seed", "7"],
                       check=True, capture_output=True)
        subprocess.run([cli, "compress", "--base", os.path.join(FIX, "base.safetensors"), "--finetuned",
                        os.path.join(FIX, "finetuned.safetensors"), "-o", os.path.join(FIX, "model.dcz")],
                       check=True, capture_output=True)


def tearDownModule():
    if _tmp:
        shutil.rmtree(_tmp)


def fixture(name):
    return os.path.join(FIX, name)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    dtypes = {"F32": np.float32, "F16": np.float16}
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(data[b:end], dtypes[e["dtype"]]).reshape(e["shape"])
    return out


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


class DeltacomeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.base = read_safetensors(fixture("base.safetensors"))
        cls.ft = read_safetensors(fixture("finetuned.safetensors"))

    def setUp(self):
        self.c = dc.Container.open(fixture("model.dcz"))
        self.ctx = dc.Context(dc.BACKEND_CPU)
        self.lowrank = [t for t in self.c.tensors() if t.kind == dc.KIND_LOWRANK]

    def test_version(self):
        self.assertEqual(dc.version(), "0.1.0")
        self.assertTrue(dc.backend_available(dc.BACKEND_CPU))

    def test_open_and_inspect(self):
        info = self.c.info()
        self.assertEqual(info["format"][0], 1)
        self.assertEqual(info["file_bytes"], os.path.getsize(fixture("model.dcz")))
        self.assertEqual(info["tensor_count"], len(self.c))
        self.assertTrue(info["tool_version"].startswith("deltacome"))
        for t in self.c.tensors():
            shape = self.ft[t.name].shape
            self.assertEqual((t.rows, t.cols), (shape[0], shape[1] if len(shape) > 1 else 1), t.name)
            self.assertEqual(self.c.find(t.name), t.index)
        self.assertGreaterEqual(len(self.lowrank), 7)
        for t in self.lowrank:
            s = self.c.singular_values(t.index)
            self.assertEqual(len(s), t.rank)
            self.assertTrue(np.all(np.diff(s) <= 0))
            self.assertEqual(t.bands[0][1], 0)
            self.assertEqual(t.bands[-1][2], t.rank)
        self.c.verify()
        self.c.check_base_file(fixture("base.safetensors"))
        name = self.lowrank[0].name
        self.c.check_base_tensor(name, self.base[name])
        with self.assertRaises(dc.Error) as e:
            self.c.check_base_tensor(name, self.ft[name])
        self.assertEqual(e.exception.status, dc.ERR_BASE_MISMATCH)

    def test_open_memory(self):
        with open(fixture("model.dcz"), "rb") as f:
            m = dc.Container.from_bytes(f.read())
        self.assertEqual([t.name for t in m.tensors()], [t.name for t in self.c.tensors()])
        m.verify()

    def test_missing_tensor(self):
        with self.assertRaises(dc.Error) as e:
            self.c.find("model.layers.99.nope.weight")
        self.assertEqual(e.exception.status, dc.ERR_NOT_FOUND)
        self.assertIn("model.layers.99.nope.weight", e.exception.message)

    def test_merge_and_apply_against_references(self):
        rng = np.random.default_rng(3)
        for t in self.lowrank:
            d = self.ctx.load(self.c, t.name)
            wb, wf = self.base[t.name].astype(np.float64), self.ft[t.name].astype(np.float64)
            dw = d.dense().astype(np.float64)
            self.assertLess(rel_err(dw, wf - wb), COMPRESSION_TOL, t.name)
            w16 = self.base[t.name].copy()
            d.merge(w16)
            self.assertLess(rel_err(w16.astype(np.float64) - wb, wf - wb), COMPRESSION_TOL + 0.05, t.name)

            x = rng.uniform(-1, 1, (5, t.cols)).astype(np.float32)
            y = np.zeros((5, t.rows), np.float32)
            d.apply(x, y)
            self.assertLess(rel_err(y, x.astype(np.float64) @ dw.T), FP32_TOL, t.name)
            self.assertLess(rel_err(y, x.astype(np.float64) @ (wf - wb).T), COMPRESSION_TOL, t.name)
            # Base weight (fp16), scale, and a strided y (a column slice of a wider array).
            wide = np.full((5, t.rows + 3), 7, np.float32)
            d.apply(x, wide[:, :t.rows], base=self.base[t.name], scale=0.5)
            self.assertLess(rel_err(wide[:, :t.rows], x.astype(np.float64) @ (wb + 0.5 * dw).T), FP32_TOL, t.name)
            self.assertTrue(np.all(wide[:, t.rows:] == 7))
            x16 = x.astype(np.float16)
            y16 = np.zeros((5, t.rows), np.float16)
            d.apply(x16, y16)
            self.assertLess(rel_err(y16, x16.astype(np.float64) @ dw.T), 2e-3, t.name)
            with self.assertRaises(dc.Error) as e:
                d.apply(x[:, :-1], y)
            self.assertEqual(e.exception.status, dc.ERR_SHAPE_MISMATCH)

    def test_batched_apply(self):
        q = [t.name for t in self.lowrank if t.name.endswith("self_attn.q_proj.weight")]
        d0, d1 = self.ctx.load(self.c, q[0]), self.ctx.load(self.c, q[1])
        b = dc.Batch([d0, d1])
        slots = np.array([0, 1, -1, 1, 0, 0], np.int32)
        x = np.random.default_rng(9).uniform(-1, 1, (6, d0.info.cols)).astype(np.float32)
        y = np.zeros((6, d0.info.rows), np.float32)
        b.apply(slots, x, y)
        for i, s in enumerate(slots):
            want = np.zeros((1, d0.info.rows), np.float32)
            if s >= 0:
                (d0, d1)[s].apply(x[i:i + 1], want)
            self.assertLess(np.abs(y[i] - want[0]).max(), 1e-4 * max(1.0, np.abs(want).max()), i)
        with self.assertRaises(dc.Error):
            b.apply(np.array([0, 2, 0, 0, 0, 0]), x, y)

    def test_load_all(self):
        all_ = self.ctx.load_all(self.c)
        self.assertEqual([d.name for d in all_], [t.name for t in self.c.tensors()])

    def test_corrupt_and_truncated(self):
        with open(fixture("model.dcz"), "rb") as f:
            raw = bytearray(f.read())
        mo, ms = struct.unpack_from("<QQ", raw, 16)
        bad = bytearray(raw)
        bad[mo + ms // 2] ^= 1
        with self.assertRaises(dc.Error) as e:
            dc.Container.from_bytes(bad)
        self.assertEqual(e.exception.status, dc.ERR_CHECKSUM)
        # A byte inside the first zstd frame of the payload.
        (payload,) = struct.unpack_from("<Q", raw, 32)
        fhd = raw[payload + 4]
        single = (fhd >> 5) & 1
        h = 4 + 1 + (1 - single) + [0, 1, 2, 4][fhd & 3] + [single, 2, 4, 8][fhd >> 6]
        bh = int.from_bytes(raw[payload + h:payload + h + 3], "little")
        at = payload + h + 3 + (0 if (bh >> 1) & 3 == 1 else (bh >> 3) // 2)
        bad = bytearray(raw)
        bad[at] ^= 0x5A
        first = self.c.tensor_info(0).name
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "flipped.dcz")
            with open(path, "wb") as f:
                f.write(bad)
            c = dc.Container.open(path)
            with self.assertRaises(dc.Error) as e:
                c.verify()
            self.assertIn(e.exception.status, (dc.ERR_CHECKSUM, dc.ERR_DECOMPRESS))
            self.assertIn(first, e.exception.message)
            with self.assertRaises(dc.Error) as e2:
                self.ctx.load(c, first)
            self.assertEqual(e2.exception.status, e.exception.status)
            for cut in (len(raw) - 1, len(raw) // 2, 40):
                p = os.path.join(d, "cut.dcz")
                with open(p, "wb") as f:
                    f.write(raw[:cut])
                with self.assertRaises(dc.Error) as e:
                    dc.Container.open(p)
                self.assertIn(e.exception.status, (dc.ERR_TRUNCATED, dc.ERR_CORRUPT))
                self.assertTrue(e.exception.message)
            with self.assertRaises(dc.Error) as e:
                dc.Container.open(os.path.join(d, "missing.dcz"))
            self.assertEqual(e.exception.status, dc.ERR_IO)


if __name__ == "__main__":
    unittest.main()
