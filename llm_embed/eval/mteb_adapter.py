"""Wrap an llm-embed encoder as an ``mteb.models.AbsEncoder``, so ``mteb.evaluate`` accepts it.

The encoder is duck-typed (anything with these two members, not only ``llm_embed.encoder.Encoder``):

- ``encoder.name: str``
- ``encoder.encode(texts: list[str], *, batch_size: int = 32, prompt: str | None = None)``
  returns an (N, H) float32 CPU tensor in input order, L2-normalised if so configured.
  ``prompt`` is a template name or a template string containing ``{text}``; None = the
  encoder's own default.

mteb refuses a plain object ("No model implementation is available"): the wrapper must subclass
``AbsEncoder`` and carry ``mteb_model_meta``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder  # not re-exported by mteb.models in 2.26
from mteb.models.model_meta import ModelMeta

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.types import PromptType
    from torch.utils.data import DataLoader


def _n_parameters(encoder: Any) -> int | None:  # duck-typed encoder
    """Parameter count when the encoder is an ``nn.Module``; None otherwise."""
    parameters = getattr(encoder, "parameters", None)
    if not callable(parameters):
        return None
    try:
        return int(sum(p.numel() for p in parameters()))
    except (TypeError, AttributeError):
        return None


class MTEBEncoder(AbsEncoder):
    """An llm-embed encoder seen by mteb as a dense, cosine-similarity text encoder.

    Args:
        encoder: Object with ``name`` and ``encode(texts, *, batch_size, prompt)`` (see module doc).
        task_prompts: Task name -> prompt (template name or template with ``{text}``) that
            overrides the encoder's prompt for that task. Tasks not listed use the encoder's own
            ``task_prompts`` entry if it has one, else its default prompt.

        calibrate_on_texts: Divide each dimension of a task's vectors by its spread over that
            task's own texts (the texts being clustered; no labels), instead of the encoder's
            own ``dim_scale`` (fitted on training anchors) or none. Needs normalised vectors.

    Every vector is kept, keyed by (prompt, text), for the wrapper's lifetime: scoring the same
    documents under several evaluation seeds embeds them once. ``encoded_texts`` and
    ``encode_seconds`` count the texts that reached the encoder and the time they took.

    Example:
        >>> model = MTEBEncoder(encoder, task_prompts={"BBCNewsHeadlines": "clustering"})
        >>> mteb.evaluate(model, tasks, cache=None)  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: Any,  # duck-typed encoder, see module doc
        *,
        task_prompts: Mapping[str, str] | None = None,
        calibrate_on_texts: bool = False,
    ) -> None:
        if not callable(getattr(encoder, "encode", None)):
            raise ValueError(
                f"encoder={type(encoder).__name__} has no encode(); pass an llm-embed encoder"
            )
        name = getattr(encoder, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"encoder.name={name!r} is invalid; the encoder needs a non-empty str name"
            )
        prompts = dict(task_prompts or {})
        for task, prompt in prompts.items():
            if not isinstance(task, str) or not isinstance(prompt, str) or not prompt:
                raise ValueError(
                    f"task_prompts[{task!r}]={prompt!r} is invalid; map task names to non-empty prompt strings"
                )
        if calibrate_on_texts and (
            getattr(encoder, "normalize", True) is False
            or getattr(encoder, "truncate_dim", None) is not None
        ):
            raise ValueError(
                "calibrate_on_texts needs full-length normalised vectors: drop truncate_dim "
                "and keep normalize"
            )
        self.calibrate_on_texts = calibrate_on_texts
        self.model = encoder
        self._vectors: dict[tuple[str | None, str], np.ndarray] = {}
        self.encoded_texts = 0
        self.encode_seconds = 0.0
        # the encoder's own per-task prompts (saved with a trained model), under the overrides
        self.task_prompts = {**(getattr(encoder, "task_prompts", None) or {}), **prompts}
        self.mteb_model_meta = ModelMeta(
            loader=None,  # the model is already built; mteb never loads it
            name=f"llm-embed/{name}",
            revision="no_revision_available",  # mteb requires a string
            release_date=None,
            languages=None,
            n_parameters=_n_parameters(encoder),
            memory_usage_mb=None,
            max_tokens=None,
            embed_dim=None,
            license=None,
            open_weights=None,
            public_training_code=None,
            public_training_data=None,
            framework=["PyTorch"],
            similarity_fn_name="cosine",
            use_instructions=True,  # prompt templates wrap every input
            training_datasets=None,
            experiment_kwargs={"task_prompts": self.task_prompts} if self.task_prompts else None,
        )

    def prompt_for(self, task_name: str) -> str | None:
        """The prompt for ``task_name`` (an override, else the encoder's own per-task prompt);
        None = the encoder's default prompt."""
        return self.task_prompts.get(task_name)

    def encode(
        self,
        inputs: DataLoader[Any],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every text of ``inputs`` (batches of dicts with ``"text"``), in order: (N, H) float32.

        The texts not embedded yet (under this task's prompt) go to the encoder in one call so
        that it can sort the whole set by length: batches of similar length waste far less
        compute on padding than mteb's order.
        """
        batch_size = int(kwargs.get("batch_size") or 32)
        prompt = self.prompt_for(task_metadata.name)
        texts = [text for batch in inputs for text in batch["text"]]
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        new = list(dict.fromkeys(t for t in texts if (prompt, t) not in self._vectors))
        if new:
            start = time.monotonic()
            emb = self.model.encode(new, batch_size=batch_size, prompt=prompt)
            if hasattr(emb, "detach"):  # a torch.Tensor, per the contract
                emb = emb.detach().float().cpu().numpy()
            emb = np.asarray(emb, dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(new):
                raise RuntimeError(
                    f"{type(self.model).__name__}.encode returned shape {emb.shape} for "
                    f"{len(new)} texts; expected ({len(new)}, H)"
                )
            self.encode_seconds += time.monotonic() - start
            self.encoded_texts += len(new)
            self._vectors.update(((prompt, t), v) for t, v in zip(new, emb, strict=True))
        vectors = np.stack([self._vectors[(prompt, t)] for t in texts])
        return (
            calibrated(vectors, getattr(self.model, "dim_scale", None))
            if self.calibrate_on_texts
            else vectors
        )


def calibrated(vectors: np.ndarray, dim_scale: Any = None) -> np.ndarray:
    """``vectors`` rescaled by each dimension's spread over these same vectors, renormalised.

    The encoder's eval vectors are ``normalize(n / s0)`` with ``n`` the normalised pooled vector
    and ``s0`` its ``dim_scale`` (or none), so ``n = normalize(v * s0)`` is recovered exactly and
    ``s0`` replaced by ``std(n)`` over the given texts: what ``Encoder.calibrate`` fits, on the
    texts being clustered instead of training anchors.
    """
    v = vectors.astype(np.float64)
    if dim_scale is not None:
        v = v * np.asarray(dim_scale, dtype=np.float64)
    n = v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12)
    out = n / n.std(0).clip(1e-6)
    return (out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)
