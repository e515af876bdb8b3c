"""The one text -> vector path on a tiny random Llama: prompts, masks, padding, truncation, save/load."""

from __future__ import annotations

import pytest
import torch

from llm_embed.encoder import Encoder
from llm_embed.errors import UserError
from llm_embed.prompts import PROMPTS, PromptTemplate, get_prompt, load_prompts

TEXTS = ["a man is driving a car", "the cat sat", "stocks fell sharply on monday"]


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return Encoder(tiny_model_dir, pooling="last", prompt="clustering")


def test_prompt_mask_marks_exactly_the_text(encoder):
    batch = encoder.tokenize(TEXTS)
    for i, text in enumerate(TEXTS):
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()]
        content = batch["prompt_mask"][i][batch["attention_mask"][i].bool()] == 0
        decoded = encoder.tokenizer.decode(ids[content])
        assert decoded.strip() == text
        # the first token is BOS: a special token counts as prompt
        assert ids[0].item() == encoder.tokenizer.bos_token_id and not content[0]


@pytest.mark.parametrize("pooling", ["last", "mean", "weighted_mean", "prompt_masked_mean", "eos", "max"])
def test_left_and_right_padding_give_the_same_embeddings(tiny_model_dir, pooling):
    right = Encoder(tiny_model_dir, pooling=pooling, padding_side="right")
    left = Encoder(tiny_model_dir, pooling=pooling, padding_side="left")
    torch.testing.assert_close(right.encode(TEXTS), left.encode(TEXTS), atol=1e-5, rtol=1e-5)


def test_batching_and_order_do_not_change_embeddings(encoder):
    one_by_one = torch.cat([encoder.encode([t]) for t in TEXTS])
    batched = encoder.encode(TEXTS, batch_size=2)
    torch.testing.assert_close(one_by_one, batched, atol=1e-5, rtol=1e-5)
    assert batched.shape == (3, encoder.embed_dim)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(3))


def test_last_token_is_the_prompt_end_and_eos_appends_eos(tiny_model_dir):
    enc = Encoder(tiny_model_dir, pooling="eos")
    batch = enc.tokenize(TEXTS, prompt="none")
    lengths = batch["attention_mask"].sum(1)
    for i, n in enumerate(lengths.tolist()):
        assert batch["input_ids"][i, n - 1].item() == enc.tokenizer.eos_token_id
    # eos pooling == last-token pooling over the input with EOS appended
    emb = enc.encode(TEXTS, prompt="none")
    with torch.inference_mode():
        out = enc.backbone(**{k: v for k, v in batch.items() if k != "prompt_mask"}).last_hidden_state
    idx = lengths - 1
    expected = torch.nn.functional.normalize(out[torch.arange(3), idx], dim=-1)
    torch.testing.assert_close(emb, expected, atol=1e-5, rtol=1e-5)


def test_truncation_cuts_text_before_templating_and_counts(tiny_model_dir):
    enc = Encoder(tiny_model_dir, max_text_tokens=3)
    long = "stocks fell sharply on monday " * 20
    cut = enc.truncate([long, "the cat"])
    assert enc.num_truncated == 1 and cut[1] == "the cat"
    assert len(enc.tokenizer(cut[0], add_special_tokens=False)["input_ids"]) == 3
    batch = enc.tokenize([long])
    suffix = get_prompt("clustering").suffix
    assert enc.tokenizer.decode(batch["input_ids"][0]).endswith(suffix)


def test_hidden_layer_choice(tiny_model_dir):
    first = Encoder(tiny_model_dir, layer=0, pooling="mean", normalize=False)
    emb = first.encode(TEXTS[:1], prompt="none")
    batch = first.tokenize(TEXTS[:1], prompt="none")
    expected = first.backbone.embed_tokens(batch["input_ids"]).mean(1)
    torch.testing.assert_close(emb, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="layer=7 is out of range"):
        Encoder(tiny_model_dir, layer=7)


def test_save_and_load_round_trip(encoder, tmp_path):
    encoder.save(tmp_path / "enc")
    again = Encoder.load(tmp_path / "enc")
    assert again.config_dict == encoder.config_dict
    torch.testing.assert_close(again.encode(TEXTS), encoder.encode(TEXTS))


