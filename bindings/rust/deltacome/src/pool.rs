//! The delta pool: many fine-tuned variants of one base model served from one context.
//!
//! **Experimental API, may change.** This module wraps `include/deltacome/dc_pool.h`, whose
//! functions and structs may still change between minor versions of the library; this module
//! follows them. See docs/POOL.md for the semantics (budget, LRU eviction, prefetch, batched apply).
//!
//! ```no_run
//! use deltacome::{pool::{Pool, PoolOptions}, Container, Context};
//! # fn main() -> deltacome::Result<()> {
//! let math = Container::open("math.dcz")?; // declared before the pool: it must outlive it
//! let code = Container::open("code.dcz")?;
//! let ctx = Context::cpu()?;
//! let pool = Pool::new(&ctx, &PoolOptions { device_budget_bytes: 64 << 20, ..Default::default() })?;
//! pool.register("math", &math)?;
//! pool.register("code", &code)?;
//! let name = "model.layers.0.self_attn.q_proj.weight";
//! let (rows, cols) = (4096, 4096);
//! let x = vec![0.5f32; 3 * cols];
//! let mut y = vec![0f32; 3 * rows];
//! pool.apply_batched(name, &[Some("math"), None, Some("code")], &x, &mut y)?; // y += x·ΔW(id)ᵀ
//! let d = pool.acquire("code", name)?; // a reference: never evicted until `d` drops
//! d.apply(3, &x, &mut y)?;
//! # Ok(()) }
//! ```
//!
//! Ownership, through lifetimes (`'a` below is [`Pool`]'s parameter):
//! - the pool borrows its [`Context`] and every registered [`Container`] for `'a`: they outlive it
//!   (`'a` is invariant, so a shorter-lived container cannot be registered through a coerced
//!   `&Pool`);
//! - an acquired delta ([`PooledDelta`]) borrows the pool and releases its reference on drop; it
//!   derefs to [`Delta`], so everything a loaded delta does (apply, merge, batches) works on it.
//!
//! Threads: the header lets every pool function run on any thread, but those that use the context
//! (acquire on a miss, wait, apply, unregister, destroy) must not overlap the host's own use of
//! that context, which is one thread at a time. So [`Pool`] (like the `&Context` it holds) is
//! neither `Send` nor `Sync`, and [`Pool::handle`] gives a `Send + Sync + Copy` [`PoolHandle`] with
//! the functions the header marks thread-safe and not using the context (prefetch, query, stats),
//! for other threads to call while the pool's thread works.
//!
//! ```compile_fail,E0597
//! // A registered container must outlive the pool.
//! let ctx = deltacome::Context::cpu().unwrap();
//! let pool = deltacome::pool::Pool::new(&ctx, &Default::default()).unwrap();
//! {
//!     let c = deltacome::Container::open("m.dcz").unwrap();
//!     pool.register("m", &c).unwrap();
//! }
//! ```
//!
//! ```compile_fail,E0597
//! // Nor through a `&Pool` coerced to a shorter lifetime ('a is invariant).
//! use deltacome::{pool::Pool, Container};
//! fn register_for<'s>(pool: &Pool<'s>, c: &'s Container<'static>) {
//!     pool.register("m", c).unwrap();
//! }
//! let ctx = deltacome::Context::cpu().unwrap();
//! let pool = Pool::new(&ctx, &Default::default()).unwrap();
//! {
//!     let c = Container::open("m.dcz").unwrap();
//!     register_for(&pool, &c);
//! }
//! ```
//!
//! ```compile_fail,E0597
//! // A pool cannot outlive its context.
//! let pool = {
//!     let ctx = deltacome::Context::cpu().unwrap();
//!     deltacome::pool::Pool::new(&ctx, &Default::default()).unwrap()
//! };
//! ```
//!
//! ```compile_fail,E0505
//! // An acquired delta keeps the pool alive (and the pool cannot be destroyed under it).
//! let c = deltacome::Container::open("m.dcz").unwrap();
//! let ctx = deltacome::Context::cpu().unwrap();
//! let pool = deltacome::pool::Pool::new(&ctx, &Default::default()).unwrap();
//! pool.register("m", &c).unwrap();
//! let d = pool.acquire("m", "w").unwrap();
//! drop(pool);
//! d.info();
//! ```
//!
//! ```compile_fail,E0277
//! // A pool cannot be sent to another thread (it uses its context).
//! fn needs_send<T: Send>(_: T) {}
//! let ctx = deltacome::Context::cpu().unwrap();
//! needs_send(deltacome::pool::Pool::new(&ctx, &Default::default()).unwrap());
//! ```
//!
//! ```
//! // Its thread-safe part can.
//! fn needs_send_sync<T: Send + Sync + Copy>() {}
//! needs_send_sync::<deltacome::pool::PoolHandle<'static>>();
//! ```
use crate::container::Container;
use crate::context::{host_params, ApplyOptions, Context, Delta};
use crate::error::{check, invalid, Error, Result, Status};
use crate::types::Element;
use deltacome_sys as sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CString};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::{self, NonNull};

