//! The experimental delta pool (deltacome::pool) on the CPU backend, with two variants of one base:
//! the demo pair compressed with Delta-CoMe (low-rank) and with BitDelta (common/mod.rs makes both).
//! Stats through acquire/release and eviction, batched apply by model id against the stable API's
//! per-delta apply, prefetch (also from another thread), and the errors' statuses and messages.
//! The first function is the usage shown in docs/bindings.md (tests/packaging/check_snippets.py).
mod common;

// snippet-begin
use deltacome::pool::{Pool, PoolOptions, PoolStats};
use deltacome::{Container, Context};

/// Rows of one batch served by two variants of one base: y[i] += x[i]·ΔW(ids[i])ᵀ.
fn serve_two_variants(variant_a: &std::path::Path, variant_b: &std::path::Path, tensor: &str)
                      -> deltacome::Result<(Vec<f32>, PoolStats)> {
    let a = Container::open(variant_a)?; // the pool borrows the containers and the context:
    let b = Container::open(variant_b)?; // declare them before it
    let ctx = Context::cpu()?;
    let pool = Pool::new(&ctx, &PoolOptions { device_budget_bytes: 16 << 20, ..Default::default() })?;
    pool.register("a", &a)?;
    pool.register("b", &b)?;
    let info = a.tensor_info(a.find(tensor)?)?;
    let (rows, cols) = (info.rows as usize, info.cols as usize);
    let x: Vec<f32> = (0..4 * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0f32; 4 * rows];
    pool.apply_batched(tensor, &[Some("a"), None, Some("b"), Some("a")], &x, &mut y)?;
    let d = pool.acquire("b", tensor)?; // resident and never evicted while `d` lives
    assert_eq!(pool.query("b", tensor)?.1, 1); // one reference
    drop(d); // released
    Ok((y, pool.stats()?))
}
// snippet-end

use common::*;
use deltacome::pool::{EntryState, PoolHandle};
use deltacome::{ApplyOptions, Status, TensorKind};

const FP32_TOL: f64 = 1e-4;
const Q0: &str = "model.layers.0.self_attn.q_proj.weight";
const DOWN1: &str = "model.layers.1.mlp.down_proj.weight"; // 128 × 352: rows ≠ cols

fn big() -> PoolOptions {
    PoolOptions { device_budget_bytes: 64 << 20, ..Default::default() }
}

/// The two variants' containers ("a": Delta-CoMe low-rank, "b": BitDelta) and a CPU context, for a
/// pool to borrow (declared before it, so they outlive it).
fn variants_and_ctx() -> (Container<'static>, Container<'static>, Context) {
    let f = fixture();
    (Container::open(&f.dcz).unwrap(), Container::open(bitdelta()).unwrap(), Context::cpu().unwrap())
}

/// A pool over `ctx` with `a` and `b` registered under their names.
fn pool_of<'a>(ctx: &'a Context, a: &'a Container<'static>, b: &'a Container<'static>, opts: &PoolOptions) -> Pool<'a> {
    let pool = Pool::new(ctx, opts).unwrap();
    pool.register("a", a).unwrap();
    pool.register("b", b).unwrap();
    pool
}

/// Row i of y against row i of want, relative error.
fn row_err(y: &[f32], want: &[f32]) -> f64 {
    rel_err(&to_f64(y), &to_f64(want))
}

#[test]
fn snippet_serves_both_variants() {
    let f = fixture();
    let (y, s) = serve_two_variants(&f.dcz, bitdelta(), Q0).unwrap();
    let rows = y.len() / 4;
    assert!(y[..rows].iter().any(|&v| v != 0.0));
    assert!(y[rows..2 * rows].iter().all(|&v| v == 0.0), "row 1 has no model id");
    assert_eq!((s.hits, s.misses, s.loads, s.resident_deltas, s.referenced_deltas), (1, 2, 2, 2, 0));
}

