"""Drop the pairs whose positive is least like its anchor, as an encoder judges them.

A small instruct model sometimes answers in another language, drifts to an unrelated story or
talks about "a teacher" instead of rewriting; the rule filters (:mod:`llm_embed.data.filters`)
cannot see that the meaning is gone. The untrained backbone can: the cosine of anchor and
positive ranks the pairs, and the lowest ``1 - keep`` of them are dropped. The judge is the model
being adapted (zero-shot), not an outside encoder, so no other model's judgement enters training.

    python -m llm_embed.data.similarity_filter --pairs data/pairs/P.jsonl --keep 0.75 \
        --model gemma3-270m --pooling weighted_mean --prompt prompteol --out data/pairs/P.sim75.jsonl
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from llm_embed.data.pairs import read_pairs, write_pairs
from llm_embed.errors import UserError


def pair_similarity(encoder, pairs: Sequence[dict], batch_size: int = 32) -> torch.Tensor:
    """Cosine of each pair's anchor and positive under ``encoder`` (unit vectors): (N,)."""
    with encoder.merged_adapter():
        anchors = encoder.encode([p["anchor"] for p in pairs], batch_size=batch_size)
        positives = encoder.encode([p["positive"] for p in pairs], batch_size=batch_size)
    return (anchors * positives).sum(-1)


def keep_most_similar(pairs: Sequence[dict], similarity: torch.Tensor, keep: float) -> list[dict]:
    """The ``keep`` fraction of pairs with the highest similarity, in their original order."""
    if not 0.0 < keep <= 1.0:
        raise UserError(f"keep={keep} must be in (0, 1]: the fraction of pairs to keep")
    n = max(1, round(keep * len(pairs)))
    top = set(similarity.argsort(descending=True, stable=True)[:n].tolist())
    return [p for i, p in enumerate(pairs) if i in top]


def main(argv: Sequence[str] | None = None) -> None:
    from llm_embed.inference.load import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=Path, required=True, help="JSONL pairs file to filter")
    parser.add_argument("--out", type=Path, required=True, help="JSONL file for the kept pairs")
    parser.add_argument("--keep", type=float, default=0.75, help="fraction kept (default 0.75)")
    parser.add_argument("--model", default="gemma3-270m", help="the judge: any --model")
    parser.add_argument("--pooling", default="weighted_mean")
    parser.add_argument("--prompt", default="prompteol")
    args = parser.parse_args(argv)
    pairs = read_pairs(args.pairs)
    encoder = load_model(args.model, pooling=args.pooling, prompt=args.prompt)
    similarity = pair_similarity(encoder, pairs)
    kept = keep_most_similar(pairs, similarity, args.keep)
    cut = similarity.sort(descending=True).values[len(kept) - 1].item()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_pairs(args.out, kept)
    print(f"kept {len(kept)} of {len(pairs)} pairs (cosine >= {cut:.4f}) -> {args.out}")


if __name__ == "__main__":
    main()
