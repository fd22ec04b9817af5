//! Safe Rust API for libdeltacome: Delta-CoMe compressed deltas of fine-tuned LLMs.
//!
//! ```no_run
//! use deltacome::{Container, Context};
//! # fn main() -> deltacome::Result<()> {
//! let container = Container::open("model.dcz")?;
//! let ctx = Context::cpu()?;
//! let name = "model.layers.0.self_attn.q_proj.weight";
//! let delta = ctx.load(&container, name)?;
//! let (rows, cols) = (delta.info().rows as usize, delta.info().cols as usize);
//! let x = vec![0.5f32; 2 * cols];
//! let mut y = vec![0f32; 2 * rows];
//! delta.apply(2, &x, &mut y)?; // y += x·ΔWᵀ
//! # Ok(()) }
//! ```
//!
//! Ownership follows the C header through lifetimes:
//! - a [`Delta`] borrows its [`Context`] (and, for [`Container::from_borrowed`], the image), so
//!   it cannot outlive either; the [`Container`] itself may be dropped right after loading;
//! - a [`Batch`] borrows its deltas.
//!
//! Threads: a `Container` is `Send + Sync`; a `Context` is `Send` but not `Sync`; `Delta` and
//! `Batch` are neither (they are used through their context's thread).
//!
//! The delta pool (many variants resident in one context under a budget, batched apply by model
//! id) is in [`pool`]: an **experimental API that may change**, like the C header it wraps
//! (`dc_pool.h`).
//!
//! ```compile_fail,E0597
//! // A delta cannot outlive its context.
//! let container = deltacome::Container::open("m.dcz").unwrap();
//! let delta = {
//!     let ctx = deltacome::Context::cpu().unwrap();
//!     ctx.load(&container, "w").unwrap()
//! };
//! ```
//!
//! ```compile_fail,E0277
//! // A context cannot be shared between threads.
//! fn needs_sync<T: Sync>(_: &T) {}
//! needs_sync(&deltacome::Context::cpu().unwrap());
//! ```
//!
//! ```compile_fail,E0277
//! // A delta cannot be sent to another thread on its own.
//! fn needs_send<T: Send>(_: T) {}
//! let container = deltacome::Container::open("m.dcz").unwrap();
//! let ctx = deltacome::Context::cpu().unwrap();
//! needs_send(ctx.load(&container, "w").unwrap());
//! ```
//!
//! ```compile_fail,E0597
//! // A borrowed image must outlive the deltas loaded from it.
//! let ctx = deltacome::Context::cpu().unwrap();
//! let delta = {
//!     let image = std::fs::read("m.dcz").unwrap();
//!     let container = deltacome::Container::from_borrowed(&image).unwrap();
//!     ctx.load(&container, "w").unwrap()
//! };
//! ```
//!
//! ```
//! // What is allowed: containers cross threads, contexts move between threads.
//! fn needs_send_sync<T: Send + Sync>() {}
//! fn needs_send<T: Send>() {}
//! needs_send_sync::<deltacome::Container<'static>>();
//! needs_send::<deltacome::Context>();
//! ```
mod container;
mod context;
mod error;
pub mod pool;
mod types;

pub use container::{Container, OpenOptions};
pub use context::{ApplyOptions, BaseWeight, Batch, Context, ContextOptions, Delta, LoadOptions};
pub use deltacome_sys as sys;
pub use error::{Error, Result, Status};
pub use types::{BandInfo, Backend, Bf16, ContainerInfo, DeltaInfo, Dtype, Element, Shard, TensorInfo, TensorKind, F16};

/// The linked library's version, "MAJOR.MINOR.PATCH".
pub fn version() -> &'static str {
    // SAFETY: static string, never NULL.
    unsafe { std::ffi::CStr::from_ptr(sys::dc_version_string()) }.to_str().unwrap_or("")
}

/// The linked library's DC_VERSION_NUMBER (compare with [`sys::DC_VERSION_NUMBER`]).
pub fn version_number() -> u32 {
    // SAFETY: no arguments.
    unsafe { sys::dc_version() }
}
