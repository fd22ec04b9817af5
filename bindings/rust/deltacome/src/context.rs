//! Contexts, loaded deltas, batches, and apply/merge on host memory.
use crate::container::Container;
use crate::error::{check, invalid, Error, Result, Status};
use crate::types::{owned_str, Backend, DeltaInfo, Element, Shard, TensorKind};
use deltacome_sys as sys;
use std::ffi::{c_void, CString};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

/// Options for [`Context::new`].
#[derive(Debug, Clone, Copy)]
pub struct ContextOptions {
    pub backend: Backend,
    /// GPU ordinal; ignored by the CPU backend.
    pub device: i32,
    /// CPU worker threads; 0 = hardware concurrency.
    pub num_threads: i32,
}

impl Default for ContextOptions {
    fn default() -> Self {
        let mut o = sys::dc_context_options::zeroed();
        // SAFETY: fills a struct we own.
        unsafe { sys::dc_context_options_init(&mut o) };
        ContextOptions { backend: Backend::from_raw(o.backend), device: o.device, num_threads: o.num_threads }
    }
}

/// One backend on one device. Deltas loaded into it borrow it, so it outlives them.
pub struct Context {
    raw: NonNull<sys::dc_context>,
    backend: Backend,
}

// SAFETY (Send): the header requires a context and everything loaded into it to be used "by one
// thread at a time", not always by the same thread, so moving a Context to another thread is
// allowed. Deltas and batches borrow the Context, so it cannot move while any exists.
// Not Sync (automatic, from the raw pointer): `&Context` on two threads would let two threads load
// into or apply with the same context at once. Delta<'_> holds `&Context`, hence is neither Send
// nor Sync either: a delta is used through its context's thread, whatever threads its container has.
unsafe impl Send for Context {}

impl Context {
    pub fn new(opts: &ContextOptions) -> Result<Context> {
        let mut o = sys::dc_context_options::zeroed();
        // SAFETY: fills a struct we own.
        unsafe { sys::dc_context_options_init(&mut o) };
        o.backend = opts.backend.raw();
        o.device = opts.device;
        o.num_threads = opts.num_threads;
        let mut out = ptr::null_mut();
        // SAFETY: valid out pointer and options.
        check(unsafe { sys::dc_context_create(&mut out, &o) })?;
        let raw = NonNull::new(out).expect("dc_context_create returned DC_OK and NULL");
        // SAFETY: live handle.
        let backend = Backend::from_raw(unsafe { sys::dc_context_backend(raw.as_ptr()) });
        Ok(Context { raw, backend })
    }

    /// A CPU context using every hardware thread.
    pub fn cpu() -> Result<Context> {
        Context::new(&ContextOptions { backend: Backend::Cpu, ..ContextOptions::default() })
    }

