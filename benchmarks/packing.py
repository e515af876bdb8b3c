"""Padded against packed (padding-free) training steps, side by side in one run.

Each variant is its own copy of the same model and LoRA initialisation, trained on the same
fresh batch each step (a new shape every step, as in real training), the variants taking turns
so a noisy machine slows them alike. Before training, each takes the loss and LoRA gradients of
the first batch in eval mode (no dropout): packed must equal padded to float precision. A step is
``EmbeddingModule._loss`` (the packed variant embeds both columns in one pass), backward, AdamW.

MFU counts the real tokens' forward and backward-to-activations FLOPs (``2 x forward``, padding
is not useful work) over the matmul rate measured in the same run (bf16 on a GPU, fp32 on a CPU).

    python -m benchmarks.packing --model gemma3-270m --batch 16 --steps 4          # CPU
    python -m benchmarks.packing --random qwen3-0.6b --precision bf16-mixed --dtype bfloat16 \\
        --batch 256 --steps 6 --compile                                          # GPU
    python -m benchmarks.packing --random tiny --batch 4 --steps 2                 # tests
"""

from __future__ import annotations

import argparse
import dataclasses
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
    forward_flops,
    model_from_args,
    non_embedding_params,
    table,
    timed,
    write_json,
)
from benchmarks.train_step import training_pairs
from llm_embed._machine import matmul_peak


def build(path: str, *, packing: bool, pooling: str, lora_r: int, device: str, dtype: str) -> Any:
    from llm_embed.encoder import Encoder
    from llm_embed.module import EmbeddingModule, reference_lora

    torch.manual_seed(0)  # the same LoRA initialisation in every variant
    lora = dataclasses.replace(reference_lora(), r=lora_r)
    encoder = Encoder(path, pooling=pooling, packing=packing, dtype=dtype)
    module = EmbeddingModule(encoder, lora=lora)
    return module.to(device)


def run(
    path: str,
    *,
    batch: int,
    steps: int,
    warmup: int = 1,
    device: str | None = None,
    precision: str = "32-true",
    pooling: str = "weighted_mean",
    lora_r: int = 64,
    max_words: int = 60,
    compile: bool = False,
    dtype: str = "float32",
) -> dict[str, Any]:
    device = device or default_device()
    bf16 = precision == "bf16-mixed"
    peak_dtype = torch.bfloat16 if device == "cuda" else torch.float32
    peak = matmul_peak(device, peak_dtype)
    variants = {"padded": False, "packed": True}
    if compile:
        variants["packed + torch.compile"] = True
    modules = {
        name: build(path, packing=p, pooling=pooling, lora_r=lora_r, device=device, dtype=dtype)
        for name, p in variants.items()
    }
    compile_s = None
    if compile:
        modules["packed + torch.compile"].encoder.backbone.compile(dynamic=True)
    pairs = training_pairs(batch * (warmup + steps), max_words=max_words)
    batches = [
        {k: v[i * batch : (i + 1) * batch] for k, v in pairs.items()} for i in range(warmup + steps)
    ]
    autocast = (
        (lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16))
        if bf16
        else nullcontext
    )

    losses, grads = {}, {}
    for name, module in modules.items():  # the same batch, eval mode: packing changes nothing
        module.eval()
        with autocast():
            loss = module._loss(batches[0])
        loss.backward()
        losses[name] = float(loss)
        params = [p for p in module.parameters() if p.requires_grad]
        grads[name] = torch.cat([p.grad.flatten().double() for p in params])
        module.zero_grad(set_to_none=True)
        module.train()
    cosine = min(
        float(torch.nn.functional.cosine_similarity(g, grads["padded"], dim=0))
        for g in grads.values()
    )
    optimizers = {
        name: torch.optim.AdamW(
            [p for p in m.parameters() if p.requires_grad], lr=1e-5, fused=device == "cuda"
        )
        for name, m in modules.items()
    }

    def step(name: str, b: dict[str, list[str]]) -> None:
        with autocast():
            loss = modules[name]._loss(b)
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {name: [] for name in modules}
    for i, b in enumerate(batches):
        for name in modules:
            start = time.perf_counter()
            seconds, _ = timed(lambda name=name, b=b: step(name, b), device)
            if i < warmup:
                if "compile" in name and i == 0:
                    compile_s = time.perf_counter() - start
                continue
            times[name].append(seconds)

    encoder = modules["padded"].encoder
    n_params = non_embedding_params(encoder.backbone)
    real = padded = 0
    lengths: list[int] = []
    for b in batches[warmup:]:
        for column in ("anchor", "positive"):
            mask = encoder.tokenize(b[column])["attention_mask"]
            lengths += mask.sum(1).tolist()
            real += int(mask.sum())
            padded += mask.numel()
    n_steps = len(batches) - warmup
    tokens, fwd = (
        real / n_steps,
        forward_flops(encoder.backbone.config, n_params, lengths) / n_steps,
    )
    rows = []
    for name, ts in times.items():
        seconds = statistics.median(ts)
        rows.append(
            {
                "variant": name,
                "step s": seconds,
                "tokens/s": tokens / seconds,
                "MFU": 2 * fwd / seconds / peak,
                "vs padded": statistics.median(times["padded"]) / seconds,
                "eval loss": losses[name],
            }
        )
    return {
        "environment": environment(device),
        "precision": precision,
        "dtype": dtype,
        "pooling": pooling,
        "batch": batch,
        "steps": n_steps,
        "matmul_peak": peak,
        "peak_dtype": str(peak_dtype).removeprefix("torch."),
        "pad_fraction": 1 - real / padded,
        "compile_seconds": compile_s,
        "max_loss_delta": max(abs(v - losses["padded"]) for v in losses.values()),
        "min_grad_cosine": cosine,
        "rows": rows,
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"## training step, padded vs packed: {result['model']} ({result['dtype']} weights), "
        f"{result['precision']}, "
        f"batch {result['batch']} pairs, {result['pooling']} pooling, median of {result['steps']} steps",
        f"{result['environment']}; {result['peak_dtype']} matmul peak "
        f"{result['matmul_peak'] / 1e9:,.0f} GFLOP/s; pad tokens {100 * result['pad_fraction']:.0f}% "
        "of the padded batches",
        "",
        table(result["rows"], ["variant", "step s", "tokens/s", "MFU", "vs padded", "eval loss"]),
        "",
        f"first batch in eval mode: max |loss - padded loss| = {result['max_loss_delta']:.2g}, "
        f"min cosine(LoRA gradient, padded gradient) = {result['min_grad_cosine']:.6f}",
    ]
    if result["compile_seconds"] is not None:
        lines.append(f"torch.compile's first step (compilation): {result['compile_seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--batch", type=int, default=16, help="contrastive batch (pairs)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument(
        "--dtype", default="float32", help="frozen base weights (bfloat16 on GPUs: no casts)"
    )
    parser.add_argument("--pooling", default="weighted_mean")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument(
        "--compile", action="store_true", help="add a packed + torch.compile variant"
    )
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    with model_from_args(args) as (path, label):
        result = run(
            path,
            batch=args.batch,
            steps=args.steps,
            warmup=args.warmup,
            device=args.device,
            precision=args.precision,
            pooling=args.pooling,
            lora_r=args.lora_r,
            compile=args.compile,
            dtype=args.dtype,
        )
    result["model"] = label
    print(report(result), flush=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
