"""Progress that shows life in a terminal and in a log file alike.

A tqdm bar redraws one terminal line with carriage returns; written to a file (a CI log, ``nohup``,
a job scheduler's output) it shows nothing readable until it ends. :func:`progress_bar` keeps the
bar on a terminal and, elsewhere, logs one plain line every ``every_s`` seconds: done/total, rate,
elapsed time and ETA.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("llm_embed.progress")

LINE_EVERY_S = 60.0
LINE_FORMAT = (
    "{desc}: {n_fmt}/{total_fmt}{unit} ({percentage:.0f}%) | {rate_fmt}{postfix} | "
    "elapsed {elapsed}, ETA {remaining}"
)


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal (where a redrawn bar is readable)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class LineProgress(tqdm):
    """A tqdm whose every refresh (at most one per ``mininterval``) is one log line, not a redraw."""

    def __init__(self, *args: Any, every_s: float = LINE_EVERY_S, **kwargs: Any) -> None:
        kwargs.setdefault("bar_format", LINE_FORMAT)
        kwargs.update(mininterval=every_s, file=io.StringIO(), dynamic_ncols=False, ncols=None)
        self.every_s = every_s
        self._logged: tuple[float, int] | None = None  # (when, n) of the last line
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Log a line at the start, then at most once per ``every_s`` seconds, and at the end."""
        if msg == "":  # tqdm clearing the line: nothing to say
            return True
        now = time.monotonic()
        finished = self.total is not None and self.n >= self.total
        if self._logged is not None and (
            self._logged[1] == self.n or (now - self._logged[0] < self.every_s and not finished)
        ):
            return True
        self._logged = (now, self.n)
        log.info(self.format_meter(**self.format_dict))
        return True


def progress_bar(
    *, total: int | None, desc: str, unit: str, disable: bool = False, **kwargs: Any
) -> tqdm:
    """tqdm on a terminal; a :class:`LineProgress` logging a line a minute elsewhere."""
    if disable:
        return tqdm(total=total, disable=True)
    if stderr_is_terminal():
        return tqdm(total=total, desc=desc, unit=unit, **kwargs)
    return LineProgress(total=total, desc=desc, unit=" " + unit + "s", **kwargs)
