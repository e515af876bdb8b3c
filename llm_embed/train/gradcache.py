"""GradCache: a contrastive batch of any size in constant activation memory.

In-batch negatives tie every pair of a batch to every other, so a large contrastive batch cannot
be split like an ordinary one (gradient accumulation adds no negatives). GradCache (Gao et al.
2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", arXiv 2101.06983)
splits the *encoder* work instead, in three steps:

1. embed every mini-batch without a graph, keeping only the (B, D) embeddings and the RNG state
   each mini-batch started from;
2. compute the loss on the full batch of embeddings (cross-device gathered too, if asked) and
   its gradient with respect to the embeddings, ``∂L/∂e`` (B, D): small;
3. re-embed each mini-batch with a graph, replaying its RNG state so dropout draws the same masks,
   and back-propagate ``∂L/∂e`` of that mini-batch into the parameters.

Only one mini-batch of activations is alive at a time, so memory stays flat as the batch grows;
the price is a second forward pass per step (measured in ``docs/performance.md``).

Unlike sentence-transformers' ``CachedMultipleNegativesRankingLoss``, which runs step 3 from a
hook during ``loss.backward()``, step 3 here collects the parameter gradients with
``torch.autograd.grad`` (no ``.grad`` is touched) and returns a scalar whose one backward writes
them. That single backward is what DDP's reducer expects (one all-reduce per step), and it keeps
Lightning's loss scaling for gradient accumulation and fp16, gradient clipping, the LR schedule
and logging unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

Embed = Callable[[Sequence[str]], torch.Tensor]  # texts -> (n, D), differentiable


class RngState:
    """The CPU (and current CUDA device's) RNG state at construction, replayable later.

    Replaying restores this state for the duration of a ``with`` block and puts the outer RNG
    back afterwards, so the replayed forward pass draws the same dropout masks as the first one
    and the rest of the step is unaffected. Ref: github.com/luyug/GradCache ``RandContext``.
    """

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda_index = None
        if device.type == "cuda":
            self.cuda_index = (
                device.index if device.index is not None else torch.cuda.current_device()
            )
            self.cuda = torch.cuda.get_rng_state(self.cuda_index)

    @contextmanager
    def replay(self) -> Iterator[None]:
        devices = [] if self.cuda_index is None else [self.cuda_index]
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda_index is not None:
                torch.cuda.set_rng_state(self.cuda, self.cuda_index)
            yield


class _WithGrads(torch.autograd.Function):
    """Identity on the loss value whose backward hands precomputed gradients to ``params``.

    ``grad_output`` (Lightning's 1/accumulate factor, the fp16 loss scale) multiplies them, as it
    would the gradients of an ordinary loss.
    """

    @staticmethod
    def forward(
        ctx, value: torch.Tensor, grads: list[torch.Tensor], *params: torch.Tensor
    ) -> torch.Tensor:
        ctx.grads = grads
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (None, None, *[g * grad_output.to(g.dtype) for g in ctx.grads])


def chunks(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    """Consecutive slices of at most ``size`` texts."""
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def embed_in_chunks(embed: Embed, texts: Sequence[str], size: int) -> torch.Tensor:
    """Embed ``texts`` ``size`` at a time and concatenate: (len(texts), D). Gradients flow if enabled."""
    return torch.cat([embed(part) for part in chunks(texts, size)])


def cached_loss(
    embed: Embed,
    columns: Sequence[Sequence[str]],
    loss_fn: Callable[..., torch.Tensor],
    params: Sequence[torch.Tensor],
    *,
    mini_batch_size: int,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """GradCache loss: the value of ``loss_fn(*embedded columns)``, with its parameter gradients attached.

    The returned scalar's backward puts ``∂L/∂θ`` into ``params`` (times the incoming gradient,
    as for any loss), the same gradient as embedding all columns at once with a graph and calling
    ``loss_fn`` on them; activation memory is that of one mini-batch.

    Args:
        embed: texts -> (n, D) embeddings, differentiable (the encoder in training mode).
        columns: equally long text lists, e.g. ``[anchors, positives]``; ``loss_fn`` gets their
            embeddings in this order.
        loss_fn: (B, D) tensors -> scalar; may gather across devices (every rank must call this).
        params: the trainable parameters (the LoRA weights).
        mini_batch_size: texts per forward pass.
        grad_scale: multiplies ``∂L/∂e`` during the re-embedding pass and divides the result, so
            fp16 activation gradients do not underflow (pass the AMP loss scale; 1 otherwise).

    Returns:
        Scalar loss; ``.backward()`` on it (Lightning does this) fills the parameter gradients.
    """
    if mini_batch_size < 1:
        raise ValueError(f"mini_batch_size={mini_batch_size} must be >= 1")
    params = list(params)
    device = params[0].device if params else torch.device("cpu")
    # 1. embed every mini-batch without a graph; remember the RNG each one started from
    reps: list[list[torch.Tensor]] = []
    states: list[list[RngState]] = []
    with torch.no_grad():
        for texts in columns:
            col_reps, col_states = [], []
            for part in chunks(texts, mini_batch_size):
                col_states.append(RngState(device))
                col_reps.append(embed(part))
            reps.append(col_reps)
            states.append(col_states)
    # 2. loss on the full batch and its gradient with respect to the embeddings: (B, D) per column
    leaves = [torch.cat(col).detach().requires_grad_() for col in reps]
    with torch.enable_grad():
        loss = loss_fn(*leaves)
        emb_grads = torch.autograd.grad(loss, leaves)
    # 3. re-embed each mini-batch with a graph (same dropout masks) and pull ∂L/∂e back to the weights
    totals: list[torch.Tensor | None] = [None] * len(params)
    for texts, col_states, grad in zip(columns, states, emb_grads, strict=True):
        start = 0
        for part, state in zip(chunks(texts, mini_batch_size), col_states, strict=True):
            with state.replay(), torch.enable_grad():
                emb = embed(part)  # (n, D)
            upstream = grad[start : start + len(part)] * grad_scale
            start += len(part)
            got = torch.autograd.grad(
                emb, params, grad_outputs=upstream.to(emb.dtype), allow_unused=True
            )
            for i, g in enumerate(got):
                if g is not None:
                    totals[i] = g if totals[i] is None else totals[i] + g
    grads = [
        torch.zeros_like(p) if g is None else g / grad_scale
        for p, g in zip(params, totals, strict=True)
    ]
    return _WithGrads.apply(loss.detach(), grads, *params)
