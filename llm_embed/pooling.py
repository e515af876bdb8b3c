"""Aggregation of token states into one vector: one small class per strategy, selected by name.

Every strategy has the same call: ``forward(hidden (B, T, H), mask (B, T), *, prompt_mask=None)
-> (B, H or 2H)``. ``mask`` is 1 on real tokens and 0 on padding; ``prompt_mask`` is 1 on tokens
of the prompt template (and special tokens), 0 on the text itself. Positions come from the masks,
never from the padding side, so left and right padding give the same result. Inputs are never
modified in place.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

EPS = 1e-9


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row, for either padding side. (B, T) -> (B,)"""
    T = mask.size(1)
    positions = torch.arange(T, device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, -1).max(dim=1).values


class Pooling(nn.Module):
    """Base class: subclasses set ``name`` and implement ``forward``."""

    name: ClassVar[str]
    appends_eos: ClassVar[bool] = False  # the encoder appends the EOS token before the forward pass
    needs_prompt_mask: ClassVar[bool] = False

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor, *, prompt_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        """JSON-able config; ``from_config(to_config())`` rebuilds the same pooling."""
        return {"type": self.name}

    def output_dim(self, hidden_size: int) -> int:
        return hidden_size


def _masked_mean(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    w = weights.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * w).sum(1) / w.sum(1).clamp_min(EPS)  # (B, H)


class MeanPooling(Pooling):
    """Mean over real tokens, prompt tokens included: ``e = Σ_t m_t h_t / max(Σ_t m_t, ε)``."""

    name = "mean"

    def forward(self, hidden, mask, *, prompt_mask=None):
        return _masked_mean(hidden, mask)


class WeightedMeanPooling(Pooling):
    """Position-weighted mean (SGPT, arXiv 2202.08904): weights 1..L over the real tokens.

    Later tokens have seen more of the text through causal attention, so they weigh more:
    ``e = Σ_t w_t h_t / Σ_t w_t`` with ``w_t = m_t · (number of real tokens up to t)``.
    """

    name = "weighted_mean"

    def forward(self, hidden, mask, *, prompt_mask=None):
        m = mask.to(hidden.dtype)
        return _masked_mean(hidden, m * m.cumsum(dim=1))


class LastTokenPooling(Pooling):
    """State of the last real token (for either padding side): in a causal decoder it alone has seen every token."""

    name = "last"

    def forward(self, hidden, mask, *, prompt_mask=None):
        idx = last_index(mask)  # (B,)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), idx]  # (B, H)


class EosPooling(LastTokenPooling):
    """Append the EOS token to every input and take its state (E5-mistral / Qwen3-Embedding style)."""

    name = "eos"
    appends_eos = True


class PromptMaskedMeanPooling(Pooling):
    """Mean over the text's own tokens, prompt-template tokens left out (GritLM, INSTRUCTOR, LLM2Vec).

    ``e = Σ_t m_t (1 - p_t) h_t / Σ_t m_t (1 - p_t)``; a row whose text has no tokens falls back to
    the mean over all real tokens.
    """

    name = "prompt_masked_mean"
    needs_prompt_mask = True

    def forward(self, hidden, mask, *, prompt_mask=None):
        if prompt_mask is None:
            raise ValueError(
                "prompt_masked_mean pooling needs prompt_mask; encode through llm_embed.Encoder"
            )
        content = mask.bool() & ~prompt_mask.bool()  # (B, T)
        empty = ~content.any(dim=1, keepdim=True)  # (B, 1)
        return _masked_mean(hidden, torch.where(empty, mask.bool(), content))


class MaxPooling(Pooling):
    """Element-wise max over real tokens."""

    name = "max"

    def forward(self, hidden, mask, *, prompt_mask=None):
        neg = torch.finfo(hidden.dtype).min
        return hidden.masked_fill(~mask.bool().unsqueeze(-1), neg).max(dim=1).values


class LastMeanPooling(Pooling):
    """Concatenation ``[last ; mean]`` (the reference code's concat option): (B, 2H)."""

    name = "last_mean"

    def __init__(self) -> None:
        super().__init__()
        self.last, self.mean = LastTokenPooling(), MeanPooling()

    def forward(self, hidden, mask, *, prompt_mask=None):
        return torch.cat([self.last(hidden, mask), self.mean(hidden, mask)], dim=-1)

    def output_dim(self, hidden_size: int) -> int:
        return 2 * hidden_size


class WeightedMeanLastPooling(Pooling):
    """The mean of the L2-normalised weighted mean and last-token vectors: (B, H).

    Two views of one forward pass, so it costs no more than either: their cosine similarities
    add up (with cross terms), as in an ensemble of the two poolings.
    """

    name = "weighted_mean_last"

    def __init__(self) -> None:
        super().__init__()
        self.weighted, self.last = WeightedMeanPooling(), LastTokenPooling()

    def forward(self, hidden, mask, *, prompt_mask=None):
        a = torch.nn.functional.normalize(self.weighted(hidden, mask), dim=-1)
        b = torch.nn.functional.normalize(self.last(hidden, mask), dim=-1)
        return (a + b) / 2


POOLING_MODES: dict[str, type[Pooling]] = {
    cls.name: cls
    for cls in (
        MeanPooling,
        WeightedMeanPooling,
        LastTokenPooling,
        EosPooling,
        PromptMaskedMeanPooling,
        MaxPooling,
        LastMeanPooling,
        WeightedMeanLastPooling,
    )
}


def from_config(config: str | dict[str, Any] | Pooling) -> Pooling:
    """Build a pooling from its name, its ``to_config()`` dict, or pass an instance through."""
    if isinstance(config, Pooling):
        return config
    if isinstance(config, str):
        config = {"type": config}
    kwargs = dict(config)
    name = kwargs.pop("type", None)
    if name not in POOLING_MODES:
        raise ValueError(f"pooling={name!r} is unknown; use one of {', '.join(POOLING_MODES)}")
    return POOLING_MODES[name](**kwargs)
