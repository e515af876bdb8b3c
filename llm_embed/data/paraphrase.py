"""LLM-written positives (arXiv 2507.22729): an instruct model rewrites each source sentence.

Each sentence gets one of five instructions (more detail, simpler words, a teacher's explanation, a
metaphor, a reader's question), drawn per sentence from ``(seed, text)``. Sampling uses the
model's chat template, temperature 0.6 and top-p 0.9 with at most 100 new tokens (the paper's
settings). Every output goes through :mod:`llm_embed.data.filters`; a rejected sentence is
sampled again up to ``max_retries`` times, then dropped, and every reason is counted in
:attr:`LLMParaphrasePairs.report`.

Resumable and reproducible: sentences are processed in fixed chunks of ``batch_size``; chunk ``i``
attempt ``a`` samples under ``torch.manual_seed(f(seed, i, a))``, and each finished chunk is
appended (flushed and fsynced) to a progress file as one JSON line. A restart reads the finished
chunks back and continues with the next one, so an interrupted run ends with exactly the pairs of
an uninterrupted one, none lost and none twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from llm_embed._progress import progress_bar
from llm_embed.data.filters import REASONS, FilterSettings, normalize, rejection
from llm_embed.data.generators import PairGenerator
from llm_embed.data.seeding import text_rng, texts_hash
from llm_embed.errors import UserError

log = logging.getLogger(__name__)

# The paper's five instructions; "{text}" is the source sentence. The "only" clauses keep a small
# model from wrapping its answer in chatter, which the filters would otherwise reject.
DEFAULT_INSTRUCTIONS: tuple[str, ...] = (
    "Rewrite this sentence with more detail. Reply with the new sentence only.\n\n{text}",
    "Paraphrase this sentence in simpler words. Reply with the paraphrase only.\n\n{text}",
    "Explain this sentence in one sentence, the way a teacher would.\n\n{text}",
    "Express the idea of this sentence as a metaphor, in one sentence.\n\n{text}",
    "Write one natural question that a reader of this sentence would ask.\n\n{text}",
)


def _chunk_seed(seed: int, chunk: int, attempt: int) -> int:
    digest = hashlib.sha256(f"{seed}\x1f{chunk}\x1f{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _texts_hash(texts: Sequence[str]) -> str:
    return texts_hash(texts)[:16]


class LLMParaphrasePairs(PairGenerator):
    """(sentence, LLM rewrite of it) pairs, sampled from an instruct model and filtered.

    Args:
        model: Instruct model with a chat template: a packaged name (default: the packaged
            SmolLM2-135M-Instruct), a local folder or a hub id.
        instructions: Templates with ``{text}``; one is drawn per sentence.
        temperature: Sampling temperature (paper: 0.6).
        top_p: Nucleus sampling mass (paper: 0.9).
        max_new_tokens: Generation budget (paper: 100); an answer cut off by it keeps its complete
            sentences only.
        batch_size: Sentences sampled together (part of the cache key: batch composition changes
            the random draws).
        max_retries: Extra attempts for a rejected sentence before it is dropped.
        filters: Thresholds of the quality filters.
        device: ``cpu``, ``cuda``, ... (None: CUDA when available). Not part of the cache key.
        dtype: Weight dtype (``float32``; ``bfloat16`` on GPUs).
        progress: Show a progress bar.
    """

    name: ClassVar[str] = "paraphrase"
    resumable: ClassVar[bool] = True
    version: ClassVar[int] = 2  # bump when the algorithm (or a filter rule) changes the output

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        instructions: Sequence[str] | None = None,
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_new_tokens: int = 100,
        batch_size: int = 32,
        max_retries: int = 2,
        filters: FilterSettings | None = None,
        device: str | None = None,
        dtype: str = "float32",
        progress: bool = True,
    ) -> None:
        instructions = tuple(instructions if instructions is not None else DEFAULT_INSTRUCTIONS)
        if not instructions:
            raise ValueError("instructions=[] is empty; give at least one template with {text}")
        for template in instructions:
            if not isinstance(template, str) or template.count("{text}") != 1:
                raise ValueError(
                    f"instruction {template!r} must contain {{text}} exactly once (the source sentence)"
                )
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0 (sampling, not greedy)")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p={top_p} is out of range; use 0 < top_p <= 1")
        if max_new_tokens < 1 or batch_size < 1 or max_retries < 0:
            raise ValueError(
                f"max_new_tokens={max_new_tokens}, batch_size={batch_size}, max_retries={max_retries}: "
                "need max_new_tokens >= 1, batch_size >= 1, max_retries >= 0"
            )
        self.model = model
        self.instructions = instructions
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.max_retries = int(max_retries)
        self.filters = filters if filters is not None else FilterSettings()
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.report: dict[str, Any] = {}
        self._lm: Any = None
        self._tokenizer: Any = None

    def settings(self) -> dict:
        """Everything that changes the pairs (hashed into the cache key)."""
        return {
            "model": self.model,
            "instructions": list(self.instructions),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
            "max_retries": self.max_retries,
            "filters": self.filters.to_dict(),
            "dtype": self.dtype,
            "version": self.version,
        }

    # -- sampling ---------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._lm is not None:
            return
        import torch

        from llm_embed.backbone import load_backbone, load_tokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = load_tokenizer(self.model)
        if not tokenizer.chat_template:
            raise UserError(
                f"model {self.model!r} has no chat template: use an instruct (chat) model for paraphrasing"
            )
        tokenizer.padding_side = "left"  # generation continues from the last position
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        lm = load_backbone(self.model, causal_lm=True, dtype=self.dtype).to(device).eval()
        self._tokenizer, self._lm, self._device = tokenizer, lm, device

    def sample(self, prompts: Sequence[str], *, seed: int) -> list[tuple[str, bool]]:
        """Generate one answer per user message: ``(text, finished)`` where ``finished`` means the
        model ended its turn before ``max_new_tokens``."""
        import torch

        self._load()
        tok, lm = self._tokenizer, self._lm
        chats = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        batch = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self._device
        )
        eos = lm.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        stop = {i for i in (tok.eos_token_id, *eos) if i is not None}  # end of turn / text
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = lm.generate(
                **batch,
                do_sample=True,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=0,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=sorted(stop),
            )
        new = out[:, batch["input_ids"].shape[1] :].tolist()
        results = []
        for ids in new:
            finished = any(i in stop for i in ids)
            results.append((tok.decode(ids, skip_special_tokens=True), finished))
        return results

    # -- the generator ----------------------------------------------------------------------------
    def instruction_for(self, text: str, seed: int) -> int:
        """The instruction index of ``text``: a draw from ``(seed, text)``, independent of order."""
        return text_rng(seed, text).randrange(len(self.instructions))

    def generate(
        self, texts: Sequence[str], *, seed: int, resume_file: str | Path | None = None
    ) -> list[dict]:
        """Pairs for ``texts`` in input order; ``resume_file`` holds finished chunks (see module doc)."""
        chunks = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        finished = _read_progress(Path(resume_file), chunks) if resume_file else {}
        if finished:
            log.info("resuming: %d of %d chunks already generated", len(finished), len(chunks))
        stats: Counter[str] = Counter()
        seen: set[str] = set()
        pairs: list[dict] = []
        start, new_pairs = time.monotonic(), 0
        done_texts = sum(len(chunks[i]) for i in finished)
        bar = progress_bar(
            total=len(texts),
            initial=done_texts,
            desc="paraphrase",
            unit="text",
            disable=not self.progress,
        )
        try:
            for index, chunk in enumerate(chunks):
                record = finished.get(index)
                if record is None:
                    record = self._generate_chunk(index, chunk, seed=seed, seen=seen)
                    if resume_file:
                        _append_progress(Path(resume_file), record)
                    new_pairs += len(record["pairs"])
                    bar.update(len(chunk))
                for pair in record["pairs"]:
                    seen.add(normalize(pair["positive"]))
                pairs.extend(record["pairs"])
                stats.update(record["stats"])
                elapsed = max(time.monotonic() - start, 1e-9)
                bar.set_postfix(
                    kept=f"{len(pairs) / max(1, sum(len(chunks[i]) for i in range(index + 1))):.0%}",
                    pairs_s=f"{new_pairs / elapsed:.2f}",
                )
        finally:
            bar.close()
        self.report = {
            "sources": len(texts),
            "generations": stats["generations"],
            "kept": len(pairs),
            "dropped": stats["dropped"],
            "rejected": {r: stats[r] for r in REASONS},
            "kept_by_instruction": dict(sorted(Counter(p["instruction"] for p in pairs).items())),
        }
        return pairs

    def _generate_chunk(
        self, index: int, chunk: Sequence[str], *, seed: int, seen: set[str]
    ) -> dict[str, Any]:
        """Sample, filter and retry one chunk; the JSON-able record appended to the progress file."""
        todo = list(range(len(chunk)))
        kept: dict[int, dict] = {}
        stats: Counter[str] = Counter()
        local_seen = set(seen)
        for attempt in range(self.max_retries + 1):
            if not todo:
                break
            which = [self.instruction_for(chunk[i], seed) for i in todo]
            prompts = [
                self.instructions[w].replace("{text}", chunk[i])
                for w, i in zip(which, todo, strict=True)
            ]
            outputs = self.sample(prompts, seed=_chunk_seed(seed, index, attempt))
            stats["generations"] += len(todo)
            retry = []
            for i, w, prompt, (text, done) in zip(todo, which, prompts, outputs, strict=True):
                reason, cleaned = rejection(
                    chunk[i], text, prompt, self.filters, finished=done, seen=local_seen
                )
                if reason is None:
                    local_seen.add(normalize(cleaned))
                    kept[i] = {"anchor": chunk[i], "positive": cleaned, "instruction": w}
                else:
                    stats[reason] += 1
                    retry.append(i)
            todo = retry
        stats["dropped"] += len(todo)
        return {
            "chunk": index,
            "texts": _texts_hash(chunk),
            "pairs": [kept[i] for i in sorted(kept)],
            "stats": dict(stats),
        }


# -- the progress file ---------------------------------------------------------------------------
def _read_progress(path: Path, chunks: Sequence[Sequence[str]]) -> dict[int, dict]:
    """Finished chunk records of ``path`` (a torn last line from a kill is dropped and rewritten)."""
    if not path.is_file():
        return {}
    records: dict[int, dict] = {}
    good_bytes = 0
    with path.open("rb") as f:
        for line in f:
            try:
                record = json.loads(line)
                index = record["chunk"]
                ok = line.endswith(b"\n") and record["texts"] == _texts_hash(chunks[index])
            except (ValueError, KeyError, IndexError, TypeError):
                ok = False
            if not ok:
                break  # everything after a torn or foreign line is regenerated
            records[index] = record
            good_bytes += len(line)
    if good_bytes < path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    # Only a contiguous prefix counts: chunks are generated in order.
    prefix: dict[int, dict] = {}
    while len(prefix) in records:
        prefix[len(prefix)] = records[len(prefix)]
    return prefix


def _append_progress(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
