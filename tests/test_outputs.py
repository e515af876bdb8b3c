"""Every command checks its outputs before it loads a model, and fails as one line with exit 2.

Driven through the real CLIs (subprocess) on the tiny model: an output under a path that cannot be
created, a file where a folder is expected and the reverse, ``--overwrite`` onto a folder that
llm-embed did not write, a second ``encode`` onto an output being written, and a ValueError from a
constructor check. Each must leave nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_errors import check_proc

from llm_embed._fs import exclusive_lock
from llm_embed.errors import UserError

UNWRITABLE = "/proc/llm-embed-no-such/x"  # /proc takes no new folders, not even for root


assert_one_line = check_proc


@pytest.fixture
def texts(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("a cat\na dog\n")
    return path


@pytest.mark.parametrize(
    "command, out, match",
    [
        ("encode", f"{UNWRITABLE}/emb.npy", "cannot be written"),
        ("encode", "folder.npy", "is a folder, not a file"),
        ("export", f"{UNWRITABLE}/exp", "cannot be written"),
        ("export", "file.txt", "is a file, not a folder"),
        ("evaluate", f"{UNWRITABLE}/ev", "cannot be written"),
        ("evaluate", "file.txt", "is a file, not a folder"),
        ("attention", f"{UNWRITABLE}/a.png", "cannot be written"),
        ("attention", "folder.npy", "is a folder, not a file"),
    ],
)
def test_a_bad_output_fails_before_the_model_loads(command, out, match, tmp_path, texts, run_python):
    # a model folder that would fail to load: its error would win if the model loaded first
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    (tmp_path / "folder.npy").mkdir()
    (tmp_path / "file.txt").write_text("mine")
    extra = {
        "encode": ["--input", str(texts), "--no-progress"],
        "export": [],
        "evaluate": ["--tasks", "WordNetNounGlosses", "--max-documents", "10"],
        "attention": [],
    }[command]
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_python("-m", f"llm_embed.{command}", "--model", str(broken), "--out", out,
                      *extra, cwd=tmp_path)  # fmt: skip
    assert_one_line(proc, match)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "file.txt").read_text() == "mine"


def test_overwrite_never_replaces_a_folder_llm_embed_did_not_write(tmp_path, tiny_model_dir, run_python):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    proc = run_python("-m", "llm_embed.export", "--model", tiny_model_dir, "--out", str(mine),
                      "--overwrite", cwd=tmp_path)  # fmt: skip
    assert_one_line(proc, "was not written by llm-embed")
    assert (mine / "notes.txt").read_text() == "keep me"
    export = tmp_path / "export"
    for _ in range(2):  # an export folder is replaced by --overwrite
        proc = run_python("-m", "llm_embed.export", "--model", tiny_model_dir, "--out", str(export),
                          "--overwrite", cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert (export / "llm_embed.json").is_file()


def test_a_second_encode_onto_the_same_output_stops_as_one_line(tmp_path, texts, tiny_model_dir, run_python):
    out = tmp_path / "emb.npy"
    with exclusive_lock(out, "encode"):  # the first writer, still busy
        proc = run_python("-m", "llm_embed.encode", "--model", tiny_model_dir, "--input", str(texts),
                          "--out", str(out), "--no-progress", cwd=tmp_path)  # fmt: skip
        assert_one_line(proc, f"another encode is writing {out}")
    assert not out.exists()
    proc = run_python("-m", "llm_embed.encode", "--model", tiny_model_dir, "--input", str(texts),
                      "--out", str(out), "--no-progress", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file() and not list(tmp_path.glob(".*.lock"))  # the lock goes with its holder


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    out = tmp_path / "x.npy"
    with (
        exclusive_lock(out, "encode"),
        pytest.raises(UserError, match="another encode"),
        exclusive_lock(out, "encode"),
    ):
        pass


def test_a_constructor_value_error_is_one_line(tmp_path, tiny_model_dir, run_python):
    proc = run_python("-m", "llm_embed.attention", "--model", tiny_model_dir, "--layer", "99",
                      "--out", str(tmp_path / "a.png"), cwd=tmp_path)  # fmt: skip
    assert_one_line(proc, "layer=99 is out of range")
    assert not (tmp_path / "a.png").exists()


def test_a_bug_keeps_its_traceback():
    from llm_embed._cli import error_line

    def deep() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError) as info:
        deep()
    assert error_line(info.value) is None
    assert error_line(PermissionError(13, "Permission denied", "/x")).startswith("Permission denied (/x)")
