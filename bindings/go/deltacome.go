// Package deltacome binds libdeltacome (Delta-CoMe delta compression of fine-tuned LLMs) through
// cgo and its pkg-config file.
//
// Handles (Container, Context, Delta, Batch, and the experimental Pool) have an explicit Close; a
// finalizer is only a backstop. Rules from the C header, and how this package keeps them:
//   - A Container is immutable and safe to use from many goroutines.
//   - A Context, and the deltas and batches loaded into it, must be used by one goroutine at a
//     time (use one Context per goroutine). Finalizers of deltas and batches never call C on the
//     finalizer goroutine: they queue the handle, and the context frees it at its next call.
//   - Go memory passed to C (slices for apply, merge, names) is only used during the call; C never
//     keeps a Go pointer. Structs holding pointers are built on the C side (cgo forbids passing Go
//     memory that holds Go pointers). OpenMemory therefore always lets the library copy the image.
//   - The error message is thread-local in C: each failing call and its message read run on one
//     locked OS thread.
package deltacome

/*
#cgo pkg-config: deltacome
#include "dcgo_shim.h"
*/
import "C"

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// call runs one C call and, on failure, reads the thread-local message on the same OS thread.
func call(f func() C.dc_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st := f()
	if st == C.DC_OK {
		return nil
	}
	return &Error{Status: Status(st), Message: C.GoString(C.dc_last_error_message())}
}

// Version is the linked library's "MAJOR.MINOR.PATCH".
func Version() string { return C.GoString(C.dc_version_string()) }

// VersionNumber is the linked library's DC_VERSION_NUMBER; HeaderVersionNumber the header's.
func VersionNumber() uint32 { return uint32(C.dc_version()) }

const HeaderVersionNumber = uint32(C.DC_VERSION_NUMBER)

// Available reports whether a backend is built in and sees a device (CPU: always).
func (b Backend) Available() bool { return C.dc_backend_available(C.dc_backend(b)) != 0 }

// String is "cpu", "cuda", "hip", "auto" or "unknown".
func (b Backend) String() string { return C.GoString(C.dc_backend_name(C.dc_backend(b))) }

// cString copies s into C memory (the caller frees it): C never sees Go string memory.
func cString(s string) *C.char { return C.CString(s) }

func freeC(p *C.char) { C.free(unsafe.Pointer(p)) }

// ---- containers -----------------------------------------------------------------------------------

// Container is an opened .dcz file or image. Safe for concurrent use.
type Container struct {
	raw   *C.dc_container
	pools int32 // open pools it is registered in (atomic): Close refuses while > 0
}

func openContainer(path string, data []byte, opts *OpenOptions) (*Container, error) {
	var o OpenOptions
	if opts != nil {
		o = *opts
	}
	flags := C.uint32_t(0)
	if o.NoMmap {
		flags |= C.DC_OPEN_NO_MMAP
	}
	if o.Trusted {
		flags |= C.DC_OPEN_TRUSTED
	}
	var raw *C.dc_container
	var err error
	if data == nil {
		cpath := cString(path)
		defer freeC(cpath)
		err = call(func() C.dc_status {
			return C.dcgo_open(&raw, cpath, nil, 0, flags, C.uint64_t(o.MaxManifestBytes), C.uint64_t(o.MaxSegmentBytes))
		})
	} else {
		// Never DC_OPEN_BORROW_MEMORY: C would keep a Go pointer. The library copies the image.
		var p unsafe.Pointer
		if len(data) > 0 {
			p = unsafe.Pointer(&data[0])
		}
		err = call(func() C.dc_status {
			return C.dcgo_open(&raw, nil, p, C.size_t(len(data)), flags, C.uint64_t(o.MaxManifestBytes), C.uint64_t(o.MaxSegmentBytes))
		})
	}
	if err != nil {
		return nil, err
	}
	c := &Container{raw: raw}
	runtime.SetFinalizer(c, (*Container).Close)
	return c, nil
}

// Open opens and validates the .dcz file at path (payload segments are read on load). opts may be nil.
func Open(path string, opts *OpenOptions) (*Container, error) { return openContainer(path, nil, opts) }

// OpenMemory opens a whole .dcz image held in memory; the library copies it.
func OpenMemory(data []byte, opts *OpenOptions) (*Container, error) {
	if data == nil {
		data = []byte{}
	}
	return openContainer("", data, opts)
}

// Close frees the container. Deltas loaded from it stay valid. It fails with StatusBusy while the
// container is registered in an open Pool. Safe to call twice.
func (c *Container) Close() error {
	if n := atomic.LoadInt32(&c.pools); n > 0 {
		return newError(StatusBusy, "the container is registered in %d open pools: unregister it or close them first", n)
	}
	if c.raw != nil {
		C.dc_container_close(c.raw)
		c.raw = nil
	}
	runtime.SetFinalizer(c, nil)
	return nil
}

func (c *Container) handle() (*C.dc_container, error) {
	if c == nil || c.raw == nil {
		return nil, newError(StatusInvalidArgument, "the container is closed")
	}
	return c.raw, nil
}

