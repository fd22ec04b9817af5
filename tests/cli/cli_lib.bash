# Helpers shared by the CLI tests, sourced by each tests/cli/*.sh (named .bash so that the
# tests/CMakeLists.txt glob over *.sh does not run it as a test). Each test: bash NAME.sh CLI SCRATCH_DIR
set -u
CLI=${1:?usage: $0 CLI SCRATCH_DIR}
DIR=${2:?usage: $0 CLI SCRATCH_DIR}
rm -rf "$DIR" && mkdir -p "$DIR"
FAILED=0
CHECKS=0

fail() {
  echo "FAIL: $*" >&2
  FAILED=$((FAILED + 1))
}

# expect_error NAME EXIT_CODE PATTERN -- ARGS...: the CLI must exit with EXIT_CODE and print exactly
# one line on stderr that starts with "deltacome" and matches PATTERN (grep -E -i). (stdout may hold
# what succeeded before the failure, e.g. verify's checksum line before a --base mismatch.)
expect_error() {
  local name=$1 code=$2 pattern=$3
  shift 4
  CHECKS=$((CHECKS + 1))
  local err rc
  "$CLI" "$@" >"$DIR/stdout" 2>"$DIR/stderr"; rc=$?
  err=$(cat "$DIR/stderr")
  if [ "$rc" -ne "$code" ]; then fail "$name: exit code $rc, expected $code (stderr: $err)"; return; fi
  if [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ] || [ -z "$err" ]; then fail "$name: stderr is not one line: $err"; return; fi
  case "$err" in deltacome*) ;; *) fail "$name: message does not start with 'deltacome': $err" ;; esac
  if ! printf '%s' "$err" | grep -E -i -q "$pattern"; then fail "$name: message does not match /$pattern/: $err"; fi
  echo "ok: $name -> $err"
}

# expect_ok NAME -- ARGS...: exit code 0.
expect_ok() {
  local name=$1
  shift 2
  CHECKS=$((CHECKS + 1))
  if ! "$CLI" "$@" >"$DIR/stdout" 2>"$DIR/stderr"; then
    fail "$name: exit code $? (stderr: $(cat "$DIR/stderr"))"
    return 1
  fi
  echo "ok: $name"
}

# flip_byte FILE OFFSET: XORs one byte with 0x01, in place.
flip_byte() {
  local v
  v=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((v ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# le64 FILE OFFSET: a little-endian uint64 field.
le64() {
  od -An -tu8 -j "$2" -N8 --endian=little "$1" | tr -d ' '
}

# make_pair NAME SEED: DIR/NAME/{base,finetuned}.safetensors and DIR/NAME/d.dcz
make_pair() {
  "$CLI" make-demo --out "$DIR/$1" --layers 1 --hidden 64 --seed "$2" >/dev/null &&
    "$CLI" compress --base "$DIR/$1/base.safetensors" --finetuned "$DIR/$1/finetuned.safetensors" \
      -o "$DIR/$1/d.dcz" --quiet >/dev/null
}

finish() {
  if [ "$FAILED" -ne 0 ]; then
    echo "$FAILED of $CHECKS checks failed" >&2
    exit 1
  fi
  echo "all $CHECKS checks passed"
  exit 0
}
