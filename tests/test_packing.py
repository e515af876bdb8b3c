"""Padding-free (packed) batches give the padded batches' embeddings, loss and gradients.

Three architectures: Llama (grouped-query attention), Qwen3 (q/k norms) and Gemma3 with a
3-token sliding window, so the packed kernel's window is exercised (the texts are longer than it).
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig

from llm_embed.encoder import Encoder
from llm_embed.errors import UserError
from llm_embed.module import EmbeddingModule
from llm_embed.packing import pack, unpack

TEXTS = [
    "a man is driving a car",
    "the cat sat",
    "stocks fell sharply on monday after the report",
    "go",
    "a new phone was released today",
    "make someone calm or quiet, as with a soft voice",
]
PAIRS = {"anchor": TEXTS[:3], "positive": TEXTS[3:]}


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("pooling", ["weighted_mean", "last", "prompt_masked_mean", "eos"])
def test_packed_embeddings_equal_padded(model_dir, pooling, padding_side):
    padded = Encoder(model_dir, pooling=pooling, padding_side=padding_side)
    packed = Encoder(model_dir, pooling=pooling, padding_side=padding_side, packing=True)
    assert packed.config_dict["packing"] is True
    tokens = padded.tokenize(TEXTS)
    assert (tokens["attention_mask"] == 0).any()  # the batch is padded: packing has work to do
    with torch.no_grad():
        want, got = padded(tokens), packed(tokens)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(
        packed.encode(TEXTS, batch_size=4), padded.encode(TEXTS, batch_size=4), atol=2e-6, rtol=1e-5
    )


def test_packed_hidden_layer_equals_padded(model_dir):
    padded = Encoder(model_dir, pooling="mean", layer=1)
    packed = Encoder(model_dir, pooling="mean", layer=1, packing=True)
    with torch.no_grad():
        torch.testing.assert_close(packed.encode(TEXTS), padded.encode(TEXTS), atol=2e-6, rtol=1e-5)


def test_a_text_longer_than_the_window_sees_only_the_window(gemma3_dir):
    """Gemma3's 3-token window: the packed kernel must apply it (full attention would differ)."""
    padded = Encoder(gemma3_dir, pooling="mean")
    packed = Encoder(gemma3_dir, pooling="mean", packing=True)
    tokens = padded.tokenize([TEXTS[2]])
    assert int(tokens["attention_mask"].sum()) > 3
    with torch.no_grad():
        torch.testing.assert_close(packed(tokens), padded(tokens), atol=2e-6, rtol=1e-5)
        packed.backbone.config.layer_types = ["full_attention"] * 2  # no window: other states
        assert not torch.allclose(packed(tokens), padded(tokens), atol=1e-4)


def test_pack_unpack_round_trip():
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 0], [0, 0, 8, 9]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]]),
        "position_ids": torch.tensor([[0, 1, 2, 2], [0, 0, 0, 1]]),
    }
    p = pack(batch)
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert p.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert p.cu_seqlens.tolist() == [0, 3, 5] and p.max_len == 3 and p.shape == (2, 4)
    states = torch.arange(5.0).view(1, 5, 1)
    assert unpack(states, p)[..., 0].tolist() == [[0, 1, 2, 0], [0, 0, 3, 4]]


def _module(path: str, packing: bool, **kwargs) -> EmbeddingModule:
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
    module = EmbeddingModule(
        Encoder(path, pooling="weighted_mean", packing=packing), lora=lora, **kwargs
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero B, so A gets a gradient too
        for n, p in module.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05, generator=g)
    return module.train()


@pytest.mark.parametrize("grad_cache", [False, True], ids=["plain", "gradcache"])
def test_packed_training_step_gives_the_padded_loss_and_gradients(model_dir, grad_cache):
    results = []
    for packing in (False, True):
        module = _module(model_dir, packing, grad_cache=grad_cache, grad_cache_mini_batch=2)
        loss = module._loss(PAIRS)
        loss.backward()  # with GradCache, this backward attaches the cached gradients
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (want_loss, want), (got_loss, got) = results
    torch.testing.assert_close(got_loss, want_loss, atol=1e-6, rtol=1e-6)
    assert got.keys() == want.keys() and len(want) > 0
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-6, rtol=1e-4, msg=n)


def test_packing_refuses_a_model_with_its_own_attention(tiny_model_dir, monkeypatch):
    from transformers import LlamaModel

    monkeypatch.setattr(LlamaModel, "_supports_attention_backend", False)
    with pytest.raises(UserError, match="cannot be packed.*set packing false"):
        Encoder(tiny_model_dir, packing=True)
