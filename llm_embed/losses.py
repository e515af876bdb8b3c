"""InfoNCE with in-batch negatives, as a pure function plus a thin module.

``info_nce`` is pure math on embeddings, so the plain loss, the cross-device gathered loss and
the cached (GradCache, :mod:`llm_embed.train.gradcache`) loss all share it. A guide model's
vectors, when given, drop the in-batch negatives it judges as close as the positive (GISTEmbed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llm_embed.train.distributed import gather_with_grad


def info_nce(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    *,
    temperature: float = 0.2,
    offset: int = 0,
    symmetric: bool = False,
    gather: bool = False,
    guide: tuple[torch.Tensor, torch.Tensor] | None = None,
    guide_margin: float = 0.0,
) -> torch.Tensor:
    """One-direction InfoNCE over cosine similarities (van den Oord et al., arXiv 1807.03748).

    ``L = -1/B Σ_i log( exp(cos(a_i, c_{i+offset}) / τ) / Σ_j exp(cos(a_i, c_j) / τ) )``

    Every other candidate is a negative for anchor ``i``. sentence-transformers' MNRL is the
    same loss with ``scale = 1/τ`` (its default scale 20 is τ = 0.05; the paper uses τ = 0.2).

    Args:
        anchors: (B, D) anchor embeddings (normalized here; any scale works).
        candidates: (N, D) positives (and any extra negatives), N >= B + offset.
        temperature: τ > 0.
        offset: index of anchor 0's positive among this rank's candidates.
        symmetric: also score candidates -> anchors (needs N == B).
        gather: under a process group, score the local anchors against the candidates of *all*
            ranks (gathered with gradient, :func:`~llm_embed.train.distributed.gather_with_grad`), so
            the global batch is the negative pool; the positive of anchor 0 then sits at this
            rank's row offset in the gathered candidates. No-op on one device. Each rank returns
            the mean over its own anchors; DDP's gradient averaging makes the update that of the
            mean over the global batch (see :mod:`llm_embed.train.distributed`).
        guide: a guide model's vectors of the same anchors and candidates, ``(B, G)`` and
            ``(N, G)``: a negative the guide finds more similar to the anchor than the anchor's
            positive, less ``guide_margin``, is left out of that anchor's softmax (GISTEmbed,
            Solatorio 2024, arXiv 2402.16829; sentence-transformers' GISTEmbedLoss with an
            absolute margin). The guide's judgement then enters training.
        guide_margin: see ``guide``; 0 drops negatives the guide ranks above the positive.

    Returns:
        Scalar mean loss over this rank's anchors.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if symmetric and candidates.size(0) != anchors.size(0):
        raise ValueError("symmetric InfoNCE needs as many candidates as anchors")
    a = F.normalize(anchors.float(), dim=-1)  # (B, D)
    c = F.normalize(candidates.float(), dim=-1)  # (N, D)
    c_all, c_start = gather_with_grad(c) if gather else (c, 0)  # (world * N, D)
    logits = a @ c_all.T / temperature  # (B, world * N)
    labels = torch.arange(a.size(0), device=a.device) + c_start + offset  # (B,)
    if guide is not None:
        g_a = F.normalize(guide[0].float(), dim=-1)
        g_c = F.normalize(guide[1].float(), dim=-1)
        g_c_all = gather_with_grad(g_c)[0] if gather else g_c
        logits = logits.masked_fill(
            false_negatives(g_a @ g_c_all.T, labels, guide_margin), float("-inf")
        )
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        a_all, a_start = gather_with_grad(a) if gather else (a, 0)  # (world * B, D)
        back = c @ a_all.T / temperature  # (B, world * B)
        back_labels = torch.arange(c.size(0), device=c.device) + a_start
        if guide is not None:
            g_a_all = gather_with_grad(g_a)[0] if gather else g_a
            back = back.masked_fill(
                false_negatives(g_c @ g_a_all.T, back_labels, guide_margin), float("-inf")
            )
        loss = (loss + F.cross_entropy(back, back_labels)) / 2
    return loss


def false_negatives(guide_sims: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """(B, N) bool: the negatives whose guide similarity reaches the positive's, less ``margin``."""
    positive = guide_sims.gather(1, labels[:, None])  # (B, 1)
    drop = guide_sims > positive - margin
    return drop.scatter(1, labels[:, None], False)  # the positive itself always stays


class InfoNCELoss(nn.Module):
    """Module wrapper of :func:`info_nce` holding its settings (for configs and hparams).

    With ``matryoshka_dims`` the loss is the mean of :func:`info_nce` on each leading slice of
    the vectors (Kusupati et al., arXiv 2205.13147; sentence-transformers' MatryoshkaLoss with
    equal weights), each slice renormalised inside :func:`info_nce`: the first dimensions then
    carry an embedding of their own, so vectors can be cut short (``Encoder(truncate_dim=...)``).
    The slices are taken of the vectors the loss receives, so it composes with GradCache and
    cross-device negatives unchanged.
    """

    def __init__(
        self,
        temperature: float = 0.2,
        symmetric: bool = False,
        gather: bool = False,
        matryoshka_dims: list[int] | None = None,
        guide_margin: float = 0.0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if matryoshka_dims is not None:
            dims = list(matryoshka_dims) if isinstance(matryoshka_dims, list | tuple) else []
            if not dims or any(
                isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims
            ):
                raise ValueError(
                    f"matryoshka_dims={matryoshka_dims!r} is invalid; give a list of ints >= 1, e.g. [640, 256, 128, 64]"
                )
            matryoshka_dims = sorted(set(dims), reverse=True)
        self.temperature = temperature
        self.symmetric = symmetric
        self.gather = gather
        self.matryoshka_dims = matryoshka_dims
        self.guide_margin = guide_margin

    def forward(
        self,
        anchors: torch.Tensor,
        candidates: torch.Tensor,
        offset: int = 0,
        guide: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        dims = self.matryoshka_dims or [anchors.size(-1)]
        if dims[0] > anchors.size(-1):
            raise ValueError(
                f"matryoshka_dims has {dims[0]}, more than the {anchors.size(-1)} dimensions of the vectors"
            )
        losses = [
            info_nce(
                anchors[:, :d],
                candidates[:, :d],
                temperature=self.temperature,
                offset=offset,
                symmetric=self.symmetric,
                gather=self.gather,
                guide=guide,
                guide_margin=self.guide_margin,
            )
            for d in dims
        ]
        return torch.stack(losses).mean()
