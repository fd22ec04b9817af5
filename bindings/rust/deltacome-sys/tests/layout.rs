//! Checks that the hand-written declarations match the installed headers (deltacome.h and the
//! experimental dc_pool.h):
//! - a C probe, compiled with the system C compiler against the header, prints sizeof and
//!   offsetof for every struct and field, and the values of every constant; the Rust side must agree;
//! - every DC_API function in the headers is declared in src/lib.rs and vice versa;
//! - every declared function resolves at link time (addresses taken below).
use deltacome_sys::*;
use std::mem::{offset_of, size_of};
use std::process::Command;

const HEADER_DIR: &str = env!("DELTACOME_SYS_INCLUDE_DIR");

/// (C expression, value the Rust declarations give)
fn expectations() -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = Vec::new();
    macro_rules! layout {
        ($t:ident { $($f:ident),* }) => {
            v.push((format!("sizeof({})", stringify!($t)), size_of::<$t>() as u64));
            $( v.push((format!("offsetof({}, {})", stringify!($t), stringify!($f)),
                       offset_of!($t, $f) as u64)); )*
        };
    }
    layout!(dc_open_options { struct_size, flags, max_manifest_bytes, max_segment_bytes });
    layout!(dc_container_info { struct_size, format_major, format_minor, tensor_count, file_bytes,
        payload_bytes, model_name, base_model_name, tool_version, recipe_json });
    layout!(dc_band_info { bits, rank_begin, rank_end, group_size });
    layout!(dc_tensor_info { struct_size, name, rows, cols, kind, dtype, rank, band_count, bands,
        has_act_order, stored_bytes, packed_bytes, fp16_bytes });
    layout!(dc_context_options { struct_size, backend, device, num_threads });
    layout!(dc_shard { split, index, count, begin, end });
    layout!(dc_load_options { struct_size, flags, stream, shard });
    layout!(dc_delta_info { struct_size, rows, cols, kind, device_bytes, split, shard_begin,
        shard_end, name });
    layout!(dc_apply_params { struct_size, flags, m, x, x_dtype, ldx, y, y_dtype, ldy, base_weight,
        base_dtype, ld_base, scale, stream, workspace, workspace_bytes });
    // dc_pool.h (experimental)
    layout!(dc_pool_options { struct_size, load_flags, device_budget_bytes, host_threads, reserved });
    layout!(dc_pool_stats { struct_size, reserved, budget_bytes, resident_bytes, resident_deltas,
        referenced_deltas, hits, misses, loads, evictions, prefetch_loaded, prefetch_dropped,
        prefetch_pending, batch_builds, slot_uploads });
    macro_rules! consts {
        ($($c:ident),*) => { $( v.push((stringify!($c).to_string(), $c as u64)); )* };
    }
    consts!(DC_VERSION_MAJOR, DC_VERSION_MINOR, DC_VERSION_PATCH, DC_VERSION_NUMBER, DC_FORMAT_MAJOR,
        DC_FORMAT_MINOR, DC_OK, DC_ERR_INVALID_ARGUMENT, DC_ERR_IO, DC_ERR_BAD_MAGIC,
        DC_ERR_UNSUPPORTED_VERSION, DC_ERR_TRUNCATED, DC_ERR_CORRUPT, DC_ERR_CHECKSUM,
        DC_ERR_OVERFLOW, DC_ERR_LIMIT, DC_ERR_NOT_FOUND, DC_ERR_OUT_OF_MEMORY, DC_ERR_BASE_MISMATCH,
        DC_ERR_UNSUPPORTED, DC_ERR_BACKEND, DC_ERR_SHAPE_MISMATCH, DC_ERR_DUPLICATE, DC_ERR_OVERLAP,
        DC_ERR_DECOMPRESS, DC_ERR_BUDGET, DC_ERR_BUSY, DC_ERR_INTERNAL, DC_DTYPE_F32, DC_DTYPE_F16,
        DC_DTYPE_BF16, DC_KIND_LOWRANK, DC_KIND_BITDELTA, DC_KIND_DENSE, DC_BACKEND_AUTO,
        DC_BACKEND_CPU, DC_BACKEND_CUDA, DC_BACKEND_HIP, DC_SHARD_NONE, DC_SHARD_ROWS,
        DC_SHARD_COLS, DC_OPEN_NO_MMAP, DC_OPEN_TRUSTED, DC_OPEN_BORROW_MEMORY,
        DC_LOAD_VERIFY_CHECKSUM, DC_LOAD_SKIP_CHECKSUM, DC_APPLY_INCLUDE_BASE, DC_MAX_BANDS,
        DC_POOL_ABSENT, DC_POOL_DECODING, DC_POOL_DECODED, DC_POOL_RESIDENT);
    // enum sizes: the aliases are u32
    for e in ["dc_status", "dc_dtype", "dc_tensor_kind", "dc_backend", "dc_shard_split", "dc_pool_entry_state"] {
        v.push((format!("sizeof({e})"), 4));
    }
    v
}