def test_task_prompts_are_resolved_saved_and_checked(tiny_model_dir, tmp_path):
    own = 'This definition : "{text}" describes a kind of'
    encoder = Encoder(tiny_model_dir, task_prompts={"TaskA": "summary", "TaskB": own})
    assert encoder.task_prompts == {"TaskA": PROMPTS["summary"], "TaskB": own}
    encoder.save(tmp_path / "enc")
    assert Encoder.load(tmp_path / "enc").task_prompts == encoder.task_prompts
    assert Encoder(tiny_model_dir).config_dict["task_prompts"] is None
    for bad, message in (
        ({"TaskA": "no slot"}, "task_prompts\\['TaskA'\\]: prompt='no slot' is neither"),
        ({"": "summary"}, "map task names to prompt strings"),
        (["summary"], "must map mteb task names to prompts"),
    ):
        with pytest.raises(ValueError, match=message):
            Encoder(tiny_model_dir, task_prompts=bad)


def test_templates():
    assert set(PROMPTS) >= {"none", "prompteol", "clustering", "summary", "classification"}
    t = get_prompt('Q: {text} {braces}?'.replace("{braces}", "{{x}}"))
    assert t.apply("a {b}") == "Q: a {b} {{x}}?"
    with pytest.raises(ValueError, match="must contain"):
        PromptTemplate("no slot")
    with pytest.raises(ValueError, match="neither a built-in"):
        get_prompt("nonsense")


def test_user_prompts_yaml(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text('topic: "Topic of: {text}"\n')
    assert load_prompts(good)["topic"].apply("x") == "Topic of: x"
    bad = tmp_path / "bad.yaml"
    bad.write_text("topic: no slot here\n")
    with pytest.raises(UserError, match="must contain '{text}' once"):
        load_prompts(bad)


def test_missing_model_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="model folder .* not found"):
        Encoder(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="could not load model 'no-such-org/no-such-model'"):
        Encoder("no-such-org/no-such-model")


def test_encode_sorts_by_length_runs_in_inference_mode_and_keeps_input_order(encoder):
    """Fast encoding: length-sorted batches (little padding), inference mode, rows back in input order."""
    texts = ["a", "stocks fell sharply on monday and again on tuesday", "the cat", "a man is driving a car", "x y"]
    seen: list[tuple[int, bool]] = []

    def record(module, args, kwargs):
        seen.append((kwargs["attention_mask"].shape[1], torch.is_inference_mode_enabled()))

    handle = encoder.backbone.register_forward_pre_hook(record, with_kwargs=True)
    try:
        out = encoder.encode(texts, batch_size=2)
    finally:
        handle.remove()
    widths = [w for w, _ in seen]
    assert widths == sorted(widths, reverse=True) and all(inference for _, inference in seen)
    assert not out.requires_grad and out.device.type == "cpu"
    one_by_one = torch.cat([encoder.encode([t]) for t in texts])
    torch.testing.assert_close(out, one_by_one, atol=1e-5, rtol=1e-5)
    perm = [3, 0, 4, 1, 2]
    torch.testing.assert_close(encoder.encode([texts[i] for i in perm], batch_size=2), out[perm], atol=1e-5, rtol=1e-5)


# Texts that stress the tokenizer shortcut: ASCII around the cut, one token per character,
# non-ASCII (accents, emoji, CJK: several tokens per character), whitespace runs, braces.
ODD_TEXTS = [
    "",
    "a",
    "the cat sat",
    "!?" * 3 + "!",
    "!?" * 4,
    "!?" * 4 + "!",
    "1 2 3 4 5 6 7 8 9",
    "   spaces   inside\tand\nnewlines  ",
    "naïve café déjà vu",
    "🙂🙂🙂",
    "東京の天気は晴れ",
    "{text} with {braces}",
    "stocks fell sharply on monday " * 8,
]


def reference_truncate(tokenizer, texts: list[str], n: int) -> tuple[list[str], int]:
    """Truncation as transformers' own tokenizer call gives it: every text tokenized, cut after n tokens."""
    offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cut = [t[: o[n - 1][1]] if len(o) > n else t for t, o in zip(texts, offsets, strict=True)]
    return cut, sum(len(o) > n for o in offsets)


