"""ctypes binding of libdeltacome over numpy arrays.

    import numpy as np, deltacome as dc
    with dc.Container.open("model.dcz") as c, dc.Context(dc.BACKEND_CPU) as ctx:
        d = ctx.load(c, "model.layers.0.self_attn.q_proj.weight")
        y = np.zeros((4, d.info.rows), np.float32)
        d.apply(x, y)                        # y += x @ ΔWᵀ  (x: float32/float16 [4 × cols])

The library is found through $DELTACOME_LIBRARY (a path to libdeltacome.so), then
$DELTACOME_DIR/lib, then the system's loader path. Rules from the C header: a Container is safe to
share between threads; a Context and its deltas are used by one thread at a time. Deltas keep their
Context alive, and a Batch keeps its deltas alive, so Python's reference counting frees them in a
valid order; close() frees explicitly. Arrays passed to apply/merge are only used during the call.

Pool (EXPERIMENTAL API, may change: it wraps include/deltacome/dc_pool.h) keeps the deltas of many
variants resident in one Context under a budget and applies batches by model id:

    with dc.Pool(ctx, budget_bytes=64 << 20) as pool:
        pool.register("math", math_container)
        pool.apply_batched(name, ["math", None, "code"], x, y)   # y[i] += x[i] @ ΔW(id)ᵀ
        with pool.acquire("math", name) as d:                     # released on exit
            d.apply(x, y)
"""
import collections
import ctypes as C
import os
import weakref

import numpy as np

__all__ = ["Error", "Container", "Context", "Delta", "Batch", "Pool", "PoolDelta", "PoolStats", "version",
           "backend_available", "BACKEND_AUTO", "BACKEND_CPU", "BACKEND_CUDA", "BACKEND_HIP",
           "KIND_LOWRANK", "KIND_BITDELTA", "KIND_DENSE",
           "POOL_ABSENT", "POOL_DECODING", "POOL_DECODED", "POOL_RESIDENT"]

# ---- enums (values pinned by the header) ----------------------------------------------------------
DTYPE_F32, DTYPE_F16, DTYPE_BF16 = 0, 1, 2
KIND_LOWRANK, KIND_BITDELTA, KIND_DENSE = 0, 1, 2
BACKEND_AUTO, BACKEND_CPU, BACKEND_CUDA, BACKEND_HIP = 0, 1, 2, 3
SHARD_NONE, SHARD_ROWS, SHARD_COLS = 0, 1, 2
OPEN_NO_MMAP, OPEN_TRUSTED = 0x1, 0x2
LOAD_SKIP_CHECKSUM = 0x1
APPLY_INCLUDE_BASE = 0x1
MAX_BANDS = 8
POOL_ABSENT, POOL_DECODING, POOL_DECODED, POOL_RESIDENT = 0, 1, 2, 3  # dc_pool_entry_state

STATUS_NAMES = {0: "OK", 1: "INVALID_ARGUMENT", 2: "IO", 3: "BAD_MAGIC", 4: "UNSUPPORTED_VERSION",
                5: "TRUNCATED", 6: "CORRUPT", 7: "CHECKSUM", 8: "OVERFLOW", 9: "LIMIT", 10: "NOT_FOUND",
                11: "OUT_OF_MEMORY", 12: "BASE_MISMATCH", 13: "UNSUPPORTED", 14: "BACKEND",
                15: "SHAPE_MISMATCH", 16: "DUPLICATE", 17: "OVERLAP", 18: "DECOMPRESS", 19: "BUDGET",
                20: "BUSY", 99: "INTERNAL"}
globals().update({"ERR_" + n: v for v, n in STATUS_NAMES.items() if v})

# ---- structs (field order and types exactly as in deltacome.h) -------------------------------------
u32, u64, i32, u16, f32, vp, cp = (C.c_uint32, C.c_uint64, C.c_int32, C.c_uint16, C.c_float, C.c_void_p,
                                   C.c_char_p)


class _OpenOptions(C.Structure):
    _fields_ = [("struct_size", u32), ("flags", u32), ("max_manifest_bytes", u64), ("max_segment_bytes", u64)]


