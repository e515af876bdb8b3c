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
already in ``results.json``, so an interrupted grid resumes. Options can also come from
``--config file.yaml`` (keys: the option names with underscores). Logic lives in
``llm_embed.eval.grid.evaluate_grid``.
"""

from __future__ import annotations

import sys

from llm_embed._cli import add_options, command_parser, parse, run_cli


def cli_main(argv: list[str] | None = None) -> None:
    """Parse the options (:class:`~llm_embed.eval.grid.EvalConfig`) and call :func:`~llm_embed.eval.grid.evaluate_grid`."""
    from llm_embed.eval.grid import EvalConfig, evaluate_grid

    parser = command_parser("python -m llm_embed.evaluate", __doc__)
    add_options(parser, EvalConfig)
    args = parse(parser, argv)
    evaluate_grid(EvalConfig(**{k: v for k, v in vars(args).items() if k != "config"}))


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
