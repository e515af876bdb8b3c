"""Where the embedded token looks: final-token attention maps (arXiv 2507.22729, attention analysis).

Last-token pooling embeds the hidden state of the final token, so the final token's attention
row shows which words the embedding reads. The paper takes the last layer, averages the heads,
drops the BOS token (an attention sink) and compares a base model with a fine-tuned one on
``This sentence: "a man is driving a car" belongs to the following cluster:``. Base model: the
final ":" takes 0.18 of the attention and each content word under 0.015; after 100 contrastive
steps the content words rise (car 0.036, driving 0.025).

For row ``w`` (the final real token's row of layer ``l``, heads averaged) over the kept tokens
``K`` (all real tokens but a special token at the first position)::

    w_j = (1/H) Σ_h A[l, h, last, j]                 j ∈ K, so Σ_j w_j <= 1 (the sink is dropped)
    content_share = Σ_{j ∈ K, text} w_j / Σ_{j ∈ K} w_j

Text vs prompt tokens come from the encoder's ``prompt_mask``: the same tokenization, template
and BOS handling as training and evaluation (``Encoder.tokenize``), never a second copy.

Attention weights exist only with eager attention; :func:`eager_attention` switches the
backbone (plain or peft-wrapped) to eager for the call and restores its implementation after.

Example:
    >>> from llm_embed.encoder import Encoder  # doctest: +SKIP
    >>> base = final_token_attention(Encoder("smollm2-135m-instruct"), "a man is driving a car")
    >>> plot_attention({"base": base}, "attention.png")
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch

from llm_embed.errors import UserError
from llm_embed.prompts import get_prompt

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from llm_embed.encoder import Encoder

log = logging.getLogger(__name__)

CONTENT_SHARE_KEY = "attention/content_share"
FIGURE_TAG = "attention/final_token"


@dataclass(eq=False)
class AttentionResult:
    """The final token's attention over one templated text (BOS dropped).

    Attributes:
        tokens: readable token strings (byte-level ``Ġ`` turned back into text, then stripped).
        weights: (T,) head-averaged attention of the final token on each kept token; sums to <= 1.
        is_prompt: (T,) True on template and special tokens, False on the text's own tokens.
        content_share: Σ weights on text tokens / Σ weights on all kept tokens.
        layer: the layer the row was taken from (as given, e.g. -1).
        dropped: the special token dropped at the first position (e.g. ``<s>``), or None.
    """

    tokens: list[str]
    weights: np.ndarray
    is_prompt: np.ndarray
    content_share: float
    layer: int = -1
    dropped: str | None = None

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most attended tokens, highest first, as ``(token, weight)``."""
        order = np.argsort(-self.weights, kind="stable")[:k]
        return [(self.tokens[i], float(self.weights[i])) for i in order]


@contextmanager
def eager_attention(backbone: torch.nn.Module) -> Iterator[None]:
    """Run ``backbone`` (a transformers model, possibly peft-wrapped) with eager attention inside the block.

    SDPA and flash kernels never materialize the (T, T) attention matrix, so transformers
    returns no weights for them. The previous implementation is restored on exit, errors included.
    """
    model = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if before == "eager":
        yield
        return
    if not hasattr(model, "set_attn_implementation"):
        raise UserError(
            f"{type(model).__name__} cannot switch to eager attention at run time (transformers too "
            "old?): build the Encoder with attn_implementation='eager' for attention maps"
        )
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _readable(tokenizer: Any, ids: Sequence[int], special: set[int]) -> list[str]:
    """Token strings for a figure: byte-level / sentencepiece markers decoded, spaces stripped."""
    out = []
    for i, tok in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strict=True):
        text = tok if i in special else tokenizer.convert_tokens_to_string([tok])
        text = text.replace("\n", "\\n").strip()
        out.append(text or "␣")
    return out