class _ContainerInfo(C.Structure):
    _fields_ = [("struct_size", u32), ("format_major", u16), ("format_minor", u16), ("tensor_count", u64),
                ("file_bytes", u64), ("payload_bytes", u64), ("model_name", cp), ("base_model_name", cp),
                ("tool_version", cp), ("recipe_json", cp)]


class _BandInfo(C.Structure):
    _fields_ = [("bits", u32), ("rank_begin", u32), ("rank_end", u32), ("group_size", u32)]


class _TensorInfo(C.Structure):
    _fields_ = [("struct_size", u32), ("name", cp), ("rows", u64), ("cols", u64), ("kind", u32),
                ("dtype", u32), ("rank", u32), ("band_count", u32), ("bands", _BandInfo * MAX_BANDS),
                ("has_act_order", C.c_int), ("stored_bytes", u64), ("packed_bytes", u64), ("fp16_bytes", u64)]


class _ContextOptions(C.Structure):
    _fields_ = [("struct_size", u32), ("backend", u32), ("device", i32), ("num_threads", i32)]


class _Shard(C.Structure):
    _fields_ = [("split", u32), ("index", u32), ("count", u32), ("begin", u64), ("end", u64)]


class _LoadOptions(C.Structure):
    _fields_ = [("struct_size", u32), ("flags", u32), ("stream", vp), ("shard", _Shard)]


class _DeltaInfo(C.Structure):
    _fields_ = [("struct_size", u32), ("rows", u64), ("cols", u64), ("kind", u32), ("device_bytes", u64),
                ("split", u32), ("shard_begin", u64), ("shard_end", u64), ("name", cp)]


class _ApplyParams(C.Structure):
    _fields_ = [("struct_size", u32), ("flags", u32), ("m", u64), ("x", vp), ("x_dtype", u32), ("ldx", u64),
                ("y", vp), ("y_dtype", u32), ("ldy", u64), ("base_weight", vp), ("base_dtype", u32),
                ("ld_base", u64), ("scale", f32), ("stream", vp), ("workspace", vp), ("workspace_bytes", u64)]


# dc_pool.h (experimental)
class _PoolOptions(C.Structure):
    _fields_ = [("struct_size", u32), ("load_flags", u32), ("device_budget_bytes", u64), ("host_threads", i32),
                ("reserved", u32)]


_POOL_STATS_FIELDS = ["budget_bytes", "resident_bytes", "resident_deltas", "referenced_deltas", "hits", "misses",
                      "loads", "evictions", "prefetch_loaded", "prefetch_dropped", "prefetch_pending",
                      "batch_builds", "slot_uploads"]


class _PoolStats(C.Structure):
    _fields_ = [("struct_size", u32), ("reserved", u32)] + [(f, u64) for f in _POOL_STATS_FIELDS]


def _load_library():
    candidates = []
    if os.environ.get("DELTACOME_LIBRARY"):
        candidates.append(os.environ["DELTACOME_LIBRARY"])
    if os.environ.get("DELTACOME_DIR"):
        for sub in ("lib", "lib64"):
            candidates.append(os.path.join(os.environ["DELTACOME_DIR"], sub, "libdeltacome.so.0"))
    candidates += ["libdeltacome.so.0", "libdeltacome.so"]
    errors = []
    for path in candidates:
        try:
            return C.CDLL(path)
        except OSError as e:
            errors.append(str(e))
    raise OSError("cannot load libdeltacome (set DELTACOME_LIBRARY or DELTACOME_DIR): " + "; ".join(errors))


_lib = _load_library()
P = C.POINTER


def _sig(name, res, *args):
    f = getattr(_lib, name)
    f.restype, f.argtypes = res, list(args)


