"""The one exception type that the CLIs turn into a single line and a non-zero exit."""

from __future__ import annotations


class UserError(Exception):
    """Bad input that the user can fix: the message names the problem and the fix, on one line."""
