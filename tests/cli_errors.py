"""The bad-input contract, checked in one place: exit 2, one ``error:`` line that names the problem
and the fix, no traceback.

Every bad-input test of a command line tool calls :func:`check_error` (in-process, through the
``run_cli`` wrapper each ``__main__`` uses) or :func:`check_proc` (a subprocess). With
``$LLM_EMBED_RECORD_ERRORS`` set to a file, each check also appends the test's id, the command and
the line a user sees to it: ``scripts/robustness_table.py`` turns that into docs/robustness.md.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence

RECORD_ENV = "LLM_EMBED_RECORD_ERRORS"


def check_error(code: int | None, err: str, *matches: str, command: str) -> str:
    """Assert the contract on an exit code and stderr; returns the error line."""
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    last = lines[-1]
    assert last.startswith("error: "), last
    for match in matches:
        assert match in last, (match, last)
    _record(command, last)
    return last


def check_proc(proc: subprocess.CompletedProcess, *matches: str) -> str:
    """:func:`check_error` on a finished ``python -m llm_embed.<command>`` subprocess."""
    return check_error(proc.returncode, proc.stderr, *matches, command=_command_of(proc.args))


def _command_of(args: Sequence[str]) -> str:
    args = [str(a) for a in args]
    if "-m" in args:
        return args[args.index("-m") + 1].removeprefix("llm_embed.")
    return "python"


def _record(command: str, line: str) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"test": test, "command": command, "message": line}) + "\n")