_sig("dc_version", u32)
_sig("dc_version_string", cp)
_sig("dc_status_string", cp, u32)
_sig("dc_last_error_message", cp)
_sig("dc_backend_available", C.c_int, u32)
_sig("dc_backend_name", cp, u32)
_sig("dc_open_options_init", None, P(_OpenOptions))
_sig("dc_container_open", u32, P(vp), cp, P(_OpenOptions))
_sig("dc_container_open_memory", u32, P(vp), vp, C.c_size_t, P(_OpenOptions))
_sig("dc_container_close", None, vp)
_sig("dc_container_get_info", u32, vp, P(_ContainerInfo))
_sig("dc_container_tensor_count", u64, vp)
_sig("dc_container_tensor_info", u32, vp, u64, P(_TensorInfo))
_sig("dc_container_find_tensor", u32, vp, cp, P(u64))
_sig("dc_container_singular_values", u32, vp, u64, P(f32), u64, P(u64))
_sig("dc_container_verify", u32, vp)
_sig("dc_container_check_base_tensor", u32, vp, cp, vp, u64)
_sig("dc_container_check_base_file", u32, vp, cp)
_sig("dc_context_options_init", None, P(_ContextOptions))
_sig("dc_context_create", u32, P(vp), P(_ContextOptions))
_sig("dc_context_destroy", None, vp)
_sig("dc_context_backend", u32, vp)
_sig("dc_load_options_init", None, P(_LoadOptions))
_sig("dc_delta_load", u32, P(vp), vp, vp, cp, P(_LoadOptions))
_sig("dc_delta_load_index", u32, P(vp), vp, vp, u64, P(_LoadOptions))
_sig("dc_delta_load_all", u32, P(vp), vp, vp, P(_LoadOptions))
_sig("dc_delta_free", None, vp)
_sig("dc_delta_get_info", u32, vp, P(_DeltaInfo))
_sig("dc_apply_params_init", None, P(_ApplyParams))
_sig("dc_apply_workspace_size", u32, vp, u64, P(u64))
_sig("dc_apply_delta_linear", u32, vp, P(_ApplyParams))
_sig("dc_merge_delta", u32, vp, vp, u32, u64, f32, vp)
_sig("dc_delta_batch_create", u32, P(vp), P(vp), u64)
_sig("dc_delta_batch_free", None, vp)
_sig("dc_apply_delta_linear_batched", u32, vp, P(i32), P(_ApplyParams))
_sig("dc_pool_options_init", None, P(_PoolOptions))
_sig("dc_pool_create", u32, P(vp), vp, P(_PoolOptions))
_sig("dc_pool_destroy", None, vp)
_sig("dc_pool_register", u32, vp, cp, vp)
_sig("dc_pool_unregister", u32, vp, cp)
_sig("dc_pool_acquire", u32, vp, cp, cp, vp, P(vp))
_sig("dc_pool_release", u32, vp, vp)
_sig("dc_pool_prefetch", u32, vp, cp, cp, vp)
_sig("dc_pool_wait", u32, vp)
_sig("dc_pool_query", u32, vp, cp, cp, P(u32), P(u32))
_sig("dc_pool_get_stats", u32, vp, P(_PoolStats))
_sig("dc_pool_apply_batched", u32, vp, cp, P(cp), P(_ApplyParams))


class Error(Exception):
    """A failed call: .status (the dc_status code), .status_name, .message (the library's text)."""

    def __init__(self, status, message):
        self.status = int(status)
        self.status_name = STATUS_NAMES.get(self.status, "UNKNOWN")
        self.message = message
        super().__init__("%s: %s" % (_lib.dc_status_string(self.status).decode(), message))


def _check(status):
    # ctypes releases the GIL around the call but stays on this OS thread, so the thread-local
    # message read here is the one of this call.
    if status:
        raise Error(status, _lib.dc_last_error_message().decode("utf-8", "replace"))


def _s(b):
    return b.decode("utf-8", "replace") if b else ""


def version():
    return _lib.dc_version_string().decode()


def backend_available(backend):
    return bool(_lib.dc_backend_available(backend))


_DTYPES = {np.dtype(np.float32): DTYPE_F32, np.dtype(np.float16): DTYPE_F16}


def _dtype_of(a, what):
    if not isinstance(a, np.ndarray):
        raise Error(ERR_INVALID_ARGUMENT, "%s must be a numpy array" % what)
    if a.dtype not in _DTYPES:
        raise Error(ERR_UNSUPPORTED, "%s has dtype %s; use float32 or float16" % (what, a.dtype))
    return _DTYPES[a.dtype]