#[test]
fn struct_layouts_and_constants_match_the_header() {
    let exp = expectations();
    let mut src = String::from("#include <stddef.h>\n#include <stdio.h>\n#include <deltacome/deltacome.h>\n#include <deltacome/dc_pool.h>\nint main(void) {\n");
    for (expr, _) in &exp {
        src.push_str(&format!("  printf(\"%llu\\n\", (unsigned long long)({expr}));\n"));
    }
    src.push_str("  return 0;\n}\n");
    let dir = std::env::temp_dir().join(format!("deltacome-sys-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c_file = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(&c_file, src).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-o"])
        .arg(&exe)
        .arg(&c_file)
        .arg(format!("-I{HEADER_DIR}"))
        .status()
        .expect("run the C compiler ($CC or cc)");
    assert!(status.success(), "the C layout probe did not compile");
    let out = Command::new(&exe).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let got: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(got.len(), exp.len());
    let mismatches: Vec<String> = exp
        .iter()
        .zip(&got)
        .filter(|((_, rust), c)| rust != *c)
        .map(|((expr, rust), c)| format!("{expr}: C {c}, Rust {rust}"))
        .collect();
    std::fs::remove_dir_all(&dir).ok();
    assert!(mismatches.is_empty(), "layout mismatches:\n{}", mismatches.join("\n"));
}

/// Function names declared with DC_API in the headers, and with `pub fn` in src/lib.rs.
#[test]
fn every_header_function_is_declared() {
    let mut header = String::new();
    for h in ["deltacome.h", "dc_pool.h"] {
        header += &std::fs::read_to_string(format!("{HEADER_DIR}/deltacome/{h}")).unwrap();
    }
    let mut in_header: Vec<String> = Vec::new();
    // Declarations may span lines: take each "DC_API ... name(" up to the parenthesis.
    for chunk in header.split("DC_API ").skip(1) {
        if chunk.starts_with('\n') || chunk.starts_with("__") {
            continue; // the macro definition itself
        }
        let before_paren = match chunk.find('(') {
            Some(p) => &chunk[..p],
            None => continue,
        };
        if let Some(name) = before_paren.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|s| !s.is_empty()).last() {
            if name.starts_with("dc_") {
                in_header.push(name.to_string());
            }
        }
    }
    let rust = include_str!("../src/lib.rs");
    let in_rust: Vec<String> = rust
        .split("pub fn ")
        .skip(1)
        .filter_map(|s| s.split('(').next())
        .filter(|n| n.starts_with("dc_"))
        .map(str::to_string)
        .collect();
    assert!(in_header.len() >= 42, "parsed only {} functions from the headers", in_header.len());
    assert!(in_header.iter().any(|f| f == "dc_pool_apply_batched"), "dc_pool.h was not parsed");
    for f in &in_header {
        assert!(in_rust.contains(f), "{f} is in the headers but not declared in deltacome-sys");
    }
    for f in &in_rust {
        assert!(in_header.contains(f), "{f} is declared in deltacome-sys but not in the headers");
    }
}

#[test]
fn every_function_links_and_version_matches() {
    let fns: [*const (); 49] = [
        dc_version as *const (), dc_version_string as _, dc_status_string as _,
        dc_last_error_message as _, dc_backend_available as _, dc_backend_name as _,
        dc_open_options_init as _, dc_container_open as _, dc_container_open_memory as _,
        dc_container_close as _, dc_container_get_info as _, dc_container_tensor_count as _,
        dc_container_tensor_info as _, dc_container_find_tensor as _,
        dc_container_singular_values as _, dc_container_verify as _,
        dc_container_check_base_tensor as _, dc_container_check_base_file as _,
        dc_context_options_init as _, dc_context_create as _, dc_context_destroy as _,
        dc_context_backend as _, dc_load_options_init as _, dc_delta_load as _,
        dc_delta_load_index as _, dc_delta_load_all as _, dc_delta_free as _,
        dc_delta_get_info as _, dc_apply_params_init as _, dc_apply_workspace_size as _,
        dc_apply_delta_linear as _, dc_merge_delta as _, dc_delta_batch_create as _,
        dc_delta_batch_free as _, dc_apply_delta_linear_batched as _, dc_version as _,
        dc_status_string as _,
        // dc_pool.h
        dc_pool_options_init as _, dc_pool_create as _, dc_pool_destroy as _, dc_pool_register as _,
        dc_pool_unregister as _, dc_pool_acquire as _, dc_pool_release as _, dc_pool_prefetch as _,
        dc_pool_wait as _, dc_pool_query as _, dc_pool_get_stats as _, dc_pool_apply_batched as _,
    ];
    assert!(fns.iter().all(|f| !f.is_null()));
    assert_eq!(unsafe { dc_version() }, DC_VERSION_NUMBER);
    // The init functions must write struct_size = sizeof (the library knows our struct size).
    let mut o = dc_apply_params::zeroed();
    o.struct_size = 0;
    unsafe { dc_apply_params_init(&mut o) };
    assert_eq!(o.struct_size as usize, size_of::<dc_apply_params>());
    assert_eq!(o.scale, 1.0);
    let mut po = dc_pool_options::zeroed();
    po.struct_size = 0;
    unsafe { dc_pool_options_init(&mut po) };
    assert_eq!(po.struct_size as usize, size_of::<dc_pool_options>());
    assert_eq!(po.device_budget_bytes, 1 << 30);
}
