"""AugmentPairs (determinism, rates, shapes), source loading and the pairs cache (no torch)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from llm_embed.data.generators import (
    SOURCES,
    AugmentPairs,
    PairGenerator,
    cache_key,
    ensure_pairs_file,
    load_source,
    sample_source,
)
from llm_embed.data.pairs import read_manifest, read_pairs
from llm_embed.errors import UserError

VOCAB = [f"w{i}" for i in range(500)]


def _texts(n: int, seed: int = 0, lo: int = 3, hi: int = 20) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(VOCAB, rng.randint(lo, hi))) for _ in range(n)]


def _is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(word in it for word in small)


def test_same_seed_same_pairs_different_seed_different() -> None:
    texts = _texts(200)
    gen = AugmentPairs()
    a, b, c = gen.generate(texts, seed=1), gen.generate(texts, seed=1), gen.generate(texts, seed=2)
    assert a == b
    assert a != c
    assert sum(x != y for x, y in zip(a, c, strict=True)) > 50  # not just one pair
    assert AugmentPairs().generate(texts, seed=1) == a  # a fresh instance too


def test_pair_of_a_text_does_not_depend_on_its_neighbours() -> None:
    texts = _texts(20)
    gen = AugmentPairs(word_swap=0.2)
    full = gen.generate(texts, seed=3)
    assert gen.generate(texts[5:6], seed=3) == full[5:6]
    assert gen.generate(texts[::-1], seed=3) == full[::-1]


def test_no_empty_or_unchanged_positives_and_short_texts_skipped() -> None:
    texts = ["one", "two words", "a b c", "   ", *_texts(300, lo=3, hi=6)]
    for gen in (
        AugmentPairs(),
        AugmentPairs(word_deletion=0.9, span_crop=0.9),
        AugmentPairs(both_sides=True),
    ):
        pairs = gen.generate(texts, seed=0)
        assert (
            len(pairs) == len(texts) - 4 + 1
        )  # "a b c" kept, the three short ones and blank skipped
        assert pairs[0]["anchor"] == "a b c"
        for p in pairs:
            assert p["positive"].strip() and p["anchor"].strip()
            assert p["positive"] != p["anchor"]
            assert set(p) == {"anchor", "positive"}


def test_clean_anchor_and_positive_is_ordered_subsequence() -> None:
    texts = _texts(200)
    for p, text in zip(AugmentPairs().generate(texts, seed=0), texts, strict=True):
        assert p["anchor"] == text
        assert _is_subsequence(p["positive"].split(), text.split())
        assert len(p["positive"].split()) < len(text.split())


def test_deletion_rate_is_about_p() -> None:
    texts = _texts(200, lo=50, hi=50)  # 10,000 words
    pairs = AugmentPairs(word_deletion=0.3, span_crop=0.0).generate(texts, seed=0)
    kept = sum(len(p["positive"].split()) for p in pairs) / (50 * len(texts))
    assert abs(kept - 0.7) < 0.02, kept


def test_span_crop_keeps_a_long_enough_contiguous_span() -> None:
    texts = _texts(300, lo=10, hi=30)
    lengths = []
    for p, text in zip(
        AugmentPairs(word_deletion=0.0, span_crop=0.5).generate(texts, seed=0), texts, strict=True
    ):
        words, pos = text.split(), p["positive"].split()
        if len(pos) == len(words) - 1 and _is_subsequence(pos, words):
            pass  # the crop kept everything, so one word was dropped to make the pair differ
        else:
            assert any(words[i : i + len(pos)] == pos for i in range(len(words))), (pos, words)
            assert len(pos) >= math.ceil(0.5 * len(words))
        lengths.append(len(pos) / len(words))
    assert 0.6 < sum(lengths) / len(lengths) < 0.85  # uniform on [0.5, 1]: mean ~0.75


def test_word_swap_one_swaps_every_adjacent_pair() -> None:
    pairs = AugmentPairs(word_deletion=0.0, span_crop=0.0, word_swap=1.0).generate(
        ["a b c d e"], seed=0
    )
    assert pairs == [{"anchor": "a b c d e", "positive": "b a d c e"}]


def test_both_sides_augments_anchors_independently() -> None:
    texts = _texts(200)
    pairs = AugmentPairs(both_sides=True).generate(texts, seed=0)
    changed = sum(p["anchor"] != t for p, t in zip(pairs, texts, strict=True))
    assert changed > 100
    assert all(
        _is_subsequence(p["anchor"].split(), t.split()) for p, t in zip(pairs, texts, strict=True)
    )


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"word_deletion": 1.0}, "word_deletion=1.0"),
        ({"word_deletion": -0.1}, "word_deletion=-0.1"),
        ({"span_crop": 1.0}, "span_crop=1.0"),
        ({"word_swap": 1.5}, "word_swap=1.5"),
        ({"min_words": 1}, "min_words=1"),
        ({"word_deletion": 0.0, "span_crop": 0.0}, "at least one"),
    ],
)
def test_invalid_args(kwargs: dict, arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        AugmentPairs(**kwargs)


def test_settings_cover_every_init_arg_and_are_json() -> None:
    gen = AugmentPairs(
        word_deletion=0.2, span_crop=0.1, word_swap=0.05, both_sides=True, min_words=4
    )
    settings = gen.settings()
    assert {
        k: settings[k]
        for k in ("word_deletion", "span_crop", "word_swap", "both_sides", "min_words")
    } == {
        "word_deletion": 0.2,
        "span_crop": 0.1,
        "word_swap": 0.05,
        "both_sides": True,
        "min_words": 4,
    }
    assert json.loads(json.dumps(settings)) == settings
    assert (
        AugmentPairs(**{k: v for k, v in settings.items() if k != "version"}).settings() == settings
    )
    assert repr(gen).startswith("AugmentPairs(word_deletion=0.2")
    assert AugmentPairs.name == "augment"


def test_pair_generator_is_abstract() -> None:
    with pytest.raises(TypeError):
        PairGenerator()  # type: ignore[abstract]


def test_load_source_text_file(tmp_path: Path) -> None:
    path = tmp_path / "src.txt"
    path.write_text(
        "  first sentence here \n\nsecond one here\nfirst sentence here\n", encoding="utf-8"
    )
    assert load_source(str(path)) == ["first sentence here", "second one here"]


def test_load_source_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown source 'wordnt'.*\['wordnet'\].*\.txt"):
        load_source("wordnt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_source(str(latin1))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(UserError, match="holds no text"):
        load_source(str(empty))
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"anchor": "a", "positive": "b"}\n')
    with pytest.raises(UserError, match="pairs_file"):
        load_source(str(jsonl))


def test_wordnet_is_registered_and_bbc_is_not() -> None:
    assert "wordnet" in SOURCES
    assert not any("bbc" in name.lower() for name in SOURCES)  # evaluation set, never a source


def test_sample_source_is_seeded_ordered_subset() -> None:
    texts = [f"text {i}" for i in range(100)]
    a = sample_source(texts, 10, seed=0)
    assert a == sample_source(texts, 10, seed=0)
    assert a != sample_source(texts, 10, seed=1)
    assert len(set(a)) == 10 and set(a) <= set(texts)
    assert a == sorted(a, key=texts.index)
    assert sample_source(texts, 1000, seed=0) == texts


def test_cache_key_changes_with_every_input() -> None:
    texts = _texts(5)
    base = cache_key(texts, AugmentPairs(), num_source=5, seed=0)
    assert base == cache_key(list(texts), AugmentPairs(), num_source=5, seed=0)
    others = {
        cache_key(texts[:4], AugmentPairs(), num_source=5, seed=0),
        cache_key(texts, AugmentPairs(word_deletion=0.2), num_source=5, seed=0),
        cache_key(texts, AugmentPairs(both_sides=True), num_source=5, seed=0),
        cache_key(texts, AugmentPairs(), num_source=6, seed=0),
        cache_key(texts, AugmentPairs(), num_source=5, seed=1),
    }
    assert base not in others and len(others) == 5


class _BrokenGenerator(PairGenerator):
    name = "broken"

    def generate(self, texts, *, seed):  # noqa: ANN001, ANN201
        return [{"anchor": t, "positive": ""} for t in texts]

    def settings(self) -> dict:
        return {}


def test_ensure_pairs_file_writes_then_reuses(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("\n".join(_texts(30)), encoding="utf-8")
    path = ensure_pairs_file(
        str(src), AugmentPairs(), num_source=20, seed=0, cache_dir=tmp_path / "cache"
    )
    assert path.parent == tmp_path / "cache" and path.name.startswith("augment-src-n20-s0-")
    pairs = read_pairs(path)
    assert len(pairs) == 20
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest["num_pairs"] == 20 and manifest["num_texts"] == 20 and manifest["seed"] == 0
    assert manifest["settings"] == AugmentPairs().settings()
    assert manifest["source"] == str(src.resolve())
    mtime = path.stat().st_mtime_ns
    assert (
        ensure_pairs_file(
            str(src), AugmentPairs(), num_source=20, seed=0, cache_dir=tmp_path / "cache"
        )
        == path
    )
    assert path.stat().st_mtime_ns == mtime


def test_generator_contract_violation_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("\n".join(_texts(5)), encoding="utf-8")
    with pytest.raises(
        RuntimeError, match="_BrokenGenerator broke its contract.*'positive' is empty"
    ):
        ensure_pairs_file(
            str(src), _BrokenGenerator(), num_source=5, seed=0, cache_dir=tmp_path / "cache"
        )
    assert not (tmp_path / "cache").exists()


def test_source_with_only_short_texts_is_a_user_error(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("hi\nhello there\n", encoding="utf-8")
    with pytest.raises(UserError, match="gave no pairs"):
        ensure_pairs_file(
            str(src), AugmentPairs(), num_source=5, seed=0, cache_dir=tmp_path / "cache"
        )
