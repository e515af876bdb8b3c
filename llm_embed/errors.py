"""The one exception type that the commands turn into a single line and exit code 2, and its helper."""

from __future__ import annotations


class UserError(Exception):
    """Bad input that the user can fix: the message names the problem and the fix, on one line."""


class OptionError(UserError, ValueError):
    """A bad option value: a ValueError to library callers, one line from the commands (never
    mistaken for a damaged file by a loader that wraps other ValueErrors)."""


def first_line(err: BaseException, limit: int = 200, *, lines: int = 1) -> str:
    """The first ``lines`` non-empty lines of an exception's message, joined and cut to ``limit``.

    Library errors (safetensors, peft, YAML, jsonargparse) are often many lines long; a one-line
    message quotes only their start. An empty message gives the exception's type name.
    """
    found = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return " ".join(found[:lines])[:limit] if found else type(err).__name__
