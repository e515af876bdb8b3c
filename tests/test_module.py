"""EmbeddingModule: LoRA-only gradients, trainable-only checkpoints, a loss that goes down."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from peft import LoraConfig

from llm_embed.encoder import Encoder
from llm_embed.module import EmbeddingModule, reference_lora

PAIRS = {
    "anchor": [
        "a man is driving a car",
        "the cat sat on the mat",
        "stocks fell sharply",
        "the team won",
    ],
    "positive": [
        "a man drives a car",
        "a cat sat on a mat",
        "stocks fell on monday",
        "the team won the final",
    ],
}


def small_lora() -> LoraConfig:
    return LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "o_proj"],
        task_type="FEATURE_EXTRACTION",
    )


@pytest.fixture
def module(tiny_model_dir):
    torch.manual_seed(0)
    return EmbeddingModule(
        Encoder(tiny_model_dir, pooling="mean"), lora=small_lora(), lr=1e-2, warmup_steps=0
    )


def test_only_lora_parameters_receive_gradients(module):
    module.train()
    module._loss(PAIRS).backward()
    with_grad = {
        n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert with_grad and with_grad <= trainable
    assert all("lora_" in n for n in trainable)
    # B starts at zero, so the first backward reaches B (A's gradient is B^T-weighted, hence zero)
    assert any("lora_B" in n for n in with_grad)


def test_reference_lora_settings():
    cfg = reference_lora()
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (64, 16, 0.05)
    assert "k_proj" not in cfg.target_modules and "down_proj" in cfg.target_modules


def test_training_lowers_the_loss_and_checkpoints_hold_only_lora(module, tmp_path):
    class Pairs(L.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader([PAIRS] * 8, batch_size=None)

    before = module._loss(PAIRS).item()
    trainer = L.Trainer(
        max_steps=8,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=Pairs())
    module.eval()
    after = module._loss(PAIRS).item()
    assert after < before
    trainer.save_checkpoint(tmp_path / "x.ckpt")
    state = torch.load(tmp_path / "x.ckpt", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state)
    # the checkpoint restores the trained LoRA weights into a fresh module
    fresh = EmbeddingModule(
        Encoder(module.encoder.backbone_name, pooling="mean"), lora=small_lora()
    )
    fresh.load_state_dict(state, strict=False)
    fresh.eval()
    assert fresh._loss(PAIRS).item() == pytest.approx(after, rel=1e-5)


def test_merged_adapter_gives_the_same_embeddings_and_restores_weights(module):
    texts = PAIRS["anchor"]
    with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
        for n, p in module.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    base = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    unmerged = module.encoder.encode(texts)
    with module.encoder.merged_adapter():
        merged = module.encoder.encode(texts)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-4)
    for n, p in module.named_parameters():
        if n in base:  # bit for bit: an evaluation during training must not nudge the weights
            assert torch.equal(p, base[n]), n


@pytest.mark.parametrize(
    ("bad_call", "message"),
    [
        (3, "loss became nan at step 2: .* resume from checkpoints/<run>/checkpoints/last.ckpt"),
        (1, "loss became nan at step 0: .* no checkpoint was written yet"),
    ],
)
def test_non_finite_loss_stops_with_a_message_naming_the_step(module, tmp_path, bad_call, message):
    from llm_embed.errors import UserError

    class Pairs(L.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader([PAIRS] * 4, batch_size=None)

    calls = {"n": 0}
    real = module.loss_fn.forward

    def flaky(a, c, offset=0):
        calls["n"] += 1
        return real(a, c, offset) * (float("nan") if calls["n"] == bad_call else 1.0)

    module.loss_fn.forward = flaky
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(UserError, match=message):
        trainer.fit(module, datamodule=Pairs())
    assert all(torch.isfinite(p).all() for p in module.parameters())


# -- memory savers ------------------------------------------------------------------------------
def lora_grads_of(
    tiny_model_dir, *, dropout: float, seed: int = 1, **kwargs
) -> dict[str, torch.Tensor]:
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=dropout,
        target_modules=["q_proj", "v_proj", "o_proj"],
        task_type="FEATURE_EXTRACTION",
    )
    torch.manual_seed(0)
    m = EmbeddingModule(Encoder(tiny_model_dir, pooling="mean"), lora=lora, **kwargs)
    with torch.no_grad():  # non-zero B, so A gets a gradient too
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)
    m.train()
    assert m.encoder.backbone.get_base_model().gradient_checkpointing is kwargs.get(
        "gradient_checkpointing", False
    )
    torch.manual_seed(seed)
    m._loss(PAIRS).backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}


def test_gradient_checkpointing_gives_lora_the_same_gradients(tiny_model_dir):
    """Non-reentrant checkpointing: LoRA gets the plain gradients, dropout (0.05, the paper's) replayed."""
    plain = lora_grads_of(tiny_model_dir, dropout=0.05)
    checkpointed = lora_grads_of(tiny_model_dir, dropout=0.05, gradient_checkpointing=True)
    assert any(g.abs().sum() > 0 for n, g in checkpointed.items() if "lora_A" in n)
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], atol=1e-6, rtol=1e-5, msg=n)
    # with GradCache as well: its second pass uses torch.autograd.grad, which reentrant checkpointing
    # refuses (no dropout: mini-batches draw other masks than the full batch)
    plain = lora_grads_of(tiny_model_dir, dropout=0.0)
    both = lora_grads_of(
        tiny_model_dir,
        dropout=0.0,
        gradient_checkpointing=True,
        grad_cache=True,
        grad_cache_mini_batch=2,
    )
    for n in plain:
        torch.testing.assert_close(both[n], plain[n], atol=1e-5, rtol=1e-4, msg=n)


