"""Shared plumbing of the thin CLIs: quiet library logs, one-line errors, exit codes."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from llm_embed.errors import UserError


def _one_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return " ".join(lines[:2])[:500] if lines else type(err).__name__


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
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # jsonargparse's parse errors: show one line, not a usage dump
        if type(err).__name__ in ("ArgumentError", "NSKeyError") or "jsonargparse" in type(err).__module__:
            print(f"error: bad config or argument: {_one_line(err)} (see --help)", file=sys.stderr)
            return 2
        raise
    return 0
