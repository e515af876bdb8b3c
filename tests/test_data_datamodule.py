"""PairDataModule end to end on a small source file: cache, manifest, split, batches, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonargparse
import lightning as L
import pytest
import torch

from llm_embed.data.datamodule import PairDataModule, split_pairs
from llm_embed.data.generators import AugmentPairs
from llm_embed.data.pairs import read_manifest, read_pairs, write_pairs
from llm_embed.errors import UserError

N_TEXTS = 120


@pytest.fixture
def source(tmp_path: Path) -> str:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    lines = [" ".join(rng.sample(vocab, rng.randint(4, 12))) for _ in range(N_TEXTS)]
    path = tmp_path / "source.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _dm(source: str, tmp_path: Path, **kwargs: object) -> PairDataModule:
    defaults: dict = {
        "source": source,
        "cache_dir": str(tmp_path / "cache"),
        "num_source": 100,
        "batch_size": 8,
        "val_size": 16,
        "seed": 0,
    }
    return PairDataModule(**(defaults | kwargs))


def test_prepare_writes_cache_and_manifest_then_reuses(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dm = _dm(source, tmp_path)
    path = dm.cache_path
    assert path.parent == tmp_path / "cache" and not path.exists()
    dm.prepare_data()
    assert path.is_file()
    assert len(read_pairs(path)) == 100
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest["generator"] == "augment" and manifest["settings"] == AugmentPairs().settings()
    assert manifest["num_pairs"] == 100 and manifest["num_source"] == 100 and "created" in manifest
    mtime, content = path.stat().st_mtime_ns, path.read_bytes()

    def no_generation(self, texts, *, seed):  # noqa: ANN001, ANN202
        raise AssertionError("cache hit must not generate")

    monkeypatch.setattr(AugmentPairs, "generate", no_generation)
    again = _dm(source, tmp_path)
    assert again.cache_path == path
    again.prepare_data()
    assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [path.name, path.stem + ".manifest.json"]
    )


def test_cache_key_follows_generator_settings_seed_and_size(source: str, tmp_path: Path) -> None:
    base = _dm(source, tmp_path).cache_path
    assert _dm(source, tmp_path, generator=AugmentPairs()).cache_path == base
    changed = {
        _dm(source, tmp_path, generator=AugmentPairs(word_deletion=0.2)).cache_path,
        _dm(source, tmp_path, generator=AugmentPairs(span_crop=0.0)).cache_path,
        _dm(source, tmp_path, seed=1).cache_path,
        _dm(source, tmp_path, num_source=50).cache_path,
    }
    assert base not in changed and len(changed) == 4


def test_batches_are_full_strings_and_split_is_disjoint(source: str, tmp_path: Path) -> None:
    dm = _dm(source, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.val_pairs) == 16 and len(dm.train_pairs) == 84
    train_anchors = {p["anchor"] for p in dm.train_pairs}
    val_anchors = {p["anchor"] for p in dm.val_pairs}
    assert not train_anchors & val_anchors
    assert len(train_anchors | val_anchors) == 100

    batches = list(dm.train_dataloader())
    assert len(batches) == 84 // 8  # drop_last: 4 pairs left over
    for batch in batches:
        assert set(batch) == {"anchor", "positive"}
        assert len(batch["anchor"]) == len(batch["positive"]) == 8
        assert all(isinstance(s, str) and s for s in batch["anchor"] + batch["positive"])
    seen = [a for b in batches for a in b["anchor"]]
    assert len(set(seen)) == len(seen) and set(seen) <= train_anchors
    assert seen != [p["anchor"] for p in dm.train_pairs][: len(seen)]  # shuffled

    val = list(dm.val_dataloader())
    assert [len(b["anchor"]) for b in val] == [8, 8]
    assert {a for b in val for a in b["anchor"]} == val_anchors


def test_same_seed_same_split_and_order(source: str, tmp_path: Path) -> None:
    firsts = []
    for _ in range(2):
        dm = _dm(source, tmp_path)
        dm.prepare_data()
        dm.setup("fit")
        firsts.append((next(iter(dm.train_dataloader())), dm.val_pairs))
    assert firsts[0] == firsts[1]


def test_user_pairs_file_skips_generation(tmp_path: Path) -> None:
    pairs = [
        {"anchor": f"anchor {i} text", "positive": f"positive {i}", "instruction": "x"}
        for i in range(20)
    ]
    path = write_pairs(tmp_path / "mine.jsonl", pairs)
    dm = PairDataModule(
        pairs_file=str(path), cache_dir=str(tmp_path / "cache"), batch_size=4, val_size=4
    )
    assert dm.cache_path == path
    dm.prepare_data()
    dm.setup("fit")
    assert not (tmp_path / "cache").exists()
    assert len(dm.train_pairs) == 16 and len(dm.val_pairs) == 4
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"anchor", "positive"} and len(batch["anchor"]) == 4


def test_a_list_of_pairs_files_is_one_mixture(tmp_path: Path) -> None:
    a = write_pairs(
        tmp_path / "a.jsonl", [{"anchor": f"a{i} x", "positive": f"pa{i}"} for i in range(12)]
    )
    b = write_pairs(
        tmp_path / "b.jsonl", [{"anchor": f"b{i} y", "positive": f"pb{i}"} for i in range(8)]
    )
    dm = PairDataModule(pairs_file=[str(a), str(b)], batch_size=4, val_size=4)
    assert dm.pair_paths == [a, b]
    dm.prepare_data()
    dm.setup("fit")
    anchors = {p["anchor"] for p in dm.train_pairs + dm.val_pairs}
    assert len(anchors) == 20 and {"a0 x", "b7 y"} <= anchors
    with pytest.raises(UserError, match="not found"):
        PairDataModule(pairs_file=[str(a), str(tmp_path / "missing.jsonl")])
    with pytest.raises(ValueError, match="names no file"):
        PairDataModule(pairs_file=[])


def test_user_pairs_file_skip_mode(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    good = [json.dumps({"anchor": f"a {i}", "positive": f"p {i}"}) for i in range(6)]
    path.write_text("\n".join([*good[:3], "{broken", *good[3:]]) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"mine\.jsonl:4:"):
        PairDataModule(pairs_file=str(path), batch_size=2, val_size=0).setup("fit")
    dm = PairDataModule(pairs_file=str(path), batch_size=2, val_size=0, on_bad_line="skip")
    dm.setup("fit")
    assert len(dm.train_pairs) == 6


def test_val_size_zero_gives_no_val_loader(source: str, tmp_path: Path) -> None:
    dm = _dm(source, tmp_path, val_size=0)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.val_dataloader() == [] and len(dm.train_pairs) == 100


def test_split_keeps_each_anchor_on_one_side() -> None:
    pairs = [{"anchor": f"a{i // 3}", "positive": f"p{i}"} for i in range(30)]  # 3 positives each
    train, val = split_pairs(pairs, 5, seed=0)
    assert len(val) == 6 and len(train) == 24  # whole anchors: 5 rounds up to 2 anchors
    assert not {p["anchor"] for p in train} & {p["anchor"] for p in val}


def test_too_few_pairs(source: str, tmp_path: Path) -> None:
    dm = _dm(source, tmp_path, num_source=20, batch_size=8, val_size=16)
    dm.prepare_data()
    with pytest.raises(UserError, match=r"only 4 training pairs for batch_size=8"):
        dm.setup("fit")
    dm = _dm(source, tmp_path, num_source=20, val_size=20)
    dm.prepare_data()
    with pytest.raises(UserError, match="leaves no training pairs"):
        dm.setup("fit")


def test_setup_before_prepare_data(source: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="call prepare_data"):
        _dm(source, tmp_path).setup("fit")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batch_size": 1}, ValueError, "batch_size=1"),
        ({"val_size": -1}, ValueError, "val_size=-1"),
        ({"num_source": 0}, ValueError, "num_source=0"),
        ({"num_workers": -1}, ValueError, "num_workers=-1"),
        ({"on_bad_line": "warn"}, ValueError, "on_bad_line='warn'"),
        ({"source": "wikipedia"}, UserError, r"unknown source 'wikipedia'.*wordnet"),
        ({"pairs_file": "/nonexistent/pairs.jsonl"}, UserError, "not found"),
    ],
)
def test_construction_validates_cheaply(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PairDataModule(**kwargs)


def test_empty_user_pairs_file_fails_at_construction(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").touch()
    with pytest.raises(UserError, match="is empty"):
        PairDataModule(pairs_file=str(tmp_path / "empty.jsonl"))


class _Probe(L.LightningModule):
    """Checks the batches Lightning hands over; learns nothing."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.batch_size = batch_size
        self.val_batches = 0

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        assert len(batch["anchor"]) == len(batch["positive"]) == self.batch_size
        return (self.w - 1.0).pow(2).sum()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_batches += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("val_size", [0, 16])
