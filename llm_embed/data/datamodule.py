"""PairDataModule: (anchor, positive) string pairs for contrastive fine-tuning with in-batch negatives.

Either the user's own pairs file, or pairs generated once from a source corpus by a
:class:`~llm_embed.data.generators.PairGenerator` and cached as JSONL (+ manifest) under
``cache_dir``, keyed by a hash of the sampled texts, the generator and its settings, and the seed.

Batches are ``{"anchor": list[str], "positive": list[str]}``: raw strings, the model tokenizes.
Pairs that all carry a ``negative`` (a hard negative, :mod:`llm_embed.data.hard_negatives`) add a
``"negative"`` list; a mix of pairs with and without one is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from llm_embed.data.generators import (
    AugmentPairs,
    PairGenerator,
    check_source,
    ensure_pairs_file,
    resolve_pairs_cache,
)
from llm_embed.data.pairs import (
    check_on_bad_line,
    degenerate_problem,
    manifest_path,
    read_manifest,
    read_pairs,
    validate_pairs_file,
)
from llm_embed.errors import UserError
from llm_embed.train.resume import EpochShuffleSampler, ResumableDataLoader

log = logging.getLogger(__name__)


class PairDataset(Dataset):
    """A list of pair dicts as a map-style dataset."""

    def __init__(self, pairs: list[dict]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        return self.pairs[index]


def collate_pairs(batch: list[dict]) -> dict[str, list[str]]:
    """``{"anchor": [...], "positive": [...]}`` (and ``"negative"`` when the pairs hold one); other
    keys are dropped so every batch has one shape."""
    out = {"anchor": [p["anchor"] for p in batch], "positive": [p["positive"] for p in batch]}
    if batch and "negative" in batch[0]:
        out["negative"] = [p["negative"] for p in batch]
    return out


def split_pairs(pairs: list[dict], val_size: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded train/val split that keeps all pairs of one anchor on the same side.

    Whole anchors go to validation until it holds at least ``val_size`` pairs, so a text with
    several positives (e.g. several paraphrase instructions) never leaks from train into val.
    """
    groups: dict[str, list[dict]] = {}
    for pair in pairs:
        groups.setdefault(pair["anchor"], []).append(pair)
    anchors = list(groups)
    random.Random(seed).shuffle(anchors)
    val: list[dict] = []
    cut = 0
    while len(val) < val_size and cut < len(anchors):
        val.extend(groups[anchors[cut]])
        cut += 1
    train = [pair for anchor in anchors[cut:] for pair in groups[anchor]]
    return train, val


