"""A tiny ctypes wrapper of the deltacome C API: just what the tensor-parallel test needs.

Structs mirror include/deltacome/deltacome.h field for field (the header is the ABI: every option
struct starts with struct_size and only grows at the end). Pointers to activations and weights are
passed as integers (torch.Tensor.data_ptr()), so CPU and GPU tensors go through the same calls.
"""
import ctypes
import os
from ctypes import POINTER, byref, c_char_p, c_float, c_int, c_int32, c_uint32, c_uint64, c_void_p

DC_OK = 0
DC_DTYPE_F32, DC_DTYPE_F16, DC_DTYPE_BF16 = 0, 1, 2
DC_KIND_LOWRANK, DC_KIND_BITDELTA, DC_KIND_DENSE = 0, 1, 2
DC_BACKEND_AUTO, DC_BACKEND_CPU, DC_BACKEND_CUDA, DC_BACKEND_HIP = 0, 1, 2, 3
DC_SHARD_NONE, DC_SHARD_ROWS, DC_SHARD_COLS = 0, 1, 2
DC_APPLY_INCLUDE_BASE = 0x1


class dc_open_options(ctypes.Structure):
    _fields_ = [("struct_size", c_uint32), ("flags", c_uint32), ("max_manifest_bytes", c_uint64),
                ("max_segment_bytes", c_uint64)]


class dc_context_options(ctypes.Structure):
    _fields_ = [("struct_size", c_uint32), ("backend", c_int), ("device", c_int32), ("num_threads", c_int32)]


class dc_shard(ctypes.Structure):
    _fields_ = [("split", c_int), ("index", c_uint32), ("count", c_uint32), ("begin", c_uint64), ("end", c_uint64)]


class dc_load_options(ctypes.Structure):
    _fields_ = [("struct_size", c_uint32), ("flags", c_uint32), ("stream", c_void_p), ("shard", dc_shard)]


class dc_delta_info(ctypes.Structure):
    _fields_ = [("struct_size", c_uint32), ("rows", c_uint64), ("cols", c_uint64), ("kind", c_int),
                ("device_bytes", c_uint64), ("split", c_int), ("shard_begin", c_uint64), ("shard_end", c_uint64),
                ("name", c_char_p)]


class dc_apply_params(ctypes.Structure):
    _fields_ = [("struct_size", c_uint32), ("flags", c_uint32), ("m", c_uint64), ("x", c_void_p), ("x_dtype", c_int),
                ("ldx", c_uint64), ("y", c_void_p), ("y_dtype", c_int), ("ldy", c_uint64), ("base_weight", c_void_p),
                ("base_dtype", c_int), ("ld_base", c_uint64), ("scale", c_float), ("stream", c_void_p),
                ("workspace", c_void_p), ("workspace_bytes", c_uint64)]


class DeltacomeError(RuntimeError):
    pass


def _find_library():
    env = os.environ.get("DELTACOME_LIB")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for build in ("build-gpu", "build-tp", "build"):
        p = os.path.join(root, build, "libdeltacome.so")
        if os.path.exists(p):
            return p
    return "libdeltacome.so"


class Library:
    """The loaded shared library. The CUDA module (libdeltacome-cuda.so) is found by the library
    itself: $DELTACOME_BACKEND_PATH, then next to libdeltacome.so."""

    def __init__(self, path=None):
        path = path or _find_library()
        self.path = path
        if "DELTACOME_BACKEND_PATH" not in os.environ:
            os.environ["DELTACOME_BACKEND_PATH"] = os.path.dirname(os.path.abspath(path))
        L = self.lib = ctypes.CDLL(path)
        sig = {
            "dc_version_string": (c_char_p, []),
            "dc_last_error_message": (c_char_p, []),
            "dc_status_string": (c_char_p, [c_int]),
            "dc_backend_available": (c_int, [c_int]),
            "dc_container_open": (c_int, [POINTER(c_void_p), c_char_p, c_void_p]),
            "dc_container_close": (None, [c_void_p]),
            "dc_container_find_tensor": (c_int, [c_void_p, c_char_p, POINTER(c_uint64)]),
            "dc_context_options_init": (None, [POINTER(dc_context_options)]),
            "dc_context_create": (c_int, [POINTER(c_void_p), POINTER(dc_context_options)]),
            "dc_context_destroy": (None, [c_void_p]),
            "dc_load_options_init": (None, [POINTER(dc_load_options)]),
            "dc_delta_load": (c_int, [POINTER(c_void_p), c_void_p, c_void_p, c_char_p, POINTER(dc_load_options)]),
            "dc_delta_free": (None, [c_void_p]),
            "dc_delta_get_info": (c_int, [c_void_p, POINTER(dc_delta_info)]),
            "dc_apply_params_init": (None, [POINTER(dc_apply_params)]),
            "dc_apply_workspace_size": (c_int, [c_void_p, c_uint64, POINTER(c_uint64)]),
            "dc_apply_delta_linear": (c_int, [c_void_p, POINTER(dc_apply_params)]),
            "dc_merge_delta": (c_int, [c_void_p, c_void_p, c_int, c_uint64, c_float, c_void_p]),
        }
        for name, (res, args) in sig.items():
            f = getattr(L, name)
            f.restype = res
            f.argtypes = args

    def check(self, status, what):
        if status != DC_OK:
            raise DeltacomeError("%s: %s (%s)" % (what, self.lib.dc_last_error_message().decode(),
                                                   self.lib.dc_status_string(status).decode()))

    def version(self):
        return self.lib.dc_version_string().decode()

    def backend_available(self, backend):
        return bool(self.lib.dc_backend_available(backend))


