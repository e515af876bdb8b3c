"""Each pooling strategy against values computed by hand, for both padding sides."""

from __future__ import annotations

import pytest
import torch

from llm_embed.pooling import POOLING_MODES, Pooling, from_config, last_index

# Two rows, T=4, H=2. Row 0 has 3 real tokens, row 1 has 2. Right padding puts them first.
TOKENS = [
    [[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]],
    [[2.0, 0.0], [4.0, 6.0]],
]
# Prompt flags on the real tokens (1 = template token): row 0's first token, row 1's second.
PROMPT = [[1, 0, 0], [0, 1]]
PAD = [7.0, 7.0]  # padding states must never leak into a result


def make_batch(side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    T = 4
    hidden = torch.tensor([PAD] * T).repeat(2, 1, 1).clone()  # (B, T, H)
    mask = torch.zeros(2, T, dtype=torch.long)
    prompt = torch.ones(2, T, dtype=torch.long)
    for i, (row, flags) in enumerate(zip(TOKENS, PROMPT, strict=True)):
        n = len(row)
        sl = slice(0, n) if side == "right" else slice(T - n, T)
        hidden[i, sl] = torch.tensor(row)
        mask[i, sl] = 1
        prompt[i, sl] = torch.tensor(flags)
    return hidden, mask, prompt


EXPECTED = {
    "mean": [[3.0, 5.0], [3.0, 3.0]],
    # weights 1,2,3 and 1,2
    "weighted_mean": [[(1 + 6 + 15) / 6, (2 + 8 + 27) / 6], [(2 + 8) / 3, (0 + 12) / 3]],
    "last": [[5.0, 9.0], [4.0, 6.0]],
    "eos": [[5.0, 9.0], [4.0, 6.0]],
    "prompt_masked_mean": [[4.0, 6.5], [2.0, 0.0]],
    "max": [[5.0, 9.0], [4.0, 6.0]],
    "last_mean": [[5.0, 9.0, 3.0, 5.0], [4.0, 6.0, 3.0, 3.0]],
    # (weighted_mean / |weighted_mean| + last / |last|) / 2
    "weighted_mean_last": [
        [(22 / 1853**0.5 + 5 / 106**0.5) / 2, (37 / 1853**0.5 + 9 / 106**0.5) / 2],
        [(10 / 244**0.5 + 4 / 52**0.5) / 2, (12 / 244**0.5 + 6 / 52**0.5) / 2],
    ],
}


def test_every_mode_has_an_expected_value():
    assert set(EXPECTED) == set(POOLING_MODES)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pooling_matches_hand_computation(name, side):
    hidden, mask, prompt = make_batch(side)
    before = (hidden.clone(), mask.clone(), prompt.clone())
    out = from_config(name)(hidden, mask, prompt_mask=prompt)
    torch.testing.assert_close(out, torch.tensor(EXPECTED[name]))
    # no input mutation
    for a, b in zip(before, (hidden, mask, prompt), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(POOLING_MODES))
def test_config_round_trip(name):
    pooling = from_config(name)
    assert isinstance(pooling, Pooling)
    again = from_config(pooling.to_config())
    assert type(again) is type(pooling) and again.to_config() == pooling.to_config()


def test_last_index_both_sides():
    for side, expected in (("right", [2, 1]), ("left", [3, 3])):
        _, mask, _ = make_batch(side)
        assert last_index(mask).tolist() == expected


def test_prompt_masked_mean_falls_back_when_text_is_empty():
    hidden, mask, _ = make_batch("right")
    all_prompt = torch.ones_like(mask)
    out = from_config("prompt_masked_mean")(hidden, mask, prompt_mask=all_prompt)
    torch.testing.assert_close(out, torch.tensor(EXPECTED["mean"]))


def test_unknown_pooling_names_the_choices():
    with pytest.raises(ValueError, match="pooling='cls' is unknown; use one of mean"):
        from_config("cls")


def test_prompt_masked_mean_needs_a_prompt_mask():
    hidden, mask, _ = make_batch("right")
    with pytest.raises(ValueError, match="needs prompt_mask"):
        from_config("prompt_masked_mean")(hidden, mask)
