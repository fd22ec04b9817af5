#!/usr/bin/env bash
# Installs the Debian packages deltacome needs to build and test (CPU build).
# Run by the Makefile when a dependency is missing. As root it runs apt-get; otherwise it prints
# the exact command to run and exits non-zero.
#   tools/install-deps.sh            core build + tests
#   tools/install-deps.sh --go       also the Go toolchain (bindings tests)
#   tools/install-deps.sh --hip      also Debian's ROCm 5.2 HIP compiler (DC_HIP build)
set -euo pipefail
pkgs=(cmake make g++ pkg-config libzstd-dev zstd libflatbuffers-dev flatbuffers-compiler libxxhash-dev
      nlohmann-json3-dev liblapacke-dev libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev
      python3 python3-numpy clang libclang-rt-14-dev)
for a in "$@"; do
  case "$a" in
    --go) pkgs+=(golang-go) ;;
    --hip) pkgs+=(hipcc libamdhip64-dev rocm-device-libs) ;;
    *) echo "install-deps.sh: unknown option '$a'" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" != 0 ]; then
  echo "deltacome needs these Debian packages: ${missing[*]}" >&2
  echo "run as root:  apt-get update && $cmd" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
$cmd >/dev/null