// Info returns the format version, sizes and producer metadata.
func (c *Container) Info() (ContainerInfo, error) {
	raw, err := c.handle()
	if err != nil {
		return ContainerInfo{}, err
	}
	var i C.dc_container_info
	err = call(func() C.dc_status { return C.dcgo_container_info(raw, &i) })
	defer runtime.KeepAlive(c)
	if err != nil {
		return ContainerInfo{}, err
	}
	return ContainerInfo{
		FormatMajor: uint16(i.format_major), FormatMinor: uint16(i.format_minor),
		TensorCount: uint64(i.tensor_count), FileBytes: uint64(i.file_bytes), PayloadBytes: uint64(i.payload_bytes),
		ModelName: C.GoString(i.model_name), BaseModelName: C.GoString(i.base_model_name),
		ToolVersion: C.GoString(i.tool_version), RecipeJSON: C.GoString(i.recipe_json),
	}, nil
}

// NumTensors is the number of tensors (0 for a closed container).
func (c *Container) NumTensors() int {
	raw, err := c.handle()
	if err != nil {
		return 0
	}
	defer runtime.KeepAlive(c)
	return int(C.dc_container_tensor_count(raw))
}

// TensorInfo describes tensor index (< NumTensors).
func (c *Container) TensorInfo(index int) (TensorInfo, error) {
	raw, err := c.handle()
	if err != nil {
		return TensorInfo{}, err
	}
	if index < 0 {
		return TensorInfo{}, newError(StatusInvalidArgument, "tensor index %d is negative", index)
	}
	var t C.dc_tensor_info
	err = call(func() C.dc_status { return C.dcgo_tensor_info(raw, C.uint64_t(index), &t) })
	defer runtime.KeepAlive(c)
	if err != nil {
		return TensorInfo{}, err
	}
	n := int(t.band_count)
	if n > C.DC_MAX_BANDS {
		n = C.DC_MAX_BANDS
	}
	bands := make([]Band, n)
	for b := 0; b < n; b++ {
		bi := C.dcgo_band(&t, C.int(b))
		bands[b] = Band{uint32(bi.bits), uint32(bi.rank_begin), uint32(bi.rank_end), uint32(bi.group_size)}
	}
	return TensorInfo{
		Index: uint64(index), Name: C.GoString(t.name), Rows: uint64(t.rows), Cols: uint64(t.cols),
		Kind: TensorKind(t.kind), Dtype: Dtype(t.dtype), Rank: uint32(t.rank), Bands: bands,
		ActOrder: t.has_act_order != 0, StoredBytes: uint64(t.stored_bytes),
		PackedBytes: uint64(t.packed_bytes), FP16Bytes: uint64(t.fp16_bytes),
	}, nil
}

// Tensors describes every tensor in container order.
func (c *Container) Tensors() ([]TensorInfo, error) {
	n := c.NumTensors()
	out := make([]TensorInfo, 0, n)
	for i := 0; i < n; i++ {
		t, err := c.TensorInfo(i)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// Find returns the index of tensor name, or an error with StatusNotFound.
func (c *Container) Find(name string) (int, error) {
	raw, err := c.handle()
	if err != nil {
		return 0, err
	}
	cname := cString(name)
	defer freeC(cname)
	var idx C.uint64_t
	err = call(func() C.dc_status { return C.dc_container_find_tensor(raw, cname, &idx) })
	runtime.KeepAlive(c)
	return int(idx), err
}

// SingularValues returns σ of low-rank tensor index (rank values, descending).
func (c *Container) SingularValues(index int) ([]float32, error) {
	raw, err := c.handle()
	if err != nil {
		return nil, err
	}
	defer runtime.KeepAlive(c)
	var count C.uint64_t
	if err := call(func() C.dc_status { return C.dc_container_singular_values(raw, C.uint64_t(index), nil, 0, &count) }); err != nil {
		return nil, err
	}
	out := make([]float32, int(count)+1) // +1: never a zero-length slice to take &out[0] of
	err = call(func() C.dc_status {
		return C.dc_container_singular_values(raw, C.uint64_t(index), (*C.float)(&out[0]), count, &count)
	})
	if err != nil {
		return nil, err
	}
	return out[:int(count)], nil
}

// Verify decompresses every segment and checks sizes, XXH3-64 digests and zero padding.
func (c *Container) Verify() error {
	raw, err := c.handle()
	if err != nil {
		return err
	}
	err = call(func() C.dc_status { return C.dc_container_verify(raw) })
	runtime.KeepAlive(c)
	return err
}

// CheckBaseTensor checks one base tensor's raw little-endian bytes against the fingerprint.
func (c *Container) CheckBaseTensor(name string, data []byte) error {
	raw, err := c.handle()
	if err != nil {
		return err
	}
	cname := cString(name)
	defer freeC(cname)
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	err = call(func() C.dc_status { return C.dc_container_check_base_tensor(raw, cname, p, C.uint64_t(len(data))) })
	runtime.KeepAlive(c)
	runtime.KeepAlive(data)
	return err
}

// CheckBaseFile checks a base checkpoint (.safetensors or model.safetensors.index.json).
func (c *Container) CheckBaseFile(path string) error {
	raw, err := c.handle()
	if err != nil {
		return err
	}
	cpath := cString(path)
	defer freeC(cpath)
	err = call(func() C.dc_status { return C.dc_container_check_base_file(raw, cpath) })
	runtime.KeepAlive(c)
	return err
}