def test_trainer_fit_accepts_the_datamodule(source: str, tmp_path: Path, val_size: int) -> None:
    dm = _dm(source, tmp_path, val_size=val_size)
    model = _Probe(batch_size=8)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3
    assert dm.cache_path.is_file()
    assert (model.val_batches > 0) == (val_size > 0)


def test_generator_is_injectable_from_cli_flags(source: str, tmp_path: Path) -> None:
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(PairDataModule, "data")
    cfg = parser.parse_args(
        [
            f"--data.source={source}",
            f"--data.cache_dir={tmp_path}",
            "--data.batch_size=4",
            "--data.generator=AugmentPairs",
            "--data.generator.span_crop=0.5",
            "--data.generator.both_sides=true",
        ]
    )
    assert cfg.data.generator.class_path == "llm_embed.data.generators.AugmentPairs"
    dm = parser.instantiate(cfg).data
    assert isinstance(dm.generator, AugmentPairs)
    assert dm.generator.span_crop == 0.5 and dm.generator.both_sides is True and dm.batch_size == 4


def test_a_truncated_pairs_cache_is_refused_not_trusted(source: str, tmp_path: Path) -> None:
    dm = _dm(source, tmp_path)
    dm.prepare_data()
    path = dm.cache_path
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-10]), encoding="utf-8")  # cut at a line boundary: valid JSONL
    with pytest.raises(UserError, match="holds 90 pairs but its manifest records 100"):
        _dm(source, tmp_path).setup("fit")