    /// The backend it runs on (Auto resolved).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn as_ptr(&self) -> *mut sys::dc_context {
        self.raw.as_ptr()
    }

    /// Loads tensor `name` in its packed form (checksums verified).
    ///
    /// The delta borrows this context ('a) and, for a borrowed memory image, its buffer
    /// (`'buf: 'a`). The container itself may be dropped right after: the delta holds its own copy.
    pub fn load<'a, 'buf: 'a>(&'a self, container: &Container<'buf>, name: &str) -> Result<Delta<'a>> {
        self.load_with(container, name, &LoadOptions::default())
    }

    pub fn load_with<'a, 'buf: 'a>(&'a self, container: &Container<'buf>, name: &str,
                                   opts: &LoadOptions) -> Result<Delta<'a>> {
        let c_name = CString::new(name).map_err(|_| invalid(format!("tensor name {name:?} contains NUL")))?;
        let o = opts.raw();
        let mut out = ptr::null_mut();
        // SAFETY: live handles, NUL-terminated name, options initialised; this thread owns the context.
        check(unsafe { sys::dc_delta_load(&mut out, self.as_ptr(), container.as_ptr(), c_name.as_ptr(), &o) })?;
        Delta::wrap(self, out)
    }

    /// Loads tensor `index`.
    pub fn load_index<'a, 'buf: 'a>(&'a self, container: &Container<'buf>, index: u64,
                                    opts: &LoadOptions) -> Result<Delta<'a>> {
        let o = opts.raw();
        let mut out = ptr::null_mut();
        // SAFETY: as load_with.
        check(unsafe { sys::dc_delta_load_index(&mut out, self.as_ptr(), container.as_ptr(), index, &o) })?;
        Delta::wrap(self, out)
    }

    /// Loads every tensor, in container order (decompression on several host threads).
    pub fn load_all<'a, 'buf: 'a>(&'a self, container: &Container<'buf>, opts: &LoadOptions) -> Result<Vec<Delta<'a>>> {
        let n = usize::try_from(container.tensor_count()).map_err(|_| invalid("tensor count does not fit usize"))?;
        let mut handles: Vec<*mut sys::dc_delta> = vec![ptr::null_mut(); n];
        let o = opts.raw();
        // SAFETY: `handles` has room for tensor_count handles; on failure the library frees all.
        check(unsafe { sys::dc_delta_load_all(handles.as_mut_ptr(), self.as_ptr(), container.as_ptr(), &o) })?;
        let mut deltas = Vec::with_capacity(n);
        let mut iter = handles.into_iter();
        for h in iter.by_ref() {
            match Delta::wrap(self, h) {
                Ok(d) => deltas.push(d),
                Err(e) => {
                    // Free the rest (the ones already wrapped drop with `deltas`).
                    for rest in iter {
                        // SAFETY: handles returned by the library, not yet owned by a Delta.
                        unsafe { sys::dc_delta_free(rest) };
                    }
                    return Err(e);
                }
            }
        }
        Ok(deltas)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every Delta and Batch borrows the context, so all were freed before this runs.
        unsafe { sys::dc_context_destroy(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("backend", &self.backend).finish()
    }
}

/// Options for loading deltas.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Check every segment's XXH3 before use (default true; containers opened `trusted` skip it).
    pub verify_checksum: bool,
    /// Tensor-parallel slice.
    pub shard: Shard,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { verify_checksum: true, shard: Shard::None }
    }
}

impl LoadOptions {
    fn raw(&self) -> sys::dc_load_options {
        let mut o = sys::dc_load_options::zeroed();
        // SAFETY: fills a struct we own.
        unsafe { sys::dc_load_options_init(&mut o) };
        o.flags = if self.verify_checksum { sys::DC_LOAD_VERIFY_CHECKSUM } else { sys::DC_LOAD_SKIP_CHECKSUM };
        o.shard = self.shard.raw();
        o
    }
}

/// A base weight W_base [out × in] for [`ApplyOptions::base`] (y = x·(W_base + ΔW)ᵀ).
#[derive(Debug, Clone, Copy)]
pub struct BaseWeight<'w> {
    data: *const c_void,
    len: usize,
    dtype: sys::dc_dtype,
    ld: usize,
    _borrow: PhantomData<&'w [u8]>,
}

impl<'w> BaseWeight<'w> {
    /// Row-major weight with row stride `ld` elements (0 = packed).
    pub fn new<T: Element>(w: &'w [T], ld: usize) -> BaseWeight<'w> {
        BaseWeight { data: w.as_ptr() as *const c_void, len: w.len(), dtype: T::DTYPE.raw(), ld, _borrow: PhantomData }
    }
}

/// Options for apply. Default: scale 1, packed strides, no base weight (y += x·ΔWᵀ).
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions<'w> {
    pub scale: f32,
    /// Row stride of x in elements (0 = packed).
    pub ldx: usize,
    /// Row stride of y in elements (0 = packed).
    pub ldy: usize,
    /// With a base weight, y is overwritten with x·(W_base + scale·ΔW)ᵀ.
    pub base: Option<BaseWeight<'w>>,
}

