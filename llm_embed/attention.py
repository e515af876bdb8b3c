"""Plot the final token's attention for a base model and trained runs (the paper's figure).

Example::

    python -m llm_embed.attention --model gemma3-270m --run checkpoints/default \\
        --out docs/attention.png

Logs each row's content share and top tokens; logic lives in
``llm_embed.analysis.attention_map.attention_report``.
"""

from __future__ import annotations

import sys

from llm_embed._cli import add_trust_remote_code, command_parser, parse, run_cli


def cli_main(argv: list[str] | None = None) -> None:
    """Parse the command line and call :func:`~llm_embed.analysis.attention_map.attention_report`."""
    p = command_parser("python -m llm_embed.attention", __doc__)
    p.add_argument(
        "--model",
        type=str,
        default="gemma3-270m",
        help="base model: packaged name, local folder or hub id (default: gemma3-270m)",
    )
    p.add_argument(
        "--run",
        type=str,
        action="append",
        default=[],
        help="trained run folder (repeatable): checkpoints/<run>, trained on --model",
    )
    p.add_argument("--text", type=str, default="a man is driving a car", help="the text to embed")
    p.add_argument(
        "--prompt", type=str, default="clustering", help="prompt name or template with {text}"
    )
    p.add_argument("--layer", type=int, default=-1, help="hidden layer (-1 = last)")
    p.add_argument("--out", type=str, default="checkpoints/attention.png", help="PNG to write")
    add_trust_remote_code(p)
    args = parse(p, argv)
    from llm_embed.analysis.attention_map import attention_report

    attention_report(
        args.model,
        args.run,
        text=args.text,
        prompt=args.prompt,
        layer=args.layer,
        out=args.out,
        trust_remote_code=args.trust_remote_code,
    )


if __name__ == "__main__":
    sys.exit(run_cli(cli_main))
