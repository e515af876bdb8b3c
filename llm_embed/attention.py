"""Plot the final token's attention for a base model and trained runs (the paper's figure).

Example::

    python -m llm_embed.attention --model smollm2-135m-instruct --run checkpoints/default \\
        --out docs/attention.png

Prints each row's content share and top tokens; logic lives in ``llm_embed.analysis.attention``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from llm_embed.cli import run_cli
from llm_embed.errors import UserError

log = logging.getLogger("llm_embed.attention")


def cli_main(args: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m llm_embed.attention", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="base model (packaged name, folder or hub id)",
    )
    p.add_argument(
        "--run",
        action="append",
        default=[],
        help="trained run folder (repeatable): checkpoints/<run>",
    )
    p.add_argument("--text", default="a man is driving a car")
    p.add_argument("--prompt", default="clustering", help="prompt name or template with {text}")
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--out", default="checkpoints/attention.png", help="PNG to write")
    ns = p.parse_args(args)

    from llm_embed.analysis.attention import final_token_attention, plot_attention
    from llm_embed.encoder import Encoder

    rows = {
        "base": final_token_attention(Encoder(ns.model), ns.text, prompt=ns.prompt, layer=ns.layer)
    }
    for run in ns.run:
        folder = Path(run) / "model" if (Path(run) / "model").is_dir() else Path(run)
        if not (folder / "encoder.json").is_file():
            raise UserError(f"run {run} holds no model/encoder.json: train it first (make run)")
        tuned = Encoder.load(folder, merge=True)
        if tuned.backbone_name != ns.model:
            raise UserError(
                f"run {run} was trained on {tuned.backbone_name!r}, not {ns.model!r}: pass --model {tuned.backbone_name}"
            )
        rows[f"fine-tuned ({Path(run).name})"] = final_token_attention(
            tuned, ns.text, prompt=ns.prompt, layer=ns.layer
        )
    for label, result in rows.items():
        top = ", ".join(f"{tok} {w:.3f}" for tok, w in result.top(5))
        log.info("%s: content share %.3f | top: %s", label, result.content_share, top)
    log.info("wrote %s", plot_attention(rows, ns.out))


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
