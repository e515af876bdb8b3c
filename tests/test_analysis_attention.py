"""Final-token attention maps (llm_embed.analysis.attention_map) on the tiny random Llama.

Every row is checked against a manual computation: an encoder built with eager attention from
the start, run directly with ``output_attentions=True``, heads averaged, the last real token's row
picked by hand for each padding side, and the BOS column dropped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import LoraConfig

from llm_embed.analysis.attention_map import (
    CONTENT_SHARE_KEY,
    FIGURE_TAG,
    AttentionMapCallback,
    eager_attention,
    final_token_attention,
    final_token_attentions,
    plot_attention,
)
from llm_embed.encoder import Encoder
from llm_embed.module import EmbeddingModule

TEXT = "a man is driving a car"
LONGER = "the cat sat on the mat and a new phone was released today"


def tiny_lora(dropout: float = 0.0) -> LoraConfig:
    return LoraConfig(
        r=4,
        lora_dropout=dropout,
        target_modules=["q_proj", "v_proj"],
        task_type="FEATURE_EXTRACTION",
    )


def manual_rows(
    encoder: Encoder, texts: list[str], layer: int = -1, prompt: str | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weights, prompt_mask) per text, BOS dropped: by hand, on an encoder that is already eager."""
    assert encoder.backbone.config._attn_implementation == "eager"
    batch = encoder.tokenize(texts, prompt=prompt)
    encoder.eval()
    with torch.no_grad():
        out = encoder.backbone(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            output_attentions=True,
        )
    attn = out.attentions[layer].mean(1)  # (B, T, T)
    T = batch["input_ids"].shape[1]
    rows = []
    for i in range(len(texts)):
        n = int(batch["attention_mask"][i].sum())
        first, last = (0, n - 1) if encoder.padding_side == "right" else (T - n, T - 1)
        assert batch["input_ids"][i, first] == encoder.tokenizer.bos_token_id
        cols = slice(first + 1, last + 1)  # drop BOS
        rows.append((attn[i, last, cols].numpy(), batch["prompt_mask"][i, cols].numpy()))
    return rows


@pytest.fixture(scope="module")
def encoders(tiny_model_dir):
    """(sdpa encoder, eager reference encoder) per padding side."""
    return {
        side: (
            Encoder(tiny_model_dir, padding_side=side),
            Encoder(tiny_model_dir, padding_side=side, attn_implementation="eager"),
        )
        for side in ("right", "left")
    }


@pytest.mark.parametrize("side", ["right", "left"])
def test_rows_match_manual_computation_for_both_padding_sides(encoders, side):
    encoder, reference = encoders[side]
    texts = [TEXT, LONGER]  # the first row is padded
    results = final_token_attentions(encoder, texts)
    for result, (weights, prompt_mask) in zip(results, manual_rows(reference, texts), strict=True):
        assert result.dropped == "<s>"
        assert len(result.tokens) == len(result.weights) == len(result.is_prompt) == len(weights)
        np.testing.assert_allclose(result.weights, weights, rtol=1e-5, atol=1e-7)
        assert (result.weights >= 0).all()
        assert result.weights.sum() < 1.0  # the dropped BOS took the rest
        np.testing.assert_array_equal(result.is_prompt, prompt_mask.astype(bool))
        manual_share = weights[prompt_mask == 0].sum() / weights.sum()
        assert result.content_share == pytest.approx(manual_share, rel=1e-5)
        assert 0.0 < result.content_share < 1.0
    # padding never changes a row: the padded text alone gives the same numbers
    alone = final_token_attention(encoder, TEXT)
    np.testing.assert_allclose(alone.weights, results[0].weights, rtol=1e-4, atol=1e-6)
    assert alone.tokens == results[0].tokens
    assert encoder.backbone.config._attn_implementation == "sdpa"


def test_tokens_are_readable_and_marked(encoders):
    result = final_token_attention(encoders["right"][0], TEXT)
    text_tokens = [t for t, p in zip(result.tokens, result.is_prompt, strict=True) if not p]
    assert "".join(text_tokens) == TEXT.replace(" ", "")  # 'Ġ' decoded and stripped
    assert not any("Ġ" in t for t in result.tokens)
    assert result.tokens[-1] == ":" and result.is_prompt[-1]
    top = result.top(3)
    assert len(top) == 3 and top[0][1] == pytest.approx(result.weights.max())


def test_other_layer_and_prompt(encoders):
    encoder, reference = encoders["right"]
    result = final_token_attention(encoder, TEXT, layer=0, prompt="prompteol")
    ((weights, _),) = manual_rows(reference, [TEXT], layer=0, prompt="prompteol")
    assert result.tokens[-3:] == ["one", "word", ":"]
    np.testing.assert_allclose(result.weights, weights, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="layer"):
        final_token_attention(encoder, TEXT, layer=2)


