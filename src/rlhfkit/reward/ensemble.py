"""Reward models for control: an ensemble of MLPs r̂(o, a) fitted on fragment comparisons.

Christiano et al. (2017, §2.2.3): each of ``E`` members is fitted with the Bradley-Terry loss
(:func:`rlhfkit.choice.bradley_terry_nll`) on the summed predicted reward of two fragments, on a
bootstrap resample of the comparisons, with L2 regularisation and a held-out validation split;
each member's output is normalised to mean 0 and standard deviation 1 on recent rollouts, and
the agent is given the mean of the normalised members. Ensemble disagreement (the variance
across members of ``P[σ¹ ≻ σ²]``) drives query selection (§2.2.4).

Shapes: ``E`` members, ``B`` comparisons, ``T`` steps per fragment, ``N`` transitions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlhfkit.choice import bradley_terry_logprob, bradley_terry_nll
from rlhfkit.feedback.records import Comparison
from rlhfkit.reward.surf import pseudo_labels, temporal_crop_masks

__all__ = ["ComparisonBatch", "RewardConfig", "RewardEnsemble", "fit_reward_ensemble"]


@dataclass(frozen=True)
class RewardConfig:
    """How the control reward ensemble is built and fitted (defaults: Christiano et al. 2017)."""

    ensemble_size: int = 3
    """Members ``E``; the paper uses 3."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of each member; the paper uses two layers of 64 (leaky ReLU)."""
    lr: float = 3e-3
    """Adam learning rate."""
    weight_decay: float = 1e-4
    """Decoupled weight decay (AdamW), the L2 regularisation of §2.2.3."""
    batch_size: int = 64
    """Comparisons per gradient step."""
    max_epochs: int = 200
    """Upper bound on passes over the (bootstrapped) training comparisons per fit."""
    patience: int = 10
    """Stop when validation loss has not improved for this many epochs (early stopping)."""
    val_frac: float = 0.2
    """Fraction of comparisons held out for validation (fixed per comparison index)."""
    epsilon: float = 0.1
    """Christiano's noise floor ε in the Bradley-Terry likelihood: P = (1-ε)σ(ΔR) + ε/2."""
    temperature: float = 1.0
    """Boltzmann temperature τ of the likelihood."""
    bootstrap: bool = True
    """Fit each member on its own bootstrap resample of the training comparisons."""


@dataclass(frozen=True)
class ComparisonBatch:
    """Comparisons as tensors: ``left_x, right_x (B, T, D)`` inputs, ``target (B,)`` in [0, 1]."""

    left_x: Tensor
    right_x: Tensor
    target: Tensor

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def index(self, idx: Tensor) -> ComparisonBatch:
        """The sub-batch at indices ``idx``."""
        return ComparisonBatch(self.left_x[idx], self.right_x[idx], self.target[idx])


