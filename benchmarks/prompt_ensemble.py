"""Score prompt ensembles (MetaEOL-style) of one model: the mean of its vectors under several prompts.

Every prompt goes through the model's own encoder (its pooling, inference backend and
calibration), one encoding pass over the suite each, timed. A calibrated model (``dim_scale``)
was calibrated under its own prompt, so each other prompt gets its own scale, fitted the same way
on the same texts: the run's own sample of training anchors (or a pairs file's,
``--calibration-pairs``), never evaluation text. Every ensemble is then scored from the cached
vectors through the same mteb path as ``evaluate`` (``evaluate_clustering``), at each of
``--seeds`` (mteb's bootstrap and k-means, on the ``--split`` texts), so a k-prompt ensemble shows its quality
beside its cost (k passes).

    python -m benchmarks.prompt_ensemble --model checkpoints/default \
        --prompts clustering,prompteol,summary,classification --seeds 42,43,44 \
        --out docs/results/prompt-ensemble/default.json
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import report_scores, scores_table, write_scores
from llm_embed._machine import describe_machine
from llm_embed.data.pairs import read_pairs, sample_anchors
from llm_embed.errors import UserError
from llm_embed.eval.clustering import evaluate_clustering
from llm_embed.eval.tasks import OFFLINE_SUITE, SPLITS
from llm_embed.inference.load import load_model
from llm_embed.synth import datamodule_from_config


def calibration_anchors(model: str, n: int, pairs_file: str | Path | None = None) -> list[str]:
    """The ``n`` anchors a run's training calibrated on (its config's training split, drawn as
    the training module draws them), or a sample of ``pairs_file``'s anchors."""
    if pairs_file is not None:
        return sample_anchors(read_pairs(pairs_file), n)
    config = Path(model) / "config.yaml"
    if not config.is_file():
        raise UserError(
            f"--model {model} is no training run (no config.yaml): give --calibration-pairs FILE"
        )
    data = datamodule_from_config(["--config", str(config)], prog="benchmarks.prompt_ensemble")
    data.setup("fit")
    return sample_anchors(data.train_pairs, n)


class PromptView:
    """One prompt through the encoder's own path, with that prompt's ``dim_scale``; vectors cached."""

    def __init__(self, encoder: Any, prompt: str, dim_scale: torch.Tensor | None) -> None:
        self.encoder, self.prompt, self.dim_scale = encoder, prompt, dim_scale
        self.cache: dict[str, torch.Tensor] = {}
        self.seconds = 0.0  # time spent encoding: this prompt's pass over the texts

    def vectors(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            start = time.perf_counter()
            self.encoder.dim_scale = self.dim_scale
            out = self.encoder.encode(missing, batch_size=batch_size, prompt=self.prompt)
            self.seconds += time.perf_counter() - start
            self.cache.update(zip(missing, out, strict=True))
        return torch.stack([self.cache[t] for t in texts])


class Ensemble:
    """Looks like an encoder to mteb: the normalised mean of its prompt views' vectors."""

    def __init__(self, views: Sequence[PromptView], name: str) -> None:
        self.views, self.name = list(views), name

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, prompt=None, **_: Any):
        parts = [F.normalize(v.vectors(texts, batch_size), dim=-1) for v in self.views]
        return F.normalize(torch.stack(parts).mean(0), dim=-1)


def prompt_views(
    encoder: Any, prompts: Sequence[str], anchors: Sequence[str]
) -> dict[str, PromptView]:
    """A view per prompt; a calibrated encoder's other prompts are calibrated on ``anchors``."""
    from llm_embed.prompts import get_prompt

    saved = None if encoder.dim_scale is None else torch.tensor(encoder.dim_scale)
    views = {}
    for p in prompts:
        scale = saved
        if saved is not None and get_prompt(p).template != encoder.prompt.template:
            encoder.calibrate(anchors, prompt=p)
            scale = torch.tensor(encoder.dim_scale)
        views[p] = PromptView(encoder, p, scale)
    encoder.dim_scale = saved
    return views


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="anything evaluate's --model takes")
    parser.add_argument("--prompts", default="clustering,prompteol,summary,classification")
    parser.add_argument("--tasks", default=",".join(OFFLINE_SUITE))
    parser.add_argument(
        "--seeds", default="42,43,44,45,46", help="evaluation seeds, comma-separated (scores: mean)"
    )
    parser.add_argument("--split", default="dev", choices=SPLITS, help="the tasks' split (dev)")
    parser.add_argument(
        "--calibration-pairs",
        default=None,
        help="pairs file whose anchors calibrate the other prompts of a calibrated model "
        "(default: the run's own training anchors, from its config.yaml)",
    )
    parser.add_argument("--calibration-texts", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the scores")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.prompt_ensemble", *(argv or sys.argv[1:])])
    machine = describe_machine()
    print(f"machine: {machine}", flush=True)
    prompts, tasks = args.prompts.split(","), args.tasks.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    encoder = load_model(args.model)
    anchors = (
        []
        if encoder.dim_scale is None
        else calibration_anchors(args.model, args.calibration_texts, args.calibration_pairs)
    )
    views = prompt_views(encoder, prompts, anchors)
    rows: list[dict[str, Any]] = []

    def score(combo: Sequence[str]) -> None:
        ensemble = Ensemble([views[p] for p in combo], encoder.name)
        scores = evaluate_clustering(ensemble, tasks, seeds=seeds, split=args.split)
        label = " + ".join(combo)
        mean = report_scores(f"{label:<45}", scores)
        rows.append({"ensemble": label, "passes": len(combo), **scores, "mean": mean})

    for p in prompts:  # one pass each
        score([p])
    for k in range(2, len(prompts) + 1):
        for combo in itertools.combinations(prompts, k):
            score(combo)
    record = {
        "model": args.model,
        "command": command,
        "machine": machine,
        "seeds": seeds,
        "pass_seconds": {p: round(v.seconds, 1) for p, v in views.items()},
        "rows": rows,
    }
    write_scores(args.out, record, markdown)


def markdown(record: dict[str, Any]) -> str:
    """One line per ensemble: passes over the texts, V-measure per task and the mean."""
    times = ", ".join(f"{p} {s} s" for p, s in record["pass_seconds"].items())
    lines = [
        f"# Prompt ensembles: {record['model']}",
        "",
        f"Reproduce: `{record['command']}` (machine: {record['machine']}). V-measure: the mean "
        f"over mteb seeds {', '.join(map(str, record['seeds']))}. `passes`: encoding passes over "
        f"the texts, the ensemble's encode-time cost relative to one prompt (one pass each: {times}).",
        "",
        *scores_table(record["rows"], [("ensemble", "ensemble"), ("passes", "passes")]),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from llm_embed._cli import run_cli

    raise SystemExit(run_cli(main))
