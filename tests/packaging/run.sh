#!/usr/bin/env bash
# Packaging test: installs a built tree into a temporary prefix and uses it the way downstream
# projects do.
#   tests/packaging/run.sh <build-dir>
#
#  1. cmake --install <build-dir> --prefix <tmp>; checks the files and the SONAME
#  2. fixtures made with the installed CLI (make-demo + compress + inspect; the same pair compressed
#     with --scheme bitdelta too: a second variant of the base, for the pool tests)
#  3. the C example built against the install with find_package(deltacome) (shared and static
#     targets) and with pkg-config (shared, and static via --static), then run
#  4. cargo test --offline (Rust crates, experimental pool module included; DELTACOME_DIR, then
#     pkg-config for deltacome-sys)
#  5. go test (cgo + pkg-config; pool tests included)
#  6. python3 -m unittest (ctypes binding: test_deltacome, test_pool)
#  7. the code blocks of docs/bindings.md are the tested sources (check_snippets.py)
# DC_PACKAGING_SKIP="rust go python" skips those parts (for machines without the toolchain).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 <build-dir>" >&2; exit 2; }
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd)
skip=" ${DC_PACKAGING_SKIP:-} "
work=$(mktemp -d "${TMPDIR:-/tmp}/deltacome-packaging.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
fix=$work/fixtures
step() { printf '\n== packaging: %s\n' "$*"; }
fail() { echo "packaging: FAILED: $*" >&2; exit 1; }

step "install into $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
libdir=$prefix/lib
[ -d "$libdir/cmake/deltacome" ] || libdir=$(dirname "$(find "$prefix" -name deltacomeConfig.cmake -path '*cmake/deltacome/*' | head -1)")/../..
for f in include/deltacome/deltacome.h include/deltacome/dc_errors.h include/deltacome/dc_pool.h bin/deltacome; do
  [ -e "$prefix/$f" ] || fail "$f is not installed"
done
for f in libdeltacome.so libdeltacome.so.0 libdeltacome.a cmake/deltacome/deltacomeConfig.cmake \
         cmake/deltacome/deltacomeConfigVersion.cmake cmake/deltacome/deltacomeTargets.cmake pkgconfig/deltacome.pc; do
  [ -e "$libdir/$f" ] || fail "lib/$f is not installed"
done
soname=$(objdump -p "$libdir/libdeltacome.so" | awk '$1 == "SONAME" { print $2 }')
[ "$soname" = "libdeltacome.so.0" ] || fail "SONAME is '$soname', want libdeltacome.so.0"
for mod in deltacome-cuda deltacome-hip; do
  if grep -q "$mod" "$build/CMakeCache.txt" 2>/dev/null && ls "$build"/*"$mod"*.so >/dev/null 2>&1; then
    ls "$libdir"/*"$mod"*.so >/dev/null 2>&1 || fail "$mod was built but not installed"
  fi
done
echo "installed: $(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
export DELTACOME_DIR=$prefix DELTACOME_CLI=$prefix/bin/deltacome DELTACOME_FIXTURES=$fix

step "fixtures with the installed CLI"
mkdir -p "$fix"
"$DELTACOME_CLI" make-demo --out "$fix" --layers 2 --hidden 128 --seed 7 >/dev/null
"$DELTACOME_CLI" compress --quiet --base "$fix/base.safetensors" --finetuned "$fix/finetuned.safetensors" \
  -o "$fix/model.dcz" >/dev/null
"$DELTACOME_CLI" compress --quiet --scheme bitdelta --base "$fix/base.safetensors" \
  --finetuned "$fix/finetuned.safetensors" -o "$fix/bitdelta.dcz" >/dev/null
"$DELTACOME_CLI" inspect "$fix/model.dcz" | tail -1

step "C example via find_package(deltacome): deltacome::deltacome and deltacome::deltacome_static"
cmake -S "$src/examples/downstream" -B "$work/downstream" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >"$work/downstream.log" || { cat "$work/downstream.log"; fail "configure downstream"; }
cmake --build "$work/downstream" >>"$work/downstream.log" 2>&1 || { cat "$work/downstream.log"; fail "build downstream"; }
"$work/downstream/apply_one_layer_shared" "$fix/model.dcz"
"$work/downstream/apply_one_layer_static" "$fix/model.dcz" model.layers.1.mlp.down_proj.weight
# grep without -q reads all of ldd's output: with -q it may exit first, and ldd's SIGPIPE then
# fails the pipeline under pipefail (a flaky failure seen in a fresh-clone run).
ldd "$work/downstream/apply_one_layer_shared" | grep 'libdeltacome.so.0' >/dev/null || fail "shared example does not use libdeltacome.so.0"
! ldd "$work/downstream/apply_one_layer_static" | grep libdeltacome >/dev/null || fail "static example links libdeltacome.so"

step "C example via pkg-config"
cc=${CC:-cc}
# shellcheck disable=SC2046
$cc -std=c99 -Wall -Werror -o "$work/apply_pc" "$src/examples/00_apply_one_layer.c" \
  $(pkg-config --cflags --libs deltacome) -lm
"$work/apply_pc" "$fix/model.dcz" model.layers.0.self_attn.q_proj.weight
static_libs=$(pkg-config --static --libs deltacome | sed 's/-ldeltacome\b/-l:libdeltacome.a/')
# shellcheck disable=SC2086
$cc -std=c99 -Wall -Werror -o "$work/apply_pc_static" "$src/examples/00_apply_one_layer.c" \
  $(pkg-config --cflags deltacome) $static_libs -lm
! ldd "$work/apply_pc_static" | grep libdeltacome >/dev/null || fail "pkg-config --static build links libdeltacome.so"
"$work/apply_pc_static" "$fix/model.dcz"

if [[ $skip != *" rust "* ]]; then
  step "Rust: cargo test --offline (DELTACOME_DIR=$prefix)"
  command -v cargo >/dev/null || fail "cargo not found (DC_PACKAGING_SKIP=rust to skip)"
  export CARGO_TARGET_DIR=$build/packaging-cargo  # kept between runs: incremental
  (cd "$src/bindings/rust" && cargo test --offline --quiet)
  step "Rust: deltacome-sys found through pkg-config"
  (cd "$src/bindings/rust" && env -u DELTACOME_DIR cargo test --offline --quiet -p deltacome-sys)
fi

if [[ $skip != *" go "* ]]; then
  step "Go: go test (cgo, pkg-config)"
  command -v go >/dev/null || fail "go not found (tools/install-deps.sh --go, or DC_PACKAGING_SKIP=go)"
  # Go's build cache keys cgo packages on CGO_* variables but not on pkg-config's output, and this
  # prefix is new every run: naming it in CGO_LDFLAGS keeps a cached build from linking a stale one.
  (cd "$src/bindings/go" && export GOFLAGS= GOPROXY=off CGO_CFLAGS="-I$prefix/include" CGO_LDFLAGS="-L$libdir" &&
    go vet ./... && go test -count=1 ./...)
fi

if [[ $skip != *" python "* ]]; then
  step "Python: python3 -m unittest (ctypes + numpy)"
  py=""
  for cand in ${PYTHON:-} /usr/bin/python3 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import numpy' 2>/dev/null; then py=$cand; break; fi
  done
  [ -n "$py" ] || fail "no python3 with numpy (apt-get install python3-numpy, or DC_PACKAGING_SKIP=python)"
  (cd "$src/bindings/python" && PYTHONDONTWRITEBYTECODE=1 "$py" -m unittest -q test_deltacome test_pool)
fi

step "docs/bindings.md code blocks match the tested sources"
python3 "$src/tests/packaging/check_snippets.py" "$src"

echo
echo "packaging: all passed"
