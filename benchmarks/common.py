"""Shared pieces of the benchmarks: models, a mixed-length corpus, FLOP counts, timers, memory.

Every benchmark prints a Markdown table whose ratios are measured side by side in one process on
one machine; ``docs/performance.md`` collects them. FLOP counts follow PaLM (Chowdhery et al.
2022, arXiv 2204.02311, App. B): a forward pass costs ``2 N n + 4 L d_attn n^2`` for a text of n
tokens, N the non-embedding parameters, L layers and d_attn = heads x head_dim.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch

from llm_embed._machine import matmul_peak, sync  # noqa: F401  (the benchmarks' yardstick)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "market stock price rose fell sharply team won final match season player coach phone released "
    "today company new government minister election vote policy tax law court judge police city "
    "river mountain forest animal bird fish plant tree flower water fire light dark cold warm "
    "music film book story writer song art painting museum history war peace king queen church "
    "school student teacher science theory experiment energy data model computer network system "
    "drive car road train ship plane travel journey quickly slowly calm quiet loud small large"
).split()

# Qwen/Qwen3-0.6B's architecture (config.json of the hub model), randomly initialised: the GPU check
# needs its shape and cost, not its weights, and the GPU machine has no network.
PRESETS: dict[str, dict[str, Any]] = {
    "qwen3-0.6b": dict(
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=None,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
}


def mixed_corpus(n: int, *, seed: int = 0, max_words: int = 200) -> list[str]:
    """``n`` seeded texts of mixed length: half titles (3-15 words), a third sentences (15-60),
    the rest paragraphs (60-``max_words``), with Zipf-like word frequencies."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(WORDS))]
    texts = []
    for _ in range(n):
        u = rng.random()
        lo, hi = (3, 15) if u < 0.5 else (15, 60) if u < 0.85 else (60, max_words)
        k = rng.randint(lo, max(lo, min(hi, max_words)))
        texts.append(" ".join(rng.choices(WORDS, weights, k=k)))
    return texts


def build_random_model(
    path: str | Path, preset: str = "tiny", *, seed: int = 0, dtype: str = "float32"
) -> Path:
    """Save a randomly initialised Qwen3 decoder of ``preset``'s shape with a small byte-level BPE tokenizer.

    Token ids stay below the tokenizer's size (a few thousand) even where the model's vocabulary is
    larger: lookups cost the same, and every other layer is the real size.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    path = Path(path)
    if (path / "config.json").is_file():
        return path
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(mixed_corpus(500, seed=seed + 1), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    shape = dict(PRESETS[preset])
    shape["vocab_size"] = shape["vocab_size"] or tok.get_vocab_size()
    config = Qwen3Config(
        **shape, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=None
    )
    torch.manual_seed(seed)
    model = Qwen3Model(config).to(getattr(torch, dtype))
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` (a real model) and ``--random`` (a random model of a named shape instead)."""
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="packaged name, folder or hub id"
    )
    parser.add_argument(
        "--random",
        choices=["tiny", "qwen3-0.6b"],
        help="a randomly initialised model of this shape instead",
    )


@contextmanager
def model_from_args(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """``(path, label)`` of the model the arguments name; a ``--random`` one lives in a temp folder."""
    if not args.random:
        yield args.model, args.model
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield str(build_random_model(f"{tmp}/model", args.random)), f"random {args.random}"


def non_embedding_params(model: torch.nn.Module) -> int:
    """N of the FLOP formula: every weight except the token embedding (a lookup, not a matmul)."""
    embed = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embed)


def forward_flops(config: Any, n_params: int, lengths: Sequence[int]) -> float:
    """``Σ_texts 2 N n + 4 L d_attn n^2`` (PaLM App. B, forward only; padding is not useful work)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d_attn = config.num_attention_heads * head_dim
    L = config.num_hidden_layers
    return float(sum(2 * n_params * n + 4 * L * d_attn * n * n for n in lengths))


def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[float, Any]:
    """(seconds, result) of one call, the device synchronized on both ends."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


@contextmanager
def peak_memory(device: torch.device | str) -> Iterator[dict[str, float]]:
    """Peak memory above the starting level during the block, in MiB (``result["peak_mib"]``).

    CUDA: the caching allocator's peak of allocated bytes. CPU: the process's resident-set
    high-water mark (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``), so it includes
    allocator slack; compare rows of one run, not machines.
    """
    device = torch.device(device)
    result: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return
    # Hand freed heap memory back to the OS first: glibc keeps it, so after a large step the RSS
    # stays high and a later, smaller step would show no growth above that inflated level.
    gc.collect()
    with suppress(OSError, AttributeError):  # not glibc: measure without the trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = _proc_status_kib("VmRSS")
    except OSError:
        base = None
    yield result
    result["peak_mib"] = float("nan") if base is None else (_proc_status_kib("VmHWM") - base) / 1024


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats: 3 significant digits, whole numbers from 100 on)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def environment(device: torch.device | str) -> str:
    """One line naming the machine, for the record."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads (os.cpu_count()={os.cpu_count()})"
    return f"device: {name}; torch {torch.__version__}"


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- suite scores: one line per scored view, a JSON record and its Markdown table -------------------
def report_scores(label: str, scores: dict[str, float]) -> float:
    """Print one view's V-measure per task and their mean on one line; returns the mean."""
    mean = sum(scores.values()) / len(scores)
    cols = "  ".join(f"{t}={v:.4f}" for t, v in scores.items())
    print(f"{label}  {cols}  mean={mean:.4f}", flush=True)
    return mean


def scores_table(
    rows: Sequence[dict[str, Any]], labels: Sequence[tuple[str, str]], other: Sequence[str] = ()
) -> list[str]:
    """Markdown lines: the ``labels`` columns (header, row key), then V-measure per task and the mean.

    The tasks are the row keys that are neither a label, ``mean``, nor one of ``other``.
    """
    keys = {key for _, key in labels} | {"mean", *other}
    tasks = [k for k in rows[0] if k not in keys]
    lines = [
        "| " + " | ".join(h for h, _ in labels) + " | " + " | ".join(tasks) + " | mean |",
        "|---|" + "---:|" * (len(labels) - 1 + len(tasks) + 1),
    ]
    for row in rows:
        cells = [str(row[key]) for _, key in labels] + [f"{row[t]:.4f}" for t in [*tasks, "mean"]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_scores(
    out: Path | None, record: dict[str, Any], markdown: Callable[[dict[str, Any]], str]
) -> None:
    """``record`` as JSON at ``out`` and ``markdown(record)`` beside it (``.md``); nothing if None."""
    if out is None:
        return
    from llm_embed._fs import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(record))