class Container:
    def __init__(self, lib, path):
        self.lib = lib
        self.handle = c_void_p()
        lib.check(lib.lib.dc_container_open(byref(self.handle), path.encode(), None), "opening " + path)

    def has(self, name):
        idx = c_uint64()
        return self.lib.lib.dc_container_find_tensor(self.handle, name.encode(), byref(idx)) == DC_OK

    def close(self):
        if self.handle:
            self.lib.lib.dc_container_close(self.handle)
            self.handle = c_void_p()


class Context:
    def __init__(self, lib, backend, device=0, num_threads=0):
        self.lib = lib
        o = dc_context_options()
        lib.lib.dc_context_options_init(byref(o))
        o.backend = backend
        o.device = device
        o.num_threads = num_threads
        self.handle = c_void_p()
        lib.check(lib.lib.dc_context_create(byref(self.handle), byref(o)), "creating a context")

    def destroy(self):
        if self.handle:
            self.lib.lib.dc_context_destroy(self.handle)
            self.handle = c_void_p()


class Delta:
    """One loaded delta (whole, or a shard: split DC_SHARD_ROWS / DC_SHARD_COLS, index of count,
    or an explicit [begin, end))."""

    def __init__(self, ctx, container, name, split=DC_SHARD_NONE, index=0, count=1, begin=0, end=0, stream=None):
        self.lib = ctx.lib
        o = dc_load_options()
        self.lib.lib.dc_load_options_init(byref(o))
        o.stream = stream
        o.shard.split = split
        o.shard.index = index
        o.shard.count = count
        o.shard.begin = begin
        o.shard.end = end
        self.handle = c_void_p()
        self.lib.check(self.lib.lib.dc_delta_load(byref(self.handle), ctx.handle, container.handle, name.encode(),
                                                  byref(o)), "loading %s" % name)
        info = dc_delta_info()
        info.struct_size = ctypes.sizeof(info)
        self.lib.check(self.lib.lib.dc_delta_get_info(self.handle, byref(info)), "dc_delta_get_info")
        self.rows, self.cols, self.kind = info.rows, info.cols, info.kind
        self.device_bytes = info.device_bytes
        self.split, self.begin, self.end = info.split, info.shard_begin, info.shard_end

    def workspace_size(self, m):
        n = c_uint64()
        self.lib.check(self.lib.lib.dc_apply_workspace_size(self.handle, m, byref(n)), "workspace size")
        return n.value

    def apply(self, m, x_ptr, x_dtype, ldx, y_ptr, y_dtype, ldy, stream=None, workspace=None, workspace_bytes=0,
              scale=1.0, base_ptr=None, base_dtype=DC_DTYPE_F32, ld_base=0):
        """y[m × rows'] += x[m × cols']·ΔWᵀ (the shard's shape)."""
        p = dc_apply_params()
        self.lib.lib.dc_apply_params_init(byref(p))
        p.m = m
        p.x, p.x_dtype, p.ldx = x_ptr, x_dtype, ldx
        p.y, p.y_dtype, p.ldy = y_ptr, y_dtype, ldy
        p.scale = scale
        p.stream = stream
        p.workspace, p.workspace_bytes = workspace, workspace_bytes
        if base_ptr is not None:
            p.flags = DC_APPLY_INCLUDE_BASE
            p.base_weight, p.base_dtype, p.ld_base = base_ptr, base_dtype, ld_base
        self.lib.check(self.lib.lib.dc_apply_delta_linear(self.handle, byref(p)), "applying a delta")

    def merge(self, w_ptr, dtype, ld, scale=1.0, stream=None):
        self.lib.check(self.lib.lib.dc_merge_delta(self.handle, w_ptr, dtype, ld, scale, stream), "merging a delta")

    def free(self):
        if self.handle:
            self.lib.lib.dc_delta_free(self.handle)
            self.handle = c_void_p()