def final_token_attentions(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    prompt: str | None = None,
    layer: int = -1,
) -> list[AttentionResult]:
    """Final-token attention rows for a batch of texts (one :class:`AttentionResult` each).

    Tokenizes with ``encoder.tokenize`` (its template, BOS, truncation, EOS and padding side),
    runs ``encoder.backbone`` once with eager attention in eval mode without gradients, and
    restores every submodule's train/eval mode and the attention implementation after.
    Positions come from the attention mask, so left and right padding give the same rows.

    Args:
        encoder: the :class:`~llm_embed.encoder.Encoder` (its backbone may be peft-wrapped).
        texts: input texts, before templating.
        prompt: a template name or string; None = the encoder's own template.
        layer: attention layer, Python-indexed (-1 = last).

    Returns:
        One result per text, in input order.
    """
    if isinstance(texts, str):
        raise TypeError(
            "final_token_attentions() takes a list of texts; use final_token_attention for one"
        )
    if not texts:
        raise ValueError("texts is empty; give at least one text")
    n_layers = encoder.backbone.config.num_hidden_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n_layers <= layer < n_layers:
        raise ValueError(
            f"layer={layer!r} is out of range for a {n_layers}-layer model; use -{n_layers}..{n_layers - 1}"
        )
    batch = encoder.tokenize(texts, prompt=prompt)
    mask = batch["attention_mask"]  # (B, T)
    B, T = mask.shape
    device = encoder.device
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()  # no dropout (LoRA dropout included): a deterministic map
    try:
        with eager_attention(encoder.backbone), torch.no_grad():
            out = encoder.backbone(
                input_ids=batch["input_ids"].to(device),
                attention_mask=mask.to(device),
                position_ids=batch["position_ids"].to(device),
                output_attentions=True,
            )
    finally:
        for module, training in modes:
            module.training = training
    if not out.attentions:
        raise RuntimeError(
            f"{type(encoder.backbone).__name__} returned no attention weights under eager attention"
        )
    attn = out.attentions[layer].float().mean(1).cpu()  # (B, T, T), heads averaged
    pos = torch.arange(T)
    last = (mask * pos).argmax(1)  # (B,) last real token, either padding side
    first = mask.argmax(1)  # (B,) first real token
    rows = attn[torch.arange(B), last]  # (B, T): the final token's row
    tokenizer = encoder.tokenizer
    special = set(tokenizer.all_special_ids)
    results = []
    for i in range(B):
        ids = batch["input_ids"][i]
        start, stop = int(first[i]), int(last[i]) + 1
        dropped = None
        if int(ids[start]) in special:  # BOS (or another special token) first: the attention sink
            dropped = tokenizer.convert_ids_to_tokens(int(ids[start]))
            start += 1
        weights = rows[i, start:stop].numpy().astype(np.float64)  # (T_kept,)
        is_prompt = batch["prompt_mask"][i, start:stop].numpy().astype(bool)
        total = weights.sum()
        share = float(weights[~is_prompt].sum() / total) if total > 0 else 0.0
        results.append(
            AttentionResult(
                tokens=_readable(tokenizer, ids[start:stop].tolist(), special),
                weights=weights,
                is_prompt=is_prompt,
                content_share=share,
                layer=layer,
                dropped=dropped,
            )
        )
    return results


def final_token_attention(
    encoder: Encoder, text: str, *, prompt: str | None = None, layer: int = -1
) -> AttentionResult:
    """Final-token attention of one text (see :func:`final_token_attentions` for the details)."""
    if not isinstance(text, str):
        raise TypeError(
            f"text must be a str, got {type(text).__name__}; use final_token_attentions for a list"
        )
    return final_token_attentions(encoder, [text], prompt=prompt, layer=layer)[0]


