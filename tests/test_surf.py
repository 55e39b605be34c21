"""SURF (Park et al. 2022): temporal crops and pseudo-labels by hand, and how the reward fit uses them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhfkit.choice import bradley_terry_nll
from rlhfkit.feedback import Comparison, Fragment, make_teacher
from rlhfkit.reward import (
    RewardConfig,
    RewardEnsemble,
    comparisons_to_batch,
    crop_windows,
    fit_reward_ensemble,
    pseudo_labels,
    temporal_crop_masks,
    window_mask,
)
from rlhfkit.reward.ensemble import _member_losses

W = np.array([1.0, -2.0, 0.5, 1.5, -1.0])  # a linear true reward w · [o, a], obs_dim 4, act_dim 1


def _fragments(n: int, seed: int, T: int = 10) -> list[Fragment]:
    rng = np.random.default_rng(seed)
    obs, acts = rng.normal(size=(n, T, 4)), rng.uniform(-1.0, 1.0, size=(n, T, 1))
    return [Fragment(o, a, o @ W[:4] + a[:, 0] * W[4]) for o, a in zip(obs, acts)]


def _labelled(frags: list[Fragment]) -> list[Comparison]:
    teacher = make_teacher("oracle")
    pairs = list(zip(frags[0::2], frags[1::2]))
    return [Comparison(a, b, o, teacher.name) for (a, b), o in zip(pairs, teacher.label(pairs))]


def _features(model: RewardEnsemble, frags: list[Fragment]) -> torch.Tensor:
    return model.features(torch.from_numpy(np.stack([f.obs for f in frags])),
                          torch.from_numpy(np.stack([f.acts for f in frags])))


def test_window_mask_by_hand_and_its_errors():
    m = window_mask(torch.tensor([0, 2]), torch.tensor([3, 2]), 5)
    assert m.tolist() == [[1, 1, 1, 0, 0], [0, 0, 1, 1, 0]]
    assert window_mask(torch.tensor([[1]]), torch.tensor([[4]]), 5).tolist() == [[[0, 1, 1, 1, 1]]]
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\)"):
        window_mask(torch.tensor([3]), torch.tensor([3]), 5)  # steps 3, 4, 5: past the end
    with pytest.raises(ValueError, match="one shape"):
        window_mask(torch.tensor([0, 1]), torch.tensor([2]), 5)


def test_crop_windows_cover_exactly_the_allowed_windows():
    # T = 4, crop 1: L ∈ {3, 4}; L = 3 starts in {0, 1} on each side, L = 4 only at 0 → 5 outcomes
    lengths, sl, sr = crop_windows((4000,), 4, 1, torch.Generator().manual_seed(0))
    seen = set(zip(lengths.tolist(), sl.tolist(), sr.tolist()))
    assert seen == {(3, 0, 0), (3, 0, 1), (3, 1, 0), (3, 1, 1), (4, 0, 0)}
    assert abs(float((lengths == 3).float().mean()) - 0.5) < 0.05  # L uniform over {3, 4}
    # SURF's range on 50-step fragments with c = 5: windows of 45 … 50 steps that stay inside
    lengths, sl, sr = crop_windows((20, 50), 50, 5, torch.Generator().manual_seed(1))
    assert lengths.shape == (20, 50) and set(lengths.unique().tolist()) == set(range(45, 51))
    assert bool((sl >= 0).all() and (sl + lengths <= 50).all() and (sr + lengths <= 50).all())
    assert bool((sl != sr).any())  # the two sides start independently
    # crop 0: the whole fragment; a crop longer than the fragment still leaves one step
    lengths, sl, sr = crop_windows((7,), 6, 0)
    assert lengths.tolist() == [6] * 7 and sl.tolist() == [0] * 7 and sr.tolist() == [0] * 7
    assert int(crop_windows((100,), 3, 10)[0].min()) == 1
    with pytest.raises(ValueError, match="crop >= 0"):
        crop_windows((1,), 5, -1)


def test_temporal_crop_masks_give_both_sides_one_length():
    ml, mr = temporal_crop_masks((3, 8), 12, 4, torch.Generator().manual_seed(2))
    assert ml.shape == mr.shape == (3, 8, 12)
    torch.testing.assert_close(ml.sum(-1), mr.sum(-1))
    assert float(ml.sum(-1).min()) >= 8 and float(ml.sum(-1).max()) <= 12


def test_pseudo_labels_by_hand():
    # σ(ln 19) = 0.95, σ(ln 99) = 0.99, σ(ln 9) = 0.9: member returns R_l - R_r per pair (E = 2, B = 4)
    ln = math.log
    diff = torch.tensor([[ln(19), -ln(19), ln(19), ln(99)],
                         [ln(99), -ln(99), ln(9), -ln(99)]])
    target, keep, p = pseudo_labels(diff, torch.zeros(2, 4), 0.95)
    # P: (0.95 + 0.99) / 2 = 0.97, 0.03, (0.95 + 0.9) / 2 = 0.925, (0.99 + 0.01) / 2 = 0.5
    torch.testing.assert_close(p, torch.tensor([0.97, 0.03, 0.925, 0.5]))
    assert target.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert keep.tolist() == [True, True, False, False]  # 0.925 < 0.95; 0.5 is a coin flip
    assert pseudo_labels(diff, torch.zeros(2, 4), 0.9)[1].tolist() == [True, True, True, False]
    # a temperature of 2 halves every difference: σ(ln 19 / 2) ≈ 0.813
    assert pseudo_labels(diff, torch.zeros(2, 4), 0.95, temperature=2.0)[1].tolist() == [False] * 4
    with pytest.raises(ValueError, match=r"tau must lie in \(0.5, 1\]"):
        pseudo_labels(diff, torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match=r"\(E, B\)"):
        pseudo_labels(diff, torch.zeros(4), 0.95)


def test_cropped_member_losses_sum_each_fragment_over_its_window():
    torch.manual_seed(0)
    model = RewardEnsemble(4, 1, False, RewardConfig(ensemble_size=2, hidden_sizes=(8,)))
    batch = comparisons_to_batch(_labelled(_fragments(12, 0, T=6)), model)  # 6 pairs of 6 steps
    idx = torch.tensor([[0, 1, 2], [3, 4, 5]])  # (E, b)
    got = _member_losses(model, batch, idx, 2, torch.Generator().manual_seed(7))
    ml, mr = temporal_crop_masks((2, 3), 6, 2, torch.Generator().manual_seed(7))  # the same draws
    with torch.no_grad():
        rl = torch.stack([model.raw(batch.left_x[idx[e]])[e] for e in range(2)])  # (E, b, T)
        rr = torch.stack([model.raw(batch.right_x[idx[e]])[e] for e in range(2)])
    cfg = model.config
    want = bradley_terry_nll((rl * ml).sum(-1), (rr * mr).sum(-1), batch.target[idx], temperature=cfg.temperature,
                             epsilon=cfg.epsilon).mean(-1)
    torch.testing.assert_close(got.detach(), want)
    whole = _member_losses(model, batch, idx)  # crop 0: whole fragments
    assert not torch.allclose(whole, got)


def test_fit_with_crops_and_pseudo_labels_learns_and_reports():
    torch.manual_seed(0)
    model = RewardEnsemble(4, 1, False, RewardConfig())
    comparisons = _labelled(_fragments(300, 0))
    unl = _fragments(400, 1)
    metrics = fit_reward_ensemble(model, comparisons, seed=0, max_epochs=60, crop=3,
                                  unlabelled=(_features(model, unl[0::2]), _features(model, unl[1::2])))
    assert 0.0 < metrics["reward/pseudo_label_frac"] <= 1.0 and math.isfinite(metrics["reward/unlabelled_loss"])
    assert metrics["reward/val_accuracy"] >= 0.85
    held = _fragments(1000, 2)
    p = model.preference_probs(_features(model, held[0::2]), _features(model, held[1::2])).mean(0)
    truth = np.array([a.true_return > b.true_return for a, b in zip(held[0::2], held[1::2])])
    assert float(np.mean((p > 0.5).numpy() == truth)) >= 0.85


def test_only_confident_pseudo_labels_move_the_model():
    comparisons = _labelled(_fragments(40, 3))
    unl = _fragments(60, 4)

    def fit(**kw) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = RewardEnsemble(4, 1, False, RewardConfig(hidden_sizes=(16,)))
        x = (_features(model, unl[0::2]), _features(model, unl[1::2]))
        fit_reward_ensemble(model, comparisons, seed=0, max_epochs=5, crop=2, unlabelled=x, **kw)
        return model.state_dict()

    off = fit(unlabelled_weight=0.0)
    none_pass = fit(tau=1.0)  # no pair is certain: every unlabelled loss is masked out
    some_pass = fit(tau=0.6)
    for k in off:
        torch.testing.assert_close(none_pass[k], off[k])
    assert any(not torch.allclose(some_pass[k], off[k]) for k in off)


def test_fit_rejects_bad_surf_arguments():
    model = RewardEnsemble(4, 1, False, RewardConfig())
    comparisons = _labelled(_fragments(10, 5))
    x = _features(model, _fragments(4, 6))
    with pytest.raises(ValueError, match="crop and unlabelled_weight must be >= 0"):
        fit_reward_ensemble(model, comparisons, crop=-1)
    with pytest.raises(ValueError, match="tau must lie"):
        fit_reward_ensemble(model, comparisons, unlabelled=(x, x), tau=0.3)
    with pytest.raises(ValueError, match=r"two \(U, T, D\) tensors with \(T, D\) = \(10, 5\)"):
        fit_reward_ensemble(model, comparisons, unlabelled=(x[:, :5], x[:, :5]))
