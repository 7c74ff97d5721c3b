"""Fused attention (``scaled_dot_product_attention``) against the explicit path, same inputs, one run.

Prints forward and forward+backward times per call and their ratio for token counts typical of
the presets, on the available device (float32 on CPU; bf16 on CUDA).

    python benchmarks/attention.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from rich.console import Console
from rich.table import Table

from atmorep.model.attention import explicit_attention, fused_attention


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def measure(batch: int, heads: int, tokens: int, head_dim: int, device: str, dtype: torch.dtype,
            repeats: int) -> dict[str, float]:
    """Seconds per call of each path, forward only and forward + backward."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, tokens, head_dim, generator=g).to(device, dtype).requires_grad_()
               for _ in range(3))

    def forward(fn):
        return lambda: fn(q, k, v)

    def backward(fn):
        def step():
            out = fn(q, k, v)
            (out[0] if isinstance(out, tuple) else out).sum().backward()
        return step

    with torch.no_grad():
        fused_fwd = _time(forward(fused_attention), repeats)
        explicit_fwd = _time(forward(explicit_attention), repeats)
    fused_bwd = _time(backward(fused_attention), repeats)
    explicit_bwd = _time(backward(explicit_attention), repeats)
    return {"fused_fwd": fused_fwd, "explicit_fwd": explicit_fwd, "fused_bwd": fused_bwd,
            "explicit_bwd": explicit_bwd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cases = [(8, 4, 384, 16), (4, 8, 1536, 32)] if args.quick else \
        [(8, 4, 384, 16), (8, 4, 768, 16), (4, 8, 1536, 32), (2, 16, 3456, 64)]
    if device == "cuda":
        cases.append((2, 16, 8640, 128))  # paper-size field: 5 levels x 12 x 6 x 12 tokens x 2
    table = Table(title=f"attention on {device} ({dtype}), {platform.processor() or platform.machine()}, "
                        f"{torch.get_num_threads()} threads")
    for column in ("B x heads x N x d", "fused fwd ms", "explicit fwd ms", "ratio", "fused fwd+bwd ms",
                   "explicit fwd+bwd ms", "ratio"):
        table.add_column(column, justify="right")
    for batch, heads, tokens, head_dim in cases:
        repeats = 3 if args.quick else 10
        r = measure(batch, heads, tokens, head_dim, device, dtype, repeats)
        table.add_row(f"{batch} x {heads} x {tokens} x {head_dim}", f"{r['fused_fwd'] * 1e3:.2f}",
                      f"{r['explicit_fwd'] * 1e3:.2f}", f"{r['explicit_fwd'] / r['fused_fwd']:.2f}x",
                      f"{r['fused_bwd'] * 1e3:.2f}", f"{r['explicit_bwd'] * 1e3:.2f}",
                      f"{r['explicit_bwd'] / r['fused_bwd']:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
