//! End-to-end tests of the safe API against a real container made by the CLI (see common/mod.rs):
//! open (file, memory, borrowed), inspect, load, apply on the CPU backend against float64
//! references, merge, batched apply, and the errors of corrupt and truncated files.
mod common;

use common::*;
use deltacome::{ApplyOptions, BaseWeight, Batch, Container, Context, LoadOptions, Status, TensorKind, F16};

/// Compression error allowed between ΔŴ (what the container reconstructs) and the exact
/// ΔW = fine-tuned − base, as a relative Frobenius error. The demo deltas have long-tail spectra
/// compressed at α = 1/16, so ΔŴ is an approximation; a useless (e.g. zero or garbage) reconstruction
/// has an error ≥ 1.
const COMPRESSION_TOL: f64 = 0.75;
/// Two computations of the same product in fp32 (apply from packed factors vs. dense merge).
const FP32_TOL: f64 = 1e-4;

fn lowrank_tensors(c: &Container) -> Vec<deltacome::TensorInfo> {
    c.tensors().unwrap().into_iter().filter(|t| t.kind == TensorKind::LowRank).collect()
}

/// ΔŴ of a loaded delta as float64, by merging it into a zero weight.
fn dense_delta(d: &deltacome::Delta) -> Vec<f64> {
    let mut w = vec![0f32; (d.info().rows * d.info().cols) as usize];
    d.merge(&mut w, 0, 1.0).unwrap();
    to_f64(&w)
}

#[test]
fn version_matches_header() {
    assert_eq!(deltacome::version_number(), deltacome::sys::DC_VERSION_NUMBER);
    assert_eq!(deltacome::version(), "0.1.0");
}

#[test]
fn open_file_and_inspect() {
    let f = fixture();
    let c = Container::open(&f.dcz).unwrap();
    let info = c.info().unwrap();
    assert_eq!(info.format_major, 1);
    assert_eq!(info.tensor_count, c.tensor_count());
    assert_eq!(info.file_bytes, std::fs::metadata(&f.dcz).unwrap().len());
    assert!(info.payload_bytes > 0 && info.payload_bytes < info.file_bytes);
    assert!(info.tool_version.starts_with("deltacome"), "tool_version {:?}", info.tool_version);

    let ft = read_safetensors(&f.finetuned);
    let tensors = c.tensors().unwrap();
    assert!(!tensors.is_empty());
    assert!(tensors.iter().any(|t| t.name == "model.layers.0.self_attn.q_proj.weight"));
    let mut lowrank = 0;
    for t in &tensors {
        let st = ft.get(&t.name).unwrap_or_else(|| panic!("{} is not in the fine-tuned checkpoint", t.name));
        assert_eq!(t.rows, st.shape[0], "{}", t.name);
        assert_eq!(t.cols, if st.shape.len() > 1 { st.shape[1] } else { 1 }, "{}", t.name);
        assert_eq!(t.fp16_bytes, t.rows * t.cols * 2, "{}", t.name);
        assert_eq!(c.find(&t.name).unwrap(), t.index);
        if t.kind == TensorKind::LowRank {
            lowrank += 1;
            assert!(t.rank > 0 && (t.rank as u64) <= t.rows.min(t.cols), "{}", t.name);
            assert!(!t.bands.is_empty());
            assert_eq!(t.bands[0].rank_begin, 0);
            assert_eq!(t.bands.last().unwrap().rank_end, t.rank);
            for w in t.bands.windows(2) {
                assert_eq!(w[0].rank_end, w[1].rank_begin);
                assert!(w[0].bits >= w[1].bits, "bands sorted by descending precision");
            }
            assert!(t.stored_bytes < t.fp16_bytes, "{} is not compressed", t.name);
            let sigma = c.singular_values(t.index).unwrap();
            assert_eq!(sigma.len(), t.rank as usize);
            assert!(sigma.windows(2).all(|w| w[0] >= w[1]) && sigma[sigma.len() - 1] >= 0.0);
        }
    }
    assert!(lowrank >= 7, "expected the q/k/v/o/gate/up/down projections to be low-rank");
    c.verify().unwrap();
}

