"""GradCache gives the loss and the gradients of the plain full-batch computation.

Tolerance: float32 on CPU, atol 1e-6 for the pure-math checks and atol 1e-5 / rtol 1e-4 through
the tiny Llama (mini-batches pad to their own longest text, which changes summation order only).
"""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from peft import LoraConfig

from llm_embed.encoder import Encoder
from llm_embed.losses import info_nce
from llm_embed.module import EmbeddingModule
from llm_embed.train.gradcache import RngState, cached_loss, chunks, embed_in_chunks

ANCHORS = [
    "a man is driving a car",
    "the cat sat on the mat",
    "stocks fell sharply on monday",
    "the team won the final match",
    "a new phone was released today",
    "cause to be calm",
]
POSITIVES = [
    "a man drives a car",
    "a cat sat on a mat",
    "stocks fell on monday",
    "the team won the final",
    "a phone came out today",
    "make someone calm or quiet",
]
PAIRS = {"anchor": ANCHORS, "positive": POSITIVES}


class ToyEncoder(torch.nn.Module):
    """Texts -> bag of character codes -> linear + dropout: a cheap differentiable encoder with randomness."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(16, 8)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, texts):
        feats = torch.stack(
            [
                torch.bincount(torch.tensor([ord(ch) % 16 for ch in t]), minlength=16).float()
                for t in texts
            ]
        )
        return self.proj(self.drop(feats))  # (n, 8)


def full_batch_grads(embed, params, loss_fn=info_nce):
    loss = loss_fn(embed(ANCHORS), embed(POSITIVES))
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("mini_batch_size", [1, 4, 6, 32])
def test_cached_loss_equals_the_full_batch_loss_and_gradients(mini_batch_size, symmetric):
    torch.manual_seed(0)
    enc = ToyEncoder()
    params = list(enc.parameters())
    loss_fn = functools.partial(info_nce, temperature=0.2, symmetric=symmetric)
    want_loss, want_grads = full_batch_grads(enc, params, loss_fn)
    loss = cached_loss(enc, [ANCHORS, POSITIVES], loss_fn, params, mini_batch_size=mini_batch_size)
    assert all(p.grad is None for p in params)  # nothing written before backward
    loss.backward()
    torch.testing.assert_close(loss.detach(), want_loss, atol=1e-6, rtol=1e-6)
    for p, g in zip(params, want_grads, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)


def test_backward_scales_with_the_incoming_gradient_and_grad_scale_cancels():
    torch.manual_seed(0)
    enc = ToyEncoder()
    params = list(enc.parameters())
    _, want = full_batch_grads(enc, params)
    # Lightning divides by accumulate_grad_batches and fp16 multiplies by the loss scale
    (
        cached_loss(
            enc, [ANCHORS, POSITIVES], info_nce, params, mini_batch_size=2, grad_scale=1024.0
        )
        / 4
    ).backward()
    for p, g in zip(params, want, strict=True):
        torch.testing.assert_close(p.grad, g / 4, atol=1e-6, rtol=1e-5)


def test_dropout_masks_are_replayed():
    """With dropout the re-embedding pass must draw the first pass's masks; the reference runs the
    same mini-batches in the same order from the same seed, with a graph."""
    enc = ToyEncoder(dropout=0.5)
    params = list(enc.parameters())
    torch.manual_seed(1)
    ref = info_nce(embed_in_chunks(enc, ANCHORS, 4), embed_in_chunks(enc, POSITIVES, 4))
    want = torch.autograd.grad(ref, params)
    torch.manual_seed(1)
    loss = cached_loss(enc, [ANCHORS, POSITIVES], info_nce, params, mini_batch_size=4)
    after = torch.get_rng_state()
    loss.backward()
    torch.testing.assert_close(loss.detach(), ref.detach(), atol=1e-6, rtol=1e-6)
    for p, g in zip(params, want, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)
    # the replay leaves the global RNG where the first pass left it
    torch.manual_seed(1)
    with torch.no_grad():
        embed_in_chunks(enc, ANCHORS, 4), embed_in_chunks(enc, POSITIVES, 4)
    assert torch.equal(after, torch.get_rng_state())


def test_rng_state_replays_and_restores():
    torch.manual_seed(3)
    state = RngState(torch.device("cpu"))
    first = torch.rand(3)
    outer = torch.rand(3)
    torch.manual_seed(3)
    torch.rand(3)
    with state.replay():
        torch.testing.assert_close(torch.rand(3), first)
    torch.testing.assert_close(torch.rand(3), outer)
    assert [len(c) for c in chunks(list("abcdefg"), 3)] == [3, 3, 1]
    with pytest.raises(ValueError, match="mini_batch_size=0"):
        cached_loss(ToyEncoder(), [ANCHORS, POSITIVES], info_nce, [], mini_batch_size=0)


def small_lora(dropout: float = 0.0) -> LoraConfig:
    return LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=dropout,
        target_modules=["q_proj", "v_proj", "o_proj"],
        task_type="FEATURE_EXTRACTION",
    )


def make_module(path, *, dropout=0.0, **kwargs) -> EmbeddingModule:
    torch.manual_seed(0)
    module = EmbeddingModule(
        Encoder(path, pooling="mean"), lora=small_lora(dropout), lr=1e-2, warmup_steps=0, **kwargs
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-trivial adapter: B starts at zero, which hides A's gradient
        for n, p in module.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05, generator=g)
    return module


def lora_grads(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def test_module_grad_cache_equals_the_plain_module(tiny_model_dir):
    plain = make_module(tiny_model_dir)
    plain._loss(PAIRS).backward()
    cached = make_module(tiny_model_dir, grad_cache=True, grad_cache_mini_batch=4)
    loss = cached._loss(PAIRS)
    loss.backward()
    torch.testing.assert_close(loss.detach(), plain._loss(PAIRS).detach(), atol=1e-5, rtol=1e-4)
    want, got = lora_grads(plain), lora_grads(cached)
    assert want.keys() == got.keys() and any("lora_A" in n for n in got)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-5, rtol=1e-4, msg=n)
    with torch.no_grad():  # validation: mini-batched first pass only, same value
        torch.testing.assert_close(cached._loss(PAIRS), loss.detach(), atol=1e-5, rtol=1e-4)


def test_module_grad_cache_replays_lora_dropout(tiny_model_dir):
    """LoRA dropout 0.05 (the paper's): the reference runs the same mini-batches from the same seed with a graph."""
    cached = make_module(tiny_model_dir, dropout=0.3, grad_cache=True, grad_cache_mini_batch=4)
    torch.manual_seed(5)
    cached._loss(PAIRS).backward()
    ref = make_module(tiny_model_dir, dropout=0.3)
    torch.manual_seed(5)
    loss = info_nce(
        embed_in_chunks(ref._embed, ANCHORS, 4), embed_in_chunks(ref._embed, POSITIVES, 4)
    )
    loss.backward()
    want, got = lora_grads(ref), lora_grads(cached)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-5, rtol=1e-4, msg=n)


