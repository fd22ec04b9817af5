package deltacome

// Dtype is an element type of weights and activations.
type Dtype int

const (
	DtypeF32  Dtype = 0
	DtypeF16  Dtype = 1
	DtypeBF16 Dtype = 2
)

// TensorKind says how a tensor's delta is stored.
type TensorKind int

const (
	KindLowRank  TensorKind = 0 // Delta-CoMe: U·diag(σ)·Vᵀ with mixed-precision quantized bands
	KindBitDelta TensorKind = 1 // sign(ΔW) × one scale
	KindDense    TensorKind = 2 // stored as is (norms, biases, embeddings)
)

// Backend selects where a context computes.
type Backend int

const (
	BackendAuto Backend = 0 // CUDA if a CUDA device works, else HIP, else CPU
	BackendCPU  Backend = 1
	BackendCUDA Backend = 2
	BackendHIP  Backend = 3
)

// ShardSplit is the tensor-parallel split of a loaded delta.
type ShardSplit int

const (
	ShardNone ShardSplit = 0
	ShardRows ShardSplit = 1 // column-parallel layers (q, k, v, gate, up): a range of output rows
	ShardCols ShardSplit = 2 // row-parallel layers (o, down): a range of input columns (partial sums)
)

// Float16 is an IEEE half, stored as its bits. BFloat16 likewise.
type Float16 uint16
type BFloat16 uint16

// Element is a host element type the library reads and writes.
type Element interface {
	float32 | Float16 | BFloat16
}

func dtypeOf[T Element]() Dtype {
	var z T
	switch any(z).(type) {
	case Float16:
		return DtypeF16
	case BFloat16:
		return DtypeBF16
	default:
		return DtypeF32
	}
}

// ContainerInfo is what a container says about itself.
type ContainerInfo struct {
	FormatMajor, FormatMinor uint16
	TensorCount              uint64
	FileBytes                uint64
	PayloadBytes             uint64
	ModelName                string
	BaseModelName            string
	ToolVersion              string
	RecipeJSON               string
}

// Band is one precision band of a low-rank tensor.
type Band struct {
	Bits, RankBegin, RankEnd, GroupSize uint32
}

// TensorInfo describes one tensor of a container.
type TensorInfo struct {
	Index       uint64
	Name        string
	Rows, Cols  uint64
	Kind        TensorKind
	Dtype       Dtype
	Rank        uint32
	Bands       []Band
	ActOrder    bool
	StoredBytes uint64 // compressed bytes in the file
	PackedBytes uint64 // bytes once decompressed
	FP16Bytes   uint64 // rows·cols·2
}

// DeltaInfo describes a loaded delta.
type DeltaInfo struct {
	Name                 string
	Rows, Cols           uint64 // the full layer's shape
	Kind                 TensorKind
	DeviceBytes          uint64
	Split                ShardSplit
	ShardBegin, ShardEnd uint64
}

// OutFeatures is the number of y columns the delta produces (the shard's rows for ShardRows).
func (i DeltaInfo) OutFeatures() uint64 {
	if i.Split == ShardRows {
		return i.ShardEnd - i.ShardBegin
	}
	return i.Rows
}

// InFeatures is the number of x columns the delta reads (the shard's columns for ShardCols).
func (i DeltaInfo) InFeatures() uint64 {
	if i.Split == ShardCols {
		return i.ShardEnd - i.ShardBegin
	}
	return i.Cols
}

// OpenOptions tunes Open and OpenMemory. The zero value means the library's defaults.
type OpenOptions struct {
	NoMmap           bool   // read with pread instead of mapping the file
	Trusted          bool   // skip segment checksums on load (Verify still checks)
	MaxManifestBytes uint64 // 0: default (256 MiB)
	MaxSegmentBytes  uint64 // 0: default (4 GiB)
}

// ContextOptions selects the backend. The zero value is BackendAuto, device 0, all CPU threads.
type ContextOptions struct {
	Backend    Backend
	Device     int
	NumThreads int
}

// LoadOptions tunes loading. The zero value verifies checksums and loads the whole delta.
type LoadOptions struct {
	SkipChecksum bool
	Split        ShardSplit
	Index, Count uint32 // even split: shard Index of Count
	Begin, End   uint64 // explicit range when End > Begin
}

// ApplyOptions tunes Apply. The zero value means scale 1, packed rows, no base weight.
type ApplyOptions struct {
	Scale    float32 // ΔW is multiplied by this; 0 means 1
	Ldx, Ldy int     // row strides in elements; 0 means packed
	// Base, when set ([]float32, []Float16 or []BFloat16, [out × in] row-major with row stride
	// LdBase), makes y = x·(W_base + Scale·ΔW)ᵀ, overwriting y.
	Base   any
	LdBase int
}
