"""InfoNCE against a reference computation written out longhand."""

from __future__ import annotations

import math

import pytest
import torch

from llm_embed.losses import InfoNCELoss, false_negatives, info_nce


def reference_info_nce(a, c, tau, offset=0):
    """-1/B Σ_i log softmax_j(cos(a_i, c_j)/τ)[i + offset], one loop at a time."""
    total = 0.0
    for i in range(a.size(0)):
        sims = [
            torch.nn.functional.cosine_similarity(a[i], c[j], dim=0).item() / tau
            for j in range(c.size(0))
        ]
        log_z = math.log(sum(math.exp(s) for s in sims))
        total += -(sims[i + offset] - log_z)
    return total / a.size(0)


@pytest.mark.parametrize("tau", [0.05, 0.2, 1.0])
def test_info_nce_equals_reference(tau):
    g = torch.Generator().manual_seed(0)
    a, c = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    assert info_nce(a, c, temperature=tau).item() == pytest.approx(
        reference_info_nce(a, c, tau), rel=1e-5
    )


def test_offset_picks_the_right_candidate_block():
    g = torch.Generator().manual_seed(1)
    a, c = torch.randn(3, 4, generator=g), torch.randn(9, 4, generator=g)
    got = info_nce(a, c, temperature=0.2, offset=3).item()
    assert got == pytest.approx(reference_info_nce(a, c, 0.2, offset=3), rel=1e-5)


def test_perfect_pairs_score_low_and_scale_does_not_matter():
    a = torch.eye(4)
    low = info_nce(a, a * 5.0, temperature=0.05).item()
    high = info_nce(a, a.roll(1, dims=0), temperature=0.05).item()
    assert low < 1e-6 < high


def test_symmetric_is_the_mean_of_both_directions():
    g = torch.Generator().manual_seed(2)
    a, c = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    both = InfoNCELoss(0.2, symmetric=True)(a, c).item()
    assert both == pytest.approx((info_nce(a, c).item() + info_nce(c, a).item()) / 2, rel=1e-6)


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature=0"):
        InfoNCELoss(temperature=0)


@pytest.mark.parametrize("symmetric", [False, True])
def test_gather_on_one_process_is_the_plain_loss(symmetric):
    g = torch.Generator().manual_seed(3)
    a, c = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    gathered = InfoNCELoss(0.2, symmetric=symmetric, gather=True)(a, c)
    assert gathered.item() == pytest.approx(
        InfoNCELoss(0.2, symmetric=symmetric)(a, c).item(), rel=1e-6
    )


def test_symmetric_needs_one_candidate_per_anchor():
    with pytest.raises(ValueError, match="as many candidates as anchors"):
        info_nce(torch.randn(2, 3), torch.randn(4, 3), symmetric=True)


def test_global_batch_loss_is_the_mean_of_per_rank_losses_against_gathered_candidates():
    """What each DDP rank computes: its anchors against all candidates, positive at offset rank*B."""
    g = torch.Generator().manual_seed(4)
    a, c = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    per_rank = [info_nce(a[r * 3 : (r + 1) * 3], c, offset=r * 3) for r in range(2)]
    assert (sum(per_rank) / 2).item() == pytest.approx(info_nce(a, c).item(), rel=1e-6)


def test_matryoshka_is_the_mean_over_renormalised_slices():
    g = torch.Generator().manual_seed(5)
    a, c = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    plain = InfoNCELoss(0.1)(a, c)
    assert InfoNCELoss(0.1, matryoshka_dims=[8])(a, c).item() == pytest.approx(
        plain.item(), rel=1e-6
    )
    got = InfoNCELoss(0.1, matryoshka_dims=[2, 8, 4])(a, c)  # any order: the slices count once each
    want = sum(reference_info_nce(a[:, :d], c[:, :d], 0.1) for d in (8, 4, 2)) / 3
    assert got.item() == pytest.approx(want, rel=1e-5)
    for bad in ([], [0, 4], [4.5], True):
        with pytest.raises(ValueError, match="matryoshka_dims"):
            InfoNCELoss(0.1, matryoshka_dims=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="more than the 8 dimensions"):
        InfoNCELoss(0.1, matryoshka_dims=[16, 4])(a, c)


def reference_guided(a, c, g_a, g_c, tau, margin=0.0):
    """InfoNCE where anchor i's softmax skips every j != i with guide cos(a_i, c_j) > cos(a_i, c_i) - margin."""
    total = 0.0
    for i in range(a.size(0)):
        cos = torch.nn.functional.cosine_similarity
        pos = cos(g_a[i], g_c[i], dim=0).item()
        kept = [
            j
            for j in range(c.size(0))
            if j == i or cos(g_a[i], g_c[j], dim=0).item() <= pos - margin
        ]
        sims = {j: cos(a[i], c[j], dim=0).item() / tau for j in kept}
        total += -(sims[i] - math.log(sum(math.exp(s) for s in sims.values())))
    return total / a.size(0)


@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_guide_leaves_out_the_negatives_it_ranks_above_the_positive(margin):
    g = torch.Generator().manual_seed(6)
    a, c = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    g_a, g_c = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    got = InfoNCELoss(0.1, guide_margin=margin)(a, c, guide=(g_a, g_c)).item()
    assert got == pytest.approx(reference_guided(a, c, g_a, g_c, 0.1, margin), rel=1e-5)
    # random guide vectors rank some negative above some positive: fewer terms, a lower loss
    assert got < info_nce(a, c, temperature=0.1).item()


def test_a_guide_that_ranks_every_positive_first_changes_nothing():
    g = torch.Generator().manual_seed(7)
    a, c = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    guide = (torch.eye(5), torch.eye(5))  # each positive is the only similar candidate
    assert InfoNCELoss(0.2)(a, c, guide=guide).item() == pytest.approx(
        info_nce(a, c, temperature=0.2).item(), rel=1e-6
    )


def test_false_negative_mask_keeps_the_positive_and_grows_with_the_margin():
    sims = torch.tensor([[0.5, 0.6, 0.4], [0.9, 0.2, 0.1]])
    labels = torch.tensor([0, 1])
    assert false_negatives(sims, labels, 0.0).tolist() == [
        [False, True, False],
        [True, False, False],
    ]
    assert false_negatives(sims, labels, 0.15).tolist() == [
        [False, True, True],
        [True, False, True],
    ]


def test_guided_symmetric_loss_masks_each_direction_with_its_own_guide_scores():
    g = torch.Generator().manual_seed(8)
    a, c = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    g_a, g_c = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    got = InfoNCELoss(0.2, symmetric=True)(a, c, guide=(g_a, g_c)).item()
    want = (reference_guided(a, c, g_a, g_c, 0.2) + reference_guided(c, a, g_c, g_a, 0.2)) / 2
    assert got == pytest.approx(want, rel=1e-5)
    gathered = InfoNCELoss(0.2, symmetric=True, gather=True)(a, c, guide=(g_a, g_c)).item()
    assert gathered == pytest.approx(got, rel=1e-6)
