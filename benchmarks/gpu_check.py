"""GPU check: a few bf16 GradCache training steps and the encode benchmark on Qwen3-0.6B's shape.

The model is randomly initialised with Qwen/Qwen3-0.6B's configuration (no network, no weights
needed), so the numbers measure speed, not quality. It prints tokens/s and model FLOP
utilisation (MFU: model FLOPs per second over this GPU's bf16 matmul peak, measured in the same
run). Run through ``benchmarks/gpu_check.sh`` (8-minute limit on one GPU); ``--tiny`` runs the
same code on a tiny model on the CPU, which is what the tests do.

Training FLOPs per step count the forward pass and the backward pass to the activations,
``2 x forward`` (the frozen base gets no weight gradients; the LoRA weights' are in the forward's
N); GradCache's extra no-grad forward is not useful work, so the hardware does ``3 x forward``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import tempfile
import time
import warnings
from typing import Any

import torch

from benchmarks import encode, packing
from benchmarks.common import (
    build_random_model,
    environment,
    forward_flops,
    matmul_peak,
    non_embedding_params,
    sync,
    table,
)
from benchmarks.train_step import training_pairs


def train_steps(
    path: str, *, device: str, steps: int, batch: int, mini_batch: int, lora_r: int, peak: float
) -> dict[str, Any]:
    """``steps`` Lightning training steps with GradCache in bf16-mixed; step time, tokens/s and MFU."""
    import lightning as L

    from llm_embed.encoder import Encoder
    from llm_embed.module import EmbeddingModule, reference_lora

    # after the import, which sets Lightning's logger to INFO
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    lora = dataclasses.replace(reference_lora(), r=lora_r)  # the paper's LoRA, rank aside
    torch.manual_seed(0)
    module = EmbeddingModule(
        Encoder(path, pooling="last", prompt="clustering"),
        lora=lora,
        grad_cache=True,
        grad_cache_mini_batch=mini_batch,
        warmup_steps=1,
    )
    pairs = training_pairs(batch * steps, max_words=60)
    batches = [{k: v[i * batch : (i + 1) * batch] for k, v in pairs.items()} for i in range(steps)]
    mask = [
        module.encoder.tokenize(b[k])["attention_mask"].sum(1).tolist() for b in batches for k in b
    ]
    lengths = [n for m in mask for n in m]
    n_params = non_embedding_params(module.encoder.backbone)

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.losses: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sync(device)
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))
            sync(device)
            self.starts.append(time.perf_counter())

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(batches, batch_size=None)

    clock = Clock()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu",
            devices=1,
            precision="bf16-mixed",
            max_steps=steps,
            gradient_clip_val=1.0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[clock],
            default_root_dir=root,
        )
        trainer.fit(module, datamodule=Data())
    # batch start -> batch end of each step; the first one pays for warm-up
    step_times = [
        end - start for start, end in zip(clock.starts[0::2], clock.starts[1::2], strict=True)
    ]
    timed = step_times[1:] or step_times
    seconds = sum(timed) / len(timed)
    tokens_per_step = sum(lengths) / steps
    fwd_per_step = forward_flops(module.encoder.backbone.config, n_params, lengths) / steps
    return {
        "steps": steps,
        "batch": batch,
        "mini_batch": mini_batch,
        "lora_r": lora_r,
        "step_seconds": seconds,
        "pairs_per_s": batch / seconds,
        "tokens_per_s": tokens_per_step / seconds,
        "mfu": 2 * fwd_per_step / seconds / peak,
        "hfu": 3 * fwd_per_step / seconds / peak,
        "losses": clock.losses,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU (the tests)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=256, help="contrastive batch (pairs) per step")
    parser.add_argument(
        "--mini-batch", type=int, default=64, help="GradCache texts per forward pass"
    )
    parser.add_argument(
        "--packing-batches",
        default="64,256",
        help="batches (pairs) of the padded vs packed comparison (benchmarks/packing.py)",
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="leave out the packed + torch.compile variant"
    )
    parser.add_argument("--texts", type=int, default=8192, help="texts for the encode benchmark")
    parser.add_argument("--encode-batch", type=int, default=128)
    args = parser.parse_args(argv)
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.tiny:
        preset, lora_r = "tiny", 4
        args.steps, args.batch, args.mini_batch, args.texts, args.encode_batch = 2, 8, 4, 32, 16
        args.packing_batches, args.no_compile = "4", True
    else:
        preset, lora_r = "qwen3-0.6b", 64
        if device != "cuda":
            print("error: no CUDA GPU visible; run with --tiny on a CPU", file=sys.stderr)
            return 2
    start = time.perf_counter()
    print(f"# GPU check: random {preset}, bf16 — {environment(device)}", flush=True)
    peak = matmul_peak(device, torch.bfloat16, size=None if device == "cuda" else 512)
    print(f"bf16 matmul peak, measured: {peak / 1e12:.3g} TFLOP/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(build_random_model(f"{tmp}/model", preset, dtype="bfloat16"))
        print(f"built the random model in {time.perf_counter() - start:.0f} s", flush=True)
        packing_batches = [int(b) for b in args.packing_batches.split(",") if b]
        best = None
        for batch in packing_batches:
            # plain steps (no GradCache: memory is ample here), padded against packed
            packed = packing.run(
                path,
                batch=batch,
                steps=args.steps,
                device=device,
                precision="bf16-mixed",
                pooling="last",
                lora_r=lora_r,
                compile=not args.no_compile and batch == max(packing_batches),
                dtype="bfloat16",  # frozen base in bf16, LoRA in fp32: no weight casts per step
            )
            packed["model"] = f"random {preset}"
            print("\n" + packing.report(packed), flush=True)
            if packed["min_grad_cosine"] < 0.99:
                print("error: packed gradients differ from the padded ones", file=sys.stderr)
                return 1
            top = max(packed["rows"], key=lambda r: r["MFU"])
            if best is None or top["MFU"] > best[1]["MFU"]:
                best = (batch, top)
        train = train_steps(
            path,
            device=device,
            steps=args.steps,
            batch=args.batch,
            mini_batch=args.mini_batch,
            lora_r=lora_r,
            peak=peak,
        )
        rows = [
            {
                "steps": train["steps"],
                "batch (pairs)": train["batch"],
                "GradCache mini-batch": train["mini_batch"],
                "step s": train["step_seconds"],
                "pairs/s": train["pairs_per_s"],
                "tokens/s": train["tokens_per_s"],
                "MFU": train["mfu"],
                "HFU": train["hfu"],
                "peak GiB": train["peak_gib"],
            }
        ]
        print(f"\n## training (bf16-mixed, GradCache, LoRA r={lora_r})\n")
        print(table(rows, list(rows[0])), flush=True)
        if not all(math.isfinite(x) for x in train["losses"]):
            print("error: non-finite training loss", file=sys.stderr)
            return 1
        result = encode.run(
            path,
            texts=args.texts,
            batch_size=args.encode_batch,
            device=device,
            dtype="bfloat16",
            repeats=2,
            peak=peak,
        )
    result["model"] = f"random {preset}"
    print()
    print(encode.report(result))
    ours = result["rows"][0]
    if best is not None:
        print(
            f"\nsummary: plain training at batch {best[0]}, {best[1]['variant']}: "
            f"{best[1]['tokens/s']:,.0f} tokens/s at MFU {100 * best[1]['MFU']:.1f}%",
        )
    print(
        f"summary: GradCache training {train['tokens_per_s']:,.0f} tokens/s at MFU {100 * train['mfu']:.1f}%; "
        f"encoding {ours['tokens/s']:,.0f} tokens/s at {100 * ours['of matmul peak']:.1f}% of the matmul peak, "
        f"{result['speedup']:.2f}x sentence-transformers; {time.perf_counter() - start:.0f} s in all",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