def _matrix(a, rows, cols, what, writable=False):
    """Checks a 2-D array [rows × cols] with unit column stride; returns (pointer, row stride)."""
    if a.ndim != 2 or a.shape[0] != rows or a.shape[1] != cols:
        raise Error(ERR_SHAPE_MISMATCH, "%s has shape %s, want (%d, %d)" % (what, a.shape, rows, cols))
    if a.strides[1] != a.itemsize or (rows > 1 and a.strides[0] % a.itemsize):
        raise Error(ERR_SHAPE_MISMATCH, "%s must have contiguous rows" % what)
    if writable and not a.flags.writeable:
        raise Error(ERR_INVALID_ARGUMENT, "%s is read-only" % what)
    ld = a.strides[0] // a.itemsize if rows > 1 else cols
    return C.c_void_p(a.ctypes.data), ld


class TensorInfo:
    def __init__(self, index, t):
        self.index, self.name = index, _s(t.name)
        self.rows, self.cols, self.kind, self.dtype, self.rank = t.rows, t.cols, t.kind, t.dtype, t.rank
        self.bands = [(b.bits, b.rank_begin, b.rank_end, b.group_size) for b in t.bands[:min(t.band_count, MAX_BANDS)]]
        self.has_act_order = bool(t.has_act_order)
        self.stored_bytes, self.packed_bytes, self.fp16_bytes = t.stored_bytes, t.packed_bytes, t.fp16_bytes

    def __repr__(self):
        return "TensorInfo(%r, %dx%d, kind=%d, rank=%d)" % (self.name, self.rows, self.cols, self.kind, self.rank)


class _Closeable:
    """Owns a C handle released by close(): usable in a `with` block, closed by the collector as a
    backstop."""

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Container(_Closeable):
    """An opened .dcz container. Immutable and thread-safe."""

    def __init__(self, handle):
        self._h = handle
        self._pools = 0  # open pools it is registered in: close() refuses while > 0

    @classmethod
    def open(cls, path, no_mmap=False, trusted=False):
        o = _OpenOptions()
        _lib.dc_open_options_init(C.byref(o))
        o.flags = (OPEN_NO_MMAP if no_mmap else 0) | (OPEN_TRUSTED if trusted else 0)
        h = vp()
        _check(_lib.dc_container_open(C.byref(h), os.fsencode(path), C.byref(o)))
        return cls(h)

    @classmethod
    def from_bytes(cls, data):
        """Opens an in-memory image; the library copies it."""
        buf = bytes(data)
        h = vp()
        _check(_lib.dc_container_open_memory(C.byref(h), buf, len(buf), None))
        return cls(h)

    def close(self):
        """Frees the container (deltas loaded from it stay valid). Raises Error(ERR_BUSY) while it is
        registered in an open Pool."""
        if self._pools:
            raise Error(ERR_BUSY, "the container is registered in %d open pools: unregister it or close them"
                        % self._pools)
        if self._h:
            _lib.dc_container_close(self._h)
            self._h = None

    def _handle(self):
        if not self._h:
            raise Error(ERR_INVALID_ARGUMENT, "the container is closed")
        return self._h

    def info(self):
        i = _ContainerInfo()
        i.struct_size = C.sizeof(i)
        _check(_lib.dc_container_get_info(self._handle(), C.byref(i)))
        return dict(format=(i.format_major, i.format_minor), tensor_count=i.tensor_count,
                    file_bytes=i.file_bytes, payload_bytes=i.payload_bytes, model_name=_s(i.model_name),
                    base_model_name=_s(i.base_model_name), tool_version=_s(i.tool_version),
                    recipe_json=_s(i.recipe_json))

    def __len__(self):
        return _lib.dc_container_tensor_count(self._handle())

    def tensor_info(self, index):
        t = _TensorInfo()
        t.struct_size = C.sizeof(t)
        _check(_lib.dc_container_tensor_info(self._handle(), index, C.byref(t)))
        return TensorInfo(index, t)

    def tensors(self):
        return [self.tensor_info(i) for i in range(len(self))]

    def find(self, name):
        idx = u64()
        _check(_lib.dc_container_find_tensor(self._handle(), name.encode(), C.byref(idx)))
        return idx.value

    def singular_values(self, index):
        n = u64()
        _check(_lib.dc_container_singular_values(self._handle(), index, None, 0, C.byref(n)))
        out = np.zeros(n.value, np.float32)
        _check(_lib.dc_container_singular_values(self._handle(), index, out.ctypes.data_as(P(f32)), n.value,
                                                 C.byref(n)))
        return out[:n.value]

    def verify(self):
        _check(_lib.dc_container_verify(self._handle()))

    def check_base_file(self, path):
        _check(_lib.dc_container_check_base_file(self._handle(), os.fsencode(path)))

    def check_base_tensor(self, name, data):
        buf = np.ascontiguousarray(data).tobytes()
        _check(_lib.dc_container_check_base_tensor(self._handle(), name.encode(), buf, len(buf)))


