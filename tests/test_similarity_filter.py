"""The similarity filter keeps the pairs whose positive its judge finds most like the anchor."""

from __future__ import annotations

import json

import pytest
import torch

from llm_embed.data.similarity_filter import keep_most_similar, main, pair_similarity
from llm_embed.errors import UserError


def test_keep_most_similar_keeps_the_top_fraction_in_file_order():
    pairs = [{"anchor": str(i), "positive": str(i)} for i in range(8)]
    sim = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7, 0.6])
    kept = keep_most_similar(pairs, sim, 0.5)
    assert [p["anchor"] for p in kept] == ["1", "4", "6", "7"]
    assert keep_most_similar(pairs, sim, 1.0) == pairs


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.5])
def test_keep_outside_zero_one_is_refused(keep):
    with pytest.raises(UserError, match="keep="):
        keep_most_similar([{"anchor": "a", "positive": "b"}], torch.ones(1), keep)


def test_filter_drops_the_pair_whose_positive_is_unrelated(tiny_model_dir, tmp_path):
    from llm_embed.encoder import Encoder

    pairs = [
        {"anchor": "the cat sat on the mat", "positive": "the cat sat on the mat"},
        {"anchor": "stocks fell sharply today", "positive": "stocks fell sharply today"},
        {"anchor": "a red apple", "positive": "zq xv 12 ## !!"},
    ]
    sim = pair_similarity(Encoder(tiny_model_dir, pooling="mean"), pairs)
    assert sim[:2].tolist() == pytest.approx([1.0, 1.0], abs=1e-5) and sim[2] < 0.999
    src, out = tmp_path / "p.jsonl", tmp_path / "kept.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    main(["--pairs", str(src), "--out", str(out), "--keep", "0.67", "--model", tiny_model_dir,
          "--pooling", "mean", "--prompt", "none"])  # fmt: skip
    assert [json.loads(line) for line in out.read_text().splitlines()] == pairs[:2]
