//! Raw declarations of libdeltacome's C API (include/deltacome/deltacome.h, dc_errors.h), and of
//! the experimental delta pool (include/deltacome/dc_pool.h: its functions and structs may still
//! change between minor versions; they are grouped at the end of this file).
//!
//! Written by hand to match the header exactly (no bindgen): every struct is `#[repr(C)]` with the
//! header's field order and types, and `tests/layout.rs` compiles a C probe against the installed
//! header to check every size and field offset. C enums are `u32` type aliases plus constants, not
//! Rust enums: the library may return values this crate does not know yet (the enums are
//! open-ended), and an unknown value in a Rust enum would be undefined behaviour.
//!
//! Everything here is `unsafe` to call; the `deltacome` crate is the safe API. Ownership and
//! threading rules are the header's (quoted on each item where they matter).
#![allow(non_camel_case_types)]
#![no_std]

use core::ffi::{c_char, c_int, c_void};

// ---- versions ------------------------------------------------------------------------------------
pub const DC_VERSION_MAJOR: u32 = 0;
pub const DC_VERSION_MINOR: u32 = 1;
pub const DC_VERSION_PATCH: u32 = 0;
pub const DC_VERSION_NUMBER: u32 = DC_VERSION_MAJOR * 10000 + DC_VERSION_MINOR * 100 + DC_VERSION_PATCH;
pub const DC_FORMAT_MAJOR: u32 = 1;
pub const DC_FORMAT_MINOR: u32 = 0;

// ---- status codes (dc_errors.h; values pinned) --------------------------------------------------------
pub type dc_status = u32;
pub const DC_OK: dc_status = 0;
pub const DC_ERR_INVALID_ARGUMENT: dc_status = 1;
pub const DC_ERR_IO: dc_status = 2;
pub const DC_ERR_BAD_MAGIC: dc_status = 3;
pub const DC_ERR_UNSUPPORTED_VERSION: dc_status = 4;
pub const DC_ERR_TRUNCATED: dc_status = 5;
pub const DC_ERR_CORRUPT: dc_status = 6;
pub const DC_ERR_CHECKSUM: dc_status = 7;
pub const DC_ERR_OVERFLOW: dc_status = 8;
pub const DC_ERR_LIMIT: dc_status = 9;
pub const DC_ERR_NOT_FOUND: dc_status = 10;
pub const DC_ERR_OUT_OF_MEMORY: dc_status = 11;
pub const DC_ERR_BASE_MISMATCH: dc_status = 12;
pub const DC_ERR_UNSUPPORTED: dc_status = 13;
pub const DC_ERR_BACKEND: dc_status = 14;
pub const DC_ERR_SHAPE_MISMATCH: dc_status = 15;
pub const DC_ERR_DUPLICATE: dc_status = 16;
pub const DC_ERR_OVERLAP: dc_status = 17;
pub const DC_ERR_DECOMPRESS: dc_status = 18;
pub const DC_ERR_BUDGET: dc_status = 19;
pub const DC_ERR_BUSY: dc_status = 20;
pub const DC_ERR_INTERNAL: dc_status = 99;

// ---- enumerations (values pinned) -----------------------------------------------------------------
pub type dc_dtype = u32;
pub const DC_DTYPE_F32: dc_dtype = 0;
pub const DC_DTYPE_F16: dc_dtype = 1;
pub const DC_DTYPE_BF16: dc_dtype = 2;

pub type dc_tensor_kind = u32;
pub const DC_KIND_LOWRANK: dc_tensor_kind = 0;
pub const DC_KIND_BITDELTA: dc_tensor_kind = 1;
pub const DC_KIND_DENSE: dc_tensor_kind = 2;

pub type dc_backend = u32;
pub const DC_BACKEND_AUTO: dc_backend = 0;
pub const DC_BACKEND_CPU: dc_backend = 1;
pub const DC_BACKEND_CUDA: dc_backend = 2;
pub const DC_BACKEND_HIP: dc_backend = 3;

pub type dc_shard_split = u32;
pub const DC_SHARD_NONE: dc_shard_split = 0;
pub const DC_SHARD_ROWS: dc_shard_split = 1;
pub const DC_SHARD_COLS: dc_shard_split = 2;

