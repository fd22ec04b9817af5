package deltacome

// #include "dcgo_shim.h"
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// Context is one backend on one device. Use it (and its deltas and batches) from one goroutine
// at a time.
type Context struct {
	raw     *C.dc_context
	backend Backend

	// Bookkeeping shared with finalizers (which run on another goroutine): they only queue work
	// here; the context's own goroutine does the C calls in drain().
	mu             sync.Mutex
	pendingBatches []*batchHandle
	pendingDeltas  []*C.dc_delta
	pendingPools   []*Pool
	openBatches    int
	openPools      int
}

// deltaHandle is a loaded delta's C handle and who still needs it. It is separate from Delta so
// that the queues above never refer to a Delta (that would keep it, and its context, alive).
type deltaHandle struct {
	raw      *C.dc_delta
	released bool  // the Delta was closed or collected
	batches  int   // open batches using it: the header wants deltas to outlive their batches
	pool     *Pool // non-nil: acquired from this pool, which owns it (released, never freed, here)
}

type batchHandle struct {
	raw    *C.dc_delta_batch
	deltas []*deltaHandle
}

// NewContext creates a context. opts may be nil (BackendAuto, device 0, all CPU threads).
func NewContext(opts *ContextOptions) (*Context, error) {
	var o ContextOptions
	if opts != nil {
		o = *opts
	}
	var raw *C.dc_context
	err := call(func() C.dc_status {
		return C.dcgo_context(&raw, C.dc_backend(o.Backend), C.int32_t(o.Device), C.int32_t(o.NumThreads))
	})
	if err != nil {
		return nil, err
	}
	ctx := &Context{raw: raw, backend: Backend(C.dc_context_backend(raw))}
	// Deltas and batches point at their context, so the Go runtime finalizes them first.
	runtime.SetFinalizer(ctx, (*Context).Close)
	return ctx, nil
}

// NewCPUContext is NewContext with BackendCPU.
func NewCPUContext() (*Context, error) { return NewContext(&ContextOptions{Backend: BackendCPU}) }

// Backend is the backend the context runs on (Auto resolved).
func (x *Context) Backend() Backend { return x.backend }

// drain frees what finalizers queued. Called on the context's goroutine before each operation.
func (x *Context) drain() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, b := range x.pendingBatches {
		x.freeBatchLocked(b)
	}
	x.pendingBatches = nil
	for _, d := range x.pendingDeltas {
		C.dc_delta_free(d)
	}
	x.pendingDeltas = nil
	for _, p := range x.pendingPools {
		p.destroyLocked()
	}
	x.pendingPools = nil
}

func (x *Context) freeBatchLocked(b *batchHandle) {
	C.dc_delta_batch_free(b.raw)
	b.raw = nil
	x.openBatches--
	for _, h := range b.deltas {
		h.batches--
		if h.released && h.batches == 0 && h.raw != nil {
			if h.pool != nil {
				delete(h.pool.acquired, h)
				h.pool.releaseRaw(h.raw)
			} else {
				C.dc_delta_free(h.raw)
			}
			h.raw = nil
		}
	}
}

func (x *Context) handle() (*C.dc_context, error) {
	if x == nil || x.raw == nil {
		return nil, newError(StatusInvalidArgument, "the context is closed")
	}
	x.drain()
	return x.raw, nil
}

// Close destroys the context, freeing every delta still loaded in it (their handles become
// unusable). It fails with StatusBusy while a Batch or a Pool on it is open. Safe to call twice.
func (x *Context) Close() error {
	if x.raw == nil {
		return nil
	}
	x.drain()
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.openBatches > 0 {
		return newError(StatusBusy, "the context has %d open batches: close them first", x.openBatches)
	}
	if x.openPools > 0 {
		return newError(StatusBusy, "the context has %d open pools: close them first", x.openPools)
	}
	C.dc_context_destroy(x.raw)
	x.raw = nil
	runtime.SetFinalizer(x, nil)
	return nil
}

