"""Every benchmark runs end to end at a tiny size, so the scripts cannot rot.

The numbers at this size mean nothing (a 2-layer random model on a busy CPU); the real ones are
in docs/performance.md with the commands that produced them.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def benchmarks_importable(monkeypatch):
    """``benchmarks`` is a folder of scripts beside the package, not installed: import it from the checkout."""
    monkeypatch.syspath_prepend(str(ROOT))


def test_encode_benchmark_quick(capsys):
    from benchmarks import encode

    result = encode.main(["--quick"])
    assert [r["encoder"] for r in result["rows"]] == ["llm-embed", "sentence-transformers"]
    assert result["max_abs_diff"] < 1e-4  # same tokens, same pooling: the same embeddings
    assert result["speedup"] > 0 and all(0 < r["of matmul peak"] < 1 for r in result["rows"])
    assert "llm-embed / sentence-transformers throughput" in capsys.readouterr().out


def test_train_step_benchmark_quick(capsys):
    from benchmarks import train_step

    result = train_step.main(["--quick"])
    rows = {(r["batch"], r["GradCache"].startswith("yes")): r for r in result["rows"]}
    assert set(rows) == {(4, False), (8, False), (4, True), (8, True)}
    assert all(isinstance(r["step s"], float) and r["step s"] > 0 for r in rows.values())
    assert "memory vs no cache" in capsys.readouterr().out

    capped = train_step.main(["--quick", "--max-plain-batch", "4"])
    plain8 = [r for r in capped["rows"] if r["batch"] == 8 and r["GradCache"] == "no"]
    assert [r["step s"] for r in plain8] == ["not run"]  # left out, not killed by the OOM killer
    assert all(isinstance(r["step s"], float) for r in capped["rows"] if r["GradCache"] != "no")


def test_loop_overhead_benchmark_quick(capsys):
    from benchmarks import loop_overhead

    result = loop_overhead.main(["--quick"])
    assert [r["loop"] for r in result["rows"]] == ["plain PyTorch", "Lightning"]
    assert math.isfinite(result["overhead"])
    assert "Lightning overhead" in capsys.readouterr().out


def test_gpu_check_script_runs_tiny_on_cpu():
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "## training (bf16-mixed, GradCache" in proc.stdout and "MFU" in proc.stdout
    assert "summary: training" in proc.stdout and "tokens/s" in proc.stdout


@pytest.mark.parametrize("name", ["encode", "train_step", "loop_overhead"])
def test_benchmarks_document_their_commands(name):
    text = (ROOT / "benchmarks" / f"{name}.py").read_text()
    assert f"python -m benchmarks.{name}" in text
    assert f"python -m benchmarks.{name}" in (ROOT / "docs" / "performance.md").read_text()


def test_profile_step_quick(capsys):
    from benchmarks import profile_step

    result = profile_step.main(["--quick"])
    assert set(result["phases"]) == set(profile_step.PHASES)
    assert all(v > 0 for v in result["phases"].values()) and result["cpu_s"] > 0
    assert len(result["top"]) == 5 and result["top"][0]["calls"] >= 1
    assert "self CPU" in capsys.readouterr().out