impl Default for ApplyOptions<'_> {
    fn default() -> Self {
        ApplyOptions { scale: 1.0, ldx: 0, ldy: 0, base: None }
    }
}

/// Elements a [m × width] matrix with row stride ld spans.
fn span(what: &str, m: usize, width: u64, ld: usize) -> Result<(usize, u64)> {
    let width_us = usize::try_from(width).map_err(|_| invalid(format!("{what}: width {width} does not fit usize")))?;
    let ld = if ld == 0 { width_us } else { ld };
    if ld < width_us {
        return Err(Error::new(Status::ShapeMismatch, format!("{what}: row stride {ld} < row width {width}")));
    }
    if m == 0 || width_us == 0 {
        return Ok((0, ld as u64));
    }
    let n = (m - 1)
        .checked_mul(ld)
        .and_then(|v| v.checked_add(width_us))
        .ok_or_else(|| Error::new(Status::Overflow, format!("{what}: {m} rows × stride {ld} overflows")))?;
    Ok((n, ld as u64))
}

/// Builds dc_apply_params for host slices, checking every bound the library will read or write.
pub(crate) fn host_params<X: Element, Y: Element>(ctx: &Context, out_f: u64, in_f: u64, m: usize, x: &[X], y: &mut [Y],
                                                  opts: &ApplyOptions) -> Result<sys::dc_apply_params> {
    if ctx.backend != Backend::Cpu {
        return Err(Error::new(Status::Unsupported, format!(
            "apply with host slices needs a CPU context (this one is {}); use apply_raw with device pointers",
            ctx.backend.name())));
    }
    let (need_x, ldx) = span("x", m, in_f, opts.ldx)?;
    if x.len() < need_x {
        return Err(Error::new(Status::ShapeMismatch, format!("x has {} elements, {m} rows of {in_f} need {need_x}", x.len())));
    }
    let (need_y, ldy) = span("y", m, out_f, opts.ldy)?;
    if y.len() < need_y {
        return Err(Error::new(Status::ShapeMismatch, format!("y has {} elements, {m} rows of {out_f} need {need_y}", y.len())));
    }
    let mut p = sys::dc_apply_params::zeroed();
    // SAFETY: fills a struct we own.
    unsafe { sys::dc_apply_params_init(&mut p) };
    p.m = m as u64;
    p.x = x.as_ptr() as *const c_void;
    p.x_dtype = X::DTYPE.raw();
    p.ldx = ldx;
    p.y = y.as_mut_ptr() as *mut c_void;
    p.y_dtype = Y::DTYPE.raw();
    p.ldy = ldy;
    p.scale = opts.scale;
    if let Some(b) = opts.base {
        let rows = usize::try_from(out_f).map_err(|_| invalid("rows do not fit usize"))?;
        let (need_b, ldb) = span("base weight", rows, in_f, b.ld)?;
        if b.len < need_b {
            return Err(Error::new(Status::ShapeMismatch,
                format!("base weight has {} elements, {out_f} × {in_f} needs {need_b}", b.len)));
        }
        p.flags |= sys::DC_APPLY_INCLUDE_BASE;
        p.base_weight = b.data;
        p.base_dtype = b.dtype;
        p.ld_base = ldb;
    }
    Ok(p)
}

/// One tensor's delta loaded into a context, in packed form. Borrows its context.
pub struct Delta<'a> {
    raw: NonNull<sys::dc_delta>,
    ctx: &'a Context,
    info: DeltaInfo,
}