func (x *Context) load(c *Container, name *string, index int, all bool, opts *LoadOptions) ([]*Delta, error) {
	craw, err := c.handle()
	if err != nil {
		return nil, err
	}
	xraw, err := x.handle()
	if err != nil {
		return nil, err
	}
	var o LoadOptions
	if opts != nil {
		o = *opts
	}
	flags := C.uint32_t(C.DC_LOAD_VERIFY_CHECKSUM)
	if o.SkipChecksum {
		flags = C.DC_LOAD_SKIP_CHECKSUM
	}
	var cname *C.char
	if name != nil {
		cname = cString(*name)
		defer freeC(cname)
	}
	n := 1
	if all {
		n = c.NumTensors()
	}
	// Handles are C pointers: C may write them into Go memory.
	handles := make([]*C.dc_delta, n+1)
	var allPtr **C.dc_delta
	if all {
		allPtr = &handles[0]
	}
	err = call(func() C.dc_status {
		return C.dcgo_load(&handles[0], allPtr, xraw, craw, cname, C.uint64_t(index), flags,
			C.dc_shard_split(o.Split), C.uint32_t(o.Index), C.uint32_t(o.Count), C.uint64_t(o.Begin), C.uint64_t(o.End))
	})
	runtime.KeepAlive(c)
	if err != nil {
		return nil, err
	}
	out := make([]*Delta, 0, n)
	for i, h := range handles[:n] {
		d := &Delta{ctx: x, h: &deltaHandle{raw: h}}
		var info C.dc_delta_info
		if err := call(func() C.dc_status { return C.dcgo_delta_info(h, &info) }); err != nil {
			for _, rest := range handles[i:n] {
				C.dc_delta_free(rest)
			}
			for _, done := range out {
				done.Close()
			}
			return nil, err
		}
		d.info = DeltaInfo{
			Name: C.GoString(info.name), Rows: uint64(info.rows), Cols: uint64(info.cols),
			Kind: TensorKind(info.kind), DeviceBytes: uint64(info.device_bytes), Split: ShardSplit(info.split),
			ShardBegin: uint64(info.shard_begin), ShardEnd: uint64(info.shard_end),
		}
		runtime.SetFinalizer(d, (*Delta).finalize)
		out = append(out, d)
	}
	return out, nil
}

// Load reads tensor name from c into the context (decompress, verify). opts may be nil. The
// container may be closed right after.
func (x *Context) Load(c *Container, name string, opts *LoadOptions) (*Delta, error) {
	d, err := x.load(c, &name, 0, false, opts)
	if err != nil {
		return nil, err
	}
	return d[0], nil
}

// LoadIndex loads tensor index.
func (x *Context) LoadIndex(c *Container, index int, opts *LoadOptions) (*Delta, error) {
	if index < 0 {
		return nil, newError(StatusInvalidArgument, "tensor index %d is negative", index)
	}
	d, err := x.load(c, nil, index, false, opts)
	if err != nil {
		return nil, err
	}
	return d[0], nil
}

// LoadAll loads every tensor, in container order.
func (x *Context) LoadAll(c *Container, opts *LoadOptions) ([]*Delta, error) {
	return x.load(c, nil, 0, true, opts)
}

// ---- deltas -------------------------------------------------------------------------------------------

// Delta is one tensor's delta loaded into a context, in packed form.
type Delta struct {
	ctx  *Context
	h    *deltaHandle
	info DeltaInfo
}

// Info describes the loaded delta.
func (d *Delta) Info() DeltaInfo { return d.info }

// Name is the tensor's name.
func (d *Delta) Name() string { return d.info.Name }

func (d *Delta) handle() (*C.dc_delta, error) {
	if d == nil || d.h == nil || d.h.raw == nil || d.h.released {
		return nil, newError(StatusInvalidArgument, "the delta is closed")
	}
	if _, err := d.ctx.handle(); err != nil {
		return nil, newError(StatusInvalidArgument, "delta %s: its context is closed", d.info.Name)
	}
	return d.h.raw, nil
}

// Close frees the delta. It fails with StatusBusy while an open Batch uses it. Safe to call twice.
// A delta acquired from a Pool is released with PoolDelta.Release instead.
func (d *Delta) Close() error {
	if d.h != nil && d.h.pool != nil {
		return newError(StatusInvalidArgument, "delta %s was acquired from a pool: Release it", d.info.Name)
	}
	if d.h == nil || d.h.released {
		return nil
	}
	if d.ctx.raw == nil { // the context freed it
		d.h.released = true
		runtime.SetFinalizer(d, nil)
		return nil
	}
	d.ctx.drain()
	d.ctx.mu.Lock()
	defer d.ctx.mu.Unlock()
	if d.h.batches > 0 {
		return newError(StatusBusy, "delta %s is used by %d open batches: close them first", d.info.Name, d.h.batches)
	}
	C.dc_delta_free(d.h.raw)
	d.h.raw = nil
	d.h.released = true
	runtime.SetFinalizer(d, nil)
	return nil
}

