"""Per-dimension scaling of eval-mode vectors (``Encoder.dim_scale``), fit on training texts."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_fit_cli import tiny_args

from llm_embed.encoder import Encoder

TRAIN = [f"to move {w} quickly from one place to another" for w in "abcdefghij"]
TEXTS = ["a cat sat on the mat", "stocks fell sharply", "the team won the final match"]


def test_calibrate_sets_the_spread_of_the_training_vectors(tiny_model_dir):
    enc = Encoder(tiny_model_dir, pooling="mean")
    raw = enc.encode(TEXTS)
    enc.calibrate(TRAIN)
    want = F.normalize(Encoder(tiny_model_dir, pooling="mean").encode(TRAIN), dim=-1).std(0)
    torch.testing.assert_close(torch.tensor(enc.dim_scale), want)
    # eval mode: normalise, divide, normalise; far from the raw vectors for a skewed scale
    torch.testing.assert_close(enc.encode(TEXTS), F.normalize(raw / want, dim=-1))
    assert not torch.allclose(enc.encode(TEXTS), raw, atol=1e-3)
    # training mode (the loss) never sees it
    enc.train()
    with torch.no_grad():
        torch.testing.assert_close(enc(enc.tokenize(TEXTS)), raw)


def test_dim_scale_is_saved_and_loaded(tiny_model_dir, tmp_path):
    enc = Encoder(tiny_model_dir, pooling="weighted_mean")
    enc.calibrate(TRAIN)
    enc.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "encoder.json").read_text())["dim_scale"]
    assert saved == enc.dim_scale and len(saved) == enc.embed_dim
    torch.testing.assert_close(Encoder.load(tmp_path / "m").encode(TEXTS), enc.encode(TEXTS))


def test_another_pooling_drops_the_scale_and_bad_scales_are_refused(tiny_model_dir):
    enc = Encoder(tiny_model_dir, pooling="mean")
    enc.calibrate(TRAIN)
    enc.set_pooling("mean")  # the same pooling keeps it
    assert enc.dim_scale is not None
    enc.set_pooling("last")
    assert enc.dim_scale is None
    with pytest.raises(ValueError, match="dim_scale needs 32 positive finite values"):
        Encoder(tiny_model_dir, dim_scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        Encoder(tiny_model_dir, dim_scale=[0.0] * 32)
    with pytest.raises(ValueError, match="at least 2 texts"):
        enc.calibrate(TRAIN[:1])


def test_a_calibrated_run_scores_the_same_in_the_callback_and_in_evaluate(
    tiny_model_dir, tmp_path, run_python
):
    args = [*tiny_args(tiny_model_dir, tmp_path), "--model.calibration_texts", "24"]
    proc = run_python("-m", "llm_embed.fit", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ckpt" / "default"
    scale = json.loads((run / "model" / "encoder.json").read_text())["dim_scale"]
    assert len(scale) == 32 and min(scale) > 0
    final = json.loads((run / "mteb_scores.json").read_text())["history"][-1]
    proc = run_python(
        "-m", "llm_embed.evaluate", "--model", str(run / "model"), "--tasks",
        "BBCNewsHeadlines,WordNetNounGlosses", "--max-documents", "200", "--map-samples", "0",
        "--out", str(tmp_path / "eval"), "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {r["task"]: round(r["v_measure"], 4) for r in records} == {
        t: round(v, 4) for t, v in final["scores"].items()
    }