impl<'a> Delta<'a> {
    fn wrap(ctx: &'a Context, p: *mut sys::dc_delta) -> Result<Delta<'a>> {
        let raw = NonNull::new(p).ok_or_else(|| Error::new(Status::Internal, "load returned DC_OK and NULL"))?;
        match Self::info_of(raw) {
            Ok(info) => Ok(Delta { raw, ctx, info }),
            Err(e) => {
                // SAFETY: we own it and nobody else has seen it.
                unsafe { sys::dc_delta_free(raw.as_ptr()) };
                Err(e)
            }
        }
    }

    /// A delta owned by someone else (a pool): the caller must never let it drop (wrap it in
    /// `ManuallyDrop`) and must stop using it before its owner frees it.
    pub(crate) fn borrowed(ctx: &'a Context, raw: NonNull<sys::dc_delta>) -> Result<Delta<'a>> {
        Ok(Delta { raw, ctx, info: Self::info_of(raw)? })
    }

    /// Drops a [`Delta::borrowed`] value without freeing the handle (its owner does).
    pub(crate) fn forget_borrowed(self) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used again and its Drop never runs: the info is read out once
        // and dropped, the handle and the context reference are plain pointers.
        drop(unsafe { ptr::read(&this.info) });
    }

    fn info_of(raw: NonNull<sys::dc_delta>) -> Result<DeltaInfo> {
        let mut i = sys::dc_delta_info::zeroed();
        // SAFETY: live handle.
        check(unsafe { sys::dc_delta_get_info(raw.as_ptr(), &mut i) })?;
        Ok(DeltaInfo {
            name: owned_str(i.name),
            rows: i.rows,
            cols: i.cols,
            kind: TensorKind::from_raw(i.kind),
            device_bytes: i.device_bytes,
            split: i.split,
            shard_begin: i.shard_begin,
            shard_end: i.shard_end,
        })
    }

    pub fn info(&self) -> &DeltaInfo {
        &self.info
    }
    pub fn name(&self) -> &str {
        &self.info.name
    }
    pub fn context(&self) -> &'a Context {
        self.ctx
    }
    pub fn as_ptr(&self) -> *const sys::dc_delta {
        self.raw.as_ptr()
    }

    /// y[m × out] += x[m × in] · ΔWᵀ (packed rows, scale 1), in host memory (CPU context).
    pub fn apply<X: Element, Y: Element>(&self, m: usize, x: &[X], y: &mut [Y]) -> Result<()> {
        self.apply_with(m, x, y, &ApplyOptions::default())
    }

    /// Apply with strides, scale or a base weight (then y = x·(W_base + scale·ΔW)ᵀ).
    pub fn apply_with<X: Element, Y: Element>(&self, m: usize, x: &[X], y: &mut [Y], opts: &ApplyOptions) -> Result<()> {
        let p = host_params(self.ctx, self.info.out_features(), self.info.in_features(), m, x, y, opts)?;
        // SAFETY: every pointer in p is a live host slice whose bounds host_params checked; CPU context.
        check(unsafe { sys::dc_apply_delta_linear(self.as_ptr(), &p) })
    }

    /// The raw call, for GPU contexts (device pointers, streams, workspace).
    ///
    /// # Safety
    /// `p` must satisfy dc_apply_delta_linear's contract: x, y, base_weight and workspace point to
    /// memory of the context's backend with the sizes the shapes and strides imply, and stay valid
    /// until the work enqueued on `p.stream` completes.
    pub unsafe fn apply_raw(&self, p: &sys::dc_apply_params) -> Result<()> {
        check(sys::dc_apply_delta_linear(self.as_ptr(), p))
    }

    /// Device scratch bytes an apply of `m` rows needs (0 on CPU).
    pub fn workspace_size(&self, m: u64) -> Result<u64> {
        let mut bytes = 0u64;
        // SAFETY: live handle, valid out pointer.
        check(unsafe { sys::dc_apply_workspace_size(self.as_ptr(), m, &mut bytes) })?;
        Ok(bytes)
    }