def attention_figure(results: Mapping[str, AttentionResult], *, title: str | None = None) -> Figure:
    """A heatmap, one row per label, one column per token; values annotated, prompt tokens in grey.

    Text tokens have bold black tick labels and a red outline; the colour scale is a square root
    (a prompt token often takes 10x a content word), with a colorbar. The title gives each row's
    content share. Uses matplotlib's object API (Agg canvas): no pyplot state, no display needed.
    """
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if not results:
        raise ValueError("results is empty; give at least one labelled AttentionResult")
    labels = list(results)
    ref = results[labels[0]]
    for label in labels[1:]:
        if results[label].tokens != ref.tokens:
            raise ValueError(
                f"row {label!r} has other tokens than row {labels[0]!r}; compare one text and tokenizer"
            )
    data = np.stack([results[label].weights for label in labels])  # (R, T)
    R, T = data.shape
    fig = Figure(figsize=(max(6.0, 0.62 * T + 3.0), 2.2 + 0.5 * R), layout="constrained")
    ax = fig.add_subplot()
    vmax = float(data.max()) if data.size and data.max() > 0 else 1.0
    im = ax.imshow(data, aspect="auto", cmap="viridis", norm=PowerNorm(0.5, vmin=0.0, vmax=vmax))
    for r in range(R):
        for t in range(T):
            v = data[r, t]
            bright = im.norm(v) > 0.6
            ax.text(t, r, f"{v:.3f}".lstrip("0"), ha="center", va="center", fontsize=7,
                    color="black" if bright else "white")  # fmt: skip
    ax.set_xticks(range(T), ref.tokens, rotation=60, ha="right", rotation_mode="anchor", fontsize=9)
    for tick, prompt_token in zip(ax.get_xticklabels(), ref.is_prompt, strict=True):
        tick.set_color("0.5" if prompt_token else "black")
        tick.set_fontweight("normal" if prompt_token else "bold")
        tick.set_fontstyle("italic" if prompt_token else "normal")
    t = 0
    while t < T:  # outline each run of text tokens
        if ref.is_prompt[t]:
            t += 1
            continue
        end = t
        while end + 1 < T and not ref.is_prompt[end + 1]:
            end += 1
        ax.add_patch(
            Rectangle((t - 0.5, -0.5), end - t + 1, R, fill=False, edgecolor="red", linewidth=1.5)
        )
        t = end + 1
    ax.set_yticks(range(R), labels, fontsize=9)
    fig.colorbar(im, ax=ax, label="attention (heads averaged)", pad=0.01, fraction=0.03)
    where = "last layer" if ref.layer == -1 else f"layer {ref.layer}"
    sink = f"{ref.dropped} dropped" if ref.dropped else "no BOS to drop"
    head = (
        title
        or f"Final-token attention, {where}, heads averaged, {sink} (text tokens bold, outlined red)"
    )
    shares = " | ".join(f"{label}: {results[label].content_share:.3f}" for label in labels)
    ax.set_title(f"{head}\ncontent share: {shares}", fontsize=10)
    return fig


