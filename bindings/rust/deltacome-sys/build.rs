//! Finds libdeltacome for the linker. No third-party crates: pkg-config is run as a program.
//!
//! Order:
//!   1. `DELTACOME_DIR=<prefix>`: headers in <prefix>/include, library in <prefix>/lib (or lib64,
//!      lib/<multiarch>). Static linking then reads the private libraries from the prefix's
//!      deltacome.pc when it is there.
//!   2. otherwise `pkg-config --libs --cflags deltacome` (`PKG_CONFIG` names another binary;
//!      `PKG_CONFIG_PATH` is honoured by pkg-config itself).
//! `DELTACOME_STATIC=1` links libdeltacome.a and its dependencies (pkg-config --static).
//!
//! Exported to dependent build scripts (`links = "deltacome"`): DEP_DELTACOME_INCLUDE,
//! DEP_DELTACOME_LIBDIR, DEP_DELTACOME_ROOT (when known).
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Found {
    include_dirs: Vec<PathBuf>,
    lib_dirs: Vec<PathBuf>,
    libs: Vec<String>,
    root: Option<PathBuf>,
}

fn main() {
    for var in [
        "DELTACOME_DIR",
        "DELTACOME_STATIC",
        "PKG_CONFIG",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "PKG_CONFIG_SYSROOT_DIR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let want_static = env::var("DELTACOME_STATIC").map(|v| !v.is_empty() && v != "0").unwrap_or(false);

    let found = match env::var_os("DELTACOME_DIR") {
        Some(dir) => from_prefix(Path::new(&dir), want_static),
        None => match from_pkg_config(None, want_static) {
            Ok(found) => found,
            Err(why) => panic!(
                "deltacome-sys: cannot find libdeltacome.\n  pkg-config: {why}\n  \
                 Install deltacome (cmake --install <build> --prefix <dir>) and set \
                 DELTACOME_DIR=<dir>, or add <dir>/lib/pkgconfig to PKG_CONFIG_PATH."
            ),
        },
    };

    for dir in &found.lib_dirs {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for lib in &found.libs {
        if lib == "deltacome" {
            let kind = if want_static { "static" } else { "dylib" };
            println!("cargo:rustc-link-lib={kind}=deltacome");
        } else {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
    if let Some(inc) = found.include_dirs.first() {
        println!("cargo:include={}", inc.display());
        // For this crate's own tests (tests/layout.rs compiles a C probe against the header).
        println!("cargo:rustc-env=DELTACOME_SYS_INCLUDE_DIR={}", inc.display());
    }
    if let Some(lib) = found.lib_dirs.first() {
        println!("cargo:libdir={}", lib.display());
    }
    if let Some(root) = &found.root {
        println!("cargo:root={}", root.display());
    }
}

/// Layout of an installed prefix (cmake --install).
fn from_prefix(prefix: &Path, want_static: bool) -> Found {
    let file = if want_static { "libdeltacome.a" } else { "libdeltacome.so" };
    let candidates = [
        prefix.join("lib"),
        prefix.join("lib64"),
        prefix.join("lib").join(format!("{}-linux-gnu", env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default())),
    ];
    let lib_dir = match candidates.iter().find(|d| d.join(file).exists()) {
        Some(dir) => dir.clone(),
        None => {
            println!(
                "cargo:warning=deltacome-sys: no {file} under {}/lib*; linking will fail",
                prefix.display()
            );
            candidates[0].clone()
        }
    };
    let pc = lib_dir.join("pkgconfig").join("deltacome.pc");
    if want_static && pc.exists() {
        // The .pc file knows the private dependencies; use it by path.
        match from_pkg_config(Some(&pc), true) {
            Ok(mut found) => {
                found.root = Some(prefix.to_path_buf());
                found.lib_dirs.insert(0, lib_dir);
                found.include_dirs.insert(0, prefix.join("include"));
                return found;
            }
            Err(why) => println!("cargo:warning=deltacome-sys: {}: {why}", pc.display()),
        }
    }
    let mut libs = vec!["deltacome".to_string()];
    if want_static {
        for lib in ["zstd", "xxhash", "lapacke", "lapack", "blas", "stdc++", "m", "pthread", "dl"] {
            libs.push(lib.to_string());
        }
    }
    Found {
        include_dirs: vec![prefix.join("include")],
        lib_dirs: vec![lib_dir],
        libs,
        root: Some(prefix.to_path_buf()),
    }
}

/// Runs `pkg-config [--static] --cflags --libs <module>` and keeps -I, -L and -l.
fn from_pkg_config(pc_file: Option<&Path>, want_static: bool) -> Result<Found, String> {
    let program = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let mut cmd = Command::new(&program);
    if want_static {
        cmd.arg("--static");
    }
    cmd.args(["--cflags", "--libs"]);
    match pc_file {
        Some(path) => cmd.arg(path),
        None => cmd.arg("deltacome"),
    };
    let out = cmd.output().map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8(out.stdout).map_err(|_| "pkg-config output is not UTF-8".to_string())?;
    let mut found = Found { include_dirs: vec![], lib_dirs: vec![], libs: vec![], root: None };
    for token in text.split_whitespace() {
        if let Some(dir) = token.strip_prefix("-I") {
            found.include_dirs.push(PathBuf::from(dir));
        } else if let Some(dir) = token.strip_prefix("-L") {
            found.lib_dirs.push(PathBuf::from(dir));
        } else if let Some(lib) = token.strip_prefix("-l") {
            if !found.libs.iter().any(|l| l == lib) {
                found.libs.push(lib.to_string());
            }
        }
    }
    if !found.libs.iter().any(|l| l == "deltacome") {
        return Err(format!("pkg-config output has no -ldeltacome: {}", text.trim()));
    }
    if found.include_dirs.is_empty() {
        // pkg-config drops -I/usr/include; the header is then in the default path.
        found.include_dirs.push(PathBuf::from("/usr/include"));
    }
    Ok(found)
}
