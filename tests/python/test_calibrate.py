"""tools/calibrate.py on a tiny randomly initialised Llama model (skipped without torch/transformers).

Checks every Linear gets a symmetric PSD Hessian equal to E[x xᵀ] computed independently, and that
`deltacome compress --calib` accepts the file (when DELTACOME_CLI is set)."""
import os
import struct
import subprocess
import sys
import tempfile
import unittest
import json

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))

try:
    import torch
    import transformers  # noqa: F401
    HAVE = True
except ImportError:
    HAVE = False


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return header, data


@unittest.skipUnless(HAVE, "needs PyTorch and transformers")
class CalibrateTest(unittest.TestCase):
    def test_tiny_llama(self):
        import calibrate
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        model = LlamaForCausalLM(cfg).eval()
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d, safe_serialization=True)
            out = os.path.join(d, "calib.safetensors")
            calibrate.main(["--model", d, "--out", out, "--nsamples", "3", "--seqlen", "16"])
            header, data = read_safetensors(out)
            names = [k[:-len(".hessian")] for k in header if k.endswith(".hessian")]
            self.assertIn("model.layers.0.self_attn.q_proj", names)
            self.assertIn("model.layers.1.mlp.down_proj", names)
            self.assertEqual(len(names), 2 * 7 + 1)  # q k v o gate up down per layer + lm_head
            # Independent recomputation for one layer.
            captured = []
            h = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(
                lambda m, i: captured.append(i[0].reshape(-1, i[0].shape[-1]).double()))
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for _ in range(3):
                    model(input_ids=torch.randint(0, 128, (1, 16), generator=g))
            h.remove()
            x = torch.cat(captured)
            want = (x.T @ x) / x.shape[0]
            meta = header["model.layers.0.mlp.down_proj.hessian"]
            b, e = meta["data_offsets"]
            got = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(meta["shape"]).double()
            self.assertEqual(list(got.shape), [160, 160])
            self.assertLess(float((got - want).norm() / want.norm()), 1e-5)
            self.assertLess(float((got - got.T).abs().max()), 1e-6)
            self.assertGreater(float(torch.linalg.eigvalsh(got).min()), -1e-5)
            cli = os.environ.get("DELTACOME_CLI")
            if cli:
                # A fine-tuned copy, then compress with the calibration file.
                ft = LlamaForCausalLM(cfg).eval()
                ft.load_state_dict(model.state_dict())
                with torch.no_grad():
                    for p in ft.parameters():
                        p.add_(0.01 * torch.randn_like(p))
                fd = os.path.join(d, "ft")
                ft.save_pretrained(fd, safe_serialization=True)
                r = subprocess.run([cli, "compress", "--quiet", "--alpha", "0.25", "--base",
                                    os.path.join(d, "model.safetensors"), "--finetuned",
                                    os.path.join(fd, "model.safetensors"), "--calib", out, "-o",
                                    os.path.join(d, "x.dcz")], capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    unittest.main()
