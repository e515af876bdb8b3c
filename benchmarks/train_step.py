"""Peak memory and time of one training step at contrastive batch 16, 64 and 256, with and without GradCache.

A step is what :class:`~llm_embed.module.EmbeddingModule` does per batch: embed B anchors and B
positives, InfoNCE over the B x B similarities, backward, AdamW on the LoRA weights (the paper's
r=64 on q, v, o and the MLP). With GradCache the texts go through the model
``--mini-batch`` at a time, twice. Peak memory is measured above the level before the step
(weights and optimizer state excluded), so it is the activations' share: it should grow with B
without GradCache and stay flat with it. A batch that does not fit shows ``OOM``.

    python -m benchmarks.train_step --max-plain-batch 64               # SmolLM2-135M (packaged), CPU
    python -m benchmarks.train_step --random qwen3-0.6b --precision bf16-mixed --steps 3
    python -m benchmarks.train_step --quick                           # tiny random model (tests)
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import warnings
from contextlib import nullcontext
from typing import Any

import torch

from benchmarks.common import (
    add_model_arguments,
    default_device,
    environment,
    mixed_corpus,
    model_from_args,
    peak_memory,
    table,
    timed,
    write_json,
)


def training_pairs(n: int, *, seed: int = 0, max_words: int = 60) -> dict[str, list[str]]:
    """``n`` seeded (anchor, positive) pairs: mixed-length texts and a copy with ~15% of the words dropped."""
    rng = random.Random(seed)
    anchors = mixed_corpus(n, seed=seed, max_words=max_words)
    positives = [" ".join(w for w in a.split() if rng.random() > 0.15) or a for a in anchors]
    return {"anchor": anchors, "positive": positives}


def build_module(path: str, *, device: str, mini_batch: int, lora_r: int) -> Any:
    from llm_embed.encoder import Encoder
    from llm_embed.module import EmbeddingModule, reference_lora

    lora = dataclasses.replace(reference_lora(), r=lora_r)  # the paper's LoRA, rank aside
    torch.manual_seed(0)
    module = EmbeddingModule(
        Encoder(path, pooling="last"), lora=lora, grad_cache_mini_batch=mini_batch
    )
    return module.to(device).train()


def run(
    model: str,
    *,
    batches: list[int],
    mini_batch: int = 16,
    steps: int = 1,
    device: str | None = None,
    precision: str = "32-true",
    lora_r: int = 64,
    max_words: int = 60,
    max_plain_batch: int | None = None,
) -> dict[str, Any]:
    """Time and peak memory per (batch, GradCache) row.

    ``max_plain_batch``: batches above it run with GradCache only. On a CPU an out-of-memory
    process is killed by the kernel rather than raising, so a batch that cannot fit without
    GradCache (see ``docs/performance.md`` for SmolLM2 on a 24 GiB machine) has to be left out up front.
    """
    from llm_embed.backbone import resolve

    device = device or default_device()
    module = build_module(resolve(model), device=device, mini_batch=mini_batch, lora_r=lora_r)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    pairs = training_pairs(max(batches), max_words=max_words)
    autocast = (
        torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
        if precision == "bf16-mixed"
        else nullcontext()
    )

    def step(batch: dict[str, list[str]]) -> float:
        with autocast:
            loss = module._loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    rows = []
    for grad_cache in (False, True):
        module.hparams.grad_cache = grad_cache
        step({k: v[: batches[0]] for k, v in pairs.items()})  # warm-up: kernels, optimizer state
        for B in batches:
            batch = {k: v[:B] for k, v in pairs.items()}
            row: dict[str, Any] = {
                "batch": B,
                "GradCache": f"yes (mini {mini_batch})" if grad_cache else "no",
            }
            if not grad_cache and max_plain_batch is not None and max_plain_batch < B:
                row.update(
                    {
                        "step s": "not run",
                        "peak MiB": f"> RAM (--max-plain-batch {max_plain_batch})",
                    }
                )
                row["pairs/s"] = ""
                rows.append(row)
                continue
            try:
                times = []
                with peak_memory(device) as mem:
                    for _ in range(steps):
                        seconds, _ = timed(lambda batch=batch: step(batch), device)
                        times.append(seconds)
                row.update({"step s": statistics.median(times), "peak MiB": mem["peak_mib"]})
            except torch.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                row.update({"step s": "OOM", "peak MiB": "OOM"})
            row["pairs/s"] = B / row["step s"] if isinstance(row["step s"], float) else ""
            rows.append(row)
    for row in rows:  # time and memory relative to the same batch without GradCache
        base = next(r for r in rows if r["batch"] == row["batch"] and r["GradCache"] == "no")
        for key, name in (("step s", "time vs no cache"), ("peak MiB", "memory vs no cache")):
            if isinstance(row[key], float) and isinstance(base[key], float) and base[key] > 0:
                row[name] = row[key] / base[key]
    return {
        "environment": environment(device),
        "model": model,
        "precision": precision,
        "mini_batch": mini_batch,
        "lora_r": lora_r,
        "steps": steps,
        "rows": rows,
    }


def report(result: dict[str, Any]) -> str:
    cols = [
        "batch",
        "GradCache",
        "step s",
        "pairs/s",
        "peak MiB",
        "time vs no cache",
        "memory vs no cache",
    ]
    return "\n".join(
        [
            f"## training step: {result['model']} ({result['precision']}), LoRA r={result['lora_r']}, "
            f"median of {result['steps']} step(s)",
            result["environment"],
            "",
            table(result["rows"], cols),
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--batches", default="16,64,256", help="contrastive batch sizes (pairs)")
    parser.add_argument(
        "--mini-batch", type=int, default=16, help="GradCache texts per forward pass"
    )
    parser.add_argument(
        "--steps", type=int, default=1, help="timed steps per row (after one warm-up step per mode)"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument(
        "--max-plain-batch",
        type=int,
        help="run batches above this with GradCache only (CPU: an OOM kills the process)",
    )
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument(
        "--quick", action="store_true", help="tiny random model, batches 4 and 8 (the tests)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.random, args.batches, args.mini_batch, args.lora_r = "tiny", "4,8", 2, 4
    warnings.filterwarnings("ignore", category=FutureWarning)
    batches = [int(b) for b in args.batches.split(",")]
    with model_from_args(args) as (model, label):
        result = run(
            model,
            batches=batches,
            mini_batch=args.mini_batch,
            steps=args.steps,
            device=args.device,
            precision=args.precision,
            lora_r=args.lora_r,
            max_words=20 if args.quick else 60,
            max_plain_batch=args.max_plain_batch,
        )
    result["model"] = label
    print(report(result), flush=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
