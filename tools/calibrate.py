#!/usr/bin/env python3
"""Collect the calibration statistics Delta-CoMe's activation-aware GPTQ needs.

For every nn.Linear of a Hugging Face causal LM, accumulates the input second moment
H = E[x xᵀ] (in × in, float64 while accumulating) over the calibration tokens, with forward
pre-hooks, and writes a safetensors file read by `deltacome compress --calib`:

    "<module>.hessian"   F32 [in, in]   E[x xᵀ] over all calibration tokens
    "<module>.n_tokens"  I64 [1]        number of tokens accumulated

where <module> is the Linear's name in the model (e.g. model.layers.0.self_attn.q_proj), so the
compressor matches it with the weight "<module>.weight".

Run it on the FINE-TUNED model (the reference does): its activations are the ones the delta meets.

    python3 tools/calibrate.py --model path/to/finetuned --out calib.safetensors \
        [--text corpus.txt] [--nsamples 128] [--seqlen 2048] [--device cuda]

Without --text, random token ids are used (a smoke test, not a calibration).
Needs PyTorch and transformers.
"""
import argparse
import json
import os
import struct
import sys
import tempfile


def write_safetensors(path, tensors):
    """Minimal safetensors writer (no dependency on the safetensors package); atomic rename."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for b in blobs:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def collect(model, batches, device):
    import torch

    stats = {}
    hooks = []

    def make_hook(name):
        def hook(module, inputs):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)
            h, n = stats.get(name, (None, 0))
            xtx = x.T @ x
            stats[name] = (xtx if h is None else h + xtx, n + x.shape[0])
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_pre_hook(make_hook(name)))
    try:
        with torch.no_grad():
            for ids in batches:
                model(input_ids=ids.to(device))
    finally:
        for h in hooks:
            h.remove()
    return {name: (h / n, n) for name, (h, n) in stats.items()}


def batches_from(args, tokenizer, vocab_size):
    import torch

    g = torch.Generator().manual_seed(args.seed)
    if args.text is None:
        for _ in range(args.nsamples):
            yield torch.randint(0, vocab_size, (1, args.seqlen), generator=g)
        return
    with open(args.text, encoding="utf-8") as f:
        ids = tokenizer(f.read(), return_tensors="pt").input_ids[0]
    if len(ids) <= args.seqlen:
        sys.exit(f"calibrate.py: error: {args.text} has {len(ids)} tokens, need more than --seqlen {args.seqlen}")
    for _ in range(args.nsamples):  # random windows, as GPTQ's C4 loader does
        start = int(torch.randint(0, len(ids) - args.seqlen, (1,), generator=g))
        yield ids[start:start + args.seqlen].unsqueeze(0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face model directory or id (local files only)")
    p.add_argument("--out", required=True)
    p.add_argument("--text", help="UTF-8 text file to draw calibration windows from")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = p.parse_args(argv)
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        sys.exit(f"calibrate.py: error: needs PyTorch and transformers ({e})")
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=getattr(torch, args.dtype),
                                                 local_files_only=True).to(args.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True) if args.text else None
    stats = collect(model, batches_from(args, tokenizer, model.config.vocab_size), args.device)
    out = {}
    for name, (h, n) in stats.items():
        h32 = h.to(torch.float32).contiguous().cpu()
        out[name + ".hessian"] = ("F32", h32.shape, h32.numpy().tobytes())
        out[name + ".n_tokens"] = ("I64", (1,), struct.pack("<q", int(n)))
    write_safetensors(args.out, out)
    print(f"wrote {args.out}: {len(stats)} linear layers, {next(iter(stats.values()))[1] if stats else 0} tokens each")


if __name__ == "__main__":
    main()