class Context(_Closeable):
    """One backend on one device; used by one thread at a time."""

    def __init__(self, backend=BACKEND_AUTO, device=0, num_threads=0):
        o = _ContextOptions()
        _lib.dc_context_options_init(C.byref(o))
        o.backend, o.device, o.num_threads = backend, device, num_threads
        h = vp()
        _check(_lib.dc_context_create(C.byref(h), C.byref(o)))
        self._h = h
        self.backend = _lib.dc_context_backend(h)
        self._live = 0  # deltas and batches still open: they hold a reference to this object
        self._pools = weakref.WeakSet()  # open pools on this context (they hold a reference to it)

    def close(self):
        """Destroys the context. Deltas and pools keep a reference to it, so normally this runs once
        they are gone; calling it earlier closes its pools and frees the deltas still loaded (their
        objects then refuse to work)."""
        if self._h:
            for pool in list(self._pools):
                pool.close()
            _lib.dc_context_destroy(self._h)
            self._h = None

    def _handle(self):
        if not self._h:
            raise Error(ERR_INVALID_ARGUMENT, "the context is closed")
        return self._h

    @staticmethod
    def _opts(verify_checksum, split, shard_index, shard_count, begin, end):
        o = _LoadOptions()
        _lib.dc_load_options_init(C.byref(o))
        o.flags = 0 if verify_checksum else LOAD_SKIP_CHECKSUM
        o.shard.split, o.shard.index, o.shard.count, o.shard.begin, o.shard.end = (
            split, shard_index, shard_count, begin, end)
        return o

    def load(self, container, name_or_index, verify_checksum=True, split=SHARD_NONE, shard_index=0,
             shard_count=0, begin=0, end=0):
        o = self._opts(verify_checksum, split, shard_index, shard_count, begin, end)
        h = vp()
        if isinstance(name_or_index, str):
            _check(_lib.dc_delta_load(C.byref(h), self._handle(), container._handle(), name_or_index.encode(),
                                      C.byref(o)))
        else:
            _check(_lib.dc_delta_load_index(C.byref(h), self._handle(), container._handle(), int(name_or_index),
                                            C.byref(o)))
        return Delta(self, h)

    def load_all(self, container, verify_checksum=True):
        o = self._opts(verify_checksum, SHARD_NONE, 0, 0, 0, 0)
        handles = (vp * len(container))()
        _check(_lib.dc_delta_load_all(handles, self._handle(), container._handle(), C.byref(o)))
        return [Delta(self, vp(h)) for h in handles]


class DeltaInfo:
    def __init__(self, i):
        self.name, self.rows, self.cols, self.kind = _s(i.name), i.rows, i.cols, i.kind
        self.device_bytes, self.split, self.shard_begin, self.shard_end = (
            i.device_bytes, i.split, i.shard_begin, i.shard_end)
        self.out_features = self.shard_end - self.shard_begin if self.split == SHARD_ROWS else self.rows
        self.in_features = self.shard_end - self.shard_begin if self.split == SHARD_COLS else self.cols


