//! The Rust usage shown in docs/bindings.md, verbatim between the snippet markers
//! (tests/packaging/run.sh checks that the document and this file agree).
mod common;

// snippet-begin
use deltacome::{Container, Context};

/// Loads one layer's delta on the CPU and applies it to 4 tokens: y += x·ΔWᵀ.
fn apply_one_layer(path: &std::path::Path, tensor: &str) -> deltacome::Result<Vec<f32>> {
    let container = Container::open(path)?; // Send + Sync: share it between threads
    let ctx = Context::cpu()?; // one per thread
    let delta = ctx.load(&container, tensor)?; // borrows ctx: cannot outlive it
    drop(container); // the delta keeps its own copy of the packed data
    let (rows, cols) = (delta.info().rows as usize, delta.info().cols as usize);
    let x: Vec<f32> = (0..4 * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0f32; 4 * rows];
    delta.apply(4, &x, &mut y)?;
    Ok(y)
}
// snippet-end

#[test]
fn readme_example_runs() {
    let f = common::fixture();
    let y = apply_one_layer(&f.dcz, "model.layers.0.self_attn.q_proj.weight").unwrap();
    assert!(y.iter().any(|&v| v != 0.0));
    let e = apply_one_layer(&f.dcz, "no.such.tensor").unwrap_err();
    assert_eq!(e.status(), deltacome::Status::NotFound);
    println!("{e}");
}
