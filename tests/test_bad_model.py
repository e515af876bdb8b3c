"""One bad ``--model`` of each kind gives every command the same one-line error and exit code 2.

Every command resolves ``--model`` through :mod:`llm_embed.inference.load`, so a missing folder,
an unfinished training run or a corrupt encoder description reads the same wherever it is given.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_errors import check_error

from llm_embed import attention, encode, evaluate, export
from llm_embed._cli import run_cli


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "no-such-folder"


def _unfinished_run(tmp_path: Path) -> Path:
    """A run killed before it wrote model/: a config and a checkpoint only."""
    run = tmp_path / "unfinished"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not read")
    (run / "config.yaml").write_text("model: {}\n")
    return run


def _corrupt_run(tmp_path: Path) -> Path:
    run = tmp_path / "corrupt-run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "encoder.json").write_text("{not json")
    return run


def _corrupt_export(tmp_path: Path) -> Path:
    export_dir = tmp_path / "corrupt-export"
    export_dir.mkdir()
    (export_dir / "llm_embed.json").write_text('["a list, not an object"]')
    (export_dir / "modules.json").write_text("[]")
    return export_dir


BAD = {
    "missing folder": (_missing, "not found"),
    "unfinished run": (_unfinished_run, "did not finish: resume it with `python -m llm_embed.fit"),
    "corrupt run config": (_corrupt_run, "encoder.json is corrupt"),
    "corrupt export config": (_corrupt_export, "llm_embed.json is corrupt"),
}


def _commands(model: str, tmp_path: Path) -> dict[str, tuple]:
    texts = tmp_path / "texts.txt"
    texts.write_text("a man is driving a car\nthe cat sat on the mat\n")
    return {
        "evaluate": (evaluate.cli_main, ["--model", model, "--out", str(tmp_path / "results")]),
        "export": (export.cli_main, ["--model", model, "--out", str(tmp_path / "export")]),
        "encode": (
            encode.cli_main,
            ["--model", model, "--input", str(texts), "--out", str(tmp_path / "e.npy")],
        ),
        "attention": (attention.cli_main, ["--model", model, "--out", str(tmp_path / "a.png")]),
        "attention --run": (
            attention.cli_main,
            ["--model", "smollm2-135m-instruct", "--run", model, "--out", str(tmp_path / "a.png")],
        ),
    }


@pytest.mark.parametrize("kind", list(BAD))
def test_every_command_gives_the_same_message_for_a_bad_model(tmp_path, capsys, kind):
    make, expected = BAD[kind]
    model = str(make(tmp_path))
    errors = {}
    for name, (main, args) in _commands(model, tmp_path).items():
        code = run_cli(lambda main=main, args=args: main(args))
        err = capsys.readouterr().err.strip()
        check_error(code, err, command=name)
        assert "\n" not in err, f"{name}: {err}"
        errors[name] = err
    assert expected in errors["evaluate"], errors["evaluate"]
    assert model in errors["evaluate"] or kind != "missing folder"
    assert len(set(errors.values())) == 1, errors  # word for word the same in every command
    assert not any((tmp_path / out).exists() for out in ("results", "export", "e.npy", "a.png"))


def test_a_truncated_weights_file_is_one_line(tiny_model_dir, tmp_path):
    import shutil

    from llm_embed.encoder import Encoder
    from llm_embed.errors import UserError

    folder = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(UserError, match="has a damaged weights file.*copy or download"):
        Encoder(str(folder))