#[test]
fn open_memory_copied_and_borrowed_give_the_same_container() {
    let f = fixture();
    let bytes = std::fs::read(&f.dcz).unwrap();
    let from_file = Container::open(&f.dcz).unwrap().tensors().unwrap();
    let copied = Container::from_bytes(&bytes).unwrap();
    assert_eq!(copied.tensors().unwrap(), from_file);
    let borrowed = Container::from_borrowed(&bytes).unwrap();
    assert_eq!(borrowed.tensors().unwrap(), from_file);
    borrowed.verify().unwrap();

    // A delta loaded from each gives identical results.
    let ctx = Context::cpu().unwrap();
    let name = &lowrank_tensors(&copied)[0].name;
    let a = dense_delta(&ctx.load(&copied, name).unwrap());
    let b = dense_delta(&ctx.load(&borrowed, name).unwrap());
    assert_eq!(a, b);
}

#[test]
fn find_missing_tensor_names_it() {
    let c = Container::open(&fixture().dcz).unwrap();
    let e = c.find("model.layers.99.nope.weight").unwrap_err();
    assert_eq!(e.status(), Status::NotFound);
    assert!(e.message().contains("model.layers.99.nope.weight"), "{e}");
    let ctx = Context::cpu().unwrap();
    let e = ctx.load(&c, "model.layers.99.nope.weight").unwrap_err();
    assert_eq!(e.status(), Status::NotFound);
}

#[test]
fn merged_delta_approximates_finetuned_minus_base() {
    let f = fixture();
    let c = Container::open(&f.dcz).unwrap();
    let (base, ft) = (read_safetensors(&f.base), read_safetensors(&f.finetuned));
    let ctx = Context::cpu().unwrap();
    for t in lowrank_tensors(&c) {
        let d = ctx.load(&c, &t.name).unwrap();
        assert_eq!((d.info().rows, d.info().cols), (t.rows, t.cols));
        assert_eq!(d.name(), t.name);
        let w_base = base[&t.name].to_f64();
        let w_ft = ft[&t.name].to_f64();
        let exact: Vec<f64> = w_ft.iter().zip(&w_base).map(|(a, b)| a - b).collect();
        let approx = dense_delta(&d);
        let err = rel_err(&approx, &exact);
        assert!(err < COMPRESSION_TOL, "{}: ‖ΔŴ − ΔW‖/‖ΔW‖ = {err}", t.name);

        // Merge into the base weight itself (fp32 and fp16): W becomes ≈ the fine-tuned weight.
        let mut w32: Vec<f32> = w_base.iter().map(|&v| v as f32).collect();
        d.merge(&mut w32, 0, 1.0).unwrap();
        let got: Vec<f64> = to_f64(&w32);
        let merged_delta: Vec<f64> = got.iter().zip(&w_base).map(|(a, b)| a - b).collect();
        assert!(rel_err(&merged_delta, &approx) < FP32_TOL, "{}: merge into base != merge into zero", t.name);
        let mut w16: Vec<F16> = w_base.iter().map(|&v| F16::from_f32(v as f32)).collect();
        d.merge(&mut w16, 0, 1.0).unwrap();
        let got16: Vec<f64> = w16.iter().map(|h| h.to_f32() as f64).collect();
        let err16 = rel_err(&got16.iter().zip(&w_base).map(|(a, b)| a - b).collect::<Vec<_>>(), &exact);
        assert!(err16 < COMPRESSION_TOL + 0.05, "{}: fp16 merge error {err16}", t.name);
    }
}

