"""Inference on several processes: every GPU of every node embeds its share of each call.

``encode`` and ``evaluate`` take ``--devices`` / ``--num-nodes`` / ``--accelerator`` and start a
Lightning Fabric process group, so they launch the way training does: Fabric starts the local
processes itself, or joins the ones ``torchrun`` or SLURM started. Every process runs the same
command; at each :meth:`Encoder.encode` call, process ``r`` of ``W`` embeds the length-sorted
batches ``r, r + W, ...`` (the batches one process would run, so each row is bit for bit the
one-process row), and an all-reduce sums the zero-padded results into the whole, in input order,
on every process. Only the first process writes files and logs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llm_embed.errors import UserError

if TYPE_CHECKING:
    import torch


class InferenceGroup:
    """The processes of one distributed inference run (one process: a no-op group)."""

    def __init__(self, accelerator: str = "auto", devices: int = 1, num_nodes: int = 1) -> None:
        for name, value in (("devices", devices), ("num_nodes", num_nodes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name}={value!r} is invalid; use an int >= 1")
        self.fabric = None
        if devices * num_nodes > 1:
            from lightning.fabric import Fabric

            try:
                self.fabric = Fabric(
                    accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp"
                )
            except (
                ValueError,
                RuntimeError,
                TypeError,
            ) as err:  # too many devices, bad accelerator
                raise UserError(f"cannot start {devices} x {num_nodes} processes: {err}") from None
            self.fabric.launch()
            if not self.is_main:  # one process reports
                logging.getLogger("llm_embed").setLevel(logging.WARNING)

    @property
    def rank(self) -> int:
        return 0 if self.fabric is None else self.fabric.global_rank

    @property
    def world(self) -> int:
        return 1 if self.fabric is None else self.fabric.world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """This process's device (None for one process: the caller's choice stands)."""
        return None if self.fabric is None else self.fabric.device

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over the processes (on CPU, as given)."""
        if self.fabric is None:
            return tensor
        return self.fabric.all_reduce(tensor.to(self.fabric.device), reduce_op="sum").cpu()

    def broadcast(self, obj: Any) -> Any:
        """The first process's ``obj`` on every process (a decision all of them must share)."""
        return obj if self.fabric is None else self.fabric.broadcast(obj, src=0)

    def barrier(self) -> None:
        if self.fabric is not None:
            self.fabric.barrier()

    def shard(self, encoder: Any) -> Any:
        """``encoder`` whose ``encode`` is split over the processes; itself for one process."""
        return encoder if self.fabric is None else ShardedEncoder(encoder, self)


class ShardedEncoder:
    """An encoder seen through an :class:`InferenceGroup`: ``encode`` shards, all else delegates."""

    def __init__(self, encoder: Any, group: InferenceGroup) -> None:
        self.__dict__["encoder"] = encoder
        self.__dict__["group"] = group

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["encoder"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__dict__["encoder"], name, value)

    def encode(self, texts: Sequence[str], **kwargs: Any) -> torch.Tensor:
        encoder, group = self.__dict__["encoder"], self.__dict__["group"]
        before = encoder.num_truncated
        on_batch, own = kwargs.pop("on_batch", None), []

        def count(n: int) -> None:
            own.append(n)
            if on_batch is not None:
                on_batch(n)

        part = encoder.encode(texts, shard=(group.rank, group.world), on_batch=count, **kwargs)
        if on_batch is not None:  # the other processes' rows, so a progress bar reaches the end
            on_batch(len(texts) - sum(own))
        import torch

        counts = group.sum(torch.tensor([encoder.num_truncated - before]))
        encoder.num_truncated = before + int(counts.item())  # every process counts every cut
        return group.sum(part)
