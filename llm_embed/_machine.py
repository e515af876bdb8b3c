"""How fast this machine multiplies matrices: the yardstick printed beside every timing.

Machines of the same name differ by up to 3x, so a run's minutes mean little without the rate the
machine reached on a plain matmul at that moment.
"""

from __future__ import annotations

import time

import torch


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work (no-op on CPU), so a timer reads finished work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    size: int | None = None,
    seconds: float = 1.0,
) -> float:
    """This machine's achievable matmul FLOP/s: the best of repeated square products (same dtype as the model)."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / 5)
    return 2 * size**3 / best


def describe_machine(device: torch.device | str = "cpu") -> str:
    """One line for logs: the fp32 matmul rate and the threads torch uses."""
    rate = matmul_peak(device, torch.float32, seconds=0.5)
    return f"{rate / 1e9:.0f} GFLOP/s fp32 matmul on {device} ({torch.get_num_threads()} torch threads)"
