package deltacome

// The delta pool. EXPERIMENTAL API, may change: it wraps include/deltacome/dc_pool.h, whose
// functions and structs may still change between minor versions of the library.

// #include "dcgo_shim.h"
import "C"

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// PoolOptions tunes NewPool. The zero value means the library's defaults.
type PoolOptions struct {
	DeviceBudgetBytes uint64 // most bytes the resident deltas may occupy; 0: default (1 GiB)
	SkipChecksum      bool   // do not check segment checksums when loading
	HostThreads       int    // decode threads for prefetch; 0: min(4, hardware threads)
}

// EntryState is the state of one (model id, tensor) entry of a pool.
type EntryState int

const (
	EntryAbsent   EntryState = C.DC_POOL_ABSENT   // not loaded, not queued
	EntryDecoding EntryState = C.DC_POOL_DECODING // queued or being decoded on a host thread
	EntryDecoded  EntryState = C.DC_POOL_DECODED  // decoded, waiting to be placed (Wait, ApplyBatched, Acquire)
	EntryResident EntryState = C.DC_POOL_RESIDENT // loaded into the context
)

func (s EntryState) String() string {
	switch s {
	case EntryAbsent:
		return "absent"
	case EntryDecoding:
		return "decoding"
	case EntryDecoded:
		return "decoded"
	case EntryResident:
		return "resident"
	}
	return "unknown"
}

// PoolStats is a consistent snapshot of a pool's counters (meanings: dc_pool.h).
type PoolStats struct {
	BudgetBytes      uint64
	ResidentBytes    uint64 // Σ DeviceBytes of resident deltas (≤ BudgetBytes)
	ResidentDeltas   uint64
	ReferencedDeltas uint64 // resident deltas with a reference count > 0
	Hits             uint64 // acquisitions that found their delta resident (ApplyBatched: one per distinct id)
	Misses           uint64 // acquisitions that did not
	Loads            uint64 // deltas placed into the context (by Acquire, ApplyBatched or prefetch)
	Evictions        uint64 // deltas freed to make room
	PrefetchLoaded   uint64
	PrefetchDropped  uint64
	PrefetchPending  uint64
	BatchBuilds      uint64
	SlotUploads      uint64
}

// Pool keeps the deltas of many fine-tuned variants of one base model resident in one Context
// under a memory budget, evicting the least recently used, and applies batches whose rows belong
// to different variants (EXPERIMENTAL API, may change).
//
// Goroutines: Acquire, Wait, ApplyBatched, Unregister and Close use the context, so they follow
// the Context's rule (one goroutine at a time, together with the context's own calls). Register,
// Prefetch, Query, Stats and PoolDelta.Release may be called from any goroutine, concurrently.
// A registered Container cannot be closed (StatusBusy) until it is unregistered or the pool
// closed, and the Context cannot be closed while the pool is open.
type Pool struct {
	ctx *Context

	// life is read-held around every C call on the pool and write-held by the destroy, so the
	// calls other goroutines may make never overlap it. Lock order: ctx.mu, then life, then mu.
	life sync.RWMutex
	raw  *C.dc_pool // nil once closed; written with life held for writing

	mu     sync.Mutex            // guards models
	models map[string]*Container // registered containers: kept reachable, and their shapes

	acquired map[*deltaHandle]struct{} // deltas acquired and not released; guarded by ctx.mu
}

// PoolDelta is a delta acquired from a Pool: the pool keeps it resident (never evicts it) until
// Release. It embeds *Delta (Info, Apply, Merge, NewBatch...); the pool owns it, so Release it
// rather than closing the Delta. A finalizer releases a forgotten one (a backstop).
type PoolDelta struct {
	*Delta
	ModelID string
}

// NewPool creates an empty pool on ctx. opts may be nil.
func NewPool(ctx *Context, opts *PoolOptions) (*Pool, error) {
	xraw, err := ctx.handle()
	if err != nil {
		return nil, err
	}
	var o PoolOptions
	if opts != nil {
		o = *opts
	}
	flags := C.uint32_t(C.DC_LOAD_VERIFY_CHECKSUM)
	if o.SkipChecksum {
		flags = C.DC_LOAD_SKIP_CHECKSUM
	}
	var raw *C.dc_pool
	err = call(func() C.dc_status {
		return C.dcgo_pool_create(&raw, xraw, C.uint64_t(o.DeviceBudgetBytes), flags, C.int32_t(o.HostThreads))
	})
	if err != nil {
		return nil, err
	}
	p := &Pool{ctx: ctx, raw: raw, models: map[string]*Container{}, acquired: map[*deltaHandle]struct{}{}}
	ctx.mu.Lock()
	ctx.openPools++
	ctx.mu.Unlock()
	runtime.SetFinalizer(p, (*Pool).finalize)
	return p, nil
}