/// Options for [`Pool::new`]. Default: the library's (1 GiB budget, checksums verified, host
/// threads min(4, hardware threads)).
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Most bytes the resident deltas may occupy in the context (Σ `DeltaInfo::device_bytes`); > 0.
    pub device_budget_bytes: u64,
    /// Check every segment's XXH3 when loading (default true).
    pub verify_checksum: bool,
    /// Decode threads for prefetch; 0 = min(4, hardware threads).
    pub host_threads: i32,
}

impl Default for PoolOptions {
    fn default() -> Self {
        let mut o = sys::dc_pool_options::zeroed();
        // SAFETY: fills a struct we own.
        unsafe { sys::dc_pool_options_init(&mut o) };
        PoolOptions {
            device_budget_bytes: o.device_budget_bytes,
            verify_checksum: o.load_flags & sys::DC_LOAD_SKIP_CHECKSUM == 0,
            host_threads: o.host_threads,
        }
    }
}

/// The state of one (model id, tensor) entry ([`Pool::query`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// Not loaded, not queued.
    Absent,
    /// Queued or being decoded on a host thread.
    Decoding,
    /// Decoded in host memory, waiting to be placed (by wait, apply or an acquire of it).
    Decoded,
    /// Loaded into the context.
    Resident,
    /// A value this crate does not know (a newer library).
    Other(u32),
}

impl EntryState {
    pub fn from_raw(v: sys::dc_pool_entry_state) -> EntryState {
        match v {
            sys::DC_POOL_ABSENT => EntryState::Absent,
            sys::DC_POOL_DECODING => EntryState::Decoding,
            sys::DC_POOL_DECODED => EntryState::Decoded,
            sys::DC_POOL_RESIDENT => EntryState::Resident,
            other => EntryState::Other(other),
        }
    }
}

/// A consistent snapshot of the pool's counters ([`Pool::stats`]; field meanings: dc_pool.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    pub budget_bytes: u64,
    /// Σ device_bytes of resident deltas (≤ budget_bytes).
    pub resident_bytes: u64,
    pub resident_deltas: u64,
    /// Resident deltas with a reference count > 0.
    pub referenced_deltas: u64,
    /// Acquisitions that found their delta resident (apply_batched: one per distinct id).
    pub hits: u64,
    /// Acquisitions that did not (they loaded it, or waited for another thread's load).
    pub misses: u64,
    /// Deltas placed into the context (by acquire, apply or prefetch).
    pub loads: u64,
    /// Deltas freed to make room.
    pub evictions: u64,
    pub prefetch_loaded: u64,
    pub prefetch_dropped: u64,
    pub prefetch_pending: u64,
    pub batch_builds: u64,
    pub slot_uploads: u64,
}

fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| invalid(format!("{what} {s:?} contains NUL")))
}

// ---- the calls the header marks thread-safe and not using the context, shared by Pool and PoolHandle ----