#[test]
fn apply_matches_float64_references() {
    let f = fixture();
    let c = Container::open(&f.dcz).unwrap();
    let (base, ft) = (read_safetensors(&f.base), read_safetensors(&f.finetuned));
    let ctx = Context::cpu().unwrap();
    let m = 5;
    for t in lowrank_tensors(&c) {
        let d = ctx.load(&c, &t.name).unwrap();
        let (rows, cols) = (t.rows as usize, t.cols as usize);
        let x = inputs(m * cols, t.index);
        let x64 = to_f64(&x);
        let dw = dense_delta(&d);
        let w_base = base[&t.name].to_f64();
        let w_ft = ft[&t.name].to_f64();

        // y += x·ΔWᵀ against the same ΔŴ in float64 (tight) and the exact delta (compression tol).
        let mut y = vec![0f32; m * rows];
        d.apply(m, &x, &mut y).unwrap();
        let want = matmul_t(&x64, &dw, m, rows, cols);
        let err = rel_err(&to_f64(&y), &want);
        assert!(err < FP32_TOL, "{}: apply vs x·ΔŴᵀ: {err}", t.name);
        let exact: Vec<f64> = w_ft.iter().zip(&w_base).map(|(a, b)| a - b).collect();
        let err = rel_err(&to_f64(&y), &matmul_t(&x64, &exact, m, rows, cols));
        assert!(err < COMPRESSION_TOL, "{}: apply vs x·ΔWᵀ: {err}", t.name);

        // Accumulates: a second apply with scale −1 brings y back to zero.
        d.apply_with(m, &x, &mut y, &ApplyOptions { scale: -1.0, ..Default::default() }).unwrap();
        let max = y.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
        assert!((max as f64) < 1e-5 * scale.max(1e-30), "{}: y not back to 0 ({max})", t.name);

        // With the fp16 base weight: y = x·(W_base + ΔŴ)ᵀ, overwriting y; strided x and y.
        let b16: Vec<F16> = base[&t.name].bytes.chunks_exact(2).map(|c| F16(u16::from_le_bytes([c[0], c[1]]))).collect();
        assert_eq!(base[&t.name].dtype, "F16");
        let (ldx, ldy) = (cols + 3, rows + 2);
        let mut xs = vec![0f32; (m - 1) * ldx + cols];
        for r in 0..m {
            xs[r * ldx..r * ldx + cols].copy_from_slice(&x[r * cols..(r + 1) * cols]);
        }
        let mut ys = vec![7f32; (m - 1) * ldy + rows];
        let opts = ApplyOptions { ldx, ldy, base: Some(BaseWeight::new(&b16, 0)), ..Default::default() };
        d.apply_with(m, &xs, &mut ys, &opts).unwrap();
        let w_sum: Vec<f64> = w_base.iter().zip(&dw).map(|(a, b)| a + b).collect();
        let want = matmul_t(&x64, &w_sum, m, rows, cols);
        let got: Vec<f64> = (0..m).flat_map(|r| ys[r * ldy..r * ldy + rows].iter().map(|&v| v as f64)).collect();
        let err = rel_err(&got, &want);
        assert!(err < FP32_TOL, "{}: apply with base: {err}", t.name);
        for r in 0..m - 1 {
            assert!(ys[r * ldy + rows..(r + 1) * ldy].iter().all(|&v| v == 7.0), "stride padding written");
        }
        let err = rel_err(&got, &matmul_t(&x64, &w_ft, m, rows, cols));
        assert!(err < COMPRESSION_TOL, "{}: base+delta vs fine-tuned output: {err}", t.name);

        // fp16 activations in and out.
        let x16: Vec<F16> = x.iter().map(|&v| F16::from_f32(v)).collect();
        let mut y16 = vec![F16::from_f32(0.0); m * rows];
        d.apply(m, &x16, &mut y16).unwrap();
        let want16 = matmul_t(&x16.iter().map(|h| h.to_f32() as f64).collect::<Vec<_>>(), &dw, m, rows, cols);
        let err = rel_err(&y16.iter().map(|h| h.to_f32() as f64).collect::<Vec<_>>(), &want16);
        assert!(err < 2e-3, "{}: fp16 apply: {err}", t.name);
    }
}

