"""``encode`` and ``evaluate`` on 2 CPU processes (gloo) give exactly the one-process rows.

The processes split each encoding call by batch, so every row comes from the batch a single
process would run: with one thread per process (what Fabric sets for 2 CPU processes on this
machine, and ``OMP_NUM_THREADS=1`` sets for the single process) the rows are bit for bit equal.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from test_encode_cli import KILL_AFTER_CHUNKS, TEXTS, write_txt

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TWO = ["--devices", "2", "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def run_dir(lora_run, tmp_path_factory) -> Path:
    """A trained run's model/ folder with a non-zero LoRA adapter."""
    return lora_run(
        tmp_path_factory.mktemp("run"), pooling="mean", target_modules=["q_proj"], seed=3
    )


def test_two_process_encode_continues_a_killed_run_and_equals_one_process(
    run_dir, tmp_path, run_python
):
    texts = write_txt(tmp_path / "texts.txt", TEXTS * 3)
    common = ["--model", str(run_dir), "--input", str(texts), "--batch-size", "4", "--no-progress"]
    common += ["--chunk-size", "16"]
    proc = run_python(
        "-m", "llm_embed.encode", *common, "--out", "one.npy", cwd=tmp_path, env=ONE_THREAD
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    # a one-process run killed after 2 of its 7 chunks, then continued by two processes
    args = [*common, "--out", "two.npy", "--parquet", "two.parquet"]
    env = {**ONE_THREAD, "KILL_AFTER_CHUNKS": "2"}
    proc = run_python("-c", KILL_AFTER_CHUNKS, *args, cwd=tmp_path, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    proc = run_python("-m", "llm_embed.encode", *args, *TWO, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reused 2 of 7 chunks" in proc.stderr
    assert proc.stderr.count("wrote 111 x") == 1  # one process reports
    one, two = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    assert one.shape == two.shape == (111, 32)
    np.testing.assert_array_equal(two, one)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "two.parquet").column("id").to_pylist() == list(range(1, 112))
    assert not (tmp_path / "two.npy.parts").exists()


def test_two_process_evaluate_equals_one_process(run_dir, tmp_path, run_python):
    args = ["--model", str(run_dir), "--tasks", "BBCNewsHeadlines", "--max-documents", "120"]
    args += ["--map-samples", "0", "--no-progress"]
    scores = []
    for name, extra, env in (("one", [], ONE_THREAD), ("two", TWO, {})):
        proc = run_python(
            "-m",
            "llm_embed.evaluate",
            *args,
            "--out",
            name,
            *extra,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (record,) = json.loads((tmp_path / name / "results.json").read_text())
        scores.append(record)
    one, two = scores
    assert one["task"] == two["task"] == "BBCNewsHeadlines"
    assert two["v_measure"] == one["v_measure"] and 0 < one["v_measure"] < 1


def test_bad_device_counts_are_one_line(run_dir, tmp_path, capsys):
    from cli_errors import check_error

    from llm_embed._cli import run_cli
    from llm_embed.encode import cli_main

    texts = write_txt(tmp_path / "t.txt", TEXTS[:3])
    out = tmp_path / "e.npy"
    args = ["--model", str(run_dir), "--input", str(texts), "--out", str(out), "--devices", "0"]
    code = run_cli(lambda: cli_main(args))
    check_error(code, capsys.readouterr().err, "devices=0 is invalid", command="encode")
    assert not out.exists()
