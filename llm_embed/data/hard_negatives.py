"""Give each pair a hard negative: a WordNet definition from its anchor's lexicographer file.

In-batch negatives are mostly easy (a verb about motion against an adverb of degree). A hard
negative shares the anchor's topic but not its sense: the definition of another synset from the
same lexicographer file (``verb.motion``, ``verb.emotion``, ...; adjectives and adverbs have one
file each, ``adj.all`` and ``adv.all``, so theirs share only the part of speech). The loss then
scores each anchor against its positive, every in-batch positive and every in-batch hard
negative. The texts stay WordNet's verb, adjective and adverb files (never a noun gloss).

    python -m llm_embed.data.hard_negatives --pairs data/pairs/P.jsonl --out data/pairs/P.neg.jsonl
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from llm_embed.data.pairs import read_pairs, write_pairs
from llm_embed.data.seeding import text_rng
from llm_embed.data.wordnet_pairs import synset_of, synsets_by_lexname
from llm_embed.errors import UserError


def add_lexname_negatives(pairs: Sequence[dict], *, seed: int = 0) -> tuple[list[dict], int]:
    """Each pair with a ``negative``: another synset's definition from its anchor's file.

    The choice is seeded per anchor (the same anchor gets the same negative in every run). A pair
    whose anchor is no WordNet verb/adjective/adverb text has no file to draw from and is left
    out. Returns the pairs with negatives, in input order, and how many were left out.
    """
    index, groups = synset_of(), synsets_by_lexname()
    out, dropped = [], 0
    for pair in pairs:
        synset = index.get(pair["anchor"])
        if synset is None:
            dropped += 1
            continue
        own = {synset.definition, pair["anchor"], pair["positive"]}
        others = [
            s
            for s in groups[synset.lexname]
            if s.offset != synset.offset and s.definition and s.definition not in own
        ]
        if not others:
            dropped += 1
            continue
        negative = text_rng(seed, pair["anchor"]).choice(others).definition
        out.append({**pair, "negative": negative})
    return out, dropped


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=Path, required=True, help="JSONL pairs file")
    parser.add_argument(
        "--out", type=Path, required=True, help="JSONL file for the pairs with negatives"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pairs = read_pairs(args.pairs)
    mined, dropped = add_lexname_negatives(pairs, seed=args.seed)
    if not mined:
        raise UserError(
            f"no anchor of {args.pairs} is a WordNet verb/adjective/adverb text: no negatives to draw"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_pairs(args.out, mined)
    print(
        f"{len(mined)} pairs with a hard negative ({dropped} left out: no WordNet file) -> {args.out}"
    )


if __name__ == "__main__":
    from llm_embed._cli import run_cli

    raise SystemExit(run_cli(main))