    /// W[out × in] += scale·ΔW in place (row stride `ld` elements, 0 = packed), host memory.
    pub fn merge<T: Element>(&self, weight: &mut [T], ld: usize, scale: f32) -> Result<()> {
        if self.ctx.backend != Backend::Cpu {
            return Err(Error::new(Status::Unsupported, "merge with a host slice needs a CPU context"));
        }
        let rows = usize::try_from(self.info.out_features()).map_err(|_| invalid("rows do not fit usize"))?;
        let (need, ld) = span("weight", rows, self.info.in_features(), ld)?;
        if weight.len() < need {
            return Err(Error::new(Status::ShapeMismatch, format!(
                "weight has {} elements, {} × {} needs {need}", weight.len(), rows, self.info.in_features())));
        }
        // SAFETY: bounds checked above; CPU context computes in host memory.
        check(unsafe {
            sys::dc_merge_delta(self.as_ptr(), weight.as_mut_ptr() as *mut c_void, T::DTYPE.raw(), ld, scale,
                                ptr::null_mut())
        })
    }
}

impl Drop for Delta<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the handle; batches borrow the delta, so none uses it any more.
        unsafe { sys::dc_delta_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Delta<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delta").field("info", &self.info).finish()
    }
}

/// Same-shape deltas of one layer grouped for multi-tenant apply. Borrows its deltas ('d).
pub struct Batch<'d> {
    raw: NonNull<sys::dc_delta_batch>,
    ctx: &'d Context,
    count: usize,
    out_f: u64,
    in_f: u64,
}

impl<'d> Batch<'d> {
    /// Slot i of the batch is deltas[i]. All must share a context and a shape.
    pub fn new<'a: 'd>(deltas: &[&'d Delta<'a>]) -> Result<Batch<'d>> {
        let first = deltas.first().ok_or_else(|| invalid("a batch needs at least one delta"))?;
        if let Some(d) = deltas.iter().find(|d| !ptr::eq(d.ctx, first.ctx)) {
            return Err(invalid(format!("delta {} is loaded in another context than {}", d.name(), first.name())));
        }
        let handles: Vec<*const sys::dc_delta> = deltas.iter().map(|d| d.as_ptr()).collect();
        let mut out = ptr::null_mut();
        // SAFETY: live handles; the borrow 'd keeps every delta alive while the batch lives.
        check(unsafe { sys::dc_delta_batch_create(&mut out, handles.as_ptr(), handles.len() as u64) })?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Status::Internal, "batch create returned NULL"))?;
        Ok(Batch { raw, ctx: first.ctx, count: deltas.len(), out_f: first.info.out_features(),
                   in_f: first.info.in_features() })
    }

    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// For every row i < m: y[i] += x[i]·ΔW_{row_slot[i]}ᵀ, or nothing when row_slot[i] == -1.
    pub fn apply_with<X: Element, Y: Element>(&self, row_slot: &[i32], m: usize, x: &[X], y: &mut [Y],
                                              opts: &ApplyOptions) -> Result<()> {
        if row_slot.len() < m {
            return Err(Error::new(Status::ShapeMismatch, format!("row_slot has {} entries for {m} rows", row_slot.len())));
        }
        if let Some((i, s)) = row_slot[..m].iter().enumerate().find(|(_, &s)| s < -1 || s >= self.count as i32) {
            return Err(invalid(format!("row_slot[{i}] = {s}, the batch has slots 0..{}", self.count)));
        }
        let p = host_params(self.ctx, self.out_f, self.in_f, m, x, y, opts)?;
        // SAFETY: bounds of x, y, base and row_slot checked; CPU context.
        check(unsafe { sys::dc_apply_delta_linear_batched(self.raw.as_ptr(), row_slot.as_ptr(), &p) })
    }

    pub fn apply<X: Element, Y: Element>(&self, row_slot: &[i32], m: usize, x: &[X], y: &mut [Y]) -> Result<()> {
        self.apply_with(row_slot, m, x, y, &ApplyOptions::default())
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the handle; the deltas are still alive (borrowed for 'd).
        unsafe { sys::dc_delta_batch_free(self.raw.as_ptr()) }
    }
}
