package deltacome_test

// The pool usage shown in docs/bindings.md, verbatim between the snippet markers
// (tests/packaging/check_snippets.py checks that the document and this file agree).

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	deltacome "github.com/deltacome/deltacome-go"
)

// snippet-begin
// serveTwoVariants applies one layer for 4 rows that belong to two variants of one base (row 1:
// base model only), with one batched apply: y[i] += x[i]·ΔW(ids[i])ᵀ.
func serveTwoVariants(pathA, pathB, tensor string) ([]float32, deltacome.PoolStats, error) {
	var stats deltacome.PoolStats
	a, err := deltacome.Open(pathA, nil)
	if err != nil {
		return nil, stats, err
	}
	defer a.Close() // deferred first, runs last: after the pool's Close
	b, err := deltacome.Open(pathB, nil)
	if err != nil {
		return nil, stats, err
	}
	defer b.Close()
	ctx, err := deltacome.NewCPUContext()
	if err != nil {
		return nil, stats, err
	}
	defer ctx.Close()
	pool, err := deltacome.NewPool(ctx, &deltacome.PoolOptions{DeviceBudgetBytes: 16 << 20})
	if err != nil {
		return nil, stats, err
	}
	defer pool.Close()
	if err := pool.Register("a", a); err != nil {
		return nil, stats, err
	}
	if err := pool.Register("b", b); err != nil {
		return nil, stats, err
	}
	i, err := a.Find(tensor)
	if err != nil {
		return nil, stats, err
	}
	info, _ := a.TensorInfo(i)
	x := make([]float32, 4*int(info.Cols))
	for i := range x {
		x[i] = float32(math.Sin(float64(i) * 0.37))
	}
	y := make([]float32, 4*int(info.Rows))
	if err := pool.ApplyBatched(tensor, []string{"a", "", "b", "a"}, x, y, nil); err != nil {
		return nil, stats, err
	}
	d, err := pool.Acquire("b", tensor) // resident, never evicted until Release
	if err != nil {
		return nil, stats, err
	}
	d.Release()
	stats, err = pool.Stats()
	return y, stats, err
}

// snippet-end

func ExampleNewPool() {
	dir := os.Getenv("DELTACOME_FIXTURES")
	tensor := "model.layers.0.self_attn.q_proj.weight"
	y, s, err := serveTwoVariants(filepath.Join(dir, "model.dcz"), os.Getenv("DELTACOME_BITDELTA"), tensor)
	fmt.Println(len(y), err)
	fmt.Println(s.Hits, s.Misses, s.Loads, s.ResidentDeltas, s.ReferencedDeltas)
	_, _, err = serveTwoVariants(filepath.Join(dir, "model.dcz"), filepath.Join(dir, "model.dcz"), "no.such.tensor")
	fmt.Println(errors.Is(err, deltacome.StatusNotFound))
	// Output:
	// 512 <nil>
	// 1 2 2 2 0
	// true
}