/// # Safety
/// `pool` is a live pool and no dc_pool_destroy runs concurrently.
unsafe fn prefetch_raw(pool: *mut sys::dc_pool, model_id: &str, tensor: Option<&str>, stream: *mut c_void) -> Result<()> {
    let id = c_string("model id", model_id)?;
    let name = tensor.map(|t| c_string("tensor name", t)).transpose()?;
    let name_ptr = name.as_ref().map_or(ptr::null(), |n| n.as_ptr());
    check(sys::dc_pool_prefetch(pool, id.as_ptr(), name_ptr, stream))
}

/// # Safety
/// As [`prefetch_raw`].
unsafe fn query_raw(pool: *mut sys::dc_pool, model_id: &str, tensor: &str) -> Result<(EntryState, u32)> {
    let id = c_string("model id", model_id)?;
    let name = c_string("tensor name", tensor)?;
    let (mut state, mut refs) = (sys::DC_POOL_ABSENT, 0u32);
    check(sys::dc_pool_query(pool, id.as_ptr(), name.as_ptr(), &mut state, &mut refs))?;
    Ok((EntryState::from_raw(state), refs))
}

/// # Safety
/// As [`prefetch_raw`].
unsafe fn stats_raw(pool: *mut sys::dc_pool) -> Result<PoolStats> {
    let mut s = sys::dc_pool_stats::zeroed();
    check(sys::dc_pool_get_stats(pool, &mut s))?;
    Ok(PoolStats {
        budget_bytes: s.budget_bytes,
        resident_bytes: s.resident_bytes,
        resident_deltas: s.resident_deltas,
        referenced_deltas: s.referenced_deltas,
        hits: s.hits,
        misses: s.misses,
        loads: s.loads,
        evictions: s.evictions,
        prefetch_loaded: s.prefetch_loaded,
        prefetch_dropped: s.prefetch_dropped,
        prefetch_pending: s.prefetch_pending,
        batch_builds: s.batch_builds,
        slot_uploads: s.slot_uploads,
    })
}

/// Keeps the deltas of many variants resident in one context under a budget (experimental).
///
/// `'a` is the lifetime of the context and of every registered container: both must outlive the
/// pool. Dropping the pool destroys it (every resident delta is freed; acquired deltas borrow the
/// pool, so none is left).
pub struct Pool<'a> {
    raw: NonNull<sys::dc_pool>,
    ctx: &'a Context,
    /// Registered model ids and their containers: the shapes for apply_batched's bounds checks.
    models: RefCell<HashMap<String, NonNull<sys::dc_container>>>,
    /// Invariant in 'a: a `&Pool<'long>` must not become a `&Pool<'short>` through which a
    /// short-lived container could be registered.
    _invariant: PhantomData<fn(&'a ()) -> &'a ()>,
}

