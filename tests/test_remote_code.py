"""No command runs Python code shipped in a model folder unless the user passes the flag for it.

The folder below is a tiny model whose ``config.json`` has an ``auto_map`` to ``custom_model.py``,
and that file writes a marker as soon as it is imported. A run (``encoder.json``) and an export
(``llm_embed.json``) that say ``trust_remote_code: true`` must be refused, with one line that
names the flag, and the marker never written; with ``--trust-remote-code`` the code runs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from cli_errors import check_proc

from llm_embed.errors import UserError

CUSTOM_CODE = """\
from pathlib import Path

Path({marker!r}).write_text("ran")

from transformers import LlamaModel


class CustomModel(LlamaModel):
    pass
"""


@pytest.fixture
def code_folder(tiny_model_dir, tmp_path) -> tuple[Path, Path]:
    """(a model folder that ships code, the marker that code writes)."""
    folder, marker = tmp_path / "shipped-code", tmp_path / "marker.txt"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "custom_model.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom_model.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    return folder, marker


def _saved(kind: str, folder: Path, tmp_path: Path) -> Path:
    """A run folder or an export folder whose description asks for trust_remote_code."""
    description = {"pooling": "mean", "prompt": "none", "trust_remote_code": True}
    if kind == "run":
        run = tmp_path / "run"
        (run / "model").mkdir(parents=True)
        (run / "model" / "encoder.json").write_text(
            json.dumps({**description, "backbone": str(folder)})
        )
        return run
    (folder / "llm_embed.json").write_text(json.dumps({**description, "backbone": "x"}))
    return folder


@pytest.mark.parametrize("kind", ["run", "export"])
def test_saved_flag_alone_is_refused_and_runs_nothing(code_folder, tmp_path, kind, run_python):
    folder, marker = code_folder
    model = _saved(kind, folder, tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat\na dog\n")
    out = tmp_path / "emb.npy"
    proc = run_python("-m", "llm_embed.encode", "--model", str(model), "--input", str(texts),
                      "--out", str(out), "--no-progress")  # fmt: skip
    check_proc(proc, "--trust-remote-code")
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1, proc.stderr
    assert not marker.exists() and not out.exists()


def test_api_refuses_too_and_the_flag_lets_the_code_run(code_folder, tmp_path):
    from llm_embed.encoder import Encoder
    from llm_embed.inference.load import load_model

    folder, marker = code_folder
    run = _saved("run", folder, tmp_path)
    with pytest.raises(UserError, match="trust_remote_code"):
        Encoder.load(run / "model")
    with pytest.raises(UserError, match="--trust-remote-code"):
        load_model(str(run))
    assert not marker.exists()
    with contextlib.suppress(Exception):  # only whether the shipped code ran matters here
        load_model(str(run), trust_remote_code=True)
    assert marker.read_text() == "ran"  # the test can fail: this folder's code does run


def test_a_bare_folder_that_needs_its_code_names_the_flag(code_folder, tmp_path, run_python):
    """A model type transformers does not know loads only through the folder's own code."""
    folder, marker = code_folder
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom-tiny"
    config["auto_map"]["AutoConfig"] = "custom_model.CustomConfig"
    (folder / "config.json").write_text(json.dumps(config))
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat\na dog\n")
    out = tmp_path / "emb.npy"
    proc = run_python("-m", "llm_embed.encode", "--model", str(folder), "--input", str(texts),
                      "--out", str(out), "--no-progress")  # fmt: skip
    check_proc(proc, "needs the Python code shipped in its folder", "--trust-remote-code")
    assert not marker.exists() and not out.exists()


def test_turning_custom_code_on_says_so_in_one_line(code_folder, caplog):
    from llm_embed.encoder import Encoder

    folder, marker = code_folder
    with caplog.at_level("WARNING", logger="llm_embed"), contextlib.suppress(Exception):
        Encoder(str(folder), trust_remote_code=True)
    said = [r.getMessage() for r in caplog.records if "trust_remote_code is on" in r.getMessage()]
    assert len(said) == 1 and str(folder) in said[0]
    assert marker.read_text() == "ran"
