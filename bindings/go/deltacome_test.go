package deltacome

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Same tolerances as the Rust tests: compression error of ΔŴ against fine-tuned − base
// (relative Frobenius; a useless reconstruction is ≥ 1), and fp32 agreement of two computations.
const compressionTol = 0.75
const fp32Tol = 1e-4

func mustOpen(t *testing.T) *Container {
	t.Helper()
	c, err := Open(fixture("model.dcz"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustCPU(t *testing.T) *Context {
	t.Helper()
	ctx, err := NewCPUContext()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ctx.Close(); err != nil {
			t.Error(err)
		}
	})
	return ctx
}

func lowRank(t *testing.T, c *Container) []TensorInfo {
	ts, err := c.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	var out []TensorInfo
	for _, x := range ts {
		if x.Kind == KindLowRank {
			out = append(out, x)
		}
	}
	return out
}

func denseDelta(t *testing.T, d *Delta) []float64 {
	w := make([]float32, d.Info().Rows*d.Info().Cols)
	if err := d.Merge(w, 0, 1); err != nil {
		t.Fatal(err)
	}
	return f64s(w)
}

func TestVersion(t *testing.T) {
	if VersionNumber() != HeaderVersionNumber || Version() != "0.1.0" {
		t.Fatalf("library %s (%d), header %d", Version(), VersionNumber(), HeaderVersionNumber)
	}
	if !BackendCPU.Available() || BackendCPU.String() != "cpu" {
		t.Fatal("the CPU backend must be available")
	}
}

func TestOpenAndInspect(t *testing.T) {
	c := mustOpen(t)
	info, err := c.Info()
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(fixture("model.dcz"))
	if info.FormatMajor != 1 || info.FileBytes != uint64(st.Size()) || int(info.TensorCount) != c.NumTensors() ||
		!strings.HasPrefix(info.ToolVersion, "deltacome") {
		t.Fatalf("info %+v", info)
	}
	ft := readSafetensors(t, fixture("finetuned.safetensors"))
	ts, err := c.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	nLow := 0
	for _, x := range ts {
		s, ok := ft[x.Name]
		if !ok {
			t.Fatalf("%s is not in the fine-tuned checkpoint", x.Name)
		}
		cols := uint64(1)
		if len(s.Shape) > 1 {
			cols = s.Shape[1]
		}
		if x.Rows != s.Shape[0] || x.Cols != cols || x.FP16Bytes != x.Rows*x.Cols*2 {
			t.Fatalf("%s: %dx%d, safetensors %v", x.Name, x.Rows, x.Cols, s.Shape)
		}
		if idx, err := c.Find(x.Name); err != nil || uint64(idx) != x.Index {
			t.Fatalf("Find(%s) = %d, %v", x.Name, idx, err)
		}
		if x.Kind != KindLowRank {
			continue
		}
		nLow++
		if x.Rank == 0 || len(x.Bands) == 0 || x.Bands[0].RankBegin != 0 || x.Bands[len(x.Bands)-1].RankEnd != x.Rank {
			t.Fatalf("%s: rank %d bands %+v", x.Name, x.Rank, x.Bands)
		}
		sigma, err := c.SingularValues(int(x.Index))
		if err != nil || len(sigma) != int(x.Rank) {
			t.Fatalf("%s: σ %v %v", x.Name, sigma, err)
		}
		for i := 1; i < len(sigma); i++ {
			if sigma[i] > sigma[i-1] {
				t.Fatalf("%s: σ not descending", x.Name)
			}
		}
	}
	if nLow < 7 {
		t.Fatalf("%d low-rank tensors", nLow)
	}
	if err := c.Verify(); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckBaseFile(fixture("base.safetensors")); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckBaseFile(fixture("finetuned.safetensors")); !errors.Is(err, StatusBaseMismatch) {
		t.Fatalf("the fine-tuned checkpoint passed as base: %v", err)
	}
}

func TestOpenMemory(t *testing.T) {
	b, err := os.ReadFile(fixture("model.dcz"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenMemory(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := range b { // the library copied the image: clobbering ours changes nothing
		b[i] = 0
	}
	a, _ := mustOpen(t).Tensors()
	got, err := m.Tensors()
	if err != nil || len(got) != len(a) || got[3].Name != a[3].Name || got[3].StoredBytes != a[3].StoredBytes {
		t.Fatalf("memory container differs: %v", err)
	}
	if err := m.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestFindMissing(t *testing.T) {
	c := mustOpen(t)
	_, err := c.Find("model.layers.99.nope.weight")
	var e *Error
	if !errors.As(err, &e) || e.Status != StatusNotFound || !strings.Contains(e.Message, "model.layers.99.nope.weight") {
		t.Fatalf("got %v", err)
	}
	if _, err := mustCPU(t).Load(c, "nope", nil); !errors.Is(err, StatusNotFound) {
		t.Fatalf("got %v", err)
	}
}

func TestMergeApproximatesFinetuned(t *testing.T) {
	c := mustOpen(t)
	ctx := mustCPU(t)
	base := readSafetensors(t, fixture("base.safetensors"))
	ft := readSafetensors(t, fixture("finetuned.safetensors"))
	for _, x := range lowRank(t, c) {
		d, err := ctx.Load(c, x.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		wb, wf := base[x.Name].f64(), ft[x.Name].f64()
		exact := make([]float64, len(wb))
		for i := range wb {
			exact[i] = wf[i] - wb[i]
		}
		approx := denseDelta(t, d)
		if e := relErr(approx, exact); e >= compressionTol {
			t.Fatalf("%s: ‖ΔŴ − ΔW‖/‖ΔW‖ = %g", x.Name, e)
		}
		// fp16 merge into the base weight: W ≈ fine-tuned.
		w16 := base[x.Name].f16()
		if err := MergeTyped(d, w16, 0, 1); err != nil {
			t.Fatal(err)
		}
		got := make([]float64, len(w16))
		for i, h := range w16 {
			got[i] = float64(halfToFloat(uint16(h))) - wb[i]
		}
		if e := relErr(got, exact); e >= compressionTol+0.05 {
			t.Fatalf("%s: fp16 merge error %g", x.Name, e)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestApplyMatchesReferences(t *testing.T) {
	c := mustOpen(t)
	ctx := mustCPU(t)
	base := readSafetensors(t, fixture("base.safetensors"))
	ft := readSafetensors(t, fixture("finetuned.safetensors"))
	const m = 5
	for _, x := range lowRank(t, c) {
		d, err := ctx.Load(c, x.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		rows, cols := int(x.Rows), int(x.Cols)
		xs := inputs(m*cols, x.Index)
		dw := denseDelta(t, d)
		y := make([]float32, m*rows)
		if err := d.Apply(m, xs, y, nil); err != nil {
			t.Fatal(err)
		}
		if e := relErr(f64s(y), matmulT(f64s(xs), dw, m, rows, cols)); e >= fp32Tol {
			t.Fatalf("%s: apply vs x·ΔŴᵀ %g", x.Name, e)
		}
		wb, wf := base[x.Name].f64(), ft[x.Name].f64()
		exact := make([]float64, len(wb))
		for i := range wb {
			exact[i] = wf[i] - wb[i]
		}
		if e := relErr(f64s(y), matmulT(f64s(xs), exact, m, rows, cols)); e >= compressionTol {
			t.Fatalf("%s: apply vs x·ΔWᵀ %g", x.Name, e)
		}
		// With the fp16 base weight and a scale: y = x·(W_base + 0.5·ΔŴ)ᵀ, overwriting y.
		for i := range y {
			y[i] = 3
		}
		opts := &ApplyOptions{Scale: 0.5, Base: base[x.Name].f16()}
		if err := d.Apply(m, xs, y, opts); err != nil {
			t.Fatal(err)
		}
		w := make([]float64, len(wb))
		for i := range wb {
			w[i] = wb[i] + 0.5*dw[i]
		}
		if e := relErr(f64s(y), matmulT(f64s(xs), w, m, rows, cols)); e >= fp32Tol {
			t.Fatalf("%s: apply with base %g", x.Name, e)
		}
		// fp16 activations.
		x16 := make([]Float16, len(xs))
		x16f := make([]float64, len(xs))
		for i, v := range xs {
			x16[i] = floatToHalf(v)
			x16f[i] = float64(halfToFloat(uint16(x16[i])))
		}
		y16 := make([]Float16, m*rows)
		if err := ApplyTyped(d, m, x16, y16, nil); err != nil {
			t.Fatal(err)
		}
		got := make([]float64, len(y16))
		for i, h := range y16 {
			got[i] = float64(halfToFloat(uint16(h)))
		}
		if e := relErr(got, matmulT(x16f, dw, m, rows, cols)); e >= 2e-3 {
			t.Fatalf("%s: fp16 apply %g", x.Name, e)
		}
		// Bounds are checked before C is called.
		if err := d.Apply(m, xs[:len(xs)-1], y, nil); !errors.Is(err, StatusShapeMismatch) {
			t.Fatalf("short x: %v", err)
		}
		if err := d.Apply(m, xs, y[:len(y)-1], nil); !errors.Is(err, StatusShapeMismatch) {
			t.Fatalf("short y: %v", err)
		}
	}
}

func TestBatchedApply(t *testing.T) {
	c := mustOpen(t)
	ctx := mustCPU(t)
	var q []string
	for _, x := range lowRank(t, c) {
		if strings.HasSuffix(x.Name, "self_attn.q_proj.weight") {
			q = append(q, x.Name)
		}
	}
	d0, err := ctx.Load(c, q[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	d1, err := ctx.Load(c, q[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	rows, cols := int(d0.Info().Rows), int(d0.Info().Cols)
	b, err := NewBatch([]*Delta{d0, d1})
	if err != nil {
		t.Fatal(err)
	}
	slots := []int32{0, 1, -1, 1, 0, 0}
	m := len(slots)
	xs := inputs(m*cols, 99)
	y := make([]float32, m*rows)
	if err := b.Apply(slots, m, xs, y, nil); err != nil {
		t.Fatal(err)
	}
	for i, s := range slots {
		row := y[i*rows : (i+1)*rows]
		want := make([]float32, rows)
		if s >= 0 {
			if err := []*Delta{d0, d1}[s].Apply(1, xs[i*cols:(i+1)*cols], want, nil); err != nil {
				t.Fatal(err)
			}
		}
		if s < 0 {
			for _, v := range row {
				if v != 0 {
					t.Fatalf("row %d has no delta but changed", i)
				}
			}
		} else if e := relErr(f64s(row), f64s(want)); e >= fp32Tol {
			t.Fatalf("row %d slot %d: %g", i, s, e)
		}
	}
	if err := b.Apply([]int32{0, 2}, 2, xs, y, nil); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("slot 2: %v", err)
	}
	// Deltas must outlive their batch; the context refuses to close under an open batch.
	if err := d0.Close(); !errors.Is(err, StatusBusy) {
		t.Fatalf("closing a delta in use: %v", err)
	}
	if err := ctx.Close(); !errors.Is(err, StatusBusy) {
		t.Fatalf("closing a context with a batch: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d0.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d0.Apply(1, xs, y, nil); err == nil {
		t.Fatal("apply on a closed delta succeeded")
	}
}

func TestLoadAllAndContextClose(t *testing.T) {
	c := mustOpen(t)
	ctx, err := NewCPUContext()
	if err != nil {
		t.Fatal(err)
	}
	all, err := ctx.LoadAll(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := c.Tensors()
	if len(all) != len(ts) {
		t.Fatalf("%d deltas for %d tensors", len(all), len(ts))
	}
	for i, d := range all {
		if d.Name() != ts[i].Name {
			t.Fatalf("delta %d is %s, want %s", i, d.Name(), ts[i].Name)
		}
	}
	// Closing the context frees the deltas still loaded; their handles then refuse to work.
	if err := ctx.Close(); err != nil {
		t.Fatal(err)
	}
	if err := all[0].Apply(1, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("apply after context close: %v", err)
	}
	if err := all[0].Close(); err != nil {
		t.Fatal(err)
	}
}

// Finalizers only queue frees; the context's next call frees them on its own goroutine.
func TestFinalizersAreBackstops(t *testing.T) {
	c := mustOpen(t)
	ctx := mustCPU(t)
	for i := 0; i < 50; i++ {
		if _, err := ctx.LoadIndex(c, i%c.NumTensors(), nil); err != nil {
			t.Fatal(err)
		}
	}
	queued := 0
	for i := 0; i < 100 && queued == 0; i++ { // finalizers run asynchronously after a GC
		runtime_GC()
		time.Sleep(10 * time.Millisecond)
		ctx.mu.Lock()
		queued = len(ctx.pendingDeltas)
		ctx.mu.Unlock()
	}
	if queued == 0 {
		t.Fatal("no finalizer queued its delta")
	}
	if _, err := ctx.LoadIndex(c, 0, nil); err != nil { // drains the queue
		t.Fatal(err)
	}
	ctx.mu.Lock()
	pending := len(ctx.pendingDeltas)
	ctx.mu.Unlock()
	if pending != 0 {
		t.Fatalf("%d deltas still queued after a drain", pending)
	}
}

func TestContainerSharedAcrossGoroutines(t *testing.T) {
	c := mustOpen(t)
	x := lowRank(t, c)[0]
	xs := inputs(2*int(x.Cols), 5)
	results := make([][]float32, 4)
	var wg sync.WaitGroup
	for g := range results {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			ctx, err := NewCPUContext()
			if err != nil {
				t.Error(err)
				return
			}
			defer ctx.Close()
			d, err := ctx.Load(c, x.Name, nil)
			if err != nil {
				t.Error(err)
				return
			}
			y := make([]float32, 2*int(x.Rows))
			if err := d.Apply(2, xs, y, nil); err != nil {
				t.Error(err)
			}
			results[g] = y
		}(g)
	}
	wg.Wait()
	for g := 1; g < len(results); g++ {
		if relErr(f64s(results[g]), f64s(results[0])) != 0 {
			t.Fatal("goroutines disagree")
		}
	}
}

func TestCorruptPayload(t *testing.T) {
	b, err := os.ReadFile(fixture("model.dcz"))
	if err != nil {
		t.Fatal(err)
	}
	c := mustOpen(t)
	first, _ := c.TensorInfo(0)
	payload := int(binary.LittleEndian.Uint64(b[32:]))
	at := payload + corruptOffsetInFirstFrame(t, b[payload:])
	b[at] ^= 0x5a
	path := filepath.Join(t.TempDir(), "flipped.dcz")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	bad, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	err = bad.Verify()
	var e *Error
	if !errors.As(err, &e) || (e.Status != StatusChecksum && e.Status != StatusDecompress) ||
		!strings.Contains(e.Message, first.Name) {
		t.Fatalf("verify: %v", err)
	}
	_, err = mustCPU(t).Load(bad, first.Name, nil)
	if !errors.Is(err, e.Status) || !strings.Contains(err.Error(), first.Name) {
		t.Fatalf("load: %v", err)
	}
}

func corruptOffsetInFirstFrame(t *testing.T, p []byte) int {
	if binary.LittleEndian.Uint32(p) != 0xFD2FB528 {
		t.Fatal("the payload does not start with a zstd frame")
	}
	fhd := p[4]
	single := int(fhd>>5) & 1
	did := []int{0, 1, 2, 4}[fhd&3]
	fcs := []int{single, 2, 4, 8}[fhd>>6]
	h := 4 + 1 + (1 - single) + did + fcs
	bh := uint32(p[h]) | uint32(p[h+1])<<8 | uint32(p[h+2])<<16
	if (bh>>1)&3 == 1 { // RLE block: one byte repeated
		return h + 3
	}
	return h + 3 + int(bh>>3)/2
}

func TestCorruptManifestAndTruncated(t *testing.T) {
	b, err := os.ReadFile(fixture("model.dcz"))
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), b...)
	mo, ms := binary.LittleEndian.Uint64(b[16:]), binary.LittleEndian.Uint64(b[24:])
	flipped[mo+ms/2] ^= 1
	if _, err := OpenMemory(flipped, nil); !errors.Is(err, StatusChecksum) {
		t.Fatalf("flipped manifest: %v", err)
	}
	dir := t.TempDir()
	for _, cut := range []int{len(b) - 1, len(b) / 2, 40} {
		path := filepath.Join(dir, "cut.dcz")
		if err := os.WriteFile(path, b[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(path, nil)
		var e *Error
		if !errors.As(err, &e) || (e.Status != StatusTruncated && e.Status != StatusCorrupt) || e.Message == "" {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	_, err = Open(filepath.Join(dir, "missing.dcz"), nil)
	if !errors.Is(err, StatusIO) || !strings.Contains(err.Error(), "missing.dcz") {
		t.Fatalf("missing file: %v", err)
	}
}
