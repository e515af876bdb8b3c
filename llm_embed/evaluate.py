"""Score models on clustering (mteb V-measure) and write one results table.

Examples::

    # one configuration (defaults: last-token pooling, the paper's clustering prompt)
    python -m llm_embed.evaluate --model smollm2-135m-instruct --max-documents 500
    # the grid poolings x prompts on one loaded backbone, beside the MiniLM baseline
    python -m llm_embed.evaluate --model gemma3-270m --grid --baseline all-minilm-l6-v2
    python -m llm_embed.evaluate --model smollm2-135m-instruct --poolings last,mean --prompts none,clustering
    # a trained run (its saved pooling and prompt), or base model + adapter
    python -m llm_embed.evaluate --model checkpoints/run1
    python -m llm_embed.evaluate --model smollm2-135m-instruct --adapter checkpoints/run1
    # a sentence-transformers model alone
    python -m llm_embed.evaluate --model st:all-minilm-l6-v2

Writes ``results.json`` (one record per configuration and task), ``results.md`` and
``results.png`` to ``--out`` (default ``docs/results/<model>``). Re-running skips the cells
already in ``results.json``, so an interrupted grid resumes. Logic lives in
``llm_embed.eval.run.run_evaluation``.
"""

from __future__ import annotations

import argparse
import sys

from llm_embed.cli import doc_parser, run_cli


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = doc_parser("python -m llm_embed.evaluate", __doc__)
    p.add_argument("--model", help="packaged name, local folder, hub id, run folder, or st:<name>")
    p.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "llm", "run", "sentence-transformers"],
        help="what --model is (default: auto-detected)",
    )
    p.add_argument("--adapter", help="trained run folder whose LoRA adapter is merged into --model")
    p.add_argument("--pooling", help="pooling (default: last, or the run's saved pooling)")
    p.add_argument(
        "--prompt", help="prompt name or template with {text} (default: clustering, or the run's)"
    )
    p.add_argument("--prompts-file", help="YAML of user templates (name: template), usable by name")
    p.add_argument(
        "--task-prompts", help="YAML mapping task -> prompt, overriding --prompt per task"
    )
    p.add_argument(
        "--tasks",
        type=_csv,
        help="comma-separated local or MTEB clustering task names (default: the offline suite)",
    )
    p.add_argument(
        "--max-documents",
        help="seeded subsample per task: N, or N plus per-task caps, e.g. 500,BBCNewsArticles=200 "
        "(default: all)",
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="texts per forward pass (default: 32)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=42,
        help="task seed: subsample and k-means bootstrap (default: 42)",
    )
    p.add_argument(
        "--grid", action="store_true", help="sweep poolings x prompts (sensible defaults)"
    )
    p.add_argument("--poolings", type=_csv, help="grid poolings, comma-separated (implies --grid)")
    p.add_argument("--prompts", type=_csv, help="grid prompts, comma-separated (implies --grid)")
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="MODEL",
        help="add a baseline's row, e.g. all-minilm-l6-v2 (repeatable)",
    )
    p.add_argument("--out", help="output folder (default: docs/results/<model>)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def cli_main(argv: list[str] | None = None) -> None:
    """Parse the command line and call :func:`llm_embed.eval.run.run_evaluation`."""
    args = build_parser().parse_args(argv)
    from llm_embed.eval.run import load_task_prompts, run_evaluation

    run_evaluation(
        args.model,
        kind=args.kind,
        adapter=args.adapter,
        pooling=args.pooling,
        prompt=args.prompt,
        grid=args.grid,
        poolings=args.poolings,
        prompts=args.prompts,
        prompts_file=args.prompts_file,
        task_prompts=load_task_prompts(args.task_prompts) if args.task_prompts else None,
        tasks=args.tasks,
        max_documents=args.max_documents,
        batch_size=args.batch_size,
        seed=args.seed,
        baselines=[b for value in args.baseline for b in _csv(value)],
        out=args.out,
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