// Close destroys the pool: every resident delta is freed, and PoolDeltas not yet released stop
// working. It fails with StatusBusy while an open Batch uses one of its deltas. Safe to call twice.
func (p *Pool) Close() error {
	x := p.ctx
	x.drain()
	x.mu.Lock()
	defer x.mu.Unlock()
	for h := range p.acquired {
		if h.batches > 0 {
			return newError(StatusBusy, "an open batch uses a delta of the pool: close it first")
		}
	}
	p.destroyLocked()
	return nil
}

// destroyLocked runs with ctx.mu held, on the context's goroutine (Close, or drain for a
// collected pool).
func (p *Pool) destroyLocked() {
	p.life.Lock()
	defer p.life.Unlock()
	if p.raw == nil {
		return
	}
	for h := range p.acquired {
		h.raw, h.released = nil, true // freed by the destroy
	}
	p.acquired = map[*deltaHandle]struct{}{}
	C.dc_pool_destroy(p.raw)
	p.raw = nil
	p.ctx.openPools--
	p.mu.Lock()
	for _, c := range p.models {
		atomic.AddInt32(&c.pools, -1)
	}
	p.models = map[string]*Container{}
	p.mu.Unlock()
	runtime.SetFinalizer(p, nil)
}

// finalize runs on the finalizer goroutine: the context's goroutine destroys the pool at its next
// call (destroying uses the context).
func (p *Pool) finalize() {
	x := p.ctx
	x.mu.Lock()
	defer x.mu.Unlock()
	x.pendingPools = append(x.pendingPools, p)
}

// use runs f with the pool's handle, read-locked against a concurrent destroy.
func (p *Pool) use(f func(raw *C.dc_pool) error) error {
	p.life.RLock()
	defer p.life.RUnlock()
	if p.raw == nil {
		return newError(StatusInvalidArgument, "the pool is closed")
	}
	return f(p.raw)
}

// releaseRaw drops one reference; a closed pool has freed the delta already.
func (p *Pool) releaseRaw(d *C.dc_delta) error {
	p.life.RLock()
	defer p.life.RUnlock()
	if p.raw == nil {
		return nil
	}
	raw := p.raw
	return call(func() C.dc_status { return C.dc_pool_release(raw, d) })
}

// Register adds c under modelID (nothing is loaded). StatusDuplicate if the id is taken.
func (p *Pool) Register(modelID string, c *Container) error {
	craw, err := c.handle()
	if err != nil {
		return err
	}
	cid := cString(modelID)
	defer freeC(cid)
	return p.use(func(raw *C.dc_pool) error {
		atomic.AddInt32(&c.pools, 1) // before the call: Close must not free it under the pool
		if err := call(func() C.dc_status { return C.dc_pool_register(raw, cid, craw) }); err != nil {
			atomic.AddInt32(&c.pools, -1)
			return err
		}
		p.mu.Lock()
		p.models[modelID] = c
		p.mu.Unlock()
		return nil
	})
}

// Unregister frees the model's resident deltas and forgets the id (its container may then be
// closed). StatusBusy while one of its deltas is acquired, StatusNotFound for an unknown id.
func (p *Pool) Unregister(modelID string) error {
	if _, err := p.ctx.handle(); err != nil {
		return err
	}
	cid := cString(modelID)
	defer freeC(cid)
	return p.use(func(raw *C.dc_pool) error {
		if err := call(func() C.dc_status { return C.dc_pool_unregister(raw, cid) }); err != nil {
			return err
		}
		p.mu.Lock()
		if c := p.models[modelID]; c != nil {
			atomic.AddInt32(&c.pools, -1)
			delete(p.models, modelID)
		}
		p.mu.Unlock()
		return nil
	})
}

