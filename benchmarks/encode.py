"""Encode throughput of llm-embed against sentence-transformers, and forward FLOP/s against this machine's peak.

Both encoders load the same folder (backbone), pool the same way (last token by default, L2
normalized) and see the same tokens (no prompt: sentence-transformers would only prepend one; its
chat template is switched off), so the embeddings agree (the ``max |Δ|`` column) and only the
encoding machinery differs. Both sort by length and batch ``--batch-size`` texts. The corpus mixes
titles, sentences and paragraphs. Each side runs ``--repeats`` times, alternating; the best run
counts. Tokens are the real (non-padding) tokens; achieved FLOP/s counts only them (PaLM App. B)
and is divided by the best square matmul of the same dtype measured in the same run.

    python -m benchmarks.encode                                  # SmolLM2-135M (packaged), CPU
    python -m benchmarks.encode --random qwen3-0.6b --dtype bfloat16 --texts 4096 --batch-size 64
    python -m benchmarks.encode --quick                          # tiny random model (tests)
    python -m benchmarks.encode --model gemma3-270m --pooling weighted_mean \
        --paths openvino,openvino-bf16,bf16,int8 --suite checkpoints/default --suite-seeds 42,43,44

``--paths`` adds llm-embed's fast inference paths as rows (on a CPU the default adds
``openvino``): ``openvino`` (the backbone as an OpenVINO graph, float32), ``openvino-bf16``,
``bf16`` (PyTorch bf16 autocast) and ``int8`` (torch's dynamic int8 quantization of the Linear
layers: measured, not offered). Each row prints its speed against sentence-transformers' float32
encode and its vectors' minimum cosine to llm-embed's float32 ones. ``--suite RUN`` then scores
that model (a run, export or decoder) on the offline clustering suite through
``evaluate_clustering`` in float32 PyTorch and through each path, and prints each path's V-measure
difference per task and its evaluation time against float32. A difference at one mteb seed is
partly k-means' luck (a slightly different vector can flip one bootstrap round's clustering), so
``--suite-seeds`` adds seeds whose mean difference shows the change of the vectors itself.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.common import (
    add_model_arguments,
    default_device,
    environment,
    forward_flops,
    matmul_peak,
    mixed_corpus,
    model_from_args,
    non_embedding_params,
    table,
    timed,
    write_json,
)

POOLING_ST = {"last": "lasttoken", "mean": "mean", "weighted_mean": "weightedmean"}


def sentence_transformer(
    path: str, pooling: str, *, device: str, dtype: str, max_tokens: int
) -> Any:
    """A sentence-transformers model on the same folder: Transformer (plain text, no chat template) + Pooling."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6.1 layout
        from sentence_transformers.base.modules.transformer import Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # older layout
        from sentence_transformers.models import Pooling, Transformer

    torch_dtype = getattr(torch, dtype)
    # v6 wraps the text of a model that has a chat template in that template: pin plain text.
    # Older versions have no modalities (nor chat templating) and name the model kwargs model_args.
    attempts: list[dict[str, Any]] = [
        {
            "model_kwargs": {"dtype": torch_dtype},
            "modality_config": {
                "text": {"method": "forward", "method_output_name": "last_hidden_state"}
            },
            "module_output_name": "token_embeddings",
        },
        {"model_kwargs": {"dtype": torch_dtype}},
        {"model_args": {"torch_dtype": torch_dtype}},
    ]
    for i, extra in enumerate(attempts):
        try:
            transformer = Transformer(path, max_seq_length=max_tokens, **extra)
            break
        except TypeError:
            if i == len(attempts) - 1:
                raise
    if transformer.tokenizer.pad_token is None:
        transformer.tokenizer.pad_token = transformer.tokenizer.eos_token
    dim = transformer.auto_model.config.hidden_size
    model = SentenceTransformer(
        modules=[transformer, Pooling(dim, POOLING_ST[pooling])], device=device
    )
    model.eval()
    return model


