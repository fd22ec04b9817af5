#!/usr/bin/env bash
# Bad input to the CLI: every case exits non-zero (1: bad file, 2: bad usage) with one line on
# stderr naming the problem, and writes nothing.
. "$(dirname "$0")/cli_lib.bash"

make_pair a 1 || { echo "FAIL: cannot make the fixture" >&2; exit 1; }
make_pair b 2 || { echo "FAIL: cannot make the second fixture" >&2; exit 1; }
D=$DIR/a/d.dcz

# Files that are not there or not containers.
expect_error "missing file" 1 "cannot open .*no-such\.dcz" -- verify "$DIR/no-such.dcz"
expect_error "directory" 1 "not a readable regular file" -- verify "$DIR/a"
expect_error "wrong magic (a safetensors file)" 1 "bad magic" -- verify "$DIR/a/base.safetensors"
: >"$DIR/empty.dcz"
expect_error "empty file" 1 "ends inside the .*preamble" -- verify "$DIR/empty.dcz"
printf 'hello' >"$DIR/text.dcz"
expect_error "short text file" 1 "bad magic" -- inspect "$DIR/text.dcz"

# Truncated: inside the preamble, inside the manifest, inside the payload, one byte short.
size=$(stat -c %s "$D")
payload=$(le64 "$D" 32)
for cut in 40 200 $((payload + 100)) $((size - 1)); do
  head -c "$cut" "$D" >"$DIR/cut.dcz"
  expect_error "truncated to $cut bytes" 1 "ends (inside|before)" -- verify "$DIR/cut.dcz"
done
# Extended: bytes after the payload (a polyglot or a botched concatenation).
{ cat "$D"; printf 'X'; } >"$DIR/long.dcz"
expect_error "one trailing byte" 1 "trailing bytes" -- verify "$DIR/long.dcz"

# Flipped bytes: the preamble (header checksum), the manifest (manifest checksum), the payload
# (segment XXH3 at verify), padding (must be zero).
for spec in "20:preamble checksum mismatch" "100:manifest checksum mismatch" \
            "$((payload + 5000)):checksum mismatch \(XXH3 [0-9a-f]{16}, the manifest says"; do
  off=${spec%%:*}
  cp "$D" "$DIR/flip.dcz"
  flip_byte "$DIR/flip.dcz" "$off"
  expect_error "flipped byte at $off" 1 "${spec#*:}" -- verify "$DIR/flip.dcz"
done
# The same payload damage is also refused by merge (it loads with checksums on) and leaves no output.
cp "$D" "$DIR/flip.dcz"
flip_byte "$DIR/flip.dcz" $((payload + 5000))
expect_error "merge of a damaged delta" 1 "XXH3" -- \
  merge --base "$DIR/a/base.safetensors" --delta "$DIR/flip.dcz" -o "$DIR/out1.safetensors" --quiet
[ -e "$DIR/out1.safetensors" ] && fail "merge of a damaged delta left an output file"

# Wrong base: another model with the same tensor names and shapes, different values.
expect_error "verify --base with the wrong base" 1 "base mismatch|differs from the base" -- \
  verify "$D" --base "$DIR/b/base.safetensors"
expect_error "merge refuses the wrong base" 1 "differs from the base" -- \
  merge --base "$DIR/b/base.safetensors" --delta "$D" -o "$DIR/out2.safetensors" --quiet
[ -e "$DIR/out2.safetensors" ] && fail "merge with the wrong base left an output file"
expect_error "verify --base with a missing base" 1 "cannot open" -- verify "$D" --base "$DIR/nothing.safetensors"
expect_error "verify --base with a damaged base" 1 "cut\.dcz': header of [0-9]+ bytes exceeds" -- verify "$D" --base "$DIR/cut.dcz"
ls "$DIR" | grep -q '\.tmp' && fail "a temporary file was left behind: $(ls "$DIR")"

# Usage errors: exit code 2.
expect_error "unknown option" 2 "unknown option --frobnicate" -- verify "$D" --frobnicate=1
expect_error "unknown option (merge)" 2 "unknown option --bsae" -- merge --bsae x --delta "$D" -o "$DIR/o.safetensors"
expect_error "unknown command" 2 "unknown command 'frobnicate'" -- frobnicate
expect_error "missing required option" 2 "missing required option --delta" -- merge --base "$DIR/a/base.safetensors" -o "$DIR/o.safetensors"
expect_error "verify without a file" 2 "usage" -- verify
expect_error "non-numeric number" 2 "expects a number" -- make-demo --out "$DIR/x" --layers many
finish
