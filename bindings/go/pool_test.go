package deltacome

// The experimental delta pool on the CPU backend, with two variants of one base: the demo pair
// compressed with Delta-CoMe (model.dcz, low-rank) and with BitDelta (bitdeltaPath).

import (
	"errors"
	"sync"
	"testing"
	"time"
)

const (
	q0    = "model.layers.0.self_attn.q_proj.weight"
	down1 = "model.layers.1.mlp.down_proj.weight" // 128 × 352: rows ≠ cols
)

type poolFixture struct {
	a, b *Container
	ctx  *Context
	pool *Pool
}

// newPool opens both variants, a CPU context and a pool registering them as "a" and "b"; cleanup
// closes them in the required order (pool, then context and containers) and checks each Close.
func newPool(t *testing.T, budget uint64) *poolFixture {
	t.Helper()
	f := &poolFixture{a: mustOpen(t), ctx: mustCPU(t)}
	b, err := Open(bitdeltaPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	f.b = b
	if f.pool, err = NewPool(f.ctx, &PoolOptions{DeviceBudgetBytes: budget}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.pool.Close(); err != nil {
			t.Error(err)
		}
	})
	for id, c := range map[string]*Container{"a": f.a, "b": f.b} {
		if err := f.pool.Register(id, c); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *poolFixture) stats(t *testing.T) PoolStats {
	t.Helper()
	s, err := f.pool.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *poolFixture) acquire(t *testing.T, id, tensor string) *PoolDelta {
	t.Helper()
	d, err := f.pool.Acquire(id, tensor)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *poolFixture) expectState(t *testing.T, id, tensor string, state EntryState, refs uint32) {
	t.Helper()
	s, r, err := f.pool.Query(id, tensor)
	if err != nil || s != state || r != refs {
		t.Fatalf("query %s %s: %v %d %v, want %v %d", id, tensor, s, r, err, state, refs)
	}
}

type counts struct{ hits, misses, loads, evictions, resident, referenced, bytes uint64 }

func (f *poolFixture) expect(t *testing.T, want counts) {
	t.Helper()
	s := f.stats(t)
	got := counts{s.Hits, s.Misses, s.Loads, s.Evictions, s.ResidentDeltas, s.ReferencedDeltas, s.ResidentBytes}
	if got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
}

func TestPoolAcquireReleaseStats(t *testing.T) {
	f := newPool(t, 64<<20)
	if s := f.stats(t); s != (PoolStats{BudgetBytes: 64 << 20}) {
		t.Fatalf("fresh pool: %+v", s)
	}
	f.expectState(t, "a", q0, EntryAbsent, 0)
	d1 := f.acquire(t, "a", q0)
	if d1.ModelID != "a" || d1.Info().Kind != KindLowRank || d1.Name() != q0 {
		t.Fatalf("acquired %s %+v", d1.ModelID, d1.Info())
	}
	sizeA := d1.Info().DeviceBytes
	f.expect(t, counts{0, 1, 1, 0, 1, 1, sizeA})
	d2 := f.acquire(t, "a", q0) // a hit on the same delta
	if d2.h.raw != d1.h.raw {
		t.Fatal("a second acquire gave another delta")
	}
	f.expectState(t, "a", q0, EntryResident, 2)
	f.expect(t, counts{1, 1, 1, 0, 1, 1, sizeA})

	// The pooled delta computes what the same tensor loaded with the stable API does.
	rows, cols := int(d1.Info().Rows), int(d1.Info().Cols)
	xs := inputs(3*cols, 11)
	yPool, yDirect := make([]float32, 3*rows), make([]float32, 3*rows)
	if err := d1.Apply(3, xs, yPool, nil); err != nil {
		t.Fatal(err)
	}
	direct, err := f.ctx.Load(f.a, q0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := direct.Apply(3, xs, yDirect, nil); err != nil {
		t.Fatal(err)
	}
	direct.Close()
	if e := relErr(f64s(yPool), f64s(yDirect)); e >= fp32Tol {
		t.Fatalf("pooled vs loaded delta: %g", e)
	}
	if err := d1.Delta.Close(); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("closing a pool's delta: %v", err)
	}

	if err := d1.Release(); err != nil {
		t.Fatal(err)
	}
	if err := d1.Release(); err != nil { // twice: no-op
		t.Fatal(err)
	}
	if err := d1.Apply(3, xs, yPool, nil); err == nil {
		t.Fatal("apply after release succeeded")
	}
	f.expectState(t, "a", q0, EntryResident, 1)
	d2.Release()
	f.expectState(t, "a", q0, EntryResident, 0)

	db := f.acquire(t, "b", q0)
	if db.Info().Kind != KindBitDelta {
		t.Fatalf("b is %v", db.Info().Kind)
	}
	sizeB := db.Info().DeviceBytes
	f.expect(t, counts{1, 2, 2, 0, 2, 1, sizeA + sizeB})
	db.Release()

	// A registered container cannot be closed; unregistering frees its deltas and allows it.
	if err := f.a.Close(); !errors.Is(err, StatusBusy) {
		t.Fatalf("closing a registered container: %v", err)
	}
	if err := f.pool.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	f.expect(t, counts{1, 2, 2, 0, 1, 0, sizeB})
	// The context cannot be closed under an open pool.
	if err := f.ctx.Close(); !errors.Is(err, StatusBusy) {
		t.Fatalf("closing the context of an open pool: %v", err)
	}
}

func TestPoolBudgetEvictsLRU(t *testing.T) {
	big := newPool(t, 64<<20)
	da, db := big.acquire(t, "a", q0), big.acquire(t, "b", q0)
	sizeA, sizeB := da.Info().DeviceBytes, db.Info().DeviceBytes
	da.Release()
	db.Release()

	lo, hi := sizeA, sizeB
	if lo > hi {
		lo, hi = hi, lo
	}
	f := newPool(t, hi+lo/2) // room for either, not both
	f.acquire(t, "a", q0).Release()
	db = f.acquire(t, "b", q0) // evicts a
	f.expect(t, counts{0, 2, 2, 1, 1, 1, sizeB})
	f.expectState(t, "a", q0, EntryAbsent, 0)
	_, err := f.pool.Acquire("a", q0) // b is referenced: no room, nothing evicted
	var e *Error
	if !errors.As(err, &e) || e.Status != StatusBudget || e.Message == "" {
		t.Fatalf("acquire over budget: %v", err)
	}
	f.expect(t, counts{0, 3, 2, 1, 1, 1, sizeB})
	db.Release()
	da = f.acquire(t, "a", q0) // now b goes
	f.expect(t, counts{0, 4, 3, 2, 1, 1, sizeA})
	da.Release()
}

func TestPoolApplyBatchedMatchesPerDeltaApply(t *testing.T) {
	f := newPool(t, 64<<20)
	da, err := f.ctx.Load(f.a, down1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer da.Close()
	db, err := f.ctx.Load(f.b, down1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, cols := int(da.Info().Rows), int(da.Info().Cols)
	ids := []string{"a", "b", "", "b", "a", "a"}
	m := len(ids)
	xs := inputs(m*cols, 21)
	y0 := inputs(m*rows, 22) // y += ...: start from non-zero values
	for pass, scale := range []float32{1, 1, 0.5} {
		opts := &ApplyOptions{Scale: scale}
		y := append([]float32(nil), y0...)
		if err := f.pool.ApplyBatched(down1, ids, xs, y, opts); err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			got := y[i*rows : (i+1)*rows]
			want := append([]float32(nil), y0[i*rows:(i+1)*rows]...)
			if id == "" {
				if relErr(f64s(got), f64s(want)) != 0 {
					t.Fatalf("row %d has no model id but changed", i)
				}
				continue
			}
			d := map[string]*Delta{"a": da, "b": db}[id]
			if err := d.Apply(1, xs[i*cols:(i+1)*cols], want, opts); err != nil {
				t.Fatal(err)
			}
			if e := relErr(f64s(got), f64s(want)); e >= fp32Tol {
				t.Fatalf("pass %d row %d (%s): %g", pass, i, id, e)
			}
		}
		// The variants differ: a row routed to the wrong one would not have matched.
		wrong := append([]float32(nil), y0[:rows]...)
		if err := db.Apply(1, xs[:cols], wrong, opts); err != nil {
			t.Fatal(err)
		}
		if relErr(f64s(wrong), f64s(y[:rows])) < 1e-3 {
			t.Fatal("variants a and b give the same row")
		}
		s := f.stats(t)
		// One acquisition per distinct id and call; the batch and row→slot table are reused.
		if s.Misses != 2 || s.Hits != uint64(2*pass) || s.Loads != 2 || s.ReferencedDeltas != 0 ||
			s.BatchBuilds != 1 || s.SlotUploads != 1 {
			t.Fatalf("pass %d: %+v", pass, s)
		}
	}
	// float16 activations through the generic form.
	x16 := make([]Float16, cols)
	for i := range x16 {
		x16[i] = floatToHalf(xs[i])
	}
	y16 := make([]float32, rows)
	if err := PoolApplyBatchedTyped(f.pool, down1, []string{"a"}, x16, y16, nil); err != nil {
		t.Fatal(err)
	}
	want := make([]float32, rows)
	if err := ApplyTyped(da, 1, x16, want, nil); err != nil {
		t.Fatal(err)
	}
	if e := relErr(f64s(y16), f64s(want)); e >= fp32Tol {
		t.Fatalf("float16 x: %g", e)
	}
	// Every id "": nothing happens.
	y := append([]float32(nil), y0...)
	if err := f.pool.ApplyBatched(down1, make([]string, m), xs, y, nil); err != nil {
		t.Fatal(err)
	}
	if relErr(f64s(y), f64s(y0)) != 0 {
		t.Fatal("rows without model ids changed")
	}
}

func TestPoolErrors(t *testing.T) {
	f := newPool(t, 64<<20)
	_, err := f.pool.Acquire("nope", q0)
	var e *Error
	if !errors.As(err, &e) || e.Status != StatusNotFound || e.Message != "dc_pool_acquire: model id 'nope' is not registered" {
		t.Fatalf("unknown id: %v", err)
	}
	if _, err := f.pool.Acquire("a", "no.such.tensor"); !errors.Is(err, StatusNotFound) {
		t.Fatalf("unknown tensor: %v", err)
	}
	if _, _, err := f.pool.Query("nope", q0); !errors.As(err, &e) || e.Status != StatusNotFound ||
		e.Message != "dc_pool_query: model id 'nope' is not registered" {
		t.Fatalf("query unknown id: %v", err)
	}
	xs, y := inputs(2*128, 3), make([]float32, 2*128)
	err = f.pool.ApplyBatched(q0, []string{"a", "nope"}, xs, y, nil)
	if !errors.As(err, &e) || e.Status != StatusNotFound || e.Message != "dc_pool_apply_batched: model id 'nope' is not registered" {
		t.Fatalf("apply with an unknown id: %v", err)
	}
	before := f.stats(t)
	if err := f.pool.ApplyBatched(q0, []string{"a", "a"}, xs, y[:128], nil); !errors.Is(err, StatusShapeMismatch) {
		t.Fatalf("short y: %v", err)
	}
	if f.stats(t) != before {
		t.Fatal("a call refused before C changed the stats")
	}
	if err := f.pool.Register("a", f.b); !errors.Is(err, StatusDuplicate) {
		t.Fatalf("duplicate id: %v", err)
	}
	if err := f.pool.Register("", f.b); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("empty id: %v", err)
	}
	d := f.acquire(t, "b", q0)
	if err := f.pool.Unregister("b"); !errors.Is(err, StatusBusy) {
		t.Fatalf("unregister with an acquired delta: %v", err)
	}
	// A batch built on a pool's delta keeps it: release and the pool's Close wait for the batch.
	batch, err := NewBatch([]*Delta{d.Delta})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Release(); !errors.Is(err, StatusBusy) {
		t.Fatalf("release under a batch: %v", err)
	}
	batch.Close()
	d.Release()
	if err := f.pool.Unregister("b"); err != nil {
		t.Fatal(err)
	}
	if err := f.pool.Unregister("b"); !errors.Is(err, StatusNotFound) {
		t.Fatalf("second unregister: %v", err)
	}
	if _, err := NewPool(f.ctx, &PoolOptions{HostThreads: -1}); !errors.As(err, &e) || e.Status != StatusInvalidArgument ||
		e.Message == "" {
		t.Fatalf("bad options: %v", err)
	}
}

func TestPoolPrefetchAndGoroutines(t *testing.T) {
	f := newPool(t, 64<<20)
	if err := f.pool.Prefetch("a", ""); err != nil { // every tensor of a
		t.Fatal(err)
	}
	if err := f.pool.Wait(); err != nil {
		t.Fatal(err)
	}
	n := uint64(f.a.NumTensors())
	if s := f.stats(t); s.PrefetchLoaded != n || s.Loads != n || s.ResidentDeltas != n || s.PrefetchPending != 0 {
		t.Fatalf("after prefetch: %+v", s)
	}
	f.expectState(t, "a", down1, EntryResident, 0)
	f.acquire(t, "a", down1).Release()
	if f.stats(t).Hits != 1 {
		t.Fatal("acquire after prefetch was not a hit")
	}
	// The thread-safe calls from other goroutines, while this one holds an acquired delta.
	d := f.acquire(t, "a", q0)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.pool.Prefetch("b", q0); err != nil {
				t.Error(err)
			}
			if _, err := f.pool.Stats(); err != nil {
				t.Error(err)
			}
			if _, _, err := f.pool.Query("a", q0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	d.Release()
	if err := f.pool.Wait(); err != nil {
		t.Fatal(err)
	}
	f.expectState(t, "b", q0, EntryResident, 0)
	if err := f.pool.Prefetch("nope", ""); !errors.Is(err, StatusNotFound) {
		t.Fatalf("prefetch of an unknown id: %v", err)
	}
}

// A forgotten PoolDelta is released by its finalizer; a collected Pool is destroyed by the
// context's next call.
func TestPoolFinalizers(t *testing.T) {
	f := newPool(t, 64<<20)
	f.acquire(t, "a", q0) // dropped without Release
	for i := 0; i < 100 && f.stats(t).ReferencedDeltas != 0; i++ {
		runtime_GC()
		time.Sleep(10 * time.Millisecond)
	}
	if s := f.stats(t); s.ReferencedDeltas != 0 || s.ResidentDeltas != 1 {
		t.Fatalf("the finalizer did not release: %+v", s)
	}

	ctx := mustCPU(t)
	c := mustOpen(t)
	func() {
		p, err := NewPool(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Register("m", c); err != nil {
			t.Fatal(err)
		}
	}()
	queued := 0
	for i := 0; i < 100 && queued == 0; i++ {
		runtime_GC()
		time.Sleep(10 * time.Millisecond)
		ctx.mu.Lock()
		queued = len(ctx.pendingPools)
		ctx.mu.Unlock()
	}
	if queued == 0 {
		t.Fatal("no finalizer queued the pool")
	}
	if _, err := ctx.Load(c, q0, nil); err != nil { // drains: destroys the pool
		t.Fatal(err)
	}
	ctx.mu.Lock()
	open := ctx.openPools
	ctx.mu.Unlock()
	if open != 0 {
		t.Fatalf("%d pools still open", open)
	}
	if err := c.Close(); err != nil { // no longer registered
		t.Fatal(err)
	}
}
