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
    python -m benchmarks.encode --model gemma3-270m --pooling weighted_mean --bf16 \
        --suite checkpoints/default                              # + bf16 autocast, + V-measure

``--bf16`` adds llm-embed's bf16-autocast inference path (``Encoder(inference_dtype="bfloat16")``)
as a third row. ``--suite RUN`` then scores that model (a run, export or decoder) on the offline
clustering suite through ``evaluate_clustering`` twice, float32 and bf16 autocast, and prints the
V-measure difference per task beside the speed ratio.
"""

from __future__ import annotations

import argparse
import logging
import warnings
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
    bf16: bool = False,
) -> dict[str, Any]:
    """Measure both encoders on one corpus; returns the rows and the ratios (``peak``: FLOP/s, measured here if None)."""
    from llm_embed.backbone import resolve
    from llm_embed.encoder import Encoder

    device = device or default_device()
    path = resolve(model)
    corpus = mixed_corpus(texts, max_words=max_words)
    max_tokens = 1024
    ours = Encoder(
        path, pooling=pooling, prompt="none", max_text_tokens=max_tokens, dtype=dtype
    ).to(device)
    st = sentence_transformer(path, pooling, device=device, dtype=dtype, max_tokens=max_tokens + 8)
    lengths = ours.tokenize(corpus)["attention_mask"].sum(1).tolist()  # real tokens per text
    n_params = non_embedding_params(ours.backbone)
    flops = forward_flops(ours.backbone.config, n_params, lengths)

    fast = Encoder(
        path, pooling=pooling, prompt="none", max_text_tokens=max_tokens, dtype=dtype,
        inference_dtype="bfloat16",
    ).to(device) if bf16 else None  # fmt: skip
    encoders = {
        "llm-embed": lambda texts: ours.encode(texts, batch_size=batch_size),
        "sentence-transformers": lambda texts: st_encode(st, texts, batch_size),
    }
    if fast is not None:
        encoders["llm-embed bf16 autocast"] = lambda texts: fast.encode(texts, batch_size=batch_size)
    probe = corpus[: 2 * batch_size]  # warm-up (kernels, allocator) and the agreement check
    diff = (
        (encoders["llm-embed"](probe) - encoders["sentence-transformers"](probe)).abs().max().item()
    )
    best = dict.fromkeys(encoders, float("inf"))
    for _ in range(repeats):
        for name, encode in encoders.items():
            seconds, _ = timed(lambda encode=encode: encode(corpus), device)
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
            }
        )
    ratio = best["sentence-transformers"] / best["llm-embed"]
    extra: dict[str, Any] = {}
    if fast is not None:
        a, b = encoders["llm-embed"](probe), encoders["llm-embed bf16 autocast"](probe)
        extra = {
            "bf16_speedup_vs_st": best["sentence-transformers"] / best["llm-embed bf16 autocast"],
            "bf16_speedup_vs_fp32": best["llm-embed"] / best["llm-embed bf16 autocast"],
            "bf16_min_cosine": torch.nn.functional.cosine_similarity(a, b).min().item(),
        }
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
        "speedup": ratio,
        "tokenize_seconds": tokenize_s,
        **extra,
    }


def suite_delta(model: str, pooling: str | None = None) -> dict[str, Any]:
    """V-measure of ``model`` on the offline suite, float32 and bf16 autocast, through one path."""
    from llm_embed.eval.clustering import evaluate_clustering
    from llm_embed.eval.tasks import OFFLINE_SUITE
    from llm_embed.inference.load import load_model

    encoder = load_model(model, pooling=pooling, inference_dtype="float32")
    scores, seconds = {}, {}
    for dtype in ("float32", "bfloat16"):
        encoder.inference_dtype = dtype
        seconds[dtype], scores[dtype] = timed(lambda: evaluate_clustering(encoder, OFFLINE_SUITE), "cpu")
    delta = {t: scores["bfloat16"][t] - scores["float32"][t] for t in scores["float32"]}
    return {"model": model, "scores": scores, "delta": delta, "seconds": seconds,
            "speedup": seconds["float32"] / seconds["bfloat16"]}  # fmt: skip


def report(result: dict[str, Any]) -> str:
    cols = ["encoder", "seconds", "texts/s", "tokens/s", "forward TFLOP/s", "of matmul peak"]
    return "\n".join(
        [
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
            *(
                [
                    f"bf16 autocast: {result['bf16_speedup_vs_st']:.2f}x sentence-transformers, "
                    f"{result['bf16_speedup_vs_fp32']:.2f}x llm-embed float32 "
                    f"(min cosine to float32 {result['bf16_min_cosine']:.5f})"
                ]
                if "bf16_speedup_vs_st" in result
                else []
            ),
            *(
                [
                    f"suite ({result['suite']['model']}), evaluation {result['suite']['speedup']:.2f}x "
                    "faster in bf16; V-measure float32 -> bf16: "
                    + ", ".join(
                        f"{t} {result['suite']['scores']['float32'][t]:.4f} -> "
                        f"{result['suite']['scores']['bfloat16'][t]:.4f} ({d:+.4f})"
                        for t, d in result["suite"]["delta"].items()
                    )
                ]
                if "suite" in result
                else []
            ),
        ]
    )


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
    parser.add_argument("--bf16", action="store_true", help="add the bf16-autocast path")
    parser.add_argument("--suite", help="score this model on the offline suite, float32 and bf16")
    parser.add_argument(
        "--quick", action="store_true", help="tiny random model, 48 short texts (the tests)"
    )
    args = parser.parse_args(argv)
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
            bf16=args.bf16,
        )
    result["model"] = label
    if args.suite:
        result["suite"] = suite_delta(args.suite)
    print(report(result), flush=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
