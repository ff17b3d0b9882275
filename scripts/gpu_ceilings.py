"""The two ceilings every GPU number is read against (METHOD.md): device-to-device copy bandwidth
(bytes read + bytes written) and the bf16 matrix-product rate on random data (never zeros: a bf16
matmul runs faster on zeros).  Median of timed repeats after warm-up, CUDA events on a GPU.

    python3 scripts/gpu_ceilings.py --out ceilings.json [--device cpu --copy-mib 64 --mm 512]
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from r1core.bench.timing import time_fn  # gpu.sh puts the checkout on PYTHONPATH


def _time(fn, device: torch.device, reps: int) -> float:
    """Median seconds of `reps` calls after 3 warm-ups (the bench runner's timer, CUDA events on a GPU)."""
    return statistics.median(time_fn(fn, device, warmup=3, min_reps=reps, budget_s=0.0))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--copy-mib", type=int, default=4096, help="size of the copied buffer (default 4 GiB)")
    p.add_argument("--mm", type=int, default=8192, help="M = N = K of the bf16 product (default 8192)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default=None, help="JSON file to write")
    a = p.parse_args()
    dev = torch.device(a.device)
    gen = torch.Generator(device=dev).manual_seed(0)
    n = a.copy_mib * 2**20 // 4
    src = torch.rand(n, generator=gen, device=dev)
    dst = torch.empty_like(src)
    t_copy = _time(lambda: dst.copy_(src), dev, a.reps)
    assert torch.equal(dst, src), "copy check failed"
    copy_tb_s = 2 * src.numel() * 4 / t_copy / 1e12
    del src, dst
    m = a.mm
    x = torch.randn(m, m, generator=gen, device=dev).to(torch.bfloat16)
    y = torch.randn(m, m, generator=gen, device=dev).to(torch.bfloat16)
    t_mm = _time(lambda: x @ y, dev, a.reps)
    mm_tflop_s = 2 * m**3 / t_mm / 1e12
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "copy_bytes": 2 * n * 4, "copy_ms": t_copy * 1e3, "copy_tb_s": copy_tb_s,
           "mm_size": m, "mm_ms": t_mm * 1e3, "mm_bf16_tflop_s": mm_tflop_s, "reps": a.reps}
    print(f"copy {a.copy_mib} MiB: {t_copy * 1e3:.3f} ms, {copy_tb_s:.3f} TB/s (read + write) | "
          f"bf16 matmul {m}^3: {t_mm * 1e3:.3f} ms, {mm_tflop_s:.1f} TFLOP/s (random data)")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