def test_four_bit_without_bitsandbytes_or_cuda_is_one_clear_line(monkeypatch):
    import importlib.util

    from llm_embed import backbone
    from llm_embed.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    with pytest.raises(
        UserError,
        match=r"load_in_4bit needs bitsandbytes, which is not installed: run `pip install bitsandbytes`",
    ):
        backbone.load_backbone("unused", load_in_4bit=True)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "bitsandbytes" else real(name, *a),
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="load_in_4bit needs a CUDA GPU and none is visible"):
        backbone.load_backbone("unused", load_in_4bit=True)


def test_scale_switches_are_plain_hparams_and_validated(module):
    hp = module.hparams
    assert (hp.gather_across_devices, hp.grad_cache, hp.gradient_checkpointing) == (
        True,
        False,
        False,
    )
    assert module.loss_fn.gather is True and hp.grad_cache_mini_batch == 32
    with pytest.raises(ValueError, match="grad_cache_mini_batch=0"):
        EmbeddingModule(module.encoder, lora=small_lora(), grad_cache_mini_batch=0)


def test_checkpoint_filter_sees_through_fsdp_and_compile_wrappers():
    from llm_embed.module import unwrapped

    name = "encoder.backbone._fsdp_wrapped_module.base_model.model.layers.0._checkpoint_wrapped_module.q_proj.lora_A.default.weight"
    assert (
        unwrapped(name) == "encoder.backbone.base_model.model.layers.0.q_proj.lora_A.default.weight"
    )


@pytest.mark.usefixtures("minilm_installed")
@pytest.mark.parametrize("grad_cache", [False, True])
def test_a_guide_drops_the_in_batch_negative_that_restates_the_anchor(tiny_model_dir, grad_cache):
    """A near copy of anchor 0 among the positives is a false negative: the guide takes it out."""
    from llm_embed.losses import info_nce

    torch.manual_seed(0)
    module = EmbeddingModule(
        Encoder(tiny_model_dir, pooling="mean"),
        lora=small_lora(),
        guide="all-minilm-l6-v2",
        grad_cache=grad_cache,
        grad_cache_mini_batch=3,
    )
    module.eval()  # no dropout: both losses see the same vectors
    batch = {
        "anchor": ["the dog barked at the mailman", *PAIRS["anchor"][1:]],
        "positive": [
            "a canine made noise",
            PAIRS["positive"][1],
            "the dog barked at the mailman!",
            PAIRS["positive"][3],
        ],
    }
    g_a, g_c = module._guide_vectors([batch["anchor"], batch["positive"]])
    sims = g_a @ g_c.T
    assert sims[0, 2] > sims[0, 0]  # the guide sees the restatement as closer than the positive
    with torch.no_grad():
        a, c = module._embed(batch["anchor"]), module._embed(batch["positive"])
        plain = info_nce(a, c, temperature=module.hparams.temperature)
        guided = module._loss(batch)
    assert guided < plain
    logits = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(c, dim=-1).T
    keep = ~(sims > sims.diagonal()[:, None])
    keep.fill_diagonal_(True)
    want = -torch.stack(
        [(logits[i, i] / 0.2) - torch.logsumexp(logits[i][keep[i]] / 0.2, 0) for i in range(4)]
    ).mean()
    assert guided.item() == pytest.approx(want.item(), rel=1e-5)
    assert "guide" in module.hparams and not any("guide" in k for k in module.state_dict())


def test_an_unknown_guide_fails_before_training(tiny_model_dir):
    from llm_embed.errors import UserError

    module = EmbeddingModule(Encoder(tiny_model_dir), lora=small_lora(), guide="/no/such/guide")
    with pytest.raises(UserError, match="sentence-transformers folder '/no/such/guide' not found"):
        module.setup("fit")