def _apply_params(ctx, out_f, in_f, x, y, base, scale):
    if ctx.backend != BACKEND_CPU:
        raise Error(ERR_UNSUPPORTED, "apply with numpy arrays needs a CPU context")
    m = x.shape[0] if x.ndim == 2 else -1
    p = _ApplyParams()
    _lib.dc_apply_params_init(C.byref(p))
    p.x_dtype, p.y_dtype = _dtype_of(x, "x"), _dtype_of(y, "y")
    p.x, p.ldx = _matrix(x, m, in_f, "x")
    p.y, p.ldy = _matrix(y, m, out_f, "y", writable=True)
    p.m, p.scale = m, scale
    if base is not None:
        p.flags |= APPLY_INCLUDE_BASE
        p.base_dtype = _dtype_of(base, "base")
        p.base_weight, p.ld_base = _matrix(base, out_f, in_f, "base")
    return p


class Delta:
    """A delta loaded into a context. Keeps the context alive."""

    def __init__(self, ctx, handle):
        self._ctx, self._h = ctx, handle
        ctx._live += 1
        i = _DeltaInfo()
        i.struct_size = C.sizeof(i)
        _check(_lib.dc_delta_get_info(handle, C.byref(i)))
        self.info = DeltaInfo(i)
        self.name = self.info.name

    def close(self):
        if self._h:
            if self._ctx._h:  # a closed context already freed it
                _lib.dc_delta_free(self._h)
            self._h = None
            self._ctx._live -= 1

    def __del__(self):
        self.close()

    def _handle(self):
        if not self._h or not self._ctx._h:
            raise Error(ERR_INVALID_ARGUMENT, "the delta or its context is closed")
        return self._h

    def apply(self, x, y, base=None, scale=1.0):
        """y += x @ (scale·ΔW)ᵀ in place (x [m × in], y [m × out], float32 or float16).
        With base [out × in]: y = x @ (base + scale·ΔW)ᵀ."""
        h = self._handle()
        p = _apply_params(self._ctx, self.info.out_features, self.info.in_features, x, y, base, scale)
        _check(_lib.dc_apply_delta_linear(h, C.byref(p)))
        return y

    def merge(self, w, scale=1.0):
        """w += scale·ΔW in place (w [out × in], float32 or float16)."""
        h = self._handle()
        if self._ctx.backend != BACKEND_CPU:
            raise Error(ERR_UNSUPPORTED, "merge with a numpy array needs a CPU context")
        dt = _dtype_of(w, "w")
        ptr, ld = _matrix(w, self.info.out_features, self.info.in_features, "w", writable=True)
        _check(_lib.dc_merge_delta(h, ptr, dt, ld, scale, None))
        return w

    def dense(self):
        """ΔŴ as a float32 array (merged into zeros)."""
        return self.merge(np.zeros((self.info.out_features, self.info.in_features), np.float32))


class Batch:
    """Same-shape deltas of one layer for multi-tenant apply. Keeps its deltas alive."""

    def __init__(self, deltas):
        if not deltas:
            raise Error(ERR_INVALID_ARGUMENT, "a batch needs at least one delta")
        self._deltas = list(deltas)
        arr = (vp * len(deltas))(*[d._handle() for d in deltas])
        h = vp()
        _check(_lib.dc_delta_batch_create(C.byref(h), arr, len(deltas)))
        self._h = h

    def close(self):
        if self._h:
            if self._deltas[0]._ctx._h:
                _lib.dc_delta_batch_free(self._h)
            self._h = None

    def __del__(self):
        self.close()

    def __len__(self):
        return len(self._deltas)

    def apply(self, row_slot, x, y, base=None, scale=1.0):
        """For every row i: y[i] += x[i] @ ΔW_{row_slot[i]}ᵀ (row_slot[i] == -1: no delta)."""
        if not self._h:
            raise Error(ERR_INVALID_ARGUMENT, "the batch is closed")
        for d in self._deltas:
            d._handle()
        d0 = self._deltas[0]
        slots = np.ascontiguousarray(row_slot, dtype=np.int32)
        if slots.ndim != 1 or slots.shape[0] != x.shape[0]:
            raise Error(ERR_SHAPE_MISMATCH, "row_slot has %d entries for %d rows" % (slots.size, x.shape[0]))
        if slots.size and (slots.min() < -1 or slots.max() >= len(self)):
            raise Error(ERR_INVALID_ARGUMENT, "row_slot values must be in -1..%d" % (len(self) - 1))
        p = _apply_params(d0._ctx, d0.info.out_features, d0.info.in_features, x, y, base, scale)
        _check(_lib.dc_apply_delta_linear_batched(self._h, slots.ctypes.data_as(P(i32)), C.byref(p)))
        return y


