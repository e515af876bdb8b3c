"""Progress off a terminal: plain log lines, throttled, never redrawn; the bar stays on a terminal."""

from __future__ import annotations

import logging

import pytest
from tqdm.auto import tqdm

from llm_embed import _progress
from llm_embed._progress import LineProgress, progress_bar
from llm_embed.train.heartbeat import TrainingHeartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_throttled_to_one_per_interval(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(_progress.time, "monotonic", clock)
    with caplog.at_level(logging.INFO, logger="llm_embed.progress"):
        bar = LineProgress(total=100, desc="encode", unit=" texts", every_s=60)
        for _ in range(100):
            clock.now += 1.5  # a step every 1.5 s: 150 s in all
            bar.update(1)
            bar.set_postfix(pairs=3)  # a refresh of its own: must not add lines
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    # the start, after 60 s (40 texts), after 120 s (80 texts), the end
    assert [line.split(" (")[0] for line in lines] == [
        "encode: 0/100 texts", "encode: 40/100 texts", "encode: 80/100 texts", "encode: 100/100 texts",
    ]  # fmt: skip
    assert "pairs=3" in lines[-1] and "ETA" in lines[-1]


def test_a_terminal_keeps_the_bar(monkeypatch):
    monkeypatch.setattr(_progress, "stderr_is_terminal", lambda: True)
    bar = progress_bar(total=3, desc="encode", unit="text")
    assert type(bar) is tqdm
    bar.close()
    monkeypatch.setattr(_progress, "stderr_is_terminal", lambda: False)
    bar = progress_bar(total=3, desc="encode", unit="text")
    assert isinstance(bar, LineProgress)
    bar.close()


def test_heartbeat_rejects_a_bad_interval():
    with pytest.raises(ValueError, match="every_s=0"):
        TrainingHeartbeat(every_s=0)
