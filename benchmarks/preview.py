"""First timing of `causal_conv1d` (bias + ReLU) against `nn.Conv1d` + chomp + ReLU (cuDNN) at two
TCN shapes, forward and forward+backward, fp32 (TF32 as cuDNN's default) and bf16. GPU only.

    python benchmarks/preview.py --out preview.json
"""
import argparse
import json

import torch
import torch.nn.functional as F

import tcnkernels

# name: (B, C_in, C_out, L, K, dilation), from the paper's networks (reference-tcn.md)
SHAPES = {
    "seq-mnist conv (level 5)": (64, 25, 25, 784, 7, 16),
    "char-ptb conv (level 2)": (32, 450, 450, 400, 3, 2),
}


def reference_conv(x, w, b, dilation):
    pad = (w.shape[2] - 1) * dilation
    y = F.conv1d(x, w, b, padding=pad, dilation=dilation)  # both sides padded, as users run it
    return torch.relu(y[:, :, :-pad].contiguous() if pad else y)


def fused_conv(x, w, b, dilation):
    return tcnkernels.causal_conv1d(x, w, b, dilation, "relu")


def time_ms(fn, x, w, b, dilation, backward):
    from triton.testing import do_bench

    if backward:
        dy = torch.randn(x.shape[0], w.shape[0], x.shape[2], device="cuda", dtype=x.dtype)

        def step():
            torch.autograd.grad(fn(x, w, b, dilation), (x, w, b), dy)
    else:
        def step():
            with torch.no_grad():
                fn(x, w, b, dilation)
    return do_bench(step, warmup=25, rep=200, return_mode="median")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("preview.py needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    rows = []
    for name, (B, c_in, c_out, L, K, d) in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(B, c_in, L, device="cuda", dtype=dtype, requires_grad=True)
            w = (torch.randn(c_out, c_in, K, device="cuda", dtype=dtype) / (c_in * K) ** 0.5).requires_grad_()
            b = torch.randn(c_out, device="cuda", dtype=dtype, requires_grad=True)
            for backward in (False, True):
                ref = time_ms(reference_conv, x, w, b, d, backward)
                ours = time_ms(fused_conv, x, w, b, d, backward)
                rows.append(dict(shape=name, B=B, C_in=c_in, C_out=c_out, L=L, K=K, dilation=d,
                                 dtype=str(dtype).replace("torch.", ""),
                                 mode="forward+backward" if backward else "forward",
                                 cudnn_chomp_ms=ref, tcnkernels_ms=ours, speedup=ref / ours))
                print(f"{name:28s} {rows[-1]['dtype']:9s} {rows[-1]['mode']:17s} cuDNN+chomp {ref:8.4f} ms"
                      f"  tcnkernels {ours:8.4f} ms  x{ref / ours:5.2f}", flush=True)
    device = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                  tf32=torch.backends.cudnn.allow_tf32)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(device=device, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