def plot_attention(results: Mapping[str, AttentionResult], path: str | Path) -> Path:
    """Write :func:`attention_figure` of ``results`` (label -> row) as a PNG at ``path``; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = attention_figure(results)
    FigureCanvasAgg(fig)  # render off-screen, whatever pyplot backend is active
    fig.savefig(path, dpi=150)
    return path


class AttentionMapCallback(pl.Callback):
    """Log the final-token attention of ``pl_module.encoder`` during training (rank 0 only).

    At train start it computes the baseline row; after every validation epoch (not the sanity
    check) it computes the current row, logs ``attention/content_share`` to every logger and a
    two-row heatmap (baseline vs now) under ``attention/final_token`` to each logger whose
    experiment has ``add_figure`` (TensorBoard); others are skipped silently. Train/eval modes
    are restored after each computation.

    Args:
        text: the sentence to inspect (the paper's: ``a man is driving a car``).
        prompt: a template name or string; None = the encoder's own template.
        layer: attention layer, Python-indexed (-1 = last).

    Attributes:
        baseline: the row computed at train start (None before).
        history: one dict per computation: ``step``, ``stage`` ("baseline" or "validation"),
            ``content_share``.
    """

    def __init__(
        self, text: str = "a man is driving a car", prompt: str | None = None, layer: int = -1
    ) -> None:
        super().__init__()
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text={text!r} is invalid; give a non-empty sentence")
        if prompt is not None:
            get_prompt(prompt)  # raises ValueError naming the allowed templates
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"layer={layer!r} is invalid; give an int (-1 = last layer)")
        self.text = text
        self.prompt = prompt
        self.layer = layer
        self.baseline: AttentionResult | None = None
        self.baseline_step = 0
        self.history: list[dict[str, Any]] = []

    def _compute(self, pl_module: pl.LightningModule) -> AttentionResult:
        encoder = getattr(pl_module, "encoder", None)
        if encoder is None:
            raise UserError(
                f"AttentionMapCallback needs pl_module.encoder; {type(pl_module).__name__} has none"
            )
        return final_token_attention(encoder, self.text, prompt=self.prompt, layer=self.layer)

    def _log(self, trainer: pl.Trainer, result: AttentionResult, stage: str) -> None:
        step = trainer.global_step
        self.history.append({"step": step, "stage": stage, "content_share": result.content_share})
        log.info("final-token attention (%s, step %d): content share %.4f, top %s", stage, step,
                 result.content_share, ", ".join(f"{t} {w:.3f}" for t, w in result.top(5)))  # fmt: skip
        for lightning_logger in trainer.loggers:
            lightning_logger.log_metrics({CONTENT_SHARE_KEY: result.content_share}, step=step)
        writers = [getattr(lg.experiment, "add_figure", None) for lg in trainer.loggers]
        writers = [w for w in writers if callable(w)]
        if not writers:
            return
        rows = {f"train start (step {self.baseline_step})": self.baseline or result}
        if stage != "baseline":
            rows[f"step {step}"] = result
        fig = attention_figure(rows)
        for add_figure in writers:
            add_figure(FIGURE_TAG, fig, global_step=step, close=False)

    def state_dict(self) -> dict[str, Any]:
        """History and baseline as plain values (checkpoints load with ``weights_only=True``)."""
        base = self.baseline
        return {
            "history": self.history,
            "baseline_step": self.baseline_step,
            "baseline": None
            if base is None
            else {"tokens": list(base.tokens), "weights": base.weights.tolist(),
                  "is_prompt": base.is_prompt.tolist(), "content_share": base.content_share,
                  "layer": base.layer, "dropped": base.dropped},  # fmt: skip
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.baseline_step = int(state_dict.get("baseline_step", 0))
        base = state_dict.get("baseline")
        if base is not None:
            self.baseline = AttentionResult(
                tokens=list(base["tokens"]), weights=np.asarray(base["weights"]),
                is_prompt=np.asarray(base["is_prompt"], dtype=bool),
                content_share=float(base["content_share"]), layer=int(base["layer"]),
                dropped=base["dropped"],
            )  # fmt: skip

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The baseline, before any update; logged straight to the loggers (self.log is not allowed here).

        A resumed run keeps the baseline its checkpoint restored (that of the untrained model).
        """
        if not trainer.is_global_zero or self.baseline is not None:
            return
        self.baseline = self._compute(pl_module)
        self.baseline_step = trainer.global_step
        self._log(trainer, self.baseline, "baseline")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._log(trainer, self._compute(pl_module), "validation")


def attention_report(
    model: str,
    runs: Sequence[str] = (),
    *,
    text: str = "a man is driving a car",
    prompt: str = "clustering",
    layer: int = -1,
    out: str | Path = "checkpoints/attention.png",
    trust_remote_code: bool = False,
) -> Path:
    """Plot the final token's attention for a base model and trained runs on one text; log each row.

    Every model goes through the one ``--model`` loader (:mod:`llm_embed.inference.load`), so a
    missing folder, an unfinished run or a corrupt description fails as in every command.

    Raises:
        UserError: a bad ``model`` or run, or a run trained on another backbone than ``model``.
    """
    from llm_embed._fs import check_output
    from llm_embed.inference.load import load_encoder, resolve_model
    from llm_embed.prompts import get_prompt

    out = check_output(out, folder=False)
    try:
        get_prompt(prompt)
    except ValueError as err:
        raise UserError(str(err)) from None
    base = resolve_model(model)
    tuned = {}  # checked before anything loads
    for run in runs:
        source = resolve_model(run)
        if source.kind != "run":
            raise UserError(
                f"{run} is not a trained run (no model/encoder.json): pass checkpoints/<run>"
            )
        if source.model != model:
            raise UserError(
                f"run {run} was trained on {source.model!r}, not {model!r}: pass --model {source.model}"
            )
        tuned[f"fine-tuned ({Path(run).name})"] = source
    rows = {}
    for label, source in {"base": base, **tuned}.items():
        encoder = load_encoder(source, command="attention", trust_remote_code=trust_remote_code)
        rows[label] = final_token_attention(encoder, text, prompt=prompt, layer=layer)
    for label, result in rows.items():
        top = ", ".join(f"{tok} {w:.3f}" for tok, w in result.top(5))
        log.info("%s: content share %.3f | top: %s", label, result.content_share, top)
    path = plot_attention(rows, out)
    log.info("wrote %s", path)
    return path