def check_tokenizer_shortcuts(enc: Encoder) -> None:
    templated = [enc.prompt.apply(t) for t in ODD_TEXTS]
    for texts, special in ((ODD_TEXTS, False), (templated, True)):
        ref = enc.tokenizer(texts, add_special_tokens=special, return_offsets_mapping=True)
        got = enc._encode(texts, special=special)
        assert [list(ids) for ids, _ in got] == [list(ids) for ids in ref["input_ids"]]
        assert [[tuple(o) for o in offs] for _, offs in got] == [
            [tuple(o) for o in offs] for offs in ref["offset_mapping"]
        ]
    for n in (1, 2, 7, 8, 9, 100):
        enc.max_text_tokens, enc.num_truncated = n, 0
        expected, count = reference_truncate(enc.tokenizer, ODD_TEXTS, n)
        assert enc.truncate(ODD_TEXTS) == expected
        assert enc.num_truncated == count
    batch = enc.tokenize(ODD_TEXTS)
    for row, mask, text in zip(batch["input_ids"], batch["attention_mask"], enc.truncate(ODD_TEXTS), strict=True):
        ids = enc.tokenizer(enc.prompt.apply(text))["input_ids"]
        assert row[mask.bool()].tolist() == list(ids)


def test_fast_tokenization_equals_transformers_tokenizer_call(tiny_model_dir):
    """The Rust-direct path and the ASCII truncation shortcut change no id, offset or cut."""
    check_tokenizer_shortcuts(Encoder(tiny_model_dir, prompt="clustering"))


@pytest.mark.slow
def test_fast_tokenization_equals_transformers_on_the_packaged_tokenizer():
    check_tokenizer_shortcuts(Encoder("smollm2-135m-instruct", prompt="prompteol"))


def test_constructor_arguments_are_listed_once(tiny_model_dir):
    """The saved description and the sentence-transformers module's keys derive from the signature."""
    import inspect

    from llm_embed.encoder import ENCODER_ARGS

    assert tuple(inspect.signature(Encoder.__init__).parameters)[1:] == ENCODER_ARGS
    encoder = Encoder(tiny_model_dir, pooling="mean", prompt="summary", max_text_tokens=7)
    config = encoder.config_dict
    assert tuple(config) == ENCODER_ARGS
    assert config["max_text_tokens"] == 7 and config["pooling"] == {"type": "mean"}
    encoder.set_pooling("last")  # a grid swaps the pooling: the description follows it
    assert encoder.config_dict["pooling"] == {"type": "last"}


def test_bf16_inference_is_close_to_float32_and_training_stays_exact(tiny_model_dir):
    texts = ["a cat sat on the mat", "stocks fell sharply today", "to move fast on foot"]
    exact = Encoder(tiny_model_dir, pooling="weighted_mean")
    fast = Encoder(tiny_model_dir, pooling="weighted_mean", inference_dtype="bfloat16")
    a, b = exact.encode(texts), fast.encode(texts)
    assert b.dtype == torch.float32 and not torch.equal(a, b)  # bf16 matmuls ran
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99
    batch = fast.tokenize(texts)
    torch.testing.assert_close(fast(batch), exact(batch))  # forward (training) is untouched
    assert fast.config_dict["inference_dtype"] == "bfloat16"  # saved with a run, reloaded by it
    with pytest.raises(ValueError, match="inference_dtype='fp8' is unknown"):
        Encoder(tiny_model_dir, inference_dtype="fp8")  # type: ignore[arg-type]


def test_an_echo_template_reads_the_text_twice_and_keeps_the_second_copy(tiny_model_dir):
    echo = get_prompt("clustering_echo")
    assert echo.apply("a {b}") == (
        'Rewrite the sentence : "a {b}" , rewritten sentence : "a {b}" belongs to the following cluster:'
    )
    lo, hi = echo.text_span("a {b}")
    assert echo.apply("a {b}")[lo:hi] == "a {b}" and lo > echo.apply("a {b}").index("a {b}")
    with pytest.raises(ValueError, match="once \\(or twice, to echo the text\\)"):
        PromptTemplate("{text} {text} {text}")
    enc = Encoder(tiny_model_dir, pooling="prompt_masked_mean", prompt="clustering_echo")
    text = "stocks fell sharply on monday"
    batch = enc.tokenize([text])
    ids, mask = batch["input_ids"][0], batch["prompt_mask"][0]
    text_ids = enc.tokenizer(text, add_special_tokens=False)["input_ids"]
    # the text's tokens are one contiguous run: the second copy's (the first counts as prompt)
    kept = ids[mask == 0].tolist()
    assert len(kept) == len(text_ids) and enc.tokenizer.decode(kept).strip() == text
    first_copy = enc.tokenizer.decode(ids[: (mask == 0).nonzero()[0].item()])
    assert text in first_copy
    plain = Encoder(tiny_model_dir, pooling="prompt_masked_mean").encode([text])
    assert not torch.allclose(enc.encode([text]), plain, atol=1e-4)  # the echo changes the states
