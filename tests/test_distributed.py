"""Cross-device negatives: 2-process CPU DDP (gloo) equals one process on the concatenated batch.

Each rank trains on its half of 8 pairs for one step through Lightning's DDP strategy and saves
its loss and its LoRA gradients as the optimizer sees them (after DDP's all-reduce). The launcher
is ``ddp_fork``: a plain ``ddp`` would re-launch pytest in the child, and ``ddp_spawn`` re-imports
torch, transformers and peft in every child (~25 s a run here instead of ~4 s); the DDP wrapper,
the gloo process group and the gradient reduction are the same. One process then computes the loss and gradients on
all 8 pairs. Tolerance: float32 on CPU, atol 1e-6 on the loss, atol 1e-5 / rtol 1e-4 on the
gradients (GradCache mini-batches pad differently, which changes summation order only).
LoRA dropout is 0 here: two processes cannot draw one process's dropout masks.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from peft import LoraConfig

from llm_embed.encoder import Encoder
from llm_embed.losses import info_nce
from llm_embed.module import EmbeddingModule
from llm_embed.train.distributed import gather_with_grad, rank_and_world

PAIRS = {
    "anchor": [
        "a man is driving a car",
        "the cat sat on the mat",
        "stocks fell sharply on monday",
        "the team won the final match",
        "a new phone was released today",
        "cause to be calm",
        "move quickly from one place to another",
        "the cat sat",
    ],
    "positive": [
        "a man drives a car",
        "a cat sat on a mat",
        "stocks fell on monday",
        "the team won the final",
        "a phone came out today",
        "make someone calm or quiet",
        "go fast from place to place",
        "a cat sat",
    ],
}
WORLD = 2


def fork_ddp() -> DDPStrategy:
    """``ddp_fork`` with a short collective timeout: a rank that stalls fails the test, not CI."""
    return DDPStrategy(start_method="fork", timeout=timedelta(seconds=120))


class RankHalf(L.LightningDataModule):
    """Rank r trains on pairs [r*B, (r+1)*B): together the ranks hold the whole batch, in order."""

    def train_dataloader(self):
        rank, world = self.trainer.global_rank, self.trainer.world_size
        per = len(PAIRS["anchor"]) // world
        half = {k: v[rank * per : (rank + 1) * per] for k, v in PAIRS.items()}
        return torch.utils.data.DataLoader([half], batch_size=None)


class Record(L.Callback):
    """Save this rank's loss, the synced logged loss and the LoRA gradients the optimizer sees."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {
            n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad
        }
        self.negatives = rank_and_world()[1] * len(PAIRS["anchor"]) // WORLD - 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        record = {
            "loss": outputs["loss"].detach(),
            "grads": self.grads,
            "logged": trainer.callback_metrics["train/loss"],
        }
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


def make_module(path: str, **kwargs) -> EmbeddingModule:
    torch.manual_seed(0)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj", "o_proj"],
        task_type="FEATURE_EXTRACTION",
    )
    module = EmbeddingModule(
        Encoder(path, pooling="last"), lora=lora, lr=1e-3, warmup_steps=0, **kwargs
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero B, so A gets a gradient too
        for n, p in module.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05, generator=g)
    return module


@pytest.mark.parametrize("grad_cache", [False, True], ids=["plain", "gradcache"])
def test_two_process_ddp_equals_one_process_on_the_concatenated_batch(
    tiny_model_dir, tmp_path, grad_cache
):
    module = make_module(
        tiny_model_dir, gather_across_devices=True, grad_cache=grad_cache, grad_cache_mini_batch=3
    )
    module.train()
    want_loss = module._loss(PAIRS)
    want_loss.backward()
    want = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    module.zero_grad(set_to_none=True)

    trainer = L.Trainer(
        strategy=fork_ddp(),
        accelerator="cpu",
        devices=WORLD,
        max_steps=1,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[Record(tmp_path)],
    )
    trainer.fit(module, datamodule=RankHalf())

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    # the mean of the ranks' losses (what sync_dist logs) is the loss of the whole batch
    mean = torch.stack([r["loss"] for r in ranks]).mean()
    torch.testing.assert_close(mean, want_loss.detach(), atol=1e-6, rtol=1e-6)
    for r in ranks:
        torch.testing.assert_close(r["logged"], want_loss.detach(), atol=1e-6, rtol=1e-6)
    # after DDP's all-reduce every rank holds the single-process gradient of the concatenated batch
    for r in ranks:
        assert r["grads"].keys() == want.keys()
        for n in want:
            torch.testing.assert_close(r["grads"][n], want[n], atol=1e-5, rtol=1e-4, msg=n)


def test_without_gathering_the_ranks_see_only_their_own_negatives(tiny_model_dir, tmp_path):
    """The switch matters: local-only negatives give a different (smaller-pool) loss."""
    module = make_module(tiny_model_dir, gather_across_devices=False)
    module.train()
    with torch.no_grad():
        full = module._loss(PAIRS)
        halves = [
            module._loss({k: v[i * 4 : (i + 1) * 4] for k, v in PAIRS.items()})
            for i in range(WORLD)
        ]
    trainer = L.Trainer(
        strategy=fork_ddp(),
        accelerator="cpu",
        devices=WORLD,
        max_steps=1,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[Record(tmp_path)],
    )
    trainer.fit(module, datamodule=RankHalf())
    losses = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["loss"] for r in range(WORLD)]
    for got, want in zip(losses, halves, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert abs(torch.stack(losses).mean() - full) > 1e-3


def test_gather_is_a_no_op_on_one_process():
    x = torch.randn(3, 4, requires_grad=True)
    gathered, offset = gather_with_grad(x)
    assert gathered is x and offset == 0 and rank_and_world() == (0, 1)
    a = torch.randn(3, 4)
    torch.testing.assert_close(info_nce(a, x, gather=True), info_nce(a, x))


def test_fsdp_config_wraps_decoder_layers():
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    config = Path(__file__).resolve().parents[1] / "configs" / "fsdp.yaml"
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=FSDPStrategy)
    strategy = parser.instantiate_classes(
        parser.parse_object({"strategy": yaml.safe_load(config.read_text())["trainer"]["strategy"]})
    ).strategy
    assert strategy.kwargs["use_orig_params"] is True
    assert LlamaDecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes


def _uneven_gather_worker(rank: int, world: int, store_path: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"file://{store_path}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    try:
        rows = [2, 3]  # a last, smaller batch on rank 0
        x = torch.arange(rows[rank] * 3, dtype=torch.float32).reshape(rows[rank], 3) + 100 * rank
        x.requires_grad_()
        gathered, offset = gather_with_grad(x)
        expected = torch.cat(
            [
                torch.arange(n * 3, dtype=torch.float32).reshape(n, 3) + 100 * r
                for r, n in enumerate(rows)
            ]
        )
        torch.testing.assert_close(gathered.detach(), expected)
        assert offset == sum(rows[:rank])
        weights = torch.arange(expected.numel(), dtype=torch.float32).reshape(expected.shape)
        (gathered * weights).sum().backward()
        # every rank's loss reaches this rank's rows: the gradient is summed over the ranks
        torch.testing.assert_close(x.grad, world * weights[offset : offset + rows[rank]])
    finally:
        dist.destroy_process_group()


def test_gather_handles_uneven_batches_and_sums_gradients_over_ranks(tmp_path):
    torch.multiprocessing.start_processes(
        _uneven_gather_worker,
        args=(WORLD, str(tmp_path / "store")),
        nprocs=WORLD,
        start_method="fork",
    )