#[test]
fn acquire_release_and_stats() {
    let (a, b, ctx) = variants_and_ctx();
    let pool = pool_of(&ctx, &a, &b, &big());
    let s0 = pool.stats().unwrap();
    assert_eq!(s0, PoolStats { budget_bytes: 64 << 20, ..Default::default() });
    assert_eq!(pool.query("a", Q0).unwrap(), (EntryState::Absent, 0));

    let d1 = pool.acquire("a", Q0).unwrap();
    assert_eq!(d1.model_id(), "a");
    assert_eq!(d1.info().kind, TensorKind::LowRank);
    let size_a = d1.info().device_bytes;
    assert!(size_a > 0);
    let s = pool.stats().unwrap();
    assert_eq!((s.hits, s.misses, s.loads, s.evictions), (0, 1, 1, 0));
    assert_eq!((s.resident_deltas, s.referenced_deltas, s.resident_bytes), (1, 1, size_a));
    let d2 = pool.acquire("a", Q0).unwrap(); // a hit: the same delta, a second reference
    assert_eq!(d2.as_ptr(), d1.as_ptr());
    assert_eq!(pool.query("a", Q0).unwrap(), (EntryState::Resident, 2));
    let s = pool.stats().unwrap();
    assert_eq!((s.hits, s.misses, s.loads), (1, 1, 1));

    // The pooled delta computes what the same tensor loaded with the stable API does.
    let (rows, cols) = (d1.info().rows as usize, d1.info().cols as usize);
    let x = inputs(3 * cols, 11);
    let mut y_pool = vec![0f32; 3 * rows];
    d1.apply(3, &x, &mut y_pool).unwrap();
    let direct = ctx.load(&a, Q0).unwrap();
    let mut y_direct = vec![0f32; 3 * rows];
    direct.apply(3, &x, &mut y_direct).unwrap();
    assert!(row_err(&y_pool, &y_direct) < FP32_TOL);
    drop(direct);

    drop(d1);
    assert_eq!(pool.query("a", Q0).unwrap(), (EntryState::Resident, 1));
    d2.release().unwrap();
    assert_eq!(pool.query("a", Q0).unwrap(), (EntryState::Resident, 0));

    let db = pool.acquire("b", Q0).unwrap();
    assert_eq!(db.info().kind, TensorKind::BitDelta);
    let size_b = db.info().device_bytes;
    let s = pool.stats().unwrap();
    assert_eq!((s.hits, s.misses, s.loads, s.evictions), (1, 2, 2, 0));
    assert_eq!((s.resident_deltas, s.referenced_deltas, s.resident_bytes), (2, 1, size_a + size_b));
    drop(db);
    assert_eq!(pool.stats().unwrap().referenced_deltas, 0);

    // Unregistering frees the model's deltas.
    pool.unregister("a").unwrap();
    let s = pool.stats().unwrap();
    assert_eq!((s.resident_deltas, s.resident_bytes), (1, size_b));
}

#[test]
fn budget_evicts_least_recently_used_and_refuses_when_referenced() {
    let (a, b, ctx) = variants_and_ctx();
    // Sizes from a roomy pool first.
    let (size_a, size_b) = {
        let pool = pool_of(&ctx, &a, &b, &big());
        let (da, db) = (pool.acquire("a", Q0).unwrap(), pool.acquire("b", Q0).unwrap());
        (da.info().device_bytes, db.info().device_bytes)
    };
    // Room for either, not both.
    let budget = size_a.max(size_b) + size_a.min(size_b) / 2;
    let pool = pool_of(&ctx, &a, &b, &PoolOptions { device_budget_bytes: budget, ..Default::default() });
    drop(pool.acquire("a", Q0).unwrap());
    let db = pool.acquire("b", Q0).unwrap(); // evicts a (unreferenced)
    let s = pool.stats().unwrap();
    assert_eq!((s.misses, s.loads, s.evictions, s.resident_deltas, s.resident_bytes), (2, 2, 1, 1, size_b));
    assert_eq!(pool.query("a", Q0).unwrap(), (EntryState::Absent, 0));

    // b is referenced: a cannot fit, and nothing is evicted.
    let e = pool.acquire("a", Q0).unwrap_err();
    assert_eq!(e.status(), Status::Budget, "{e}");
    assert!(e.message().starts_with("dc_pool_acquire: "), "{e}");
    let s = pool.stats().unwrap();
    assert_eq!((s.evictions, s.resident_deltas, s.resident_bytes), (1, 1, size_b));
    drop(db);
    let da = pool.acquire("a", Q0).unwrap(); // now b goes
    assert_eq!(da.info().device_bytes, size_a);
    let s = pool.stats().unwrap();
    assert_eq!((s.evictions, s.resident_deltas, s.resident_bytes), (2, 1, size_a));
}

#[test]
fn apply_batched_matches_per_delta_apply() {
    let (a, b, ctx) = variants_and_ctx();
    let pool = pool_of(&ctx, &a, &b, &big());
    // The stable API's deltas, loaded independently.
    let (da, db) = (ctx.load(&a, DOWN1).unwrap(), ctx.load(&b, DOWN1).unwrap());
    let (rows, cols) = (da.info().rows as usize, da.info().cols as usize);
    assert_ne!(rows, cols);

    let ids = [Some("a"), Some("b"), None, Some("b"), Some("a"), Some("a")];
    let m = ids.len();
    let x = inputs(m * cols, 21);
    let y0 = inputs(m * rows, 22); // y += ...: start from non-zero values
    for (scale, pass) in [(1.0f32, 0), (1.0, 1), (0.5, 2)] {
        let mut y = y0.clone();
        pool.apply_batched_with(DOWN1, &ids, &x, &mut y, &ApplyOptions { scale, ..Default::default() }).unwrap();
        let mut diff_ab = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let (xi, yi) = (&x[i * cols..(i + 1) * cols], &y[i * rows..(i + 1) * rows]);
            let mut want = y0[i * rows..(i + 1) * rows].to_vec();
            match id {
                None => {
                    assert_eq!(yi, &want[..], "row {i} has no model id but changed");
                    continue;
                }
                Some(id) => {
                    let d = if *id == "a" { &da } else { &db };
                    d.apply_with(1, xi, &mut want, &ApplyOptions { scale, ..Default::default() }).unwrap();
                }
            }
            let e = row_err(yi, &want);
            assert!(e < FP32_TOL, "pass {pass} row {i} ({id:?}): relative error {e}");
            diff_ab.push((id.unwrap(), to_f64(yi)));
        }
        // The variants differ: a row routed to the wrong one would not have matched.
        let mut wrong = y0[..rows].to_vec();
        db.apply_with(1, &x[..cols], &mut wrong, &ApplyOptions { scale, ..Default::default() }).unwrap();
        assert!(rel_err(&to_f64(&wrong), &diff_ab[0].1) > 1e-3, "variants a and b give the same row");

        let s = pool.stats().unwrap();
        // One acquisition per distinct id and call: 2 misses, then hits.
        assert_eq!((s.misses, s.hits), (2, 2 * pass as u64), "pass {pass}");
        assert_eq!((s.loads, s.resident_deltas, s.referenced_deltas), (2, 2, 0));
        // The same id sequence: the batch and the row→slot table are reused.
        assert_eq!((s.batch_builds, s.slot_uploads), (1, 1), "pass {pass}");
    }
    // Every id None: nothing happens.
    let mut y = y0.clone();
    pool.apply_batched(DOWN1, &[None; 6], &x, &mut y).unwrap();
    assert_eq!(y, y0);
}

