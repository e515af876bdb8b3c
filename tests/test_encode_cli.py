"""``python -m llm_embed.encode``: same vectors as the encoder, ids in Parquet, restart after SIGKILL, bad input."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_errors import check_error

from llm_embed._cli import run_cli
from llm_embed.encode import cli_main
from llm_embed.inference.load import load_model

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"sentence {i} " + "about topic " * (i % 7) + f"number {i % 5}" for i in range(37)]
TEXTS[5] = "a long one " * 200  # beyond max_text_tokens=100
TEXTS[9] = "café, naïve, 東京 {text}"


@pytest.fixture(scope="module")
def run_dir(lora_run, tmp_path_factory) -> Path:
    """A trained run's model/ folder with a non-zero LoRA adapter."""
    run = tmp_path_factory.mktemp("run")
    return lora_run(run, pooling="mean", target_modules=["q_proj", "v_proj"], seed=2)


@pytest.fixture(scope="module")
def reference(run_dir) -> np.ndarray:
    return load_model(str(run_dir)).encode(TEXTS).numpy()


def encode(capsys, *args: str, progress: bool = False) -> tuple[int, str]:
    code = run_cli(lambda: cli_main([*args] if progress else [*args, "--no-progress"]))
    return code, capsys.readouterr().err


def write_txt(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def test_txt_gives_the_encoders_vectors_in_input_order(run_dir, reference, tmp_path, capsys):
    texts = write_txt(tmp_path / "texts.txt", TEXTS)
    code, err = encode(
        capsys,
        "--model",
        str(run_dir),
        "--input",
        str(texts),
        "--out",
        str(tmp_path / "e.npy"),
        "--batch-size",
        "4",
        "--chunk-size",
        "10",
        "--parquet",
        str(tmp_path / "e.parquet"),
        progress=True,
    )
    assert code == 0, err
    got = np.load(tmp_path / "e.npy")
    assert got.dtype == np.float32 and got.shape == reference.shape
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)
    assert "1 of 37 texts were longer than max_text_tokens=100" in err
    # stderr is not a terminal here: progress comes as plain log lines, the last one at 100%
    assert "encode: 0/37 texts (0%)" in err and "encode: 37/37 texts (100%)" in err
    assert "\r" not in err
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column("id").to_pylist() == list(range(1, 38))  # line numbers
    np.testing.assert_array_equal(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), got
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "e.npy",
        "e.parquet",
        "texts.txt",
    ]  # parts removed


def test_jsonl_with_field_and_ids(run_dir, reference, tmp_path, capsys):
    rows = [{"body": t, "doc": f"d{i}", "other": i} for i, t in enumerate(TEXTS)]
    path = tmp_path / "docs.jsonl"
    # records separated by blank lines, which are not records
    records = "\n\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    path.write_text(records + "\n", encoding="utf-8")
    code, err = encode(
        capsys,
        "--model",
        str(run_dir),
        "--input",
        str(path),
        "--field",
        "body",
        "--id-field",
        "doc",
        "--out",
        str(tmp_path / "e.npy"),
        "--parquet",
        str(tmp_path / "e.parquet"),
    )
    assert code == 0, err
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column("id").to_pylist() == [f"d{i}" for i in range(len(TEXTS))]
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), reference, rtol=1e-5, atol=1e-6)


KILL_AFTER_CHUNKS = """
import os, signal, sys
import llm_embed.inference.embed_file as ef

real, saved = ef._save_chunk, []
def save_then_die(*args, **kwargs):
    real(*args, **kwargs)
    saved.append(1)
    if len(saved) == int(os.environ["KILL_AFTER_CHUNKS"]):
        os.kill(os.getpid(), signal.SIGKILL)
ef._save_chunk = save_then_die

from llm_embed._cli import run_cli
from llm_embed.encode import cli_main
sys.exit(run_cli(lambda: cli_main(sys.argv[1:])))
"""


