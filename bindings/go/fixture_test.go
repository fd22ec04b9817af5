package deltacome

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// fixtureDir is $DELTACOME_FIXTURES (tests/packaging/run.sh makes it once for every binding) or a
// pair made here with the CLI ($DELTACOME_CLI, else $DELTACOME_DIR/bin/deltacome, else PATH).
// bitdeltaPath is the same pair compressed with --scheme bitdelta (a second variant of the base,
// for the pool tests): bitdelta.dcz there, or made here when that directory predates it.
var fixtureDir, bitdeltaPath string

func TestMain(m *testing.M) {
	fixtureDir = os.Getenv("DELTACOME_FIXTURES")
	tmp, err := os.MkdirTemp("", "deltacome-go-fixtures")
	if err != nil {
		panic(err)
	}
	cli := os.Getenv("DELTACOME_CLI")
	if cli == "" && os.Getenv("DELTACOME_DIR") != "" {
		cli = filepath.Join(os.Getenv("DELTACOME_DIR"), "bin", "deltacome")
	}
	if cli == "" {
		cli = "deltacome"
	}
	run := func(args ...string) {
		if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
			panic(string(out) + err.Error())
		}
	}
	if fixtureDir == "" {
		fixtureDir = tmp
		os.Setenv("DELTACOME_FIXTURES", tmp) // for the examples (package deltacome_test)
		run("make-demo", "--out", tmp, "--layers", "2", "--hidden", "128", "--seed", "7")
		run("compress", "--base", filepath.Join(tmp, "base.safetensors"), "--finetuned",
			filepath.Join(tmp, "finetuned.safetensors"), "-o", filepath.Join(tmp, "model.dcz"))
	}
	bitdeltaPath = filepath.Join(fixtureDir, "bitdelta.dcz")
	if _, err := os.Stat(bitdeltaPath); err != nil {
		bitdeltaPath = filepath.Join(tmp, "bitdelta.dcz")
		run("compress", "--quiet", "--scheme", "bitdelta", "--base", filepath.Join(fixtureDir, "base.safetensors"),
			"--finetuned", filepath.Join(fixtureDir, "finetuned.safetensors"), "-o", bitdeltaPath)
	}
	os.Setenv("DELTACOME_BITDELTA", bitdeltaPath) // for the examples
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

func fixture(name string) string { return filepath.Join(fixtureDir, name) }

type stTensor struct {
	Dtype string
	Shape []uint64
	Bytes []byte
}

func (t stTensor) f64() []float64 {
	switch t.Dtype {
	case "F32":
		out := make([]float64, len(t.Bytes)/4)
		for i := range out {
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Bytes[4*i:])))
		}
		return out
	case "F16":
		out := make([]float64, len(t.Bytes)/2)
		for i := range out {
			out[i] = float64(halfToFloat(binary.LittleEndian.Uint16(t.Bytes[2*i:])))
		}
		return out
	}
	panic("dtype " + t.Dtype)
}

func (t stTensor) f16() []Float16 {
	out := make([]Float16, len(t.Bytes)/2)
	for i := range out {
		out[i] = Float16(binary.LittleEndian.Uint16(t.Bytes[2*i:]))
	}
	return out
}

func readSafetensors(t *testing.T, path string) map[string]stTensor {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	data := b[8+n:]
	out := map[string]stTensor{}
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			Dtype       string   `json:"dtype"`
			Shape       []uint64 `json:"shape"`
			DataOffsets []uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		out[name] = stTensor{e.Dtype, e.Shape, data[e.DataOffsets[0]:e.DataOffsets[1]]}
	}
	return out
}

func halfToFloat(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0:
		v := float32(man) * float32(math.Pow(2, -24))
		if sign != 0 {
			return -v
		}
		return v
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}

// floatToHalf rounds to nearest even (normal range; the tests only convert small values).
func floatToHalf(f float32) Float16 {
	x := math.Float32bits(f)
	sign := uint16(x>>16) & 0x8000
	exp := int32(x>>23&0xff) - 127 + 15
	man := x & 0x7fffff
	if exp <= 0 {
		return Float16(sign) // flush tiny values: not reached with the tests' inputs
	}
	r := uint32(exp)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return Float16(sign | uint16(r))
}

func relErr(a, b []float64) float64 {
	var num, den float64
	for i := range a {
		num += (a[i] - b[i]) * (a[i] - b[i])
		den += b[i] * b[i]
	}
	return math.Sqrt(num / math.Max(den, 1e-300))
}

func matmulT(x, w []float64, m, rows, cols int) []float64 {
	y := make([]float64, m*rows)
	for t := 0; t < m; t++ {
		for r := 0; r < rows; r++ {
			acc := 0.0
			for c := 0; c < cols; c++ {
				acc += x[t*cols+c] * w[r*cols+c]
			}
			y[t*rows+r] = acc
		}
	}
	return y
}

func inputs(n int, seed uint64) []float32 {
	s := seed*6364136223846793005 + 1442695040888963407
	out := make([]float32, n)
	for i := range out {
		s = s*6364136223846793005 + 1442695040888963407
		out[i] = float32(float64(s>>40)/float64(1<<24)*2 - 1)
	}
	return out
}

func f64s[T float32 | float64](v []T) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