#[test]
fn errors_carry_status_and_library_message() {
    let (a, b, ctx) = variants_and_ctx();
    let pool = Pool::new(&ctx, &big()).unwrap(); // "b" is registered below, after the error cases
    pool.register("a", &a).unwrap();

    let e = pool.acquire("nope", Q0).unwrap_err();
    assert_eq!(e.status(), Status::NotFound);
    assert_eq!(e.message(), "dc_pool_acquire: model id 'nope' is not registered");
    let e = pool.acquire("a", "no.such.tensor").unwrap_err();
    assert_eq!(e.status(), Status::NotFound);
    assert!(e.message().contains("no tensor named 'no.such.tensor'"), "{e}");
    let e = pool.query("nope", Q0).unwrap_err();
    assert_eq!((e.status(), e.message()), (Status::NotFound, "dc_pool_query: model id 'nope' is not registered"));

    let (rows, cols) = (128, 128);
    let x = inputs(2 * cols, 3);
    let mut y = vec![0f32; 2 * rows];
    let e = pool.apply_batched(Q0, &[Some("a"), Some("nope")], &x, &mut y).unwrap_err();
    assert_eq!(e.status(), Status::NotFound);
    assert_eq!(e.message(), "dc_pool_apply_batched: model id 'nope' is not registered");
    // Bounds are checked before the library is called: nothing was acquired.
    let before = pool.stats().unwrap();
    let e = pool.apply_batched(Q0, &[Some("a"), Some("a")], &x, &mut y[..rows]).unwrap_err();
    assert_eq!(e.status(), Status::ShapeMismatch, "{e}");
    assert_eq!(pool.stats().unwrap(), before);

    assert_eq!(pool.register("a", &b).unwrap_err().status(), Status::Duplicate);
    assert_eq!(pool.register("", &b).unwrap_err().status(), Status::InvalidArgument);
    pool.register("b", &b).unwrap();
    let d = pool.acquire("b", Q0).unwrap();
    let e = pool.unregister("b").unwrap_err();
    assert_eq!(e.status(), Status::Busy, "{e}");
    drop(d);
    pool.unregister("b").unwrap();
    assert_eq!(pool.acquire("b", Q0).unwrap_err().status(), Status::NotFound);
    assert_eq!(pool.unregister("b").unwrap_err().status(), Status::NotFound);

    let e = Pool::new(&ctx, &PoolOptions { device_budget_bytes: 0, ..Default::default() }).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("device_budget_bytes"), "{e}");
}

#[test]
fn prefetch_places_on_wait_and_runs_from_other_threads() {
    let (a, b, ctx) = variants_and_ctx();
    let pool = pool_of(&ctx, &a, &b, &big());

    pool.prefetch("a", None).unwrap(); // every tensor of a
    pool.wait().unwrap();
    let n = a.tensor_count();
    let s = pool.stats().unwrap();
    assert_eq!((s.prefetch_loaded, s.loads, s.resident_deltas, s.prefetch_pending), (n, n, n, 0));
    assert_eq!(pool.query("a", DOWN1).unwrap(), (EntryState::Resident, 0));
    drop(pool.acquire("a", DOWN1).unwrap());
    assert_eq!(pool.stats().unwrap().hits, 1);

    // The thread-safe part from another thread while this one keeps the context.
    let h: PoolHandle = pool.handle();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            h.prefetch("b", Some(Q0)).unwrap();
            assert!(h.stats().unwrap().budget_bytes > 0);
            assert_eq!(h.query("nope", Q0).unwrap_err().status(), Status::NotFound);
        });
    });
    pool.wait().unwrap();
    assert_eq!(pool.query("b", Q0).unwrap(), (EntryState::Resident, 0));
    assert_eq!(pool.stats().unwrap().prefetch_loaded, n + 1);
    assert_eq!(pool.prefetch("nope", None).unwrap_err().status(), Status::NotFound);
}