def test_a_resume_refuses_pairs_that_changed_since_the_checkpoint(tmp_path: Path) -> None:
    pairs = [{"anchor": f"a {i}", "positive": f"p {i}"} for i in range(40)]
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    saved = PairDataModule(pairs_file=str(tmp_path / "pairs.jsonl"), batch_size=4, val_size=8)
    saved.setup("fit")
    state = saved.state_dict()
    same = PairDataModule(pairs_file=str(tmp_path / "pairs.jsonl"), batch_size=4, val_size=8)
    same.setup("fit")
    same.load_state_dict(state)  # unchanged pairs: resumes
    write_pairs(tmp_path / "pairs.jsonl", pairs[:-1] + [{"anchor": "a 39", "positive": "edited"}])
    edited = PairDataModule(pairs_file=str(tmp_path / "pairs.jsonl"), batch_size=4, val_size=8)
    edited.setup("fit")
    with pytest.raises(UserError, match="changed since this run's checkpoint was saved"):
        edited.load_state_dict(state)
    edited.load_state_dict({})  # a checkpoint from before the pairs were recorded: accepted


def test_a_lone_surrogate_in_a_pairs_file_is_refused_when_read(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    good = "".join(json.dumps({"anchor": f"a {i}", "positive": f"p {i}"}) + "\n" for i in range(20))
    path.write_text(good + '{"anchor": "bad \\ud800 text", "positive": "p"}\n', encoding="utf-8")
    dm = PairDataModule(pairs_file=str(path), batch_size=4, val_size=4)
    with pytest.raises(UserError, match=r"pairs.jsonl:21: a lone surrogate escape"):
        dm.setup("fit")
