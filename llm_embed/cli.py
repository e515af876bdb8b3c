"""Shared plumbing of the thin CLIs: quiet library logs, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from llm_embed.errors import UserError, first_line


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UserError (one line, exit 2 via :func:`run_cli`) instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see --help)")


def doc_parser(prog: str, doc: str) -> ArgumentParser:
    """A parser whose ``--help`` is the CLI module's docstring: first paragraph, then the examples."""
    paragraphs = doc.split("\n\n")
    return ArgumentParser(
        prog=prog,
        description=paragraphs[0],
        epilog="\n\n".join(paragraphs[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def config_paths(argv: Sequence[str]) -> list[str]:
    """The values of ``--config X`` / ``--config=X`` in a command line."""
    paths = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def check_config_file(path: str | Path) -> None:
    """Raise a one-line UserError naming the file, line and column if a YAML config cannot be read.

    jsonargparse reports a YAML syntax error without the file's name (``"<unicode string>"``)
    and lets a non-UTF-8 byte escape as a traceback.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UserError(
            f"config {path} is not UTF-8 text (byte {err.start}, line {line}): save it as UTF-8"
        ) from None
    try:
        yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(
            f"config {path} is not valid YAML: {err.problem or err.context}{where}: fix the syntax there"
        ) from None
    except yaml.YAMLError as err:
        raise UserError(f"config {path} is not valid YAML: {first_line(err, 500, lines=2)}") from None


def check_config_files(argv: Sequence[str]) -> None:
    """:func:`check_config_file` for every ``--config`` that names a file (jsonargparse reports the rest)."""
    for value in config_paths(argv):
        if Path(value).is_file():
            check_config_file(value)


def run_cli(main: Callable[[], object]) -> int:
    """Run a CLI entry point; bad input ends as ``error: <one line>`` on stderr and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Our own logs at INFO; libraries keep their handlers (Lightning already prints its own).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    pkg = logging.getLogger("llm_embed")
    pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)
    pkg.propagate = False
    try:  # weight-loading progress bars drown the training log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        main()
    except UserError as err:
        print(f"error: {first_line(err, 500, lines=2)}", file=sys.stderr)
        return 2
    except Exception as err:  # jsonargparse's parse errors: show one line, not a usage dump
        if (
            type(err).__name__ in ("ArgumentError", "NSKeyError")
            or "jsonargparse" in type(err).__module__
        ):
            print(f"error: bad config or argument: {first_line(err, 500, lines=2)} (see --help)", file=sys.stderr)
            return 2
        raise
    return 0
