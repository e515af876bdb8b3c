"""Padding-free batches: a batch's texts packed into one row, attention kept inside each text.

A padded batch of short texts spends much of its compute on pad tokens: WordNet glosses padded
to the longest in their batch are about half padding. Packed, the backbone runs over the real
tokens only, in one row, with position ids restarting at each text; the attention is the only
layer that could mix texts, and the kernel here keeps it inside each one (flash attention's
variable-length kernel on a GPU, one causal SDPA call per text elsewhere). Every other layer of a
decoder works token by token, so a packed pass gives the padded pass's states.

:class:`~llm_embed.encoder.Encoder` (``packing=True``) packs after tokenizing and scatters the
states back to the padded layout before pooling, so the poolings need not know.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface

ATTENTION = "llm_embed_varlen"  # the name registered in transformers' AttentionInterface


@dataclass
class Packed:
    """One packed row and what it takes to scatter its states back to the padded (B, L) layout."""

    input_ids: torch.Tensor  # (1, N) the real tokens of every text, text after text
    position_ids: torch.Tensor  # (1, N) restarting at 0 for each text
    cu_seqlens: torch.Tensor  # (B + 1,) int32 offsets of the texts in the row
    max_len: int  # the longest text's length
    index: torch.Tensor  # (N,) each packed token's flat position in the padded (B * L) batch
    shape: tuple[int, int]  # (B, L) of the padded batch


def pack(batch: dict[str, torch.Tensor]) -> Packed:
    """Pack a padded batch from ``Encoder.tokenize`` (either padding side) into one row."""
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(1)
    index = mask.flatten().nonzero().squeeze(1)
    cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    return Packed(
        input_ids=batch["input_ids"].flatten()[index][None],
        position_ids=batch["position_ids"].flatten()[index][None],
        cu_seqlens=cu_seqlens,
        max_len=int(lengths.max()),
        index=index,
        shape=tuple(mask.shape),
    )


def unpack(states: torch.Tensor, packed: Packed) -> torch.Tensor:
    """(1, N, H) packed states -> (B, L, H), zeros at the pad positions (with gradients)."""
    B, L = packed.shape
    flat = states.new_zeros(B * L, states.shape[-1])
    return flat.index_copy(0, packed.index.to(states.device), states[0]).view(B, L, -1)


def supports_packing(backbone: nn.Module) -> bool:
    """Whether the model runs its attention through transformers' AttentionInterface (then the
    packed kernel replaces it); a model with its own attention code would mix the texts."""
    base = getattr(backbone, "get_base_model", lambda: backbone)()
    return bool(getattr(base, "_supports_attention_backend", False))


@contextmanager
def packed_attention(backbone: nn.Module) -> Iterator[None]:
    """Run ``backbone``'s attention through :func:`varlen_attention` inside the block."""
    config = backbone.config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before


def varlen_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed text: (1, heads, N, d) in, (1, N, heads, d) out.

    The signature is transformers' attention-function interface; the offsets arrive as the
    ``cu_seq_lens_q`` / ``max_length_q`` keyword arguments that :class:`Encoder` passes to the
    backbone.
    """
    if cu_seq_lens_q is None or max_length_q is None:
        raise RuntimeError(
            "packed attention needs cu_seq_lens_q and max_length_q (Encoder passes them)"
        )
    if attention_mask is not None or softcap is not None or query.shape[0] != 1:
        raise RuntimeError("packed attention takes one packed row, no mask and no softcap")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        return _flash_varlen(
            query, key, value, cu_seq_lens_q, max_length_q, dropout, scaling, sliding_window
        ), None
    return _sdpa_per_text(query, key, value, cu_seq_lens_q, dropout, scaling, sliding_window), None


def _flash_varlen(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_len: int,
    dropout: float,
    scaling: float | None,
    sliding_window: int | None,
) -> torch.Tensor:
    """Flash attention's variable-length kernel (differentiable through autograd)."""
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # (N, heads, d)
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    window = {}
    if sliding_window is not None and max_len > sliding_window:
        window = {"window_size_left": sliding_window - 1, "window_size_right": 0}
    out = torch.ops.aten._flash_attention_forward(
        q, k, v, cu, cu, max_len, max_len, dropout, True, False, scale=scaling, **window
    )[0]
    return out.unsqueeze(0)


def _sdpa_per_text(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    dropout: float,
    scaling: float | None,
    sliding_window: int | None,
) -> torch.Tensor:
    """One causal SDPA call per text: exact on any device and dtype, no (N, N) mask."""
    bounds = cu_seqlens.tolist()
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        q, k, v = (t[:, :, start:end] for t in (query, key, value))
        n = end - start
        mask, causal = None, True
        if sliding_window is not None and n > sliding_window:
            i = torch.arange(n, device=q.device)
            mask = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < sliding_window)
            causal = False
        outs.append(
            F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, scale=scaling
            )
        )
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous()


AttentionInterface.register(ATTENTION, varlen_attention)
