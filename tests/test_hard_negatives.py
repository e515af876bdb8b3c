"""Hard negatives: drawn from the anchor's WordNet file, carried by the data, scored by the loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm_embed.data import hard_negatives
from llm_embed.data.datamodule import PairDataModule
from llm_embed.data.hard_negatives import add_lexname_negatives
from llm_embed.data.pairs import pair_problem
from llm_embed.errors import UserError

# offset lex_filenum ss_type w_cnt word lex_id ... | gloss  (29 = verb.body, 38 = verb.motion)
VERBS = [
    '00000001 29 v 01 run 0 000 | move fast by using the feet; "she runs every day"',
    "00000002 29 v 01 sleep 0 000 | be asleep with eyes closed",
    "00000003 29 v 01 yawn 0 000 | open the mouth wide when tired",
    "00000004 38 v 01 walk 0 000 | go on foot",
    "00000005 38 v 01 crawl 0 000 | move slowly on hands and knees",
]


@pytest.fixture()
def tiny_wordnet(wordnet_files) -> Path:
    return wordnet_files(VERBS)


def test_each_negative_is_another_sense_from_the_anchors_file(tiny_wordnet: Path) -> None:
    pairs = [
        {"anchor": "move fast by using the feet", "positive": "to sprint"},
        {"anchor": "she runs every day", "positive": "she jogs daily"},
        {"anchor": "go on foot", "positive": "to walk"},
        {"anchor": "a headline about stocks", "positive": "markets fell"},  # not WordNet: left out
    ]
    mined, dropped = add_lexname_negatives(pairs, seed=0)
    assert dropped == 1 and [p["anchor"] for p in mined] == [p["anchor"] for p in pairs[:3]]
    body = {"be asleep with eyes closed", "open the mouth wide when tired"}
    assert mined[0]["negative"] in body and mined[1]["negative"] in body  # never run's own gloss
    assert mined[2]["negative"] == "move slowly on hands and knees"  # the only other motion verb
    assert mined[0]["positive"] == "to sprint"  # the pair itself is kept as it was
    assert add_lexname_negatives(pairs, seed=0)[0] == mined  # seeded per anchor
    seeds = {add_lexname_negatives(pairs[:1], seed=s)[0][0]["negative"] for s in range(20)}
    assert seeds == body  # the seed changes the draw


def test_the_command_writes_the_pairs_with_negatives(
    tiny_wordnet: Path, tmp_path: Path, capsys
) -> None:
    src, out = tmp_path / "p.jsonl", tmp_path / "out" / "p.neg.jsonl"
    src.write_text(json.dumps({"anchor": "go on foot", "positive": "to walk"}) + "\n")
    hard_negatives.main(["--pairs", str(src), "--out", str(out)])
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["negative"] == "move slowly on hands and knees"
    assert "1 pairs with a hard negative (0 left out" in capsys.readouterr().out
    src.write_text(json.dumps({"anchor": "not a gloss", "positive": "x"}) + "\n")
    with pytest.raises(UserError, match="no anchor of .* is a WordNet verb/adjective/adverb text"):
        hard_negatives.main(["--pairs", str(src), "--out", str(tmp_path / "none.jsonl")])
    assert not (tmp_path / "none.jsonl").exists()


def test_pairs_may_carry_a_non_empty_negative() -> None:
    assert pair_problem({"anchor": "a", "positive": "b", "negative": "c"}) is None
    for bad in ("", "  ", 3):
        assert "'negative' is not a non-empty string" in pair_problem(
            {"anchor": "a", "positive": "b", "negative": bad}
        )


def _write(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def test_batches_carry_the_negatives_and_a_mix_is_refused(tmp_path: Path) -> None:
    pairs = [{"anchor": f"a{i} x", "positive": f"p{i}", "negative": f"n{i}"} for i in range(12)]
    dm = PairDataModule(
        pairs_file=str(_write(tmp_path / "n.jsonl", pairs)), batch_size=4, val_size=4
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"anchor", "positive", "negative"}
    assert [b[1:] for b in batch["negative"]] == [b[1:-2] for b in batch["anchor"]]  # row-aligned
    assert set(next(iter(dm.val_dataloader()))) == {"anchor", "positive", "negative"}
    del pairs[3]["negative"]
    mixed = PairDataModule(
        pairs_file=str(_write(tmp_path / "m.jsonl", pairs)), batch_size=4, val_size=4
    )
    mixed.prepare_data()
    with pytest.raises(
        UserError, match="11 of the 12 pairs in .* have a 'negative': give every pair one"
    ):
        mixed.setup("fit")


BATCH = {
    "anchor": ["a man is driving a car", "the cat sat on the mat", "stocks fell sharply"],
    "positive": ["a man drives a car", "a cat sat on a mat", "stocks fell on monday"],
    "negative": ["a man is washing a car", "the dog sat on the mat", "stocks rose sharply"],
}


@pytest.mark.parametrize(("packing", "grad_cache"), [(False, False), (True, False), (False, True)])
def test_the_loss_scores_each_anchor_against_positives_and_hard_negatives(
    tiny_model_dir, packing: bool, grad_cache: bool
) -> None:
    from peft import LoraConfig

    from llm_embed.encoder import Encoder
    from llm_embed.losses import info_nce
    from llm_embed.module import EmbeddingModule

    torch.manual_seed(0)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="FEATURE_EXTRACTION"
    )
    module = EmbeddingModule(
        Encoder(tiny_model_dir, pooling="mean", packing=packing),
        lora=lora,
        grad_cache=grad_cache,
        grad_cache_mini_batch=2,
    )
    module.eval()
    with torch.no_grad():
        a, p, n = (module._embed(BATCH[k]) for k in ("anchor", "positive", "negative"))
    want = info_nce(a, torch.cat([p, n]), temperature=0.2)
    assert want > info_nce(a, p, temperature=0.2)  # the negatives enter the softmax
    module.train()
    torch.manual_seed(1)
    got = module._loss(BATCH)  # with gradients: GradCache attaches them in its own passes
    module.eval()
    with torch.no_grad():
        assert module._loss(BATCH).item() == pytest.approx(want.item(), rel=1e-5)
    assert got.requires_grad or grad_cache
    symmetric = EmbeddingModule(Encoder(tiny_model_dir), lora=lora, symmetric=True)
    with pytest.raises(UserError, match="model.symmetric .* no place for hard negatives"):
        symmetric._loss(BATCH)