def test_a_killed_run_continues_from_its_chunks(run_dir, reference, tmp_path, run_python):
    texts = write_txt(tmp_path / "texts.txt", TEXTS)
    args = [
        "--model",
        str(run_dir),
        "--input",
        str(texts),
        "--out",
        "e.npy",
        "--chunk-size",
        "8",
        "--no-progress",
    ]
    proc = run_python("-c", KILL_AFTER_CHUNKS, *args, cwd=tmp_path, env={"KILL_AFTER_CHUNKS": "3"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (tmp_path / "e.npy").exists()
    assert len(list((tmp_path / "e.npy.parts").glob("chunk-*.npz"))) == 3

    proc = run_python("-m", "llm_embed.encode", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reused 3 of 5 chunks" in proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), reference, rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "e.npy.parts").exists()


def test_chunks_of_other_texts_or_another_model_are_never_reused(
    run_dir, tiny_model_dir, tmp_path, capsys
):
    from llm_embed.inference.embed_file import embed_file

    texts = write_txt(tmp_path / "texts.txt", TEXTS)
    encoder = load_model(str(run_dir))

    class Stop(Exception):
        pass

    real = encoder.encode
    calls = {"n": 0}

    def encode_then_stop(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # two chunks of 8 texts (one encode call each), then the "crash"
            raise Stop
        return real(*args, **kwargs)

    encoder.encode = encode_then_stop
    with pytest.raises(Stop):
        embed_file(
            encoder,
            texts,
            tmp_path / "e.npy",
            chunk_size=8,
            batch_size=4,
            progress=False,
            model_id="run",
        )
    encoder.encode = real

    changed = list(TEXTS)
    changed[3] = "an edited line"
    write_txt(texts, changed)
    summary = embed_file(
        encoder, texts, tmp_path / "e.npy", chunk_size=8, progress=False, model_id="run"
    )
    assert summary.reused_chunks == 1  # chunk 0 (lines 1-8) changed, chunk 1 did not
    np.testing.assert_allclose(
        np.load(tmp_path / "e.npy"), real(changed).numpy(), rtol=1e-5, atol=1e-6
    )

    with pytest.raises(Stop):  # leave parts behind again, then come back with another model
        encoder.encode = encode_then_stop
        calls["n"] = 0
        embed_file(
            encoder,
            texts,
            tmp_path / "f.npy",
            chunk_size=8,
            batch_size=4,
            progress=False,
            model_id="run",
        )
    code, err = encode(
        capsys, "--model", tiny_model_dir, "--input", str(texts), "--out", str(tmp_path / "f.npy")
    )
    check_error(
        code, err, "holds chunks embedded by another model", "delete that folder", command="encode"
    )


# -- bad input ------------------------------------------------------------------------------------
def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "latin1.txt": b"fine line\ncaf\xe9 au lait\n",
        "empty-line.txt": b"one\n\nthree\n",
        "blank.txt": b"   \n\n",
        "empty.txt": b"",
        "bad.jsonl": b'{"text": "ok"}\n{"text": "unclosed\n',
        "nofield.jsonl": b'{"body": "ok"}\n',
        "number.jsonl": b'{"text": 3}\n',
        "list.jsonl": b'["text"]\n',
        "surrogate.jsonl": b'{"text": "ok"}\n{"text": "bad \\ud800 here"}\n',
        "good.txt": b"one\ntwo\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return {name: tmp_path / name for name in files}


@pytest.mark.parametrize(
    "input, extra, match",
    [
        (
            "latin1.txt",
            [],
            "latin1.txt:2: not valid UTF-8 (byte 13 of the file): re-save the file as UTF-8",
        ),
        (
            "empty-line.txt",
            [],
            "empty-line.txt:2: empty text: remove the line or pass --skip-empty",
        ),
        ("blank.txt", ["--skip-empty"], "holds no texts (2 empty skipped)"),
        ("empty.txt", [], "holds no texts"),
        ("missing.txt", [], "input"),
        ("bad.jsonl", [], "bad.jsonl:2: bad JSON"),
        ("nofield.jsonl", [], "no 'text' field (keys: body): pass --field NAME"),
        ("number.jsonl", [], "'text' is int, not a string"),
        ("list.jsonl", [], "expected a JSON object, got list"),
        ("surrogate.jsonl", [], "surrogate.jsonl:2: a lone surrogate escape"),
        ("good.txt", ["--out", "{tmp}/OUT.txt"], "must end in .npy"),
        ("good.txt", ["--batch-size", "0"], "must be >= 1"),
        (
            "good.txt",
            ["--model", "no-such-org/no-such-model"],
            "could not load model",
        ),  # hub id while offline
        ("good.txt", ["--model", "./no/such/folder"], "not found"),
        ("good.txt", ["--inference-backend", "onnx"], "inference_backend='onnx' is unknown"),
        ("good.txt", ["--parquet", "{tmp}/OUT.npy"], "--out and --parquet are the same file"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys, input, extra, match):
    _bad_files(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [
        "--model",
        str(run_dir),
        "--input",
        str(tmp_path / input),
        "--out",
        str(tmp_path / "OUT.npy"),
    ]
    args += [a.format(tmp=tmp_path) for a in extra]  # a repeated option: argparse keeps the last
    code, err = encode(capsys, *args)
    check_error(code, err, match, command="encode")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no parts folder


def test_skip_empty_skips_and_counts(run_dir, tmp_path, capsys):
    files = _bad_files(tmp_path)
    code, err = encode(
        capsys,
        "--model",
        str(run_dir),
        "--input",
        str(files["empty-line.txt"]),
        "--out",
        str(tmp_path / "e.npy"),
        "--skip-empty",
    )
    assert code == 0, err
    assert "skipped 1 empty text(s)" in err and "first: line 2" in err
    np.testing.assert_allclose(
        np.load(tmp_path / "e.npy"),
        load_model(str(run_dir)).encode(["one", "three"]).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_existing_output_needs_overwrite(run_dir, tmp_path, capsys):
    files = _bad_files(tmp_path)
    (tmp_path / "e.npy").write_bytes(b"keep me")
    code, err = encode(
        capsys,
        "--model",
        str(run_dir),
        "--input",
        str(files["good.txt"]),
        "--out",
        str(tmp_path / "e.npy"),
    )
    check_error(code, err, "already exists", "--overwrite", command="encode")
    assert (tmp_path / "e.npy").read_bytes() == b"keep me"
    code, err = encode(
        capsys,
        "--model",
        str(run_dir),
        "--input",
        str(files["good.txt"]),
        "--out",
        str(tmp_path / "e.npy"),
        "--overwrite",
    )
    assert code == 0 and np.load(tmp_path / "e.npy").shape == (2, 32)


def test_parquet_without_pyarrow_is_a_clear_error(run_dir, tmp_path, capsys, monkeypatch):
    files = _bad_files(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    code, err = encode(
        capsys,
        "--model",
        str(run_dir),
        "--input",
        str(files["good.txt"]),
        "--out",
        str(tmp_path / "e.npy"),
        "--parquet",
        str(tmp_path / "e.parquet"),
    )
    check_error(code, err, "--parquet needs pyarrow", "pip install pyarrow", command="encode")
    assert not (tmp_path / "e.npy").exists()


def test_truncate_dim_keeps_the_leading_dimensions_renormalised(run_dir, tmp_path, capsys):
    import torch

    texts = write_txt(tmp_path / "t.txt", ["a cat", "stocks fell", "to run fast"])
    code, err = encode(capsys, "--model", str(run_dir), "--input", str(texts),
                       "--out", str(tmp_path / "e8.npy"), "--truncate-dim", "8")  # fmt: skip
    assert code == 0, err
    full = load_model(str(run_dir)).encode(["a cat", "stocks fell", "to run fast"])
    want = torch.nn.functional.normalize(
        full[:, :8], dim=-1
    ).numpy()  # normalised, then cut, then again
    got = np.load(tmp_path / "e8.npy")
    assert got.shape == (3, 8)
    np.testing.assert_allclose(got, want, atol=1e-5)
    code, err = encode(capsys, "--model", str(run_dir), "--input", str(texts),
                       "--out", str(tmp_path / "big.npy"), "--truncate-dim", "999")  # fmt: skip
    check_error(code, err, "truncate_dim=999 is larger than the model's 32 dimensions", "1..32",
                command="encode")  # fmt: skip
    assert not (tmp_path / "big.npy").exists()


@pytest.mark.parametrize("precision", ["int8", "ubinary"])
def test_compact_vectors_equal_quantizing_the_float_matrix(run_dir, tmp_path, capsys, precision):
    from sentence_transformers.util.quantization import quantize_embeddings

    texts = [f"text number {i} about {t}" for i, t in enumerate(["cats", "stocks", "rain"] * 4)]
    path = write_txt(tmp_path / "t.txt", texts)
    args = ["--model", str(run_dir), "--input", str(path), "--chunk-size", "5"]  # 3 chunks
    assert encode(capsys, *args, "--out", str(tmp_path / "f.npy"))[0] == 0
    code, err = encode(capsys, *args, "--out", str(tmp_path / "q.npy"), "--precision", precision,
                       "--parquet", str(tmp_path / "q.parquet"))  # fmt: skip
    assert code == 0, err
    full = np.load(tmp_path / "f.npy")
    got = np.load(tmp_path / "q.npy")
    want = quantize_embeddings(full, precision=precision)  # ranges from the whole matrix
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if precision == "int8":
        ranges = np.load(tmp_path / "q.ranges.npy")
        np.testing.assert_allclose(ranges, np.stack([full.min(0), full.max(0)]))
    else:
        assert (
            got.shape == (len(texts), full.shape[1] // 8)
            and not (tmp_path / "q.ranges.npy").exists()
        )
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "q.parquet")
    np.testing.assert_array_equal(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), want
    )


def test_openvino_backend_gives_the_pytorch_vectors(run_dir, reference, tmp_path, capsys):
    texts = write_txt(tmp_path / "texts.txt", TEXTS)
    out = tmp_path / "e.npy"
    args = ["--model", str(run_dir), "--input", str(texts), "--out", str(out)]
    code, err = encode(capsys, *args, "--inference-backend", "openvino", "--batch-size", "8")
    assert code == 0, err
    np.testing.assert_allclose(np.load(out), reference, rtol=1e-4, atol=2e-5)


def test_a_cr_only_file_is_one_text_per_line(run_dir, reference, tmp_path, capsys):
    """Old Mac line ends (a lone CR) end a line, as Python's text mode reads them."""
    path = tmp_path / "mac.txt"
    path.write_bytes("\r".join(TEXTS[:6]).encode("utf-8") + b"\r")
    out = tmp_path / "e.npy"
    code, err = encode(capsys, "--model", str(run_dir), "--input", str(path), "--out", str(out))
    assert code == 0, err
    np.testing.assert_allclose(np.load(out), reference[:6], rtol=1e-4, atol=1e-5)


def _dead_pid() -> str:
    import subprocess

    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip


def test_a_full_disk_at_assembly_is_one_line_and_leaves_no_temp(
    run_dir, tmp_path, capsys, monkeypatch
):
    """Writing the .npy through a memory map over a sparse file died of SIGBUS on a full disk;
    its blocks are now reserved first, so a full disk is an error line, and the temp is gone."""
    import errno
    import os

    texts = write_txt(tmp_path / "texts.txt", TEXTS[:8])
    stale = tmp_path / f".e.npy.{_dead_pid()}-k2j4_abc.npy"  # left by a run the SIGBUS killed
    stale.write_bytes(b"\0" * 4096)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    args = ["--model", str(run_dir), "--input", str(texts), "--out", str(tmp_path / "e.npy")]
    code, err = encode(capsys, *args)
    check_error(code, err, "No space left on device", "the disk is full", command="encode")
    assert not (tmp_path / "e.npy").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".e.npy")] == []
    monkeypatch.undo()  # space freed: the same command finishes from the embedded chunks
    code, err = encode(capsys, *args)
    assert code == 0, err
    assert np.load(tmp_path / "e.npy").shape[0] == 8


def test_too_little_space_for_the_output_is_refused_before_writing(
    run_dir, tmp_path, capsys, monkeypatch
):
    import shutil
    from collections import namedtuple

    texts = write_txt(tmp_path / "texts.txt", TEXTS[:8])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100, 100))
    args = ["--model", str(run_dir), "--input", str(texts), "--out", str(tmp_path / "e.npy")]
    code, err = encode(capsys, *args)
    check_error(code, err, "needs", "are free", command="encode")
    assert not (tmp_path / "e.npy").exists()


def test_nan_vectors_are_refused_not_written(nan_model_dir, tmp_path, capsys):
    texts = write_txt(tmp_path / "texts.txt", TEXTS[:8])
    code, err = encode(capsys, "--model", str(nan_model_dir), "--input", str(texts), "--out",
                       str(tmp_path / "e.npy"))  # fmt: skip
    check_error(code, err, "non-finite vectors (NaN or inf) for 8 of 8 texts", command="encode")
    assert not (tmp_path / "e.npy").exists()
