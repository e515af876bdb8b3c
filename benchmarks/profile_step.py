"""Where one training step's time goes: tokenize, forward + loss, backward, optimizer; then the top ops.

A GPU step of a small model is often bound by the CPU that launches its kernels, not by the GPU:
this script prints both clocks (the profiler's self CPU and self CUDA totals) so that shows at
once, and which ops cost the CPU most.

    python -m benchmarks.profile_step --random qwen3-0.6b --batch 16     # GPU (bf16 autocast)
    python -m benchmarks.profile_step --quick                            # tiny random model (tests)
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from contextlib import nullcontext
from typing import Any

import torch

from benchmarks.common import (
    add_model_arguments,
    default_device,
    environment,
    model_from_args,
    sync,
    table,
)
from benchmarks.train_step import build_module, training_pairs

PHASES = ("tokenize s", "forward + loss s", "backward s", "optimizer s")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--batch", type=int, default=16, help="pairs per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--rows", type=int, default=15, help="ops listed")
    parser.add_argument(
        "--quick", action="store_true", help="tiny random model, batch 4 (the tests)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.random, args.batch, args.steps, args.lora_r, args.rows = "tiny", 4, 1, 4, 5
    warnings.filterwarnings("ignore")
    device = args.device or default_device()

    with model_from_args(args) as (path, label):
        # GradCache stays off here, so its mini-batch size is unused
        module = build_module(path, device=device, mini_batch=args.batch, lora_r=args.lora_r)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    pairs = training_pairs(args.batch * (args.steps + 5))
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    )

    def step(i: int) -> tuple[float, ...]:
        batch = {k: v[i * args.batch : (i + 1) * args.batch] for k, v in pairs.items()}
        clock = [time.perf_counter()]
        tokens = [module.encoder.tokenize(batch[k]) for k in ("anchor", "positive")]
        clock.append(time.perf_counter())
        with autocast:
            loss = module.loss_fn(*(module.encoder(t) for t in tokens))
        sync(device)
        clock.append(time.perf_counter())
        loss.backward()
        sync(device)
        clock.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        clock.append(time.perf_counter())
        return tuple(b - a for a, b in zip(clock[:-1], clock[1:], strict=True))

    for i in range(3):
        step(i)
    times = [step(3 + i) for i in range(args.steps)]
    phases = {name: statistics.median(t[j] for t in times) for j, name in enumerate(PHASES)}
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step(3 + args.steps)
    ops = prof.key_averages()
    cpu_total = sum(e.self_cpu_time_total for e in ops) / 1e6
    device_total = sum(getattr(e, "self_device_time_total", 0.0) for e in ops) / 1e6
    print(f"## one training step: {label}, batch {args.batch} pairs, LoRA r={args.lora_r}")
    print(environment(device) + "\n")
    print(table([phases], list(PHASES)))
    print(f"\nprofiled step: self CPU {cpu_total:.3f} s, self GPU {device_total:.3f} s\n")
    top = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.rows]
    rows = [
        {
            "op": e.key[:60],
            "calls": e.count,
            "self CPU ms": e.self_cpu_time_total / 1e3,
            "CPU ms per call": e.self_cpu_time_total / 1e3 / max(1, e.count),
            "self GPU ms": getattr(e, "self_device_time_total", 0.0) / 1e3,
        }
        for e in top
    ]
    print(table(rows, list(rows[0])))
    return {"phases": phases, "cpu_s": cpu_total, "device_s": device_total, "top": rows}


if __name__ == "__main__":
    main()