# ---- the delta pool (EXPERIMENTAL API, may change: include/deltacome/dc_pool.h) ----------------------

PoolStats = collections.namedtuple("PoolStats", _POOL_STATS_FIELDS)
PoolStats.__doc__ = "A consistent snapshot of a Pool's counters (meanings: dc_pool.h)."


def _id(model_id, what="model id"):
    if not isinstance(model_id, str):
        raise Error(ERR_INVALID_ARGUMENT, "%s must be a str, not %s" % (what, type(model_id).__name__))
    return model_id.encode()


class Pool(_Closeable):
    """Keeps the deltas of many fine-tuned variants of one base model resident in one Context under a
    memory budget (least recently used evicted first) and applies batches whose rows belong to
    different variants. EXPERIMENTAL API, may change.

    Keeps its Context and its registered Containers alive (a registered container refuses close()).
    Threads: acquire, wait, apply_batched, unregister and close use the context, so they follow the
    Context's rule (one thread at a time, with the context's own calls); register, prefetch, query,
    stats and PoolDelta.release may be called from any thread. close() must not overlap other calls."""

    def __init__(self, ctx, budget_bytes=None, verify_checksum=True, host_threads=0):
        self._h = None
        o = _PoolOptions()
        _lib.dc_pool_options_init(C.byref(o))
        if budget_bytes is not None:
            o.device_budget_bytes = budget_bytes
        o.load_flags = 0 if verify_checksum else LOAD_SKIP_CHECKSUM
        o.host_threads = host_threads
        h = vp()
        _check(_lib.dc_pool_create(C.byref(h), ctx._handle(), C.byref(o)))
        self._h, self._ctx = h, ctx
        self._models = {}  # model id -> Container: kept alive, and their tensors' shapes
        self._acquired = weakref.WeakSet()  # PoolDeltas not yet released
        ctx._pools.add(self)

    def close(self):
        """Destroys the pool: resident deltas are freed, PoolDeltas not yet released stop working, and
        the registered containers may be closed again."""
        if self._h:
            for d in list(self._acquired):
                d._forget()
            if self._ctx._h:
                _lib.dc_pool_destroy(self._h)
            self._h = None
            for c in self._models.values():
                c._pools -= 1
            self._models = {}
            self._ctx._pools.discard(self)

    def _handle(self):
        if not self._h or not self._ctx._h:
            raise Error(ERR_INVALID_ARGUMENT, "the pool or its context is closed")
        return self._h

    def register(self, model_id, container):
        """Registers container under model_id (nothing is loaded). ERR_DUPLICATE if the id is taken."""
        _check(_lib.dc_pool_register(self._handle(), _id(model_id), container._handle()))
        self._models[model_id] = container
        container._pools += 1

    def unregister(self, model_id):
        """Frees the model's resident deltas and forgets the id. ERR_BUSY while one of its deltas is
        acquired, ERR_NOT_FOUND for an unknown id."""
        _check(_lib.dc_pool_unregister(self._handle(), _id(model_id)))
        c = self._models.pop(model_id, None)
        if c is not None:
            c._pools -= 1

    def acquire(self, model_id, tensor):
        """The delta of tensor of model_id, loaded if not resident (evicting least recently used
        unreferenced deltas as needed), with one reference: a PoolDelta, released by release(), by
        leaving its with-block, or when it is collected."""
        out = vp()
        _check(_lib.dc_pool_acquire(self._handle(), _id(model_id), _id(tensor, "tensor name"), None, C.byref(out)))
        return PoolDelta(self, model_id, out)

    def prefetch(self, model_id, tensor=None):
        """Queues tensor (None: every tensor of the model) for decoding on the pool's host threads;
        wait(), the next apply_batched, or an acquire of it places it."""
        name = None if tensor is None else _id(tensor, "tensor name")
        _check(_lib.dc_pool_prefetch(self._handle(), _id(model_id), name, None))

    def wait(self):
        """Waits for every queued prefetch and places the decoded deltas (raises the first failure)."""
        _check(_lib.dc_pool_wait(self._handle()))

    def query(self, model_id, tensor):
        """(state, refcount) of one entry: state is POOL_ABSENT, _DECODING, _DECODED or _RESIDENT."""
        state, refs = u32(), u32()
        _check(_lib.dc_pool_query(self._handle(), _id(model_id), _id(tensor, "tensor name"), C.byref(state),
                                  C.byref(refs)))
        return state.value, refs.value

    def stats(self):
        s = _PoolStats()
        s.struct_size = C.sizeof(s)
        _check(_lib.dc_pool_get_stats(self._handle(), C.byref(s)))
        return PoolStats(*[getattr(s, f) for f in _POOL_STATS_FIELDS])

    def _shape(self, model_id, tensor):
        c = self._models.get(model_id)
        if c is None:
            return None
        try:
            t = c.tensor_info(c.find(tensor))
        except Error:
            return None
        return t.rows, t.cols

    def apply_batched(self, tensor, model_ids, x, y, base=None, scale=1.0):
        """For every row i: y[i] += x[i] @ (scale·ΔW(model_ids[i], tensor))ᵀ in place, with one batched
        apply (x [m × in], y [m × out], float32 or float16; CPU context); rows whose id is None get no
        delta. With base [out × in] every row (None ones included) becomes y[i] = x[i] @ (base + ...)ᵀ."""
        h = self._handle()
        ids = list(model_ids)
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[0] != len(ids):
            raise Error(ERR_SHAPE_MISMATCH, "x must be a 2-D array with one row per model id (%d)" % len(ids))
        # Bounds: x, y and base must fit the tensor's shape in every registered model named. An id the
        # pool cannot resolve has no delta the library could apply: it fails with the library's message.
        p = None
        for model_id in dict.fromkeys(i for i in ids if i is not None):
            shape = self._shape(model_id, tensor)
            if shape is not None:
                p = _apply_params(self._ctx, shape[0], shape[1], x, y, base, scale)
        if p is None:
            out_f = y.shape[1] if isinstance(y, np.ndarray) and y.ndim == 2 else 0
            p = _apply_params(self._ctx, out_f, x.shape[1], x, y, base, scale)
        arr = (cp * max(len(ids), 1))(*[None if i is None else _id(i) for i in ids])
        _check(_lib.dc_pool_apply_batched(h, _id(tensor, "tensor name"), arr, C.byref(p)))
        return y


class PoolDelta(Delta):
    """A delta acquired from a Pool: resident and never evicted until released. Works like a Delta
    (apply, merge, dense, Batch); release() (or leaving its with-block, or collection) drops the
    reference. Keeps the pool alive."""

    def __init__(self, pool, model_id, handle):
        self._pool, self.model_id = pool, model_id
        try:
            Delta.__init__(self, pool._ctx, handle)
        except Error:
            self.release()
            raise
        pool._acquired.add(self)

    def release(self):
        """Drops the reference (any thread). Safe to call twice."""
        if self._h:
            h = self._h
            self._forget()
            if self._pool._h and self._ctx._h:
                _check(_lib.dc_pool_release(self._pool._h, h))

    def _forget(self):
        if self._h:
            self._h = None
            self._ctx._live -= 1
            self._pool._acquired.discard(self)

    close = release

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def _handle(self):
        if not self._h or not self._pool._h or not self._ctx._h:
            raise Error(ERR_INVALID_ARGUMENT, "the delta was released, or its pool or context is closed")
        return self._h