def test_lightning_step_with_grad_cache_accumulation_and_clipping_matches_plain(
    tiny_model_dir, tmp_path
):
    """One optimizer step over 2 accumulated micro-batches, clipped: the same gradients (before
    clipping; AdamW alone would hide a scale error) and the same LoRA weights either way."""

    class Pairs(L.LightningDataModule):
        def train_dataloader(self):
            half = {k: v[:3] for k, v in PAIRS.items()}, {k: v[3:] for k, v in PAIRS.items()}
            return torch.utils.data.DataLoader(list(half), batch_size=None)

    class Grads(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.grads = lora_grads(pl_module)

    runs = []
    for grad_cache in (False, True):
        module = make_module(tiny_model_dir, grad_cache=grad_cache, grad_cache_mini_batch=2)
        grads = Grads()
        trainer = L.Trainer(
            max_steps=1,
            accumulate_grad_batches=2,
            gradient_clip_val=0.01,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            callbacks=[grads],
        )
        trainer.fit(module, datamodule=Pairs())
        assert trainer.global_step == 1
        weights = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
        runs.append((grads.grads, weights))
    (plain_grads, plain_weights), (cached_grads, cached_weights) = runs
    for n in plain_grads:
        torch.testing.assert_close(cached_grads[n], plain_grads[n], atol=1e-5, rtol=1e-4, msg=n)
        torch.testing.assert_close(cached_weights[n], plain_weights[n], atol=1e-6, rtol=1e-5, msg=n)


def test_grad_cache_refuses_fsdp_with_one_line(tiny_model_dir):
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    from llm_embed.errors import UserError

    module = make_module(tiny_model_dir, grad_cache=True)
    module._trainer = SimpleNamespace(strategy=FSDPStrategy())  # the check needs no process group
    with pytest.raises(
        UserError, match="grad_cache works on one device or with DDP, not with FSDPStrategy"
    ):
        module.setup("fit")


def test_matryoshka_composes_with_grad_cache(tiny_model_dir):
    """The Matryoshka loss under GradCache equals it on the full batch (value and LoRA gradients)."""
    dims = [32, 8]  # the tiny model's 32 dimensions and a slice of them
    plain = make_module(tiny_model_dir, matryoshka_dims=dims)
    want_loss = plain._loss(PAIRS)
    want_loss.backward()
    cached = make_module(tiny_model_dir, grad_cache=True, grad_cache_mini_batch=4, matryoshka_dims=dims)
    loss = cached._loss(PAIRS)
    loss.backward()
    torch.testing.assert_close(loss.detach(), want_loss.detach(), atol=1e-5, rtol=1e-4)
    want, got = lora_grads(plain), lora_grads(cached)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-5, rtol=1e-4, msg=n)
    full_only = make_module(tiny_model_dir, matryoshka_dims=[32])._loss(PAIRS)
    torch.testing.assert_close(full_only, make_module(tiny_model_dir)._loss(PAIRS))
    assert abs(want_loss.item() - full_only.item()) > 1e-4  # the slice changes the loss
    with pytest.raises(ValueError, match="above the encoder's 32"):
        make_module(tiny_model_dir, matryoshka_dims=[64, 8])
