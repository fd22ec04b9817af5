package deltacome_test

// The Go usage shown in docs/bindings.md, verbatim between the snippet markers
// (tests/packaging/run.sh checks that the document and this file agree).

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	deltacome "github.com/deltacome/deltacome-go"
)

// snippet-begin
// applyOneLayer loads one layer's delta on the CPU and applies it to 4 tokens: y += x·ΔWᵀ.
func applyOneLayer(path, tensor string) ([]float32, error) {
	c, err := deltacome.Open(path, nil) // safe to share between goroutines
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, err := deltacome.NewCPUContext() // one per goroutine
	if err != nil {
		return nil, err
	}
	defer ctx.Close()
	d, err := ctx.Load(c, tensor, nil)
	if err != nil {
		return nil, err // *deltacome.Error: Status + the library's message
	}
	defer d.Close()
	rows, cols := int(d.Info().Rows), int(d.Info().Cols)
	x := make([]float32, 4*cols)
	for i := range x {
		x[i] = float32(math.Sin(float64(i) * 0.37))
	}
	y := make([]float32, 4*rows)
	err = d.Apply(4, x, y, nil)
	return y, err
}

// snippet-end

func Example() {
	path := filepath.Join(os.Getenv("DELTACOME_FIXTURES"), "model.dcz")
	y, err := applyOneLayer(path, "model.layers.0.self_attn.q_proj.weight")
	fmt.Println(len(y), err)
	_, err = applyOneLayer(path, "no.such.tensor")
	fmt.Println(errors.Is(err, deltacome.StatusNotFound))
	// Output:
	// 512 <nil>
	// true
}
