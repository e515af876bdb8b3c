"""Step time of the Lightning training loop against a plain PyTorch loop doing the same work.

Both loops train the same :class:`~llm_embed.module.EmbeddingModule` (same seed, same batches):
loss, backward, gradient clipping at 1.0, AdamW, the warm-up/linear-decay LR schedule. The
Lightning side is ``Trainer.fit`` as ``llm_embed.fit`` runs it (no logger, checkpoint or progress
bar: their cost depends on the disk and the terminal), so it also pays for the module's logging
and its per-step NaN check and grad-norm metric. A step's time is the interval between the starts
of consecutive batches; the first ``--warmup`` steps are dropped and the median counts. The loops
alternate ``--rounds`` times. The aim: overhead of a few percent at most.

    python -m benchmarks.loop_overhead                       # SmolLM2-135M (packaged), CPU
    python -m benchmarks.loop_overhead --random qwen3-0.6b --precision bf16-mixed --batch 64
    python -m benchmarks.loop_overhead --quick               # tiny random model (tests)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
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
    write_json,
)
from benchmarks.train_step import build_module, training_pairs


def batches_of(pairs: dict[str, list[str]], batch: int, steps: int) -> list[dict[str, list[str]]]:
    n = len(pairs["anchor"])
    return [
        {k: [v[(i * batch + j) % n] for j in range(batch)] for k, v in pairs.items()}
        for i in range(steps)
    ]


def plain_loop(
    module: Any, batches: list[dict[str, list[str]]], *, device: str, precision: str, warmup: int
) -> list[float]:
    """The same work without Lightning: returns each step's seconds."""
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=module.hparams.lr, weight_decay=module.hparams.weight_decay
    )
    total, warm = len(batches), min(module.hparams.warmup_steps, len(batches))

    def schedule(step: int) -> float:
        return (
            (step + 1) / (warm + 1)
            if step < warm
            else max(0.0, (total - step) / max(1, total - warm))
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    autocast = (
        torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
        if precision == "bf16-mixed"
        else nullcontext()
    )
    starts = []
    for batch in batches:
        sync(device)
        starts.append(time.perf_counter())
        with autocast:
            loss = module._loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    starts.append(time.perf_counter())
    return [b - a for a, b in zip(starts, starts[1:], strict=False)][warmup:]


def lightning_loop(
    module: Any, batches: list[dict[str, list[str]]], *, device: str, precision: str, warmup: int
) -> list[float]:
    """``Trainer.fit`` over the same batches: returns each step's seconds (batch start to batch start)."""
    import logging

    import lightning as L

    # after the import, which sets Lightning's logger to INFO
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    class Starts(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sync(device)
            self.starts.append(time.perf_counter())

        def on_train_end(self, trainer, pl_module):
            sync(device)
            self.starts.append(time.perf_counter())

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(batches, batch_size=None)

    starts = Starts()
    with tempfile.TemporaryDirectory() as root:  # on_fit_end saves the adapter here
        trainer = L.Trainer(
            accelerator="gpu" if torch.device(device).type == "cuda" else "cpu",
            devices=1,
            precision=precision,
            max_steps=len(batches),
            gradient_clip_val=1.0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[starts],
            default_root_dir=root,
        )
        trainer.fit(module, datamodule=Data())
    return [b - a for a, b in zip(starts.starts, starts.starts[1:], strict=False)][warmup:]


def run(
    model: str,
    *,
    batch: int = 16,
    steps: int = 12,
    warmup: int = 2,
    rounds: int = 2,
    device: str | None = None,
    precision: str = "32-true",
    lora_r: int = 64,
    max_words: int = 60,
) -> dict[str, Any]:
    from llm_embed.backbone import resolve

    device = device or default_device()
    path = resolve(model)
    batches = batches_of(training_pairs(4 * batch, max_words=max_words), batch, steps)
    times: dict[str, list[float]] = {"plain PyTorch": [], "Lightning": []}
    for _ in range(rounds):
        for name, loop in (("plain PyTorch", plain_loop), ("Lightning", lightning_loop)):
            module = build_module(path, device=device, mini_batch=16, lora_r=lora_r)
            times[name] += loop(module, batches, device=device, precision=precision, warmup=warmup)
    medians = {name: statistics.median(t) for name, t in times.items()}
    overhead = medians["Lightning"] / medians["plain PyTorch"] - 1
    rows = [
        {"loop": name, "median step s": m, "steps timed": len(times[name]), "pairs/s": batch / m}
        for name, m in medians.items()
    ]
    return {
        "environment": environment(device),
        "model": model,
        "precision": precision,
        "batch": batch,
        "rows": rows,
        "overhead": overhead,
    }


def report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"## training loop: {result['model']} ({result['precision']}), batch {result['batch']} pairs",
            result["environment"],
            "",
            table(result["rows"], ["loop", "median step s", "pairs/s", "steps timed"]),
            "",
            f"Lightning overhead: {100 * result['overhead']:+.1f}% per step",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--batch", type=int, default=16, help="pairs per step")
    parser.add_argument("--steps", type=int, default=12, help="steps per loop and round")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of each loop not timed")
    parser.add_argument("--rounds", type=int, default=2, help="times each loop runs, alternating")
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument(
        "--quick", action="store_true", help="tiny random model, 4 steps (the tests)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.random, args.batch, args.steps, args.warmup, args.rounds, args.lora_r = (
            "tiny",
            4,
            4,
            1,
            1,
            4,
        )
    warnings.filterwarnings("ignore")
    with model_from_args(args) as (model, label):
        result = run(
            model,
            batch=args.batch,
            steps=args.steps,
            warmup=args.warmup,
            rounds=args.rounds,
            device=args.device,
            precision=args.precision,
            lora_r=args.lora_r,
            max_words=20 if args.quick else 60,
        )
    result["model"] = label
    print(report(result), flush=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