// ---- flags ------------------------------------------------------------------------------------------
pub const DC_OPEN_NO_MMAP: u32 = 0x1;
pub const DC_OPEN_TRUSTED: u32 = 0x2;
pub const DC_OPEN_BORROW_MEMORY: u32 = 0x4;
pub const DC_LOAD_VERIFY_CHECKSUM: u32 = 0x0;
pub const DC_LOAD_SKIP_CHECKSUM: u32 = 0x1;
pub const DC_APPLY_INCLUDE_BASE: u32 = 0x1;
pub const DC_MAX_BANDS: usize = 8;

// ---- opaque handles ---------------------------------------------------------------------------------
/// Declares an opaque C type: zero-sized, not constructible, `!Send`, `!Sync`, `!Unpin`.
macro_rules! opaque {
    ($($name:ident),*) => {$(
        #[repr(C)]
        pub struct $name {
            _data: [u8; 0],
            _marker: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
        }
    )*};
}
opaque!(dc_container, dc_context, dc_delta, dc_delta_batch);

opaque!(dc_pool);

// ---- structs (append-only; each starts with struct_size, filled by its dc_*_init) ----------------------
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dc_open_options {
    pub struct_size: u32,
    pub flags: u32,
    pub max_manifest_bytes: u64,
    pub max_segment_bytes: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dc_container_info {
    pub struct_size: u32,
    pub format_major: u16,
    pub format_minor: u16,
    pub tensor_count: u64,
    pub file_bytes: u64,
    pub payload_bytes: u64,
    pub model_name: *const c_char,
    pub base_model_name: *const c_char,
    pub tool_version: *const c_char,
    pub recipe_json: *const c_char,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dc_band_info {
    pub bits: u32,
    pub rank_begin: u32,
    pub rank_end: u32,
    pub group_size: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dc_tensor_info {
    pub struct_size: u32,
    pub name: *const c_char,
    pub rows: u64,
    pub cols: u64,
    pub kind: dc_tensor_kind,
    pub dtype: dc_dtype,
    pub rank: u32,
    pub band_count: u32,
    pub bands: [dc_band_info; DC_MAX_BANDS],
    pub has_act_order: c_int,
    pub stored_bytes: u64,
    pub packed_bytes: u64,
    pub fp16_bytes: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dc_context_options {
    pub struct_size: u32,
    pub backend: dc_backend,
    pub device: i32,
    pub num_threads: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dc_shard {
    pub split: dc_shard_split,
    pub index: u32,
    pub count: u32,
    pub begin: u64,
    pub end: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dc_load_options {
    pub struct_size: u32,
    pub flags: u32,
    pub stream: *mut c_void,
    pub shard: dc_shard,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dc_delta_info {
    pub struct_size: u32,
    pub rows: u64,
    pub cols: u64,
    pub kind: dc_tensor_kind,
    pub device_bytes: u64,
    pub split: dc_shard_split,
    pub shard_begin: u64,
    pub shard_end: u64,
    pub name: *const c_char,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dc_apply_params {
    pub struct_size: u32,
    pub flags: u32,
    pub m: u64,
    pub x: *const c_void,
    pub x_dtype: dc_dtype,
    pub ldx: u64,
    pub y: *mut c_void,
    pub y_dtype: dc_dtype,
    pub ldy: u64,
    pub base_weight: *const c_void,
    pub base_dtype: dc_dtype,
    pub ld_base: u64,
    pub scale: f32,
    pub stream: *mut c_void,
    pub workspace: *mut c_void,
    pub workspace_bytes: u64,
}

/// Zero-initialised values with `struct_size` set, for the structs the library fills (info
/// structs have no init function; the header asks for a zeroed struct with struct_size = sizeof).
macro_rules! zeroed_with_size {
    ($($name:ident),*) => {$(
        impl $name {
            pub fn zeroed() -> Self {
                // SAFETY: every field is an integer, float, raw pointer or array of those: all-zero
                // bytes are a valid value (null pointers, zero numbers).
                let mut v: Self = unsafe { core::mem::zeroed() };
                v.struct_size = core::mem::size_of::<Self>() as u32;
                v
            }
        }
    )*};
}
zeroed_with_size!(dc_open_options, dc_container_info, dc_tensor_info, dc_context_options,
                  dc_load_options, dc_delta_info, dc_apply_params, dc_pool_options, dc_pool_stats);

extern "C" {
    // versions and errors
    pub fn dc_version() -> u32;
    pub fn dc_version_string() -> *const c_char;
    pub fn dc_status_string(status: dc_status) -> *const c_char;
    /// Thread-local; valid until the next deltacome call on the same thread. Never NULL.
    pub fn dc_last_error_message() -> *const c_char;

    // backends
    pub fn dc_backend_available(backend: dc_backend) -> c_int;
    pub fn dc_backend_name(backend: dc_backend) -> *const c_char;

    // containers (thread-safe)
    pub fn dc_open_options_init(opts: *mut dc_open_options);
    pub fn dc_container_open(out: *mut *mut dc_container, path: *const c_char,
                             opts: *const dc_open_options) -> dc_status;
    pub fn dc_container_open_memory(out: *mut *mut dc_container, data: *const c_void, size: usize,
                                    opts: *const dc_open_options) -> dc_status;
    pub fn dc_container_close(container: *mut dc_container);
    pub fn dc_container_get_info(container: *const dc_container, info: *mut dc_container_info) -> dc_status;
    pub fn dc_container_tensor_count(container: *const dc_container) -> u64;
    pub fn dc_container_tensor_info(container: *const dc_container, index: u64,
                                    info: *mut dc_tensor_info) -> dc_status;
    pub fn dc_container_find_tensor(container: *const dc_container, name: *const c_char,
                                    index: *mut u64) -> dc_status;
    pub fn dc_container_singular_values(container: *const dc_container, index: u64, out: *mut f32,
                                        capacity: u64, count: *mut u64) -> dc_status;
    pub fn dc_container_verify(container: *const dc_container) -> dc_status;
    pub fn dc_container_check_base_tensor(container: *const dc_container, name: *const c_char,
                                          data: *const c_void, bytes: u64) -> dc_status;
    pub fn dc_container_check_base_file(container: *const dc_container, path: *const c_char) -> dc_status;

    // contexts (one thread at a time)
    pub fn dc_context_options_init(opts: *mut dc_context_options);
    pub fn dc_context_create(out: *mut *mut dc_context, opts: *const dc_context_options) -> dc_status;
    pub fn dc_context_destroy(ctx: *mut dc_context);
    pub fn dc_context_backend(ctx: *const dc_context) -> dc_backend;

    // deltas
    pub fn dc_load_options_init(opts: *mut dc_load_options);
    pub fn dc_delta_load(out: *mut *mut dc_delta, ctx: *mut dc_context, container: *const dc_container,
                         name: *const c_char, opts: *const dc_load_options) -> dc_status;
    pub fn dc_delta_load_index(out: *mut *mut dc_delta, ctx: *mut dc_context,
                               container: *const dc_container, index: u64,
                               opts: *const dc_load_options) -> dc_status;
    pub fn dc_delta_load_all(out: *mut *mut dc_delta, ctx: *mut dc_context,
                             container: *const dc_container, opts: *const dc_load_options) -> dc_status;
    pub fn dc_delta_free(delta: *mut dc_delta);
    pub fn dc_delta_get_info(delta: *const dc_delta, info: *mut dc_delta_info) -> dc_status;

    // apply and merge
    pub fn dc_apply_params_init(p: *mut dc_apply_params);
    pub fn dc_apply_workspace_size(delta: *const dc_delta, m: u64, bytes: *mut u64) -> dc_status;
    pub fn dc_apply_delta_linear(delta: *const dc_delta, p: *const dc_apply_params) -> dc_status;
    pub fn dc_merge_delta(delta: *const dc_delta, weight: *mut c_void, dtype: dc_dtype, ld: u64,
                          scale: f32, stream: *mut c_void) -> dc_status;

    // multi-tenant apply
    pub fn dc_delta_batch_create(out: *mut *mut dc_delta_batch, deltas: *const *const dc_delta,
                                 count: u64) -> dc_status;
    pub fn dc_delta_batch_free(batch: *mut dc_delta_batch);
    pub fn dc_apply_delta_linear_batched(batch: *const dc_delta_batch, row_slot: *const i32,
                                         p: *const dc_apply_params) -> dc_status;
}

// ---- experimental: the delta pool (dc_pool.h) ------------------------------------------------------
// Every pool function may be called from any thread (the pool has a mutex); those the header marks
// [uses ctx] (destroy, unregister, acquire on a miss, wait, apply_batched) must not overlap the host's
// own use of the pool's context. dc_pool_destroy must not overlap any other call on the pool.

pub type dc_pool_entry_state = u32;
pub const DC_POOL_ABSENT: dc_pool_entry_state = 0;
pub const DC_POOL_DECODING: dc_pool_entry_state = 1;
pub const DC_POOL_DECODED: dc_pool_entry_state = 2;
pub const DC_POOL_RESIDENT: dc_pool_entry_state = 3;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dc_pool_options {
    pub struct_size: u32,
    pub load_flags: u32,
    pub device_budget_bytes: u64,
    pub host_threads: i32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dc_pool_stats {
    pub struct_size: u32,
    pub reserved: u32,
    pub budget_bytes: u64,
    pub resident_bytes: u64,
    pub resident_deltas: u64,
    pub referenced_deltas: u64,
    pub hits: u64,
    pub misses: u64,
    pub loads: u64,
    pub evictions: u64,
    pub prefetch_loaded: u64,
    pub prefetch_dropped: u64,
    pub prefetch_pending: u64,
    pub batch_builds: u64,
    pub slot_uploads: u64,
}

extern "C" {
    pub fn dc_pool_options_init(opts: *mut dc_pool_options);
    /// `ctx` is borrowed: it must outlive the pool. Does not use ctx.
    pub fn dc_pool_create(out: *mut *mut dc_pool, ctx: *mut dc_context, opts: *const dc_pool_options) -> dc_status;
    /// [uses ctx]; must not run concurrently with any other call on the pool. Frees acquired deltas too.
    pub fn dc_pool_destroy(pool: *mut dc_pool);
    /// `container` is borrowed until dc_pool_unregister(model_id) or dc_pool_destroy returns.
    pub fn dc_pool_register(pool: *mut dc_pool, model_id: *const c_char, container: *const dc_container) -> dc_status;
    /// [uses ctx]. DC_ERR_BUSY while a delta of the model is acquired.
    pub fn dc_pool_unregister(pool: *mut dc_pool, model_id: *const c_char) -> dc_status;
    /// [uses ctx] on a miss. `*out` is owned by the pool, valid until the matching dc_pool_release.
    pub fn dc_pool_acquire(pool: *mut dc_pool, model_id: *const c_char, tensor_name: *const c_char,
                           stream: *mut c_void, out: *mut *const dc_delta) -> dc_status;
    /// Thread-safe; does not use ctx.
    pub fn dc_pool_release(pool: *mut dc_pool, delta: *const dc_delta) -> dc_status;
    /// `tensor_name` NULL = every tensor of the model. Thread-safe; does not use ctx.
    pub fn dc_pool_prefetch(pool: *mut dc_pool, model_id: *const c_char, tensor_name: *const c_char,
                            stream: *mut c_void) -> dc_status;
    /// [uses ctx]
    pub fn dc_pool_wait(pool: *mut dc_pool) -> dc_status;
    /// Either output may be NULL. Thread-safe; does not use ctx.
    pub fn dc_pool_query(pool: *mut dc_pool, model_id: *const c_char, tensor_name: *const c_char,
                         state: *mut dc_pool_entry_state, refcount: *mut u32) -> dc_status;
    /// Thread-safe; does not use ctx.
    pub fn dc_pool_get_stats(pool: *mut dc_pool, stats: *mut dc_pool_stats) -> dc_status;
    /// `model_ids` has p.m entries (NULL = no delta for that row). [uses ctx]
    pub fn dc_pool_apply_batched(pool: *mut dc_pool, tensor_name: *const c_char, model_ids: *const *const c_char,
                                 p: *const dc_apply_params) -> dc_status;
}