def test_attention_implementation_restored_after_an_error(encoders):
    encoder = encoders["right"][0]
    with pytest.raises(RuntimeError, match="boom"), eager_attention(encoder.backbone):
        assert encoder.backbone.config._attn_implementation == "eager"
        raise RuntimeError("boom")
    assert encoder.backbone.config._attn_implementation == "sdpa"


def test_peft_wrapped_backbone(tiny_model_dir):
    torch.manual_seed(0)
    # dropout 0.5: a map computed in train mode would be random and miss the manual (eval) one
    module = EmbeddingModule(Encoder(tiny_model_dir), lora=tiny_lora(dropout=0.5))
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the attention
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    reference = EmbeddingModule(
        Encoder(tiny_model_dir, attn_implementation="eager"), lora=tiny_lora(dropout=0.5)
    )
    reference.load_state_dict(module.state_dict())
    base = final_token_attention(Encoder(tiny_model_dir), TEXT)
    assert module.encoder.training  # EmbeddingModule puts the encoder in train mode

    result = final_token_attention(module.encoder, TEXT)

    ((weights, _),) = manual_rows(reference.encoder, [TEXT])
    np.testing.assert_allclose(result.weights, weights, rtol=1e-5, atol=1e-7)
    assert not np.allclose(result.weights, base.weights, atol=1e-4)  # the adapter was used
    assert module.encoder.backbone.config._attn_implementation == "sdpa"
    assert all(m.training for m in module.encoder.modules())  # modes restored


def test_plot_attention_writes_a_png(encoders, tmp_path):
    encoder = encoders["right"][0]
    base = final_token_attention(encoder, TEXT)
    other = final_token_attention(encoder, TEXT, layer=0)
    path = plot_attention(
        {"base": base, "fine-tuned (100 steps)": other}, tmp_path / "fig" / "a.png"
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    with pytest.raises(ValueError, match="other tokens"):
        plot_attention({"a": base, "b": final_token_attention(encoder, LONGER)}, tmp_path / "b.png")
    with pytest.raises(ValueError, match="empty"):
        plot_attention({}, tmp_path / "c.png")


def test_callback_validates_its_arguments():
    with pytest.raises(ValueError, match="text"):
        AttentionMapCallback(text="  ")
    with pytest.raises(ValueError, match="prompt"):
        AttentionMapCallback(prompt="no-such-template")


def test_callback_logs_baseline_and_validation_in_a_trainer(tiny_model_dir, tmp_path):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pairs = {
        "anchor": ["a man is driving a car", "the cat sat on the mat"],
        "positive": ["a man drives", "a cat sat"],
    }
    train = torch.utils.data.DataLoader([pairs] * 2, batch_size=None)
    val = torch.utils.data.DataLoader([pairs], batch_size=None)
    torch.manual_seed(0)
    module = EmbeddingModule(Encoder(tiny_model_dir), lora=tiny_lora(), lr=1e-2, warmup_steps=0)
    callback = AttentionMapCallback()
    tb = TensorBoardLogger(tmp_path, name="tb", version="")
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=[tb, CSVLogger(tmp_path, name="csv")],  # CSV: no add_figure
        callbacks=[callback], num_sanity_val_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)

    assert [(h["stage"], h["step"]) for h in callback.history] == [
        ("baseline", 0),
        ("validation", 2),
    ]
    events = EventAccumulator(tb.log_dir)
    events.Reload()
    scalars = events.Scalars(CONTENT_SHARE_KEY)
    assert [s.step for s in scalars] == [0, 2]  # the sanity check logged nothing
    assert [s.value for s in scalars] == pytest.approx(
        [h["content_share"] for h in callback.history]
    )
    assert FIGURE_TAG in events.Tags()["images"]
    assert (
        callback.baseline is not None
        and module.encoder.backbone.config._attn_implementation == "sdpa"
    )


def test_attention_cli_plots_base_and_run(tiny_model_dir, tmp_path):
    from llm_embed._cli import run_cli
    from llm_embed.attention import cli_main

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="FEATURE_EXTRACTION")
    EmbeddingModule(Encoder(tiny_model_dir), lora=lora).encoder.save(tmp_path / "run" / "model")
    out = tmp_path / "att.png"
    args = ["--model", tiny_model_dir, "--run", str(tmp_path / "run"), "--out", str(out)]
    assert run_cli(lambda: cli_main(args)) == 0
    assert out.stat().st_size > 1000
    assert run_cli(lambda: cli_main(["--model", tiny_model_dir, "--run", str(tmp_path / "none")])) == 2
