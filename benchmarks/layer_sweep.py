"""Score every (hidden layer, pooling) of one model on the clustering suite from ONE encoding pass.

Scoring a layer the usual way (``evaluate --layer L``) costs a full pass over the suite per layer.
Here the model's own ``Encoder.encode`` runs once: forward hooks on the decoder layers keep each
layer's states, a wrapper pooling pools each of them with each asked pooling, and the vectors are
then scored cell by cell through the same mteb path as ``evaluate`` (``evaluate_clustering``), so
each cell matches ``evaluate --model M --layer L --pooling P``: exactly for a task without repeated
texts; a repeated text is embedded once here, which changes the batches and can move a score in
the fourth digit (Gemma-3-270M, weighted mean, noun glosses: 0.3746 here, 0.3753 by ``evaluate``).

    python -m benchmarks.layer_sweep --model gemma3-270m --layers 6,9,12,15,-1 \
        --poolings last,weighted_mean --prompt clustering --out docs/results/layers/gemma3-270m.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import report_scores, write_scores
from llm_embed._machine import describe_machine
from llm_embed.eval.clustering import evaluate_clustering
from llm_embed.eval.tasks import OFFLINE_SUITE
from llm_embed.inference.load import load_model
from llm_embed.pooling import Pooling, from_config


def decoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's list of decoder blocks (the ModuleList as long as ``num_hidden_layers``)."""
    n = backbone.config.num_hidden_layers
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise SystemExit(f"error: found no list of {n} decoder layers in {type(backbone).__name__}")


class SweepPooling(Pooling):
    """Pools the hooked states of several layers with several poolings; returns them concatenated.

    ``cells`` are ``(layer, pooling)``; layer -1 is the states the encoder hands over (its own
    layer: the last one after the final norm, as ``hidden_states[-1]``), any other the output of
    that decoder block, i.e. ``hidden_states[layer]``.
    """

    name = "sweep"

    def __init__(self, cells: Sequence[tuple[int, Pooling]], hidden_size: int) -> None:
        super().__init__()
        self.cells = list(cells)
        self.hidden_size = hidden_size
        self.captured: dict[int, torch.Tensor] = {}

    def output_dim(self, hidden_size: int) -> int:
        return sum(p.output_dim(hidden_size) for _, p in self.cells)

    def forward(self, hidden, mask, *, prompt_mask=None):
        parts = []
        for layer, pooling in self.cells:
            states = hidden if layer == -1 else self.captured[layer].float()
            parts.append(F.normalize(pooling(states, mask, prompt_mask=prompt_mask), dim=-1))
        return torch.cat(parts, dim=-1)


class CellView:
    """One cell of the sweep seen as an encoder (``name`` + ``encode``), from a shared cache."""

    def __init__(self, sweep: Sweep, index: int) -> None:
        self.sweep, self.index = sweep, index
        self.name = sweep.encoder.name

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, prompt=None, **_: Any):
        vectors = self.sweep.vectors(list(texts), prompt, batch_size)
        return F.normalize(vectors[:, self.sweep.slices[self.index]], dim=-1)


class Sweep:
    """Runs the encoder once per (prompt, text) and keeps every cell's vector of it."""

    def __init__(self, encoder: Any, layers: Sequence[int], poolings: Sequence[str]) -> None:
        self.encoder = encoder
        hidden = encoder.backbone.config.hidden_size
        blocks = decoder_layers(encoder.backbone)
        if encoder.layer not in (-1, len(blocks)):
            raise SystemExit("error: sweep a model that reads its last layer (layer -1)")
        # the last block's output is read after the final norm (as hidden_states[-1] is)
        layers = [-1 if layer == len(blocks) else layer for layer in layers]
        self.cells = [(layer, pooling) for layer in layers for pooling in poolings]
        pool = SweepPooling([(layer, from_config(p)) for layer, p in self.cells], hidden)
        self.slices, start = [], 0
        for _, p in pool.cells:
            width = p.output_dim(hidden)
            self.slices.append(slice(start, start + width))
            start += width
        for layer in {layer for layer in layers if layer != -1}:
            if not 1 <= layer <= len(blocks):
                raise SystemExit(f"error: layer {layer} is not in 1..{len(blocks)} (or -1)")

            def keep(_module, _args, output, layer=layer):
                pool.captured[layer] = output[0] if isinstance(output, tuple) else output

            blocks[layer - 1].register_forward_hook(keep)
        encoder.set_pooling(pool)
        self.cache: dict[tuple[str | None, str], torch.Tensor] = {}

    def vectors(self, texts: list[str], prompt: str | None, batch_size: int) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if (prompt, t) not in self.cache))
        if missing:
            with self.encoder.merged_adapter():
                out = self.encoder.encode(missing, batch_size=batch_size, prompt=prompt)
            self.cache.update({(prompt, t): v for t, v in zip(missing, out, strict=True)})
        return torch.stack([self.cache[(prompt, t)] for t in texts])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="anything evaluate's --model takes")
    parser.add_argument("--layers", default="-1", help="comma-separated; -1 = the model's own")
    parser.add_argument("--poolings", default="last,weighted_mean")
    parser.add_argument("--prompt", default=None, help="template name or string (default: saved)")
    parser.add_argument("--tasks", default=",".join(OFFLINE_SUITE))
    parser.add_argument("--max-documents", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the scores")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.layer_sweep", *(argv or sys.argv[1:])])
    print(f"machine: {describe_machine()}", flush=True)
    layers = [int(x) for x in args.layers.split(",")]
    poolings = args.poolings.split(",")
    tasks = args.tasks.split(",")
    t0 = time.perf_counter()
    encoder = load_model(args.model, prompt=args.prompt)
    sweep = Sweep(encoder, layers, poolings)
    rows = []
    for i, (layer, pooling) in enumerate(sweep.cells):
        scores = evaluate_clustering(CellView(sweep, i), tasks, max_documents=args.max_documents)
        mean = report_scores(f"layer {layer:>3} {pooling:<14}", scores)
        rows.append({"layer": layer, "pooling": pooling, **scores, "mean": mean})
    print(f"took {(time.perf_counter() - t0) / 60:.1f} min (machine: {describe_machine()})")
    record = {"model": args.model, "prompt": args.prompt, "command": command, "rows": rows}
    write_scores(args.out, record, markdown)


def markdown(record: dict[str, Any]) -> str:
    """The sweep as a table: one line per (layer, pooling), V-measure per task and the mean."""
    tasks = [k for k in record["rows"][0] if k not in ("layer", "pooling")]
    lines = [
        f"# Layer sweep: {record['model']}",
        "",
        f"Reproduce: `{record['command']}`",
        "",
        "| layer | pooling | " + " | ".join(tasks) + " |",
        "|---:|---|" + "---:|" * len(tasks),
    ]
    for row in record["rows"]:
        layer = "last" if row["layer"] == -1 else str(row["layer"])
        values = " | ".join(f"{row[t]:.4f}" for t in tasks)
        lines.append(f"| {layer} | {row['pooling']} | {values} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