def st_encode(st: Any, texts: list[str], batch_size: int) -> torch.Tensor:
    """sentence-transformers' encode, normalized, as a CPU float tensor (what llm-embed returns)."""
    out = st.encode(
        texts,
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return out.float().cpu()


# The fast paths llm-embed offers, each an Encoder setting beside the float32 PyTorch row.
# int8 is measured, not offered: torch's dynamic quantization of every Linear layer.
PATHS: dict[str, dict[str, str]] = {
    "openvino": {"inference_backend": "openvino"},
    "openvino-bf16": {"inference_backend": "openvino", "inference_dtype": "bfloat16"},
    "bf16": {"inference_dtype": "bfloat16"},
    "int8": {},
}


def with_path(encoder: Any, path: str) -> Any:
    """``encoder`` set up for ``path`` (int8: its Linear layers dynamically quantized, in place)."""
    for key, value in PATHS[path].items():
        setattr(encoder, key, value)
    if path == "int8":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
            quantize_dynamic(encoder.backbone, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return encoder


def shared_prefix_share(encoder: Any, texts: list[str], prompt: str = "clustering") -> float:
    """Share of the tokens that a template's fixed prefix (and BOS) takes: what a KV cache of
    the shared prefix could skip at most."""
    from llm_embed.prompts import get_prompt

    template = get_prompt(prompt)
    tokens = encoder.tokenize(texts, prompt=template)["attention_mask"].sum().item()
    prefix = len(encoder.tokenizer(template.prefix)["input_ids"])
    return prefix * len(texts) / tokens


def padding_share(lengths: list[int], batch_size: int) -> float:
    """Pad tokens over real tokens in length-sorted batches: what a token budget could save."""
    ordered = sorted(lengths, reverse=True)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    return sum(b[0] * len(b) for b in batches) / sum(lengths) - 1


def run(
    model: str,
    *,
    texts: int = 1024,
    batch_size: int = 32,
    pooling: str = "last",
    device: str | None = None,
    dtype: str = "float32",
    repeats: int = 3,
    max_words: int = 200,
    peak: float | None = None,
    paths: Sequence[str] = (),
) -> dict[str, Any]:
    """Measure the encoders on one corpus; returns the rows and the ratios (``peak``: FLOP/s,
    measured here if None). ``paths``: fast paths (:data:`PATHS`) to add as rows."""
    from llm_embed.backbone import resolve
    from llm_embed.encoder import Encoder

    device = device or default_device()
    path = resolve(model)
    corpus = mixed_corpus(texts, max_words=max_words)
    max_tokens = 1024

    def build(**kwargs: Any) -> Encoder:
        return Encoder(
            path, pooling=pooling, prompt="none", max_text_tokens=max_tokens, dtype=dtype, **kwargs
        ).to(device)

    ours = build()
    st = sentence_transformer(path, pooling, device=device, dtype=dtype, max_tokens=max_tokens + 8)
    lengths = ours.tokenize(corpus)["attention_mask"].sum(1).tolist()  # real tokens per text
    n_params = non_embedding_params(ours.backbone)
    flops = forward_flops(ours.backbone.config, n_params, lengths)

    encoders: dict[str, Any] = {
        "llm-embed": ours,
        "sentence-transformers": None,
        **{f"llm-embed {name}": with_path(build(), name) for name in paths},
    }

    def encode(name: str, texts: list[str]) -> torch.Tensor:
        if name == "sentence-transformers":
            return st_encode(st, texts, batch_size)
        return encoders[name].encode(texts, batch_size=batch_size)

    probe = corpus[: 2 * batch_size]  # warm-up (kernels, allocator, graph conversion), agreement
    first: dict[str, float] = {}
    vectors: dict[str, torch.Tensor] = {}
    for name in encoders:
        first[name], vectors[name] = timed(lambda name=name: encode(name, probe), device)
    diff = (vectors["llm-embed"] - vectors["sentence-transformers"]).abs().max().item()
    best = dict.fromkeys(encoders, float("inf"))
    for _ in range(repeats):
        for name in encoders:
            seconds, _ = timed(lambda name=name: encode(name, corpus), device)
            best[name] = min(best[name], seconds)
    tokenize_s, _ = timed(lambda: ours.tokenize(corpus), "cpu")
    peak = peak or matmul_peak(device, getattr(torch, dtype))
    rows = []
    for name, seconds in best.items():
        rows.append(
            {
                "encoder": name,
                "seconds": seconds,
                "texts/s": texts / seconds,
                "tokens/s": sum(lengths) / seconds,
                "forward TFLOP/s": flops / seconds / 1e12,
                "of matmul peak": flops / seconds / peak,
                "vs sentence-transformers": best["sentence-transformers"] / seconds,
                "min cosine to float32": torch.nn.functional.cosine_similarity(
                    vectors[name], vectors["llm-embed"]
                )
                .min()
                .item(),
            }
        )
    return {
        "environment": environment(device),
        "model": model,
        "dtype": dtype,
        "texts": texts,
        "tokens": sum(lengths),
        "mean_tokens": sum(lengths) / len(lengths),
        "batch_size": batch_size,
        "pooling": pooling,
        "max_abs_diff": diff,
        "matmul_peak_tflops": peak / 1e12,
        "rows": rows,
        "speedup": best["sentence-transformers"] / best["llm-embed"],
        "first_call_seconds": first,  # the warm-up call: includes an OpenVINO graph's conversion
        "tokenize_seconds": tokenize_s,
        "padding_share": padding_share(lengths, batch_size),
        "prefix_share": shared_prefix_share(ours, corpus),
    }


class CachedEncoder:
    """An encoder that embeds each (prompt, text) once: later mteb seeds reuse the vectors."""

    def __init__(self, encoder: Any) -> None:
        self.encoder, self.name, self.cache = encoder, encoder.name, {}

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, prompt: Any = None
    ) -> torch.Tensor:
        key = str(prompt)
        todo = sorted({t for t in texts if (key, t) not in self.cache})
        if todo:
            vectors = self.encoder.encode(todo, batch_size=batch_size, prompt=prompt)
            self.cache.update(((key, text), v) for text, v in zip(todo, vectors, strict=True))
        return torch.stack([self.cache[key, t] for t in texts])


def suite_delta(
    model: str,
    paths: Sequence[str],
    *,
    seeds: Sequence[int] = (42,),
    tasks: Sequence[str] | None = None,
) -> dict[str, Any]:
    """V-measure of ``model`` on the offline suite through each path and float32 PyTorch.

    Each path's first evaluation (mteb's seed 42) is timed; further ``seeds`` (other bootstrap
    rounds and article samples) reuse the vectors already made, so their mean delta shows the
    change of the vectors rather than one k-means draw's luck.
    """
    from llm_embed.eval.clustering import evaluate_clustering
    from llm_embed.eval.tasks import OFFLINE_SUITE
    from llm_embed.inference.load import load_model

    tasks = list(tasks or OFFLINE_SUITE)
    scores: dict[str, dict[int, dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    for path in ["float32", *paths]:
        encoder = load_model(model, inference_backend="torch", inference_dtype="float32")
        cached = CachedEncoder(encoder if path == "float32" else with_path(encoder, path))
        scores[path] = {}
        for seed in seeds:
            took, scores[path][seed] = timed(
                lambda seed=seed, cached=cached: evaluate_clustering(cached, tasks, seeds=seed),
                "cpu",
            )
            seconds.setdefault(path, took)
    delta = {
        path: {
            t: sum(scores[path][s][t] - scores["float32"][s][t] for s in seeds) / len(seeds)
            for t in tasks
        }
        for path in paths
    }
    first = {
        path: {t: scores[path][seeds[0]][t] - scores["float32"][seeds[0]][t] for t in tasks}
        for path in paths
    }
    return {
        "model": model,
        "seeds": list(seeds),
        "scores": scores,
        "delta_first_seed": first,
        "delta_mean": delta,
        "seconds": seconds,
        "speedup": {path: seconds["float32"] / seconds[path] for path in paths},
    }


def report(result: dict[str, Any]) -> str:
    cols = ["encoder", "seconds", "texts/s", "tokens/s", "forward TFLOP/s", "of matmul peak",
            "vs sentence-transformers", "min cosine to float32"]  # fmt: skip
    lines = [
        f"## encode: {result['model']} ({result['dtype']}), {result['texts']} texts, "
        f"{result['tokens']} tokens (mean {result['mean_tokens']:.1f}), batch {result['batch_size']}, "
        f"pooling {result['pooling']}",
        result["environment"] + f"; matmul peak {result['matmul_peak_tflops']:.3g} TFLOP/s",
        "",
        table(result["rows"], cols),
        "",
        f"llm-embed / sentence-transformers throughput: {result['speedup']:.2f}x "
        f"(embeddings agree to max |Δ| = {result['max_abs_diff']:.1e}); "
        f"llm-embed's tokenization alone: {result['tokenize_seconds']:.2f} s",
        f"first call ({2 * result['batch_size']} texts; includes a graph's conversion): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in result["first_call_seconds"].items()),
        f"levers not built: batching by a token budget could save at most the "
        f"{result['padding_share']:.1%} padding of the length-sorted batches; a KV cache of the "
        f"clustering prompt's shared prefix at most {result['prefix_share']:.1%} of the tokens",
    ]
    suite = result.get("suite")
    if suite:
        seeds = suite["seeds"]
        lines += ["", f"## suite: {suite['model']}, V-measure per path (mteb seed {seeds[0]})"]
        for path, by_seed in suite["scores"].items():
            first = by_seed[seeds[0]]
            line = f"{path}: " + ", ".join(f"{t} {v:.4f}" for t, v in first.items())
            line += f" | evaluation {suite['seconds'][path]:.1f} s"
            if path in suite["speedup"]:
                line += f" ({suite['speedup'][path]:.2f}x float32)"
                line += " | delta " + ", ".join(
                    f"{d:+.4f}" for d in suite["delta_first_seed"][path].values()
                )
                if len(seeds) > 1:
                    line += f", mean over {len(seeds)} seeds " + ", ".join(
                        f"{d:+.4f}" for d in suite["delta_mean"][path].values()
                    )
            lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pooling", choices=sorted(POOLING_ST), default="last")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument(
        "--paths",
        default=None,
        help=f"comma-separated fast paths to add as rows: {', '.join(PATHS)} (default: openvino "
        "on a CPU, none on a GPU; '' for none)",
    )
    parser.add_argument(
        "--suite", help="also score this model (run, export, decoder) on the offline suite per path"
    )
    parser.add_argument(
        "--suite-seeds",
        default="42",
        help="mteb seeds for --suite (comma-separated; the first is timed, the rest reuse vectors)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny random model, 48 short texts (the tests)"
    )
    args = parser.parse_args(argv)
    if args.paths is None:
        args.paths = "openvino" if (args.device or default_device()) == "cpu" else ""
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown --paths {unknown}; choose from {', '.join(PATHS)}")
    if args.quick:
        args.random, args.texts, args.batch_size, args.repeats = "tiny", 48, 16, 1
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    with model_from_args(args) as (model, label):
        result = run(
            model,
            texts=args.texts,
            batch_size=args.batch_size,
            pooling=args.pooling,
            device=args.device,
            dtype=args.dtype,
            repeats=args.repeats,
            max_words=60 if args.quick else 200,
            paths=paths,
        )
    result["model"] = label
    if args.suite:
        seeds = [int(s) for s in args.suite_seeds.split(",") if s.strip()]
        result["suite"] = suite_delta(args.suite, paths, seeds=seeds)
    print(report(result), flush=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
