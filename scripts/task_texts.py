"""Write the texts of one split of a local task, one per line and without labels.

The input of the "adapted to the domain" row: the unlabelled dev texts of one suite task become
the source of training pairs (configs/adapt.yaml), and the model is then scored on that task's
test split, which shares no text with dev.

    python scripts/task_texts.py DebianFortunes --split dev --out data/adapt/DebianFortunes-dev.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llm_embed._fs import atomic_write_text
from llm_embed.eval.tasks import LOCAL_TASKS, SPLITS, get_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=sorted(LOCAL_TASKS))
    parser.add_argument("--split", default="dev", choices=[s for s in SPLITS if s != "all"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    texts, _ = get_tasks([args.task], split=args.split)[0].documents()
    # one text per line: line breaks inside a text (an article's headline and body) become spaces
    lines = [" ".join(text.split()) for text in texts]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} {args.split} texts of {args.task} (no labels) to {args.out}")


if __name__ == "__main__":
    main()
