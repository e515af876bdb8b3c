"""Cross-device negatives: gather embeddings from every rank with their gradient.

Under data parallelism each rank embeds its own micro-batch. Gathering the candidates from all
ranks makes the global batch the negative pool (``world * B - 1`` negatives per anchor instead of
``B - 1``) at the cost of one all-gather of a (B, D) tensor per step.

Gradient semantics (checked against one process on the concatenated batch in
``tests/test_distributed.py``): rank ``r`` computes ``L_r``, the mean loss of its own ``B`` anchors
against all ``world * B`` candidates. The backward of ``torch.distributed.nn.functional.all_gather``
*sums* the gradient that every rank's loss puts on rank ``r``'s embeddings, and DDP/FSDP then
*average* the parameter gradients over ranks, so the update is that of
``(1/world) Σ_r L_r`` = the mean over the global batch: no extra loss scaling is needed.

References: sentence-transformers ``util/distributed.py`` (``all_gather_with_grad``); SimCLR
(Chen et al. 2020, arXiv 2002.05709) gathers negatives across TPU cores the same way.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group is up (torchrun, Lightning DDP/FSDP); False on one device."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``x`` (N_r, D) from every rank, keeping the autograd graph.

    Ranks may hold different N_r (a last, smaller validation batch): the sizes are exchanged
    first, rows are padded to the largest, and the padding is cut off after the gather.

    Returns:
        ``(gathered, offset)``: (Σ_r N_r, D) rows in rank order, and the row at which this rank's
        own ``x`` starts in it. Without a process group: ``(x, 0)``.
    """
    rank, world = rank_and_world()
    if world == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    n = torch.tensor([x.size(0)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = (
        x
        if x.size(0) == longest
        else torch.cat([x, x.new_zeros(longest - x.size(0), *x.shape[1:])])
    )
    # all_gather's named successor lives in a private module (_functional_collectives)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "torch.distributed.nn.functional.all_gather", FutureWarning
        )
        parts = all_gather(padded.contiguous())  # world x (longest, D); backward sums over ranks
    gathered = torch.cat([part[:c] for part, c in zip(parts, counts, strict=True)])
    return gathered, sum(counts[:rank])