class _EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied as one batched matmul: ``(E, N, i) → (E, N, o)``."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        """``(E, N, i) → (E, N, o)``."""
        return torch.baddbmm(self.bias, x, self.weight)


class RewardEnsemble(nn.Module):
    """``E`` MLPs ``r̂_e(o, a)`` evaluated together, with input and output normalisation.

    Inputs are the concatenation of the observation and the action (one-hot for discrete
    actions), standardised with statistics set by :meth:`set_input_stats`. Raw member outputs are
    what the Bradley-Terry loss sees; :meth:`reward` returns the mean over members of the outputs
    normalised by :meth:`normalize_outputs` (mean 0, std 1 on recent transitions), which is what
    the agent is trained on.

    Args:
        obs_dim: observation size.
        act_dim: action size (continuous) or number of actions (discrete).
        discrete: whether actions are integer indices to one-hot encode.
        config: :class:`RewardConfig`.
    """

    def __init__(self, obs_dim: int, act_dim: int, discrete: bool, config: RewardConfig = RewardConfig()) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.discrete, self.config = obs_dim, act_dim, discrete, config
        E, sizes = config.ensemble_size, (obs_dim + act_dim, *config.hidden_sizes, 1)
        self.layers = nn.ModuleList(_EnsembleLinear(E, i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.register_buffer("in_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("out_mean", torch.zeros(E))
        self.register_buffer("out_std", torch.ones(E))

    @property
    def ensemble_size(self) -> int:
        """Number of members ``E``."""
        return self.config.ensemble_size

    def features(self, obs: Tensor, acts: Tensor) -> Tensor:
        """Concatenate ``obs (..., obs_dim)`` and ``acts (..., act_dim)`` or ``(...,)`` → ``(..., D)``."""
        if self.discrete:
            acts = F.one_hot(acts.long(), self.act_dim).to(obs.dtype)
        elif acts.ndim == obs.ndim - 1:
            acts = acts.unsqueeze(-1)
        return torch.cat([obs, acts.to(obs.dtype)], dim=-1)

    def raw(self, x: Tensor) -> Tensor:
        """Raw member outputs for features ``x (..., D)`` → ``(E, ...)``."""
        lead = x.shape[:-1]
        flat = x.reshape(1, -1, x.shape[-1]).expand(self.ensemble_size, -1, -1)  # (E, N, D)
        return self.raw_per_member(flat).reshape(self.ensemble_size, *lead)

    def raw_per_member(self, x: Tensor) -> Tensor:
        """Raw outputs where member ``e`` sees its own inputs ``x[e]``: ``(E, N, D) → (E, N)``."""
        h = (x - self.in_mean) / self.in_std
        for i, layer in enumerate(self.layers):
            h = layer(h)  # (E, N, width)
            if i < len(self.layers) - 1:
                h = F.leaky_relu(h, 0.01)
        return h.squeeze(-1)

    @torch.no_grad()
    def reward(self, obs: Tensor, acts: Tensor) -> Tensor:
        """The agent's reward: mean over members of normalised ``r̂_e(o, a)``; ``(N,)`` for ``(N, ·)``."""
        r = self.raw(self.features(obs, acts))  # (E, N)
        shape = (-1,) + (1,) * (r.ndim - 1)
        return ((r - self.out_mean.view(shape)) / self.out_std.view(shape)).mean(0)

    @torch.no_grad()
    def set_input_stats(self, x: Tensor) -> None:
        """Standardise inputs with the mean/std of features ``x (N, D)`` (e.g. the first rollouts)."""
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(x.std(0).clamp_min(1e-3))

    @torch.no_grad()
    def normalize_outputs(self, x: Tensor) -> None:
        """Set each member's output shift/scale to mean 0, std 1 over features ``x (N, D)``."""
        r = self.raw(x)  # (E, N)
        self.out_mean.copy_(r.mean(1))
        self.out_std.copy_(r.std(1).clamp_min(1e-6))

    def fragment_returns(self, x: Tensor) -> Tensor:
        """Summed raw reward of fragments ``x (B, T, D)`` for every member → ``(E, B)``."""
        return self.raw(x).sum(-1)

    @torch.no_grad()
    def preference_probs(self, left_x: Tensor, right_x: Tensor) -> Tensor:
        """``P_e[left ≻ right]`` per member, ``(E, B)``, without the noise floor."""
        rl, rr = self.fragment_returns(left_x), self.fragment_returns(right_x)
        return bradley_terry_logprob(rl, rr, temperature=self.config.temperature)[0].exp()


def comparisons_to_batch(comparisons: Sequence[Comparison], model: RewardEnsemble) -> ComparisonBatch:
    """Stack comparisons into tensors, dropping those without a training label (skips).

    Raises:
        ValueError: if no comparison has a usable label or fragments differ in length.
    """
    kept = [c for c in comparisons if c.outcome.target is not None]  # SKIP, CANT_TELL carry no label
    if not kept:
        raise ValueError("no usable comparisons (all were skipped / can't tell, or the list is empty)")
    lengths = {len(c.left) for c in kept}
    if len(lengths) != 1:
        raise ValueError(f"all fragments must have one length to batch, got lengths {sorted(lengths)}")

    def side(attr: str) -> Tensor:
        obs = torch.from_numpy(np.stack([getattr(c, attr).obs for c in kept]))
        acts = torch.from_numpy(np.stack([getattr(c, attr).acts for c in kept]))
        return model.features(obs, acts)

    target = torch.tensor([c.outcome.target for c in kept], dtype=torch.float32)
    return ComparisonBatch(side("left"), side("right"), target)


def _member_losses(model: RewardEnsemble, batch: ComparisonBatch, idx: Tensor, crop: int = 0,
                   generator: torch.Generator | None = None) -> Tensor:
    """Mean BT loss of each member on its own indices ``idx (E, b)`` → ``(E,)``; with ``crop > 0`` each
    fragment's return is summed over a random crop window (:func:`rlhfkit.reward.surf.temporal_crop_masks`)."""
    E, b = idx.shape
    left, right = batch.left_x[idx], batch.right_x[idx]  # (E, b, T, D)
    T, D = left.shape[2:]
    # every member sees its own rows: run member e on rows idx[e] via the batched layers
    rl = model.raw_per_member(left.reshape(E, b * T, D)).reshape(E, b, T)
    rr = model.raw_per_member(right.reshape(E, b * T, D)).reshape(E, b, T)
    if crop > 0:
        mask_l, mask_r = temporal_crop_masks((E, b), T, crop, generator)  # (E, b, T) each
        rl, rr = rl * mask_l, rr * mask_r
    cfg = model.config
    nll = bradley_terry_nll(rl.sum(-1), rr.sum(-1), batch.target[idx], temperature=cfg.temperature,
                            epsilon=cfg.epsilon)  # (E, b)
    return nll.mean(-1)