impl<'a> Pool<'a> {
    /// Creates an empty pool on `ctx` (host threads for prefetch start here).
    pub fn new(ctx: &'a Context, opts: &PoolOptions) -> Result<Pool<'a>> {
        let mut o = sys::dc_pool_options::zeroed();
        // SAFETY: fills a struct we own.
        unsafe { sys::dc_pool_options_init(&mut o) };
        o.device_budget_bytes = opts.device_budget_bytes;
        o.load_flags = if opts.verify_checksum { sys::DC_LOAD_VERIFY_CHECKSUM } else { sys::DC_LOAD_SKIP_CHECKSUM };
        o.host_threads = opts.host_threads;
        let mut out = ptr::null_mut();
        // SAFETY: live context, borrowed for 'a (the pool's lifetime); does not use the context.
        check(unsafe { sys::dc_pool_create(&mut out, ctx.as_ptr(), &o) })?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Status::Internal, "dc_pool_create returned NULL"))?;
        Ok(Pool { raw, ctx, models: RefCell::new(HashMap::new()), _invariant: PhantomData })
    }

    pub fn context(&self) -> &'a Context {
        self.ctx
    }

    pub fn as_ptr(&self) -> *mut sys::dc_pool {
        self.raw.as_ptr()
    }

    /// The thread-safe part of the pool (prefetch, query, stats), to use from other threads.
    pub fn handle(&self) -> PoolHandle<'_> {
        PoolHandle { raw: self.raw, _pool: PhantomData }
    }

    /// Registers `container` under `model_id` (nothing is loaded). The container is borrowed for
    /// the pool's whole life. `Status::Duplicate` if the id is taken.
    pub fn register(&self, model_id: &str, container: &'a Container<'_>) -> Result<()> {
        let id = c_string("model id", model_id)?;
        // SAFETY: live pool and container; the borrow 'a keeps the container open while the pool lives.
        check(unsafe { sys::dc_pool_register(self.as_ptr(), id.as_ptr(), container.as_ptr()) })?;
        let c = NonNull::new(container.as_ptr() as *mut sys::dc_container).expect("live container");
        self.models.borrow_mut().insert(model_id.to_string(), c);
        Ok(())
    }

    /// Frees the model's resident deltas and forgets the id. `Status::Busy` while one of its
    /// deltas is acquired (nothing changes then), `Status::NotFound` for an unknown id.
    pub fn unregister(&self, model_id: &str) -> Result<()> {
        let id = c_string("model id", model_id)?;
        // SAFETY: live pool; uses the context, which this thread owns (Pool is !Send and !Sync).
        check(unsafe { sys::dc_pool_unregister(self.as_ptr(), id.as_ptr()) })?;
        self.models.borrow_mut().remove(model_id);
        Ok(())
    }

    /// The delta of `tensor` of `model_id`, loaded if it is not resident (evicting least recently
    /// used unreferenced deltas as needed). The pool keeps it until the returned guard drops.
    pub fn acquire<'p>(&'p self, model_id: &str, tensor: &str) -> Result<PooledDelta<'p, 'a>> {
        // SAFETY: a NULL stream is always valid.
        unsafe { self.acquire_on_stream(model_id, tensor, ptr::null_mut()) }
    }

    /// [`Pool::acquire`] uploading on `stream` on a miss (GPU contexts; ignored on CPU).
    ///
    /// # Safety
    /// `stream` is NULL or a live stream of the context's device (a `cudaStream_t` / `hipStream_t`).
    pub unsafe fn acquire_on_stream<'p>(&'p self, model_id: &str, tensor: &str, stream: *mut c_void)
                                        -> Result<PooledDelta<'p, 'a>> {
        let id = c_string("model id", model_id)?;
        let name = c_string("tensor name", tensor)?;
        let mut out: *const sys::dc_delta = ptr::null();
        check(sys::dc_pool_acquire(self.as_ptr(), id.as_ptr(), name.as_ptr(), stream, &mut out))?;
        let raw = NonNull::new(out as *mut sys::dc_delta)
            .ok_or_else(|| Error::new(Status::Internal, "dc_pool_acquire returned DC_OK and NULL"))?;
        match Delta::borrowed(self.ctx, raw) {
            Ok(delta) => Ok(PooledDelta { pool: self, delta: ManuallyDrop::new(delta), model_id: model_id.to_string(),
                                          released: false }),
            Err(e) => {
                sys::dc_pool_release(self.as_ptr(), raw.as_ptr());
                Err(e)
            }
        }
    }

    /// Queues `tensor` of `model_id` (None: every tensor of the model) for decoding on the pool's
    /// host threads; [`Pool::wait`], the next apply, or an acquire of it places it.
    pub fn prefetch(&self, model_id: &str, tensor: Option<&str>) -> Result<()> {
        self.handle().prefetch(model_id, tensor)
    }

    /// [`Pool::prefetch`] uploading on `stream` when placed (GPU contexts).
    ///
    /// # Safety
    /// `stream` is NULL or a live stream of the context's device, still live when the deltas are
    /// placed (by the next wait, apply or acquire).
    pub unsafe fn prefetch_on_stream(&self, model_id: &str, tensor: Option<&str>, stream: *mut c_void) -> Result<()> {
        prefetch_raw(self.as_ptr(), model_id, tensor, stream)
    }

    /// Waits for every queued prefetch and places the decoded deltas; the first decode or load
    /// failure among them is returned.
    pub fn wait(&self) -> Result<()> {
        // SAFETY: live pool; uses the context from its owning thread.
        check(unsafe { sys::dc_pool_wait(self.as_ptr()) })
    }

    /// The state of one entry and its reference count (0 unless resident).
    pub fn query(&self, model_id: &str, tensor: &str) -> Result<(EntryState, u32)> {
        self.handle().query(model_id, tensor)
    }

    pub fn stats(&self) -> Result<PoolStats> {
        self.handle().stats()
    }

    /// For every row i: `y[i] += x[i]·ΔW(model_ids[i], tensor)ᵀ`, nothing for `None` rows (m =
    /// `model_ids.len()`), in host memory (CPU context), with one batched apply.
    pub fn apply_batched<X: Element, Y: Element>(&self, tensor: &str, model_ids: &[Option<&str>], x: &[X],
                                                 y: &mut [Y]) -> Result<()> {
        self.apply_batched_with(tensor, model_ids, x, y, &ApplyOptions::default())
    }

    /// [`Pool::apply_batched`] with strides, scale, or a base weight (then every row, `None` ones
    /// included, becomes `y[i] = x[i]·(W_base + scale·ΔW(id))ᵀ`).
    pub fn apply_batched_with<X: Element, Y: Element>(&self, tensor: &str, model_ids: &[Option<&str>], x: &[X],
                                                      y: &mut [Y], opts: &ApplyOptions) -> Result<()> {
        let m = model_ids.len();
        // Bounds: x, y and the base weight must fit the tensor's shape in every registered model
        // named. An id the pool cannot resolve (unknown id, no such tensor) has no delta the
        // library could apply; it fails the call with the library's status and message.
        let mut p = None;
        {
            let models = self.models.borrow();
            let mut seen: Vec<&str> = Vec::new();
            for id in model_ids.iter().flatten() {
                if seen.contains(id) {
                    continue;
                }
                seen.push(id);
                let Some(c) = models.get(*id) else { continue };
                let Some((rows, cols)) = tensor_shape(*c, tensor) else { continue };
                p = Some(host_params(self.ctx, rows, cols, m, x, y, opts)?);
            }
        }
        let p = match p {
            Some(p) => p,
            // Nothing resolvable: the library applies nothing (it fails, or with no ids returns).
            None => host_params(self.ctx, 0, 0, m, x, y, opts)?,
        };
        // SAFETY: x, y and base fit every shape the library can apply with (checked above); CPU context.
        unsafe { self.apply_batched_raw(tensor, model_ids, &p) }
    }

    /// The raw call, for GPU contexts (device pointers, `p.stream`).
    ///
    /// # Safety
    /// `p` satisfies dc_pool_apply_batched's contract: `p.m == model_ids.len()`, and x, y and
    /// base_weight point to memory of the context's backend large enough for the tensor's shape,
    /// valid until the work enqueued on `p.stream` completes.
    pub unsafe fn apply_batched_raw(&self, tensor: &str, model_ids: &[Option<&str>], p: &sys::dc_apply_params)
                                    -> Result<()> {
        if p.m != model_ids.len() as u64 {
            return Err(Error::new(Status::ShapeMismatch, format!("{} model ids for m = {} rows", model_ids.len(), p.m)));
        }
        let name = c_string("tensor name", tensor)?;
        let ids: Vec<Option<CString>> =
            model_ids.iter().map(|id| id.map(|s| c_string("model id", s)).transpose()).collect::<Result<_>>()?;
        let ptrs: Vec<*const c_char> = ids.iter().map(|id| id.as_ref().map_or(ptr::null(), |c| c.as_ptr())).collect();
        check(sys::dc_pool_apply_batched(self.as_ptr(), name.as_ptr(), ptrs.as_ptr(), p))
    }
}