class PairDataModule(L.LightningDataModule):
    """Contrastive pairs: the user's ``pairs_file``, or pairs generated from ``source`` and cached.

    ``prepare_data`` (local rank 0) generates the cache file when missing and only writes to disk;
    ``setup`` (every process) reads the pairs and splits them; the train loader shuffles with a
    seeded generator and drops the last partial batch, since in-batch negatives need full batches.

    Hyperparameters are not saved into checkpoints here (LightningCLI saves the resolved config),
    which also avoids Lightning's clash check on keys such as ``seed`` shared with the model.
    """

    def __init__(
        self,
        pairs_file: str | list[str] | None = None,
        generator: PairGenerator | None = None,
        source: str = "wordnet",
        num_source: int = 4000,
        cache_dir: str = "data/cache",
        batch_size: int = 16,
        val_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
        on_bad_line: str = "error",
        check_pairs: bool = True,
    ) -> None:
        """
        Args:
            pairs_file: your own JSONL pairs (one {"anchor", "positive"} per line), or a list of
                such files trained on together (a mixture); if given, nothing is generated.
            generator: how to make pairs from the source texts (default: AugmentPairs()).
            source: source corpus name ("wordnet") or a path to a .txt file, one sentence per line.
            num_source: how many source texts to sample (seeded); all of them if the source is smaller.
            cache_dir: folder for generated pairs and their manifests.
            batch_size: pairs per batch; each anchor sees batch_size - 1 in-batch negatives.
            val_size: pairs held out for a validation loss (whole anchors; 0 = no validation).
            seed: seeds the source sample, the generator, the train/val split and the shuffling.
            num_workers: DataLoader worker processes.
            on_bad_line: "error" stops at a malformed line of the pairs file; "skip" skips and counts it.
            check_pairs: stop before training on pairs that cannot teach anything (too few
                distinct pairs for a batch, mostly copies, one positive for all); False trains anyway.
        """
        super().__init__()
        if batch_size < 2:
            raise ValueError(
                f"batch_size={batch_size!r} is too small; in-batch negatives need batch_size >= 2"
            )
        if val_size < 0:
            raise ValueError(
                f"val_size={val_size!r} is negative; use val_size >= 0 (0 = no validation)"
            )
        if num_source < 1:
            raise ValueError(f"num_source={num_source!r} is too small; use num_source >= 1")
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers!r} is negative; use num_workers >= 0")
        check_on_bad_line(on_bad_line)
        if pairs_file is not None:
            if isinstance(pairs_file, list | tuple) and not pairs_file:
                raise ValueError(
                    "pairs_file=[] names no file; give a file, a list of files, or null"
                )
            for path in [pairs_file] if isinstance(pairs_file, str) else pairs_file:
                validate_pairs_file(path)
            if generator is not None:
                log.warning(
                    "pairs_file %s is given, so generator %r and source are not used",
                    pairs_file,
                    generator,
                )
        else:
            check_source(source)
        self.pairs_file = pairs_file
        self.generator = generator if generator is not None else AugmentPairs()
        self.source = source
        self.num_source = num_source
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.val_size = val_size
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"seed={seed!r} is invalid; use an int from 0 to 2**32 - 1")
        self.seed = seed
        self.num_workers = num_workers
        self.on_bad_line = on_bad_line
        self.check_pairs = check_pairs
        self.train_pairs: list[dict] = []
        self.val_pairs: list[dict] = []
        self.pairs_sha256: str | None = None  # set by setup()
        self.num_pairs = 0

    @property
    def pair_paths(self) -> list[Path]:
        """The pairs files that ``setup`` reads: ``pairs_file`` (one or several), or the cache file."""
        if self.pairs_file is None:
            return [self.cache_path]
        files = [self.pairs_file] if isinstance(self.pairs_file, str) else self.pairs_file
        return [Path(f) for f in files]

    @property
    def cache_path(self) -> Path:
        """The first pairs file ``setup`` reads: ``pairs_file``, or the generated cache file."""
        if self.pairs_file is not None:
            return self.pair_paths[0]
        return resolve_pairs_cache(
            self.source,
            self.generator,
            num_source=self.num_source,
            seed=self.seed,
            cache_dir=self.cache_dir,
        ).path

    def prepare_data(self) -> None:
        """Generate and cache the pairs if missing (disk only; Lightning runs this on local rank 0)."""
        if self.pairs_file is None:
            ensure_pairs_file(
                self.source,
                self.generator,
                num_source=self.num_source,
                seed=self.seed,
                cache_dir=self.cache_dir,
            )

    def setup(self, stage: str | None = None) -> None:
        """Read the pairs and split them into train and val (every process, same split)."""
        pairs: list[dict] = []
        for path in self.pair_paths:
            if not path.is_file():
                raise UserError(
                    f"pairs cache {path} is missing: call prepare_data() before setup()"
                )
            read = read_pairs(path, on_bad_line=self.on_bad_line)
            check_against_manifest(path, len(read))
            pairs += read
        path = " + ".join(map(str, self.pair_paths))
        self.pairs_sha256 = pairs_digest(pairs)
        self.num_pairs = len(pairs)
        with_negative = sum("negative" in p for p in pairs)
        if 0 < with_negative < len(pairs):
            raise UserError(
                f"{with_negative} of the {len(pairs)} pairs in {path} have a 'negative': "
                "give every pair one (python -m llm_embed.data.hard_negatives), or none"
            )
        train, val = split_pairs(pairs, self.val_size, self.seed)
        if not train:
            raise UserError(
                f"val_size={self.val_size} leaves no training pairs out of {len(pairs)} in {path}: lower val_size"
            )
        self.train_pairs, self.val_pairs = train, val
        if stage in (None, "fit"):
            self._check_enough_train_pairs()
        rank_zero_info(
            f"pairs {path}: {len(train)} train, {len(val)} val"
        )  # setup runs on every process

    def state_dict(self) -> dict[str, Any]:
        """What the pairs were when the checkpoint was saved: a resume checks it (below)."""
        return {"pairs_sha256": self.pairs_sha256, "num_pairs": self.num_pairs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Refuse a resume whose pairs differ from the checkpoint's: the train/validation split
        and the batches would silently change mid-run."""
        saved = state.get("pairs_sha256")
        if saved is None or self.pairs_sha256 is None or saved == self.pairs_sha256:
            return
        paths = " + ".join(map(str, self.pair_paths))
        raise UserError(
            f"the pairs in {paths} changed since this run's checkpoint was saved "
            f"({state.get('num_pairs')} pairs then, {self.num_pairs} now): restore them, or start "
            "a fresh run under another --trainer.logger.init_args.name"
        )

    def _check_enough_train_pairs(self) -> None:
        if len(self.train_pairs) < self.batch_size:
            raise UserError(
                f"only {len(self.train_pairs)} training pairs for batch_size={self.batch_size} "
                "(full batches are needed for in-batch negatives): lower batch_size or val_size, or raise num_source"
            )
        problem = (
            degenerate_problem(self.train_pairs, self.batch_size) if self.check_pairs else None
        )
        if problem is not None:
            raise UserError(
                f"the training pairs of {' + '.join(map(str, self.pair_paths))} cannot teach anything: {problem}; "
                "fix the pairs, or set data.check_pairs=false to train anyway"
            )

    def train_dataloader(self) -> DataLoader:
        """Seeded shuffle, full batches only.

        The order is a function of (seed, epoch) and the loader checkpoints its position, so a run
        resumed mid-epoch sees the same batches as an uninterrupted one (``llm_embed.train.resume``).
        Under DDP Lightning wraps the sampler in a DistributedSamplerWrapper (which forwards
        ``set_epoch``), so each rank reads its share of the same permutation.
        """
        self._check_enough_train_pairs()
        return ResumableDataLoader(
            PairDataset(self.train_pairs),
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(self.train_pairs), seed=self.seed),
            drop_last=True,
            collate_fn=collate_pairs,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        """Held-out pairs in a fixed order; ``[]`` when ``val_size=0`` (Lightning then skips validation).

        The last batch may be smaller: its InfoNCE sees fewer negatives, so pick ``val_size`` as a
        multiple of ``batch_size`` for a loss comparable across runs.
        """
        if not self.val_pairs:
            return []
        return DataLoader(
            PairDataset(self.val_pairs),
            batch_size=self.batch_size,
            shuffle=False,
            drop_last=False,
            collate_fn=collate_pairs,
            num_workers=self.num_workers,
        )


def pairs_digest(pairs: list[dict]) -> str:
    """SHA-256 of the pairs in reading order (what the split and the batches follow)."""
    text = json.dumps(pairs, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_against_manifest(path: Path, count: int) -> None:
    """A generated pairs file holds the number of pairs its manifest records: one cut at a line
    boundary (a copy that ran out of space, an edit) would otherwise train on fewer pairs."""
    try:
        manifest = read_manifest(path)
    except (OSError, ValueError):  # an unreadable manifest records nothing to check against
        return
    recorded = manifest.get("num_pairs") if isinstance(manifest, dict) else None
    if isinstance(recorded, int) and recorded != count:
        raise UserError(
            f"pairs file {path} holds {count} pairs but its manifest records {recorded} "
            f"(truncated or edited): delete it and {manifest_path(path).name} to generate the "
            "pairs again"
        )


def generate_pairs(data: PairDataModule) -> str:
    """Generate (or find in the cache) the pairs ``data`` names, as ``fit`` would; return the report.

    The pairs land in the cache entry that a run with the same ``data`` section trains on; a killed
    generation continues where it stopped. Returns the pairs file and its filter report as text.
    """
    from llm_embed.data.filters import format_report

    if data.pairs_file is not None:
        raise UserError(
            f"the config trains on pairs_file {data.pairs_file}: there is nothing to generate; "
            "remove data.pairs_file to generate pairs from data.source"
        )
    data.prepare_data()
    return f"pairs: {data.cache_path}\n{format_report(read_manifest(data.cache_path) or {})}"