#[test]
fn apply_checks_slice_bounds_before_calling() {
    let c = Container::open(&fixture().dcz).unwrap();
    let ctx = Context::cpu().unwrap();
    let t = &lowrank_tensors(&c)[0];
    let d = ctx.load(&c, &t.name).unwrap();
    let (rows, cols) = (t.rows as usize, t.cols as usize);
    let x = vec![0f32; 2 * cols - 1];
    let mut y = vec![0f32; 2 * rows];
    let e = d.apply(2, &x, &mut y).unwrap_err();
    assert_eq!(e.status(), Status::ShapeMismatch);
    let x = vec![0f32; 2 * cols];
    let mut y = vec![0f32; 2 * rows - 1];
    assert_eq!(d.apply(2, &x, &mut y).unwrap_err().status(), Status::ShapeMismatch);
    let mut w = vec![0f32; rows * cols - 1];
    assert_eq!(d.merge(&mut w, 0, 1.0).unwrap_err().status(), Status::ShapeMismatch);
    let opts = ApplyOptions { ldx: cols - 1, ..Default::default() };
    let mut y = vec![0f32; 2 * rows];
    assert_eq!(d.apply_with(2, &x, &mut y, &opts).unwrap_err().status(), Status::ShapeMismatch);
}

#[test]
fn batched_apply_matches_per_row_apply() {
    let c = Container::open(&fixture().dcz).unwrap();
    let ctx = Context::cpu().unwrap();
    // Same-shape deltas: the same projection of different layers stand in for different tenants.
    let q: Vec<_> = lowrank_tensors(&c).into_iter().filter(|t| t.name.ends_with("self_attn.q_proj.weight")).collect();
    assert!(q.len() >= 2, "need two layers");
    let d0 = ctx.load(&c, &q[0].name).unwrap();
    let d1 = ctx.load(&c, &q[1].name).unwrap();
    let (rows, cols) = (q[0].rows as usize, q[0].cols as usize);
    let batch = Batch::new(&[&d0, &d1]).unwrap();
    assert_eq!(batch.len(), 2);
    let slots = [0, 1, -1, 1, 0, 0];
    let m = slots.len();
    let x = inputs(m * cols, 99);
    let mut y = vec![0f32; m * rows];
    batch.apply(&slots, m, &x, &mut y).unwrap();
    for (i, &s) in slots.iter().enumerate() {
        let row = &y[i * rows..(i + 1) * rows];
        if s < 0 {
            assert!(row.iter().all(|&v| v == 0.0), "row {i} has no delta but changed");
            continue;
        }
        let mut want = vec![0f32; rows];
        [&d0, &d1][s as usize].apply(1, &x[i * cols..(i + 1) * cols], &mut want).unwrap();
        let err = rel_err(&to_f64(row), &to_f64(&want));
        assert!(err < FP32_TOL, "row {i} slot {s}: {err}");
    }
    let e = batch.apply(&[0, 2], 2, &x[..2 * cols], &mut y[..2 * rows]).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("row_slot[1] = 2"), "{e}");
}

#[test]
fn load_all_returns_every_tensor_in_order() {
    let c = Container::open(&fixture().dcz).unwrap();
    let ctx = Context::cpu().unwrap();
    let all = ctx.load_all(&c, &LoadOptions::default()).unwrap();
    let names: Vec<String> = c.tensors().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(all.iter().map(|d| d.name().to_string()).collect::<Vec<_>>(), names);
    assert!(all.iter().all(|d| d.info().device_bytes > 0));
}

#[test]
fn containers_are_shared_across_threads_with_a_context_each() {
    let c = Container::open(&fixture().dcz).unwrap();
    let t = lowrank_tensors(&c)[0].clone();
    let x = inputs(2 * t.cols as usize, 5);
    let results: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let ctx = Context::cpu().unwrap();
                    let d = ctx.load(&c, &t.name).unwrap();
                    let mut y = vec![0f32; 2 * t.rows as usize];
                    d.apply(2, &x, &mut y).unwrap();
                    y
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    // A context (with nothing borrowed from it) can move to another thread.
    let ctx = Context::cpu().unwrap();
    std::thread::spawn(move || assert_eq!(ctx.backend(), deltacome::Backend::Cpu)).join().unwrap();
}