// Acquire returns the delta of tensor of modelID, loading it if it is not resident (evicting least
// recently used unreferenced deltas as needed), with one reference that Release drops.
func (p *Pool) Acquire(modelID, tensor string) (*PoolDelta, error) {
	if _, err := p.ctx.handle(); err != nil {
		return nil, err
	}
	cid, cname := cString(modelID), cString(tensor)
	defer freeC(cid)
	defer freeC(cname)
	var d *C.dc_delta
	var info C.dc_delta_info
	err := p.use(func(raw *C.dc_pool) error {
		var out *C.dc_delta
		if err := call(func() C.dc_status { return C.dc_pool_acquire(raw, cid, cname, nil, &out) }); err != nil {
			return err
		}
		if err := call(func() C.dc_status { return C.dcgo_delta_info(out, &info) }); err != nil {
			C.dc_pool_release(raw, out)
			return err
		}
		d = out
		return nil
	})
	if err != nil {
		return nil, err
	}
	x := p.ctx
	h := &deltaHandle{raw: d, pool: p}
	x.mu.Lock()
	p.life.RLock()
	closed := p.raw == nil
	p.life.RUnlock()
	if !closed {
		p.acquired[h] = struct{}{}
	}
	x.mu.Unlock()
	if closed {
		return nil, newError(StatusInvalidArgument, "the pool was closed during Acquire")
	}
	delta := &Delta{ctx: x, h: h, info: DeltaInfo{
		Name: C.GoString(info.name), Rows: uint64(info.rows), Cols: uint64(info.cols),
		Kind: TensorKind(info.kind), DeviceBytes: uint64(info.device_bytes), Split: ShardSplit(info.split),
		ShardBegin: uint64(info.shard_begin), ShardEnd: uint64(info.shard_end),
	}}
	runtime.SetFinalizer(delta, (*Delta).finalize)
	return &PoolDelta{Delta: delta, ModelID: modelID}, nil
}

// Release drops the reference taken by Acquire; the delta stays resident, now evictable. It fails
// with StatusBusy while an open Batch uses it. Safe to call twice; any goroutine.
func (d *PoolDelta) Release() error {
	h, x := d.h, d.ctx
	x.mu.Lock()
	if h.released || h.raw == nil {
		x.mu.Unlock()
		return nil
	}
	if h.batches > 0 {
		x.mu.Unlock()
		return newError(StatusBusy, "delta %s is used by %d open batches: close them first", d.info.Name, h.batches)
	}
	raw := h.raw
	h.raw, h.released = nil, true
	delete(h.pool.acquired, h)
	x.mu.Unlock()
	runtime.SetFinalizer(d.Delta, nil)
	return h.pool.releaseRaw(raw)
}

// Close is Release (for defer and io.Closer).
func (d *PoolDelta) Close() error { return d.Release() }

// Prefetch queues tensor of modelID ("" = every tensor of the model) for decoding on the pool's
// host threads; Wait, the next ApplyBatched, or an Acquire of it places it. Any goroutine.
func (p *Pool) Prefetch(modelID, tensor string) error {
	cid := cString(modelID)
	defer freeC(cid)
	var cname *C.char
	if tensor != "" {
		cname = cString(tensor)
		defer freeC(cname)
	}
	return p.use(func(raw *C.dc_pool) error {
		return call(func() C.dc_status { return C.dc_pool_prefetch(raw, cid, cname, nil) })
	})
}

// Wait waits for every queued prefetch and places the decoded deltas; it returns the first decode
// or load failure among them.
func (p *Pool) Wait() error {
	if _, err := p.ctx.handle(); err != nil {
		return err
	}
	return p.use(func(raw *C.dc_pool) error {
		return call(func() C.dc_status { return C.dc_pool_wait(raw) })
	})
}

// Query returns the state of one entry and its reference count (0 unless resident). Any goroutine.
func (p *Pool) Query(modelID, tensor string) (EntryState, uint32, error) {
	cid, cname := cString(modelID), cString(tensor)
	defer freeC(cid)
	defer freeC(cname)
	var state C.dc_pool_entry_state
	var refs C.uint32_t
	err := p.use(func(raw *C.dc_pool) error {
		return call(func() C.dc_status { return C.dc_pool_query(raw, cid, cname, &state, &refs) })
	})
	return EntryState(state), uint32(refs), err
}

