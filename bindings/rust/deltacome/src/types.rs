//! Plain value types: enumerations, element types and the info structs copied out of the library.
use deltacome_sys as sys;
use std::ffi::{c_char, CStr};

/// Element types of weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    /// A value this crate does not know (a newer library).
    Other(u32),
}

impl Dtype {
    pub fn from_raw(v: sys::dc_dtype) -> Dtype {
        match v {
            sys::DC_DTYPE_F32 => Dtype::F32,
            sys::DC_DTYPE_F16 => Dtype::F16,
            sys::DC_DTYPE_BF16 => Dtype::Bf16,
            other => Dtype::Other(other),
        }
    }
    pub fn raw(self) -> sys::dc_dtype {
        match self {
            Dtype::F32 => sys::DC_DTYPE_F32,
            Dtype::F16 => sys::DC_DTYPE_F16,
            Dtype::Bf16 => sys::DC_DTYPE_BF16,
            Dtype::Other(v) => v,
        }
    }
}

/// How a tensor's delta is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// Delta-CoMe: U·diag(σ)·Vᵀ with mixed-precision quantized bands.
    LowRank,
    /// sign(ΔW) × one scale.
    BitDelta,
    /// Stored as is (norms, biases, embeddings).
    Dense,
    Other(u32),
}

impl TensorKind {
    pub fn from_raw(v: sys::dc_tensor_kind) -> TensorKind {
        match v {
            sys::DC_KIND_LOWRANK => TensorKind::LowRank,
            sys::DC_KIND_BITDELTA => TensorKind::BitDelta,
            sys::DC_KIND_DENSE => TensorKind::Dense,
            other => TensorKind::Other(other),
        }
    }
}

/// Compute backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// CUDA if a CUDA device works, else HIP, else CPU.
    Auto,
    Cpu,
    Cuda,
    Hip,
    Other(u32),
}

impl Backend {
    pub fn from_raw(v: sys::dc_backend) -> Backend {
        match v {
            sys::DC_BACKEND_AUTO => Backend::Auto,
            sys::DC_BACKEND_CPU => Backend::Cpu,
            sys::DC_BACKEND_CUDA => Backend::Cuda,
            sys::DC_BACKEND_HIP => Backend::Hip,
            other => Backend::Other(other),
        }
    }
    pub fn raw(self) -> sys::dc_backend {
        match self {
            Backend::Auto => sys::DC_BACKEND_AUTO,
            Backend::Cpu => sys::DC_BACKEND_CPU,
            Backend::Cuda => sys::DC_BACKEND_CUDA,
            Backend::Hip => sys::DC_BACKEND_HIP,
            Backend::Other(v) => v,
        }
    }
    /// Built in (or its module loads) and sees at least one device. CPU is always available.
    pub fn is_available(self) -> bool {
        // SAFETY: thread-safe query without pointers.
        unsafe { sys::dc_backend_available(self.raw()) != 0 }
    }
    /// "cpu", "cuda", "hip", "auto" or "unknown".
    pub fn name(self) -> &'static str {
        // SAFETY: returns a static string, never NULL.
        unsafe { CStr::from_ptr(sys::dc_backend_name(self.raw())) }.to_str().unwrap_or("unknown")
    }
}

/// IEEE half precision, stored as its bits.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct F16(pub u16);

impl F16 {
    /// Round-to-nearest-even conversion.
    pub fn from_f32(v: f32) -> F16 {
        let x = v.to_bits();
        let sign = ((x >> 16) & 0x8000) as u16;
        let exp = ((x >> 23) & 0xff) as i32;
        let man = x & 0x7f_ffff;
        if exp == 0xff {
            return F16(sign | 0x7c00 | if man != 0 { 0x200 } else { 0 });
        }
        let e = exp - 127 + 15;
        if e >= 0x1f {
            return F16(sign | 0x7c00);
        }
        if e <= 0 {
            if e < -10 {
                return F16(sign);
            }
            let m = man | 0x80_0000;
            let shift = (14 - e) as u32;
            let half = 1u32 << (shift - 1);
            let mut r = m >> shift;
            let rem = m & ((1u32 << shift) - 1);
            if rem > half || (rem == half && (r & 1) != 0) {
                r += 1;
            }
            return F16(sign | r as u16);
        }
        let mut r = ((e as u32) << 10) | (man >> 13);
        let rem = man & 0x1fff;
        if rem > 0x1000 || (rem == 0x1000 && (r & 1) != 0) {
            r += 1; // may carry into the exponent, which is still correct (up to infinity)
        }
        F16(sign | r as u16)
    }
    pub fn to_f32(self) -> f32 {
        let h = self.0 as u32;
        let sign = (h & 0x8000) << 16;
        let exp = (h >> 10) & 0x1f;
        let man = h & 0x3ff;
        let bits = if exp == 0 {
            if man == 0 {
                sign
            } else {
                // subnormal: value = man · 2^-24
                let v = man as f32 * 2f32.powi(-24);
                return if sign != 0 { -v } else { v };
            }
        } else if exp == 0x1f {
            sign | 0x7f80_0000 | (man << 13)
        } else {
            sign | ((exp + 127 - 15) << 23) | (man << 13)
        };
        f32::from_bits(bits)
    }
}