/// (rows, cols) of `tensor` in a registered container, or None when it has no such tensor.
fn tensor_shape(c: NonNull<sys::dc_container>, tensor: &str) -> Option<(u64, u64)> {
    let name = CString::new(tensor).ok()?;
    let mut index = 0u64;
    let mut t = sys::dc_tensor_info::zeroed();
    // SAFETY: the container is registered, so borrowed for the pool's life; containers are thread-safe.
    unsafe {
        if sys::dc_container_find_tensor(c.as_ptr(), name.as_ptr(), &mut index) != sys::DC_OK
            || sys::dc_container_tensor_info(c.as_ptr(), index, &mut t) != sys::DC_OK
        {
            return None;
        }
    }
    Some((t.rows, t.cols))
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        // SAFETY: acquired deltas and handles borrow the pool, so none is left and no other call
        // runs; the context and containers outlive it ('a).
        unsafe { sys::dc_pool_destroy(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Pool<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<String> = self.models.borrow().keys().cloned().collect();
        ids.sort();
        f.debug_struct("Pool").field("models", &ids).field("stats", &self.stats().ok()).finish()
    }
}

/// The thread-safe part of a [`Pool`]: the calls the header marks thread-safe and not using the
/// context. `Send + Sync + Copy`; borrows the pool, so the pool outlives it.
#[derive(Clone, Copy)]
pub struct PoolHandle<'p> {
    raw: NonNull<sys::dc_pool>,
    _pool: PhantomData<&'p ()>,
}