// finalize runs on the finalizer goroutine: it only queues the handle for the context's goroutine.
// A pool's delta is released right here (dc_pool_release is thread-safe and does not use the
// context), or by the last batch using it when that batch is freed.
func (d *Delta) finalize() {
	x := d.ctx
	if p := d.h.pool; p != nil {
		x.mu.Lock()
		d.h.released = true
		var raw *C.dc_delta
		if d.h.batches == 0 && d.h.raw != nil {
			raw, d.h.raw = d.h.raw, nil
			delete(p.acquired, d.h)
		}
		x.mu.Unlock()
		if raw != nil {
			p.releaseRaw(raw)
		}
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	d.h.released = true
	if x.raw != nil && d.h.batches == 0 && d.h.raw != nil {
		x.pendingDeltas = append(x.pendingDeltas, d.h.raw)
		d.h.raw = nil
	}
}

// span is the number of elements an [m × width] matrix with row stride ld spans.
func span(what string, m int, width uint64, ld int) (int, int, error) {
	w := int(width)
	if ld == 0 {
		ld = w
	}
	if m < 0 || ld < w {
		return 0, 0, newError(StatusShapeMismatch, "%s: %d rows, row stride %d < row width %d", what, m, ld, w)
	}
	if m == 0 || w == 0 {
		return 0, ld, nil
	}
	return (m-1)*ld + w, ld, nil
}

func ptrOf[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

// applyArgs checks host slices against the delta's shape and returns what dcgo_apply needs.
type applyArgs struct {
	x, y, base    unsafe.Pointer
	xdt, ydt, bdt Dtype
	ldx, ldy, ldb int
	scale         float32
}

func hostArgs[X, Y Element](x *Context, out, in uint64, m int, xs []X, ys []Y, opts *ApplyOptions) (applyArgs, error) {
	var o ApplyOptions
	if opts != nil {
		o = *opts
	}
	var a applyArgs
	if x.backend != BackendCPU {
		return a, newError(StatusUnsupported, "apply with Go slices needs a CPU context (this one is %s)", x.backend)
	}
	need, ldx, err := span("x", m, in, o.Ldx)
	if err != nil {
		return a, err
	}
	if len(xs) < need {
		return a, newError(StatusShapeMismatch, "x has %d elements, %d rows of %d need %d", len(xs), m, in, need)
	}
	need, ldy, err := span("y", m, out, o.Ldy)
	if err != nil {
		return a, err
	}
	if len(ys) < need {
		return a, newError(StatusShapeMismatch, "y has %d elements, %d rows of %d need %d", len(ys), m, out, need)
	}
	a = applyArgs{x: ptrOf(xs), y: ptrOf(ys), xdt: dtypeOf[X](), ydt: dtypeOf[Y](), ldx: ldx, ldy: ldy, scale: o.Scale}
	if a.scale == 0 {
		a.scale = 1
	}
	if o.Base != nil {
		var n int
		switch b := o.Base.(type) {
		case []float32:
			a.base, a.bdt, n = ptrOf(b), DtypeF32, len(b)
		case []Float16:
			a.base, a.bdt, n = ptrOf(b), DtypeF16, len(b)
		case []BFloat16:
			a.base, a.bdt, n = ptrOf(b), DtypeBF16, len(b)
		default:
			return a, newError(StatusInvalidArgument, "ApplyOptions.Base is a %T; want []float32, []Float16 or []BFloat16", o.Base)
		}
		need, ldb, err := span("base weight", int(out), in, o.LdBase)
		if err != nil {
			return a, err
		}
		if n < need || a.base == nil {
			return a, newError(StatusShapeMismatch, "base weight has %d elements, %d × %d needs %d", n, out, in, need)
		}
		a.ldb = ldb
	}
	return a, nil
}

func (a *applyArgs) run(d *C.dc_delta, b *C.dc_delta_batch, slots *C.int32_t, m int) error {
	return call(func() C.dc_status {
		return C.dcgo_apply(d, b, slots, C.uint64_t(m), a.x, C.dc_dtype(a.xdt), C.uint64_t(a.ldx), a.y,
			C.dc_dtype(a.ydt), C.uint64_t(a.ldy), a.base, C.dc_dtype(a.bdt), C.uint64_t(a.ldb), C.float(a.scale))
	})
}

// Apply computes y[m × out] += x[m × in] · ΔWᵀ in float32 host memory (CPU context). opts may
// be nil; with opts.Base, y = x·(W_base + ΔW)ᵀ instead.
func (d *Delta) Apply(m int, x, y []float32, opts *ApplyOptions) error {
	return ApplyTyped(d, m, x, y, opts)
}

// ApplyTyped is Apply for any host element types (float32, Float16, BFloat16).
func ApplyTyped[X, Y Element](d *Delta, m int, x []X, y []Y, opts *ApplyOptions) error {
	raw, err := d.handle()
	if err != nil {
		return err
	}
	a, err := hostArgs(d.ctx, d.info.OutFeatures(), d.info.InFeatures(), m, x, y, opts)
	if err != nil {
		return err
	}
	err = a.run(raw, nil, nil, m)
	runtime.KeepAlive(d)
	runtime.KeepAlive(x)
	runtime.KeepAlive(y)
	runtime.KeepAlive(opts)
	return err
}

// Merge computes W[out × in] += scale·ΔW in place (row stride ld elements, 0 = packed).
func (d *Delta) Merge(w []float32, ld int, scale float32) error { return MergeTyped(d, w, ld, scale) }

// MergeTyped is Merge for any host element type.
func MergeTyped[T Element](d *Delta, w []T, ld int, scale float32) error {
	raw, err := d.handle()
	if err != nil {
		return err
	}
	if d.ctx.backend != BackendCPU {
		return newError(StatusUnsupported, "merge with a Go slice needs a CPU context")
	}
	need, ld, err := span("weight", int(d.info.OutFeatures()), d.info.InFeatures(), ld)
	if err != nil {
		return err
	}
	if len(w) < need || len(w) == 0 {
		return newError(StatusShapeMismatch, "weight has %d elements, %d × %d needs %d", len(w),
			d.info.OutFeatures(), d.info.InFeatures(), need)
	}
	p := ptrOf(w)
	err = call(func() C.dc_status {
		return C.dc_merge_delta(raw, p, C.dc_dtype(dtypeOf[T]()), C.uint64_t(ld), C.float(scale), nil)
	})
	runtime.KeepAlive(d)
	runtime.KeepAlive(w)
	return err
}

// ---- batches -----------------------------------------------------------------------------------------

// Batch groups same-shape deltas of one layer (one context) for multi-tenant apply.
type Batch struct {
	ctx  *Context
	h    *batchHandle
	keep []*Delta // keeps the deltas reachable while the batch is
	out  uint64
	in   uint64
}

// NewBatch makes slot i of the batch deltas[i].
func NewBatch(deltas []*Delta) (*Batch, error) {
	if len(deltas) == 0 {
		return nil, newError(StatusInvalidArgument, "a batch needs at least one delta")
	}
	ctx := deltas[0].ctx
	handles := make([]*C.dc_delta, len(deltas))
	hs := make([]*deltaHandle, len(deltas))
	for i, d := range deltas {
		if d.ctx != ctx {
			return nil, newError(StatusInvalidArgument, "delta %s is loaded in another context than %s", d.info.Name, deltas[0].info.Name)
		}
		raw, err := d.handle()
		if err != nil {
			return nil, err
		}
		handles[i], hs[i] = raw, d.h
	}
	var raw *C.dc_delta_batch
	err := call(func() C.dc_status { return C.dc_delta_batch_create(&raw, &handles[0], C.uint64_t(len(handles))) })
	if err != nil {
		return nil, err
	}
	ctx.mu.Lock()
	ctx.openBatches++
	for _, h := range hs {
		h.batches++
	}
	ctx.mu.Unlock()
	b := &Batch{ctx: ctx, h: &batchHandle{raw: raw, deltas: hs}, keep: append([]*Delta(nil), deltas...),
		out: deltas[0].info.OutFeatures(), in: deltas[0].info.InFeatures()}
	runtime.SetFinalizer(b, (*Batch).finalize)
	return b, nil
}

// Len is the number of slots.
func (b *Batch) Len() int { return len(b.h.deltas) }

// Close frees the batch (its deltas stay loaded). Safe to call twice.
func (b *Batch) Close() error {
	if b.h == nil || b.h.raw == nil {
		return nil
	}
	b.ctx.drain()
	b.ctx.mu.Lock()
	b.ctx.freeBatchLocked(b.h)
	b.ctx.mu.Unlock()
	b.keep = nil
	runtime.SetFinalizer(b, nil)
	return nil
}

func (b *Batch) finalize() {
	b.ctx.mu.Lock()
	defer b.ctx.mu.Unlock()
	if b.h.raw != nil {
		b.ctx.pendingBatches = append(b.ctx.pendingBatches, b.h)
	}
}

// Apply computes, for every row i < m, y[i] += x[i]·ΔW_{rowSlot[i]}ᵀ (rowSlot[i] == -1: no delta).
func (b *Batch) Apply(rowSlot []int32, m int, x, y []float32, opts *ApplyOptions) error {
	if b.h == nil || b.h.raw == nil {
		return newError(StatusInvalidArgument, "the batch is closed")
	}
	if _, err := b.ctx.handle(); err != nil {
		return err
	}
	if len(rowSlot) < m {
		return newError(StatusShapeMismatch, "rowSlot has %d entries for %d rows", len(rowSlot), m)
	}
	for i, s := range rowSlot[:m] {
		if s < -1 || int(s) >= b.Len() {
			return newError(StatusInvalidArgument, "rowSlot[%d] = %d, the batch has slots 0..%d", i, s, b.Len()-1)
		}
	}
	a, err := hostArgs(b.ctx, b.out, b.in, m, x, y, opts)
	if err != nil {
		return err
	}
	err = a.run(nil, b.h.raw, (*C.int32_t)(ptrOf(rowSlot)), m)
	runtime.KeepAlive(b)
	runtime.KeepAlive(rowSlot)
	runtime.KeepAlive(x)
	runtime.KeepAlive(y)
	return err
}