/// bfloat16, stored as its bits.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bf16(pub u16);

impl Bf16 {
    pub fn from_f32(v: f32) -> Bf16 {
        let x = v.to_bits();
        if v.is_nan() {
            return Bf16(((x >> 16) | 0x40) as u16);
        }
        let round = 0x7fff + ((x >> 16) & 1);
        Bf16((x.wrapping_add(round) >> 16) as u16)
    }
    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for super::F16 {}
    impl Sealed for super::Bf16 {}
}

/// Element types the library reads and writes in host memory: f32, [`F16`], [`Bf16`].
pub trait Element: sealed::Sealed + Copy {
    const DTYPE: Dtype;
}
impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl Element for F16 {
    const DTYPE: Dtype = Dtype::F16;
}
impl Element for Bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
}

/// Copies a library-owned C string (may be NULL → "").
pub(crate) fn owned_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the library returns NUL-terminated strings valid while their owner lives; we copy now.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// What a container says about itself (strings copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub format_major: u16,
    pub format_minor: u16,
    pub tensor_count: u64,
    pub file_bytes: u64,
    pub payload_bytes: u64,
    pub model_name: String,
    pub base_model_name: String,
    pub tool_version: String,
    pub recipe_json: String,
}

/// One precision band of a low-rank tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandInfo {
    pub bits: u32,
    pub rank_begin: u32,
    pub rank_end: u32,
    pub group_size: u32,
}

/// One tensor of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub index: u64,
    pub name: String,
    pub rows: u64,
    pub cols: u64,
    pub kind: TensorKind,
    pub dtype: Dtype,
    pub rank: u32,
    pub bands: Vec<BandInfo>,
    pub has_act_order: bool,
    pub stored_bytes: u64,
    pub packed_bytes: u64,
    pub fp16_bytes: u64,
}

impl TensorInfo {
    pub(crate) fn from_raw(index: u64, t: &sys::dc_tensor_info) -> TensorInfo {
        let n = (t.band_count as usize).min(sys::DC_MAX_BANDS);
        TensorInfo {
            index,
            name: owned_str(t.name),
            rows: t.rows,
            cols: t.cols,
            kind: TensorKind::from_raw(t.kind),
            dtype: Dtype::from_raw(t.dtype),
            rank: t.rank,
            bands: t.bands[..n]
                .iter()
                .map(|b| BandInfo { bits: b.bits, rank_begin: b.rank_begin, rank_end: b.rank_end, group_size: b.group_size })
                .collect(),
            has_act_order: t.has_act_order != 0,
            stored_bytes: t.stored_bytes,
            packed_bytes: t.packed_bytes,
            fp16_bytes: t.fp16_bytes,
        }
    }
}

/// Tensor-parallel slice of a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shard {
    /// The whole delta.
    #[default]
    None,
    /// Column-parallel layer (q, k, v, gate, up): output rows of shard `index` of `count`.
    Rows { index: u32, count: u32 },
    /// Row-parallel layer (o, down): input columns of shard `index` of `count`; apply gives a
    /// partial sum.
    Cols { index: u32, count: u32 },
    /// Explicit ranges [begin, end).
    RowRange { begin: u64, end: u64 },
    ColRange { begin: u64, end: u64 },
}

impl Shard {
    pub(crate) fn raw(self) -> sys::dc_shard {
        let mut s = sys::dc_shard::default();
        match self {
            Shard::None => s.split = sys::DC_SHARD_NONE,
            Shard::Rows { index, count } => (s.split, s.index, s.count) = (sys::DC_SHARD_ROWS, index, count),
            Shard::Cols { index, count } => (s.split, s.index, s.count) = (sys::DC_SHARD_COLS, index, count),
            Shard::RowRange { begin, end } => (s.split, s.begin, s.end) = (sys::DC_SHARD_ROWS, begin, end),
            Shard::ColRange { begin, end } => (s.split, s.begin, s.end) = (sys::DC_SHARD_COLS, begin, end),
        }
        s
    }
}

/// A loaded delta's shape and placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaInfo {
    pub name: String,
    /// The full layer's shape.
    pub rows: u64,
    pub cols: u64,
    pub kind: TensorKind,
    pub device_bytes: u64,
    /// The rows (`split == Rows`) or columns (`Cols`) held; (0, rows) when not sharded.
    pub split: sys::dc_shard_split,
    pub shard_begin: u64,
    pub shard_end: u64,
}

impl DeltaInfo {
    /// Rows of y (output features) this delta produces: the shard's rows for a row split.
    pub fn out_features(&self) -> u64 {
        if self.split == sys::DC_SHARD_ROWS { self.shard_end - self.shard_begin } else { self.rows }
    }
    /// Columns of x (input features) this delta reads: the shard's columns for a column split.
    pub fn in_features(&self) -> u64 {
        if self.split == sys::DC_SHARD_COLS { self.shard_end - self.shard_begin } else { self.cols }
    }
}
