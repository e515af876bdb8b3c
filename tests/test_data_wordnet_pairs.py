"""WordNetPairs on a tiny WordNet written in wndb format (no system WordNet needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_embed.data.wordnet_pairs import WordNetPairs

# offset lex_filenum ss_type w_cnt word lex_id ... | gloss  (lex_filenum 29 = verb.body, 0 = adj.all)
VERBS = [
    '00000001 29 v 02 run 0 sprint 0 000 | move fast by using the feet; "she runs every day"; "run!"',
    "00000002 29 v 01 sleep 0 000 | be asleep with eyes closed",
    "00000003 29 v 01 yawn 0 000 | open the mouth wide when tired",
    "00000004 38 v 01 walk 0 000 | go on foot",  # 38 = verb.motion: a class of its own
]
ADJS = ['00000001 00 a 01 red 0 000 | of the colour of blood; "a red car"']


@pytest.fixture()
def tiny_wordnet(wordnet_files) -> Path:
    return wordnet_files(VERBS, ADJS)


def test_definition_pairs_with_its_own_example_and_back(tiny_wordnet: Path) -> None:
    texts = ["move fast by using the feet", "a red car", "be asleep with eyes closed", "other"]
    gen = WordNetPairs()
    pairs = gen.generate(texts, seed=0)
    assert [(p["anchor"], p["positive"]) for p in pairs] == [
        ("move fast by using the feet", pairs[0]["positive"]),
        ("a red car", "of the colour of blood"),
    ]
    assert pairs[0]["positive"] in ("she runs every day", "run!")
    # offsets repeat across files (verb and adjective both 00000001): keys keep them apart
    assert {p["synset"] for p in pairs} == {"verb:00000001", "adj:00000001"}
    assert gen.report["skipped"] == {"not_wordnet": 1, "same_synset": 0, "no_positive": 1}
    assert gen.generate(texts, seed=0) == pairs  # deterministic


def test_one_pair_per_synset_so_no_pair_is_its_twins_negative(tiny_wordnet: Path) -> None:
    texts = ["she runs every day", "move fast by using the feet", "run!"]
    gen = WordNetPairs()
    pairs = gen.generate(texts, seed=3)
    assert pairs == [
        {
            "anchor": "she runs every day",
            "positive": "move fast by using the feet",
            "synset": "verb:00000001",
        }
    ]
    assert gen.report["skipped"]["same_synset"] == 2


def test_lemma_positives_skip_one_word_synsets(tiny_wordnet: Path) -> None:
    pairs = WordNetPairs("lemmas").generate(["run!", "a red car"], seed=0)
    assert [(p["anchor"], p["positive"]) for p in pairs] == [("run!", "run, sprint")]


def test_lexname_positives_are_other_verbs_of_the_same_class(tiny_wordnet: Path) -> None:
    texts = ["be asleep with eyes closed", "run!", "go on foot", "a red car"]
    gen = WordNetPairs("lexname")
    pairs = {p["anchor"]: p["positive"] for p in gen.generate(texts, seed=0)}
    body = {"move fast by using the feet", "be asleep with eyes closed", "open the mouth wide when tired"}
    assert set(pairs) == {"be asleep with eyes closed", "run!"}  # walk: alone in its class
    assert pairs["be asleep with eyes closed"] in body - {"be asleep with eyes closed"}
    assert pairs["run!"] in body - {"move fast by using the feet"}  # never its own synset
    assert gen.report["skipped"]["no_positive"] == 2  # the lone verb.motion verb, the adjective
    seeds = {WordNetPairs("lexname").generate(texts, seed=k)[0]["positive"] for k in range(20)}
    assert len(seeds) == 2  # the choice is seeded and both classmates occur


def test_settings_change_the_cache_key_and_bad_kind_is_refused() -> None:
    assert WordNetPairs().settings() != WordNetPairs("lemmas").settings()
    with pytest.raises(ValueError, match="positive='gloss'"):
        WordNetPairs("gloss")  # type: ignore[arg-type]


# the same kind of lines with pointers: sprint @ run (hypernym), run ~ sprint (hyponym: not up),
# a cross-file + pointer (ignored); red (head) & crimson (satellite) & back
HIERARCHY_VERBS = [
    "00000010 38 v 01 run 0 002 ~ 00000020 v 0000 + 00000001 a 0101 | move fast by using the feet",
    '00000020 38 v 01 sprint 0 002 @ 00000010 v 0000 @ 00000030 v 0000 | run at top speed; "he sprinted"',
    "00000030 38 v 01 race 0 000 | move at high speed",
]
HIERARCHY_ADJS = [
    "00000001 00 a 01 red 0 001 & 00000002 s 0000 | of the colour of blood",
    "00000002 00 s 01 crimson 0 001 & 00000001 a 0000 | deep purplish red",
]


def test_pointers_one_step_up_are_parsed_per_file(wordnet_files) -> None:
    from llm_embed.data.corpora import read_wordnet

    wordnet_files(HIERARCHY_VERBS, HIERARCHY_ADJS)
    verbs = {s.words[0]: s for s in read_wordnet("verb")}
    assert verbs["sprint"].broader == ("00000010", "00000030")  # both hypernyms, in file order
    assert verbs["run"].broader == ()  # a hyponym (~) and a cross-file pointer are not up
    assert verbs["sprint"].examples == ("he sprinted",)  # the gloss still parses
    adjs = {s.words[0]: s for s in read_wordnet("adj")}
    assert adjs["red"].broader == ("00000002",) and adjs["crimson"].broader == ("00000001",)


def test_broader_positives_are_a_hypernyms_or_similar_adjectives_definition(wordnet_files) -> None:
    wordnet_files(HIERARCHY_VERBS, HIERARCHY_ADJS)
    texts = ["he sprinted", "move fast by using the feet", "deep purplish red", "other"]
    gen = WordNetPairs("broader")
    pairs = {p["anchor"]: p["positive"] for p in gen.generate(texts, seed=0)}
    assert set(pairs) == {"he sprinted", "deep purplish red"}  # run is a root: skipped
    assert pairs["he sprinted"] in {"move fast by using the feet", "move at high speed"}
    assert pairs["deep purplish red"] == "of the colour of blood"
    assert gen.report["skipped"] == {"not_wordnet": 1, "same_synset": 0, "no_positive": 1}
    seeds = {WordNetPairs("broader").generate(texts, seed=k)[0]["positive"] for k in range(20)}
    assert len(seeds) == 2  # the choice among two hypernyms is seeded and both occur
    assert WordNetPairs("broader").settings() != WordNetPairs("lexname").settings()