def _unlabelled_losses(model: RewardEnsemble, left_x: Tensor, right_x: Tensor, tau: float, crop: int,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """SURF's unlabelled loss of each member (Park et al. 2022, Eq. 6) on pairs ``(b, T, D)`` that every
    member sees: pseudo-labels from the ensemble's mean preference on the whole fragments, the loss on
    cropped ones, masked by confidence and averaged over all ``b`` pairs → ``((E,), keep (b,))``."""
    b, T, D = left_x.shape
    E = model.ensemble_size
    rl, rr = model.raw(left_x), model.raw(right_x)  # (E, b, T)
    target, keep, _ = pseudo_labels(rl.detach().sum(-1), rr.detach().sum(-1), tau,
                                    temperature=model.config.temperature)
    if crop > 0:
        mask_l, mask_r = temporal_crop_masks((E, b), T, crop, generator)
        rl, rr = rl * mask_l, rr * mask_r
    cfg = model.config
    nll = bradley_terry_nll(rl.sum(-1), rr.sum(-1), target.expand(E, b), temperature=cfg.temperature,
                            epsilon=cfg.epsilon)  # (E, b)
    return (nll * keep).mean(-1), keep


@torch.no_grad()
def evaluate_reward_ensemble(model: RewardEnsemble, batch: ComparisonBatch) -> dict[str, float]:
    """Loss, accuracy against the labels (ties excluded) and disagreement on ``batch``.

    Accuracy is that of the ensemble mean's preference ``mean_e P_e > 0.5`` on non-tied labels;
    disagreement is the mean over pairs of the standard deviation across members of ``P_e``.
    """
    cfg = model.config
    rl, rr = model.fragment_returns(batch.left_x), model.fragment_returns(batch.right_x)  # (E, B)
    loss = bradley_terry_nll(rl, rr, batch.target.expand_as(rl), temperature=cfg.temperature, epsilon=cfg.epsilon)
    p = bradley_terry_logprob(rl, rr, temperature=cfg.temperature)[0].exp()  # (E, B)
    decided = batch.target != 0.5
    pred = p.mean(0) > 0.5
    acc = (pred[decided] == (batch.target[decided] > 0.5)).float().mean().item() if decided.any() else float("nan")
    return {"loss": loss.mean().item(), "accuracy": acc, "disagreement": p.std(0).mean().item() if p.shape[0] > 1 else 0.0}


def fit_reward_ensemble(
    model: RewardEnsemble,
    comparisons: Sequence[Comparison],
    *,
    seed: int = 0,
    max_epochs: int | None = None,
    crop: int = 0,
    unlabelled: tuple[Tensor, Tensor] | None = None,
    tau: float = 0.95,
    unlabelled_weight: float = 1.0,
) -> dict[str, float]:
    """Fit every member with the Bradley-Terry loss, early-stopping on a validation split.

    Comparison ``i`` is in the validation split when a fixed seeded draw ``u_i < val_frac``
    (stable as comparisons are appended). Each member trains on its own bootstrap resample of the
    training split (Christiano et al. 2017, §2.2.3), with AdamW (weight decay = L2), for at most
    ``max_epochs`` epochs, stopping when the mean validation loss has not improved for
    ``patience`` epochs; the best weights are kept.

    SURF (Park et al. 2022, :mod:`rlhfkit.reward.surf`) adds two things, both off by default:
    ``crop > 0`` sums every training fragment's reward over a random crop window (§4.2; validation
    sees whole fragments), and ``unlabelled`` pairs add ``unlabelled_weight``-weighted (SURF's ``λ``)
    pseudo-label losses (§4.1, Eq. 6): each gradient step draws as many unlabelled pairs as the
    labelled minibatch holds (SURF's ``μ = 1``), labels them with the ensemble's confident mean
    preference (``≥ tau``) on the whole fragments and fits the cropped ones.

    Args:
        model: the ensemble; fitted in place (keeps its weights between calls: warm start).
        comparisons: labelled pairs; SKIP outcomes are ignored.
        seed: seed of the split, the bootstrap, minibatch order and crops.
        max_epochs: override of ``config.max_epochs``.
        crop: ``c ≥ 0``, crop windows of ``T - c … T`` steps (0: whole fragments).
        unlabelled: ``(left_x, right_x)``, ``(U, T, D)`` features (:meth:`RewardEnsemble.features`) of
            unlabelled pairs, or None.
        tau: pseudo-label confidence threshold in ``(0.5, 1]``.
        unlabelled_weight: ``λ ≥ 0``, the weight of the unlabelled loss.

    Returns:
        Metrics ``reward/train_loss``, ``reward/val_loss``, ``reward/val_accuracy``,
        ``reward/disagreement``, ``reward/epochs``, ``reward/n_train``, ``reward/n_val``; with
        ``unlabelled``, also ``reward/unlabelled_loss`` and ``reward/pseudo_label_frac`` (the
        fraction of drawn unlabelled pairs that passed the threshold).

    Raises:
        ValueError: if there are no usable comparisons, ``crop < 0``, ``unlabelled_weight < 0``, ``tau``
            outside ``(0.5, 1]``, or the unlabelled pairs are not ``(U, T, D)`` like the labelled ones.
    """
    cfg = model.config
    if crop < 0 or unlabelled_weight < 0:
        raise ValueError(f"crop and unlabelled_weight must be >= 0, got {crop} and {unlabelled_weight}")
    if unlabelled is not None and not 0.5 < tau <= 1.0:
        raise ValueError(f"tau must lie in (0.5, 1], got {tau}")
    batch = comparisons_to_batch(comparisons, model)
    if unlabelled is not None and (unlabelled[0].shape != unlabelled[1].shape or unlabelled[0].ndim != 3
                                   or unlabelled[0].shape[1:] != batch.left_x.shape[1:]):
        raise ValueError(f"unlabelled pairs must be two (U, T, D) tensors with (T, D) = "
                         f"{tuple(batch.left_x.shape[1:])}, got {tuple(unlabelled[0].shape)} and "
                         f"{tuple(unlabelled[1].shape)}")
    if unlabelled is not None and len(unlabelled[0]) == 0:
        unlabelled = None
    n = len(batch)
    u = np.random.default_rng(10_000 + seed).random(n)
    val_mask = u < cfg.val_frac
    if val_mask.all() or n < 5:
        val_mask[:] = False
    val_idx = torch.from_numpy(np.flatnonzero(val_mask))
    train_idx = torch.from_numpy(np.flatnonzero(~val_mask))
    train, val = batch.index(train_idx), batch.index(val_idx) if len(val_idx) else None
    gen = torch.Generator().manual_seed(seed)
    E, m = model.ensemble_size, len(train)
    opt = torch.optim.AdamW(model.layers.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, since_best, epochs = math.inf, None, 0, 0
    boot = torch.randint(m, (E, m), generator=gen) if cfg.bootstrap else torch.arange(m).expand(E, m)
    train_loss = math.nan
    u_loss, u_kept, u_drawn = 0.0, 0, 0
    for epoch in range(max_epochs or cfg.max_epochs):
        perm = boot.gather(1, torch.argsort(torch.rand(E, m, generator=gen), dim=1))  # (E, m)
        total = 0.0
        for start in range(0, m, cfg.batch_size):
            idx = perm[:, start : start + cfg.batch_size]
            loss = _member_losses(model, train, idx, crop, gen).sum()
            total += loss.item() * idx.shape[1]
            if unlabelled is not None:
                pick = torch.randint(len(unlabelled[0]), (idx.shape[1],), generator=gen)
                ul, keep = _unlabelled_losses(model, unlabelled[0][pick], unlabelled[1][pick], tau, crop, gen)
                loss = loss + unlabelled_weight * ul.sum()
                u_loss += ul.sum().item() * idx.shape[1]
                u_kept, u_drawn = u_kept + int(keep.sum()), u_drawn + keep.numel()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        train_loss = total / (E * m)
        epochs = epoch + 1
        if val is None:
            continue
        val_loss = evaluate_reward_ensemble(model, val)["loss"]
        if val_loss < best - 1e-4:
            best, since_best = val_loss, 0
            best_state = {k: v.clone() for k, v in model.layers.state_dict().items()}
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    if best_state is not None:
        model.layers.load_state_dict(best_state)
    metrics = {"reward/train_loss": train_loss, "reward/epochs": float(epochs), "reward/n_train": float(m),
               "reward/n_val": float(len(val_idx))}
    if unlabelled is not None:
        metrics.update({"reward/unlabelled_loss": u_loss / max(E * u_drawn, 1),
                        "reward/pseudo_label_frac": u_kept / max(u_drawn, 1)})
    if val is not None:
        ev = evaluate_reward_ensemble(model, val)
        metrics.update({"reward/val_loss": ev["loss"], "reward/val_accuracy": ev["accuracy"],
                        "reward/disagreement": ev["disagreement"]})
    return metrics
