#!/usr/bin/env bash
# make-demo -> compress -> inspect --json -> verify (+ --base) -> merge, and the merged model is the
# fine-tuned one within quantization error (eval), no longer the base (its fingerprint differs).
. "$(dirname "$0")/cli_lib.bash"

expect_ok "make-demo" -- make-demo --out "$DIR/m" --layers 1 --hidden 64 --seed 1
expect_ok "compress" -- compress --base "$DIR/m/base.safetensors" --finetuned "$DIR/m/finetuned.safetensors" \
  -o "$DIR/m/d.dcz" --quiet
[ -s "$DIR/m/d.dcz" ] || fail "compress wrote no file"
ls "$DIR/m" | grep -q 'tmp' && fail "compress left a temporary file: $(ls "$DIR/m")"

if expect_ok "inspect --json" -- inspect "$DIR/m/d.dcz" --json; then
  cp "$DIR/stdout" "$DIR/inspect.json"
  if command -v python3 >/dev/null; then
    CHECKS=$((CHECKS + 1))
    python3 - "$DIR/inspect.json" <<'PY' || fail "inspect --json: not the expected JSON"
import json, sys
d = json.load(open(sys.argv[1]))
names = [t["name"] for t in d["tensors"]]
assert len(names) == 12, names
assert d["format"] == "1.0", d["format"]
assert any(t["kind"] == "low-rank" for t in d["tensors"])
assert d["file_bytes"] > 0 and d["stored_bytes"] > 0
PY
  else
    grep -q '"tensors"' "$DIR/inspect.json" || fail "inspect --json has no tensors"
  fi
fi
expect_ok "inspect" -- inspect "$DIR/m/d.dcz"
expect_ok "verify" -- verify "$DIR/m/d.dcz"
grep -q "checksums OK" "$DIR/stdout" || fail "verify printed: $(cat "$DIR/stdout")"
expect_ok "verify --base" -- verify "$DIR/m/d.dcz" --base "$DIR/m/base.safetensors"
grep -q "matches the fingerprint" "$DIR/stdout" || fail "verify --base printed: $(cat "$DIR/stdout")"
expect_ok "merge" -- merge --base "$DIR/m/base.safetensors" --delta "$DIR/m/d.dcz" -o "$DIR/m/merged.safetensors" --quiet
[ -s "$DIR/m/merged.safetensors" ] || fail "merge wrote no file"
# The merged model is not the base any more: the delta's base fingerprint no longer matches it.
expect_error "merged model is no longer the base" 1 "differs from the base" -- \
  verify "$DIR/m/d.dcz" --base "$DIR/m/merged.safetensors"
# ... and it is the fine-tuned model up to quantization error: a delta of it against the
# fine-tuned model is small (eval compares layer outputs of base+delta with the fine-tuned model).
expect_ok "eval" -- eval --base "$DIR/m/base.safetensors" --finetuned "$DIR/m/finetuned.safetensors" --delta "$DIR/m/d.dcz"
finish