/// Byte offsets of the preamble fields used below (docs/FORMAT.md §1).
fn preamble_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn corrupt_payload_fails_verify_and_load_with_checksum_error() {
    let f = fixture();
    let mut bytes = std::fs::read(&f.dcz).unwrap();
    let c = Container::from_bytes(&bytes).unwrap();
    // The first segment is the first tensor's; corrupt a byte inside its zstd frame.
    let payload = preamble_u64(&bytes, 32) as usize;
    let first = c.tensor_info(0).unwrap();
    drop(c);
    let at = payload + corrupt_offset_in_first_segment(&bytes[payload..]);
    bytes[at] ^= 0x5a;
    let path = scratch("corrupt").join("flipped.dcz");
    std::fs::write(&path, &bytes).unwrap();

    let c = Container::open(&path).unwrap(); // payload is not read at open
    let e = c.verify().unwrap_err();
    assert!(matches!(e.status(), Status::Checksum | Status::Decompress), "{e}");
    assert!(e.message().contains(&first.name), "message should name the tensor: {e}");
    let ctx = Context::cpu().unwrap();
    let e2 = ctx.load(&c, &first.name).unwrap_err();
    assert_eq!(e2.status(), e.status(), "{e2}");
    assert!(e2.message().contains(&first.name), "{e2}");
    // load_all fails as a whole.
    assert!(ctx.load_all(&c, &LoadOptions::default()).is_err());
}

/// An offset inside the first zstd frame's compressed data that changes the decoded bytes: the
/// middle of the frame's first block, past the frame header.
fn corrupt_offset_in_first_segment(payload: &[u8]) -> usize {
    assert_eq!(&payload[..4], &[0x28, 0xb5, 0x2f, 0xfd], "payload must start with a zstd frame");
    let fhd = payload[4];
    let single_segment = (fhd >> 5) & 1;
    let did_size = [0, 1, 2, 4][(fhd & 3) as usize];
    let fcs_size = match fhd >> 6 { 0 => single_segment as usize, 1 => 2, 2 => 4, _ => 8 };
    let header = 4 + 1 + (1 - single_segment as usize) + did_size + fcs_size;
    let bh = u32::from_le_bytes([payload[header], payload[header + 1], payload[header + 2], 0]);
    let block_type = (bh >> 1) & 3;
    let block_size = (bh >> 3) as usize;
    match block_type {
        1 => header + 3, // RLE block: its one byte is repeated block_size times
        _ => {
            assert!(block_size > 2, "first block of {block_size} bytes");
            header + 3 + block_size / 2
        }
    }
}

#[test]
fn corrupt_manifest_fails_open_with_checksum_error() {
    let f = fixture();
    let mut bytes = std::fs::read(&f.dcz).unwrap();
    let manifest_offset = preamble_u64(&bytes, 16) as usize;
    let manifest_size = preamble_u64(&bytes, 24) as usize;
    bytes[manifest_offset + manifest_size / 2] ^= 0x01;
    let e = Container::from_bytes(&bytes).unwrap_err();
    assert_eq!(e.status(), Status::Checksum, "{e}");
    assert!(!e.message().is_empty());
}

#[test]
fn truncated_and_missing_files_fail_with_a_message() {
    let f = fixture();
    let bytes = std::fs::read(&f.dcz).unwrap();
    let dir = scratch("truncated");
    for cut in [bytes.len() - 1, bytes.len() / 2, 40] {
        let path = dir.join(format!("cut{cut}.dcz"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = Container::open(&path).unwrap_err();
        assert!(matches!(e.status(), Status::Truncated | Status::Corrupt), "cut at {cut}: {e}");
        assert!(!e.message().is_empty(), "cut at {cut}: empty message");
        assert!(Container::from_bytes(&bytes[..cut]).is_err());
    }
    let e = Container::open(dir.join("does-not-exist.dcz")).unwrap_err();
    assert_eq!(e.status(), Status::Io);
    assert!(e.message().contains("does-not-exist.dcz"), "{e}");
    let e = Container::from_bytes(b"not a container at all, just some text that is long enough").unwrap_err();
    assert!(matches!(e.status(), Status::BadMagic | Status::Truncated), "{e}");
    assert_eq!(format!("{e}"), format!("{}: {}", e.status().name(), e.message()));
}