// Stats returns a consistent snapshot of the counters. Any goroutine.
func (p *Pool) Stats() (PoolStats, error) {
	var s C.dc_pool_stats
	err := p.use(func(raw *C.dc_pool) error {
		return call(func() C.dc_status { return C.dcgo_pool_stats(raw, &s) })
	})
	if err != nil {
		return PoolStats{}, err
	}
	return PoolStats{
		BudgetBytes: uint64(s.budget_bytes), ResidentBytes: uint64(s.resident_bytes),
		ResidentDeltas: uint64(s.resident_deltas), ReferencedDeltas: uint64(s.referenced_deltas),
		Hits: uint64(s.hits), Misses: uint64(s.misses), Loads: uint64(s.loads), Evictions: uint64(s.evictions),
		PrefetchLoaded: uint64(s.prefetch_loaded), PrefetchDropped: uint64(s.prefetch_dropped),
		PrefetchPending: uint64(s.prefetch_pending), BatchBuilds: uint64(s.batch_builds),
		SlotUploads: uint64(s.slot_uploads),
	}, nil
}

// ApplyBatched computes, for every row i < len(modelIDs), y[i] += x[i]·ΔW(modelIDs[i], tensor)ᵀ
// in float32 host memory (CPU context), with one batched apply; a row whose id is "" gets no
// delta. opts may be nil; with opts.Base every row ("" ones included) becomes
// y[i] = x[i]·(W_base + ΔW)ᵀ.
func (p *Pool) ApplyBatched(tensor string, modelIDs []string, x, y []float32, opts *ApplyOptions) error {
	return PoolApplyBatchedTyped(p, tensor, modelIDs, x, y, opts)
}

// PoolApplyBatchedTyped is ApplyBatched for any host element types (float32, Float16, BFloat16).
func PoolApplyBatchedTyped[X, Y Element](p *Pool, tensor string, modelIDs []string, x []X, y []Y, opts *ApplyOptions) error {
	if _, err := p.ctx.handle(); err != nil {
		return err
	}
	m := len(modelIDs)
	// Bounds: x, y and the base weight must fit the tensor's shape in every registered model
	// named. An id the pool cannot resolve has no delta the library could apply: the call fails
	// with the library's status and message.
	var a applyArgs
	resolved := false
	seen := map[string]bool{}
	for _, id := range modelIDs {
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		p.mu.Lock()
		c := p.models[id]
		p.mu.Unlock()
		if c == nil {
			continue
		}
		i, err := c.Find(tensor)
		if err != nil {
			continue
		}
		t, err := c.TensorInfo(i)
		if err != nil {
			continue
		}
		if a, err = hostArgs(p.ctx, t.Rows, t.Cols, m, x, y, opts); err != nil {
			return err
		}
		resolved = true
	}
	if !resolved {
		var err error
		if a, err = hostArgs(p.ctx, 0, 0, m, x, y, opts); err != nil {
			return err
		}
	}
	if m == 0 {
		return nil
	}
	// The ids go to C in C memory: one string per distinct id, NULL for "".
	ids := (*[1 << 30]*C.char)(C.malloc(C.size_t(m) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))[:m:m]
	defer C.free(unsafe.Pointer(&ids[0]))
	strs := map[string]*C.char{}
	for i, id := range modelIDs {
		if id == "" {
			ids[i] = nil
			continue
		}
		if strs[id] == nil {
			strs[id] = cString(id)
		}
		ids[i] = strs[id]
	}
	defer func() {
		for _, s := range strs {
			freeC(s)
		}
	}()
	cname := cString(tensor)
	defer freeC(cname)
	err := p.use(func(raw *C.dc_pool) error {
		return call(func() C.dc_status {
			return C.dcgo_pool_apply(raw, cname, &ids[0], C.uint64_t(m), a.x, C.dc_dtype(a.xdt), C.uint64_t(a.ldx), a.y,
				C.dc_dtype(a.ydt), C.uint64_t(a.ldy), a.base, C.dc_dtype(a.bdt), C.uint64_t(a.ldb), C.float(a.scale))
		})
	})
	runtime.KeepAlive(x)
	runtime.KeepAlive(y)
	runtime.KeepAlive(opts)
	return err
}
