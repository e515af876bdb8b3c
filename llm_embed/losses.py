"""InfoNCE with in-batch negatives, as a pure function plus a thin module.

``info_nce`` is pure math on embeddings, so the plain loss, the cross-device gathered loss and
a cached (GradCache) loss all share it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def info_nce(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    *,
    temperature: float = 0.2,
    offset: int = 0,
    symmetric: bool = False,
) -> torch.Tensor:
    """One-direction InfoNCE over cosine similarities (van den Oord et al., arXiv 1807.03748).

    ``L = -1/B Σ_i log( exp(cos(a_i, c_{i+offset}) / τ) / Σ_j exp(cos(a_i, c_j) / τ) )``

    Every other candidate is a negative for anchor ``i``. sentence-transformers' MNRL is the
    same loss with ``scale = 1/τ`` (its default scale 20 is τ = 0.05; the paper uses τ = 0.2).

    Args:
        anchors: (B, D) anchor embeddings (normalized here; any scale works).
        candidates: (N, D) positives, N >= B + offset; with cross-device gathering N = world * B.
        temperature: τ > 0.
        offset: index of anchor 0's positive among the candidates (``rank * B`` under DDP).
        symmetric: also score candidates -> anchors (needs N == B).

    Returns:
        Scalar mean loss.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    a = F.normalize(anchors.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    logits = a @ c.T / temperature  # (B, N)
    labels = torch.arange(a.size(0), device=a.device) + offset  # (B,)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        if c.size(0) != a.size(0):
            raise ValueError("symmetric InfoNCE needs as many candidates as anchors")
        loss = (loss + F.cross_entropy(logits.T, labels - offset)) / 2
    return loss


class InfoNCELoss(nn.Module):
    """Module wrapper of :func:`info_nce` holding its settings (for configs and hparams)."""

    def __init__(self, temperature: float = 0.2, symmetric: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.temperature = temperature
        self.symmetric = symmetric

    def forward(self, anchors: torch.Tensor, candidates: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return info_nce(
            anchors, candidates, temperature=self.temperature, offset=offset, symmetric=self.symmetric
        )