// SAFETY: prefetch, query and get_stats are "Thread-safe; does not use ctx" in dc_pool.h (the pool
// has a mutex), and the borrow of the Pool keeps dc_pool_destroy from running while a handle lives.
unsafe impl Send for PoolHandle<'_> {}
unsafe impl Sync for PoolHandle<'_> {}

impl PoolHandle<'_> {
    /// See [`Pool::prefetch`] (a NULL stream).
    pub fn prefetch(&self, model_id: &str, tensor: Option<&str>) -> Result<()> {
        // SAFETY: live pool (borrowed); a NULL stream is always valid.
        unsafe { prefetch_raw(self.raw.as_ptr(), model_id, tensor, ptr::null_mut()) }
    }

    /// See [`Pool::query`].
    pub fn query(&self, model_id: &str, tensor: &str) -> Result<(EntryState, u32)> {
        // SAFETY: live pool (borrowed).
        unsafe { query_raw(self.raw.as_ptr(), model_id, tensor) }
    }

    /// See [`Pool::stats`].
    pub fn stats(&self) -> Result<PoolStats> {
        // SAFETY: live pool (borrowed).
        unsafe { stats_raw(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for PoolHandle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolHandle").finish_non_exhaustive()
    }
}

/// A delta acquired from a [`Pool`]: one reference, released on drop (or by [`PooledDelta::release`]).
/// While it lives the pool never evicts the delta. Derefs to [`Delta`] (apply, merge, info,
/// batches); it is owned by the pool, never freed by this guard.
pub struct PooledDelta<'p, 'a> {
    pool: &'p Pool<'a>,
    delta: ManuallyDrop<Delta<'a>>,
    model_id: String,
    released: bool,
}

impl PooledDelta<'_, '_> {
    /// The model id it was acquired for.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Releases the reference now, returning the library's status (drop ignores it).
    pub fn release(mut self) -> Result<()> {
        self.release_once()
    }

    fn release_once(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        // SAFETY: live pool (borrowed); the delta was acquired from it and not yet released. Any
        // Batch built on the delta borrows this guard, so it is gone already.
        check(unsafe { sys::dc_pool_release(self.pool.as_ptr(), self.delta.as_ptr()) })
    }
}

impl<'a> Deref for PooledDelta<'_, 'a> {
    type Target = Delta<'a>;
    fn deref(&self) -> &Delta<'a> {
        &self.delta
    }
}

impl Drop for PooledDelta<'_, '_> {
    fn drop(&mut self) {
        let _ = self.release_once();
        // SAFETY: taken once, here; the pool owns the handle, so only the info is dropped.
        unsafe { ManuallyDrop::take(&mut self.delta) }.forget_borrowed();
    }
}

impl std::fmt::Debug for PooledDelta<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledDelta").field("model_id", &self.model_id).field("info", self.delta.info()).finish()
    }
}
