"""Fragments from rollouts, and which pairs of them to ask the teacher about.

Christiano et al. (2017, §2.2.4): sample many candidate pairs of fixed-length trajectory
fragments, and query those on which the reward ensemble disagrees most — the variance across
members of ``P[σ¹ ≻ σ²]`` — among ``oversample × n`` candidates (the paper: 10×). PEBBLE's
entropy sampling (Lee et al. 2021, §4.3; B-Pref) instead takes the pairs whose mean predicted
preference is closest to a coin flip (the largest binary entropy).

Fragments are cut from anything with time-ordered ``(T, N, ...)`` arrays ``obs``, ``env_actions``,
``true_rewards`` and ``episode_end``: a PPO :class:`~rlhfkit.control.ppo.Rollout`, or the replay
buffer's :class:`~rlhfkit.control.sac.Trajectories`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import torch

from rlhfkit.control.ppo import Rollout
from rlhfkit.control.sac import Trajectories
from rlhfkit.feedback.records import Fragment
from rlhfkit.reward.ensemble import RewardEnsemble

__all__ = ["QuerySelector", "SELECTORS", "select_queries", "sample_fragments"]

Pair = tuple[Fragment, Fragment]
QuerySelection = Literal["random", "disagreement", "entropy"]


def sample_fragments(rollout: Rollout | Trajectories, length: int, count: int, rng: np.random.Generator) -> list[Fragment]:
    """Cut ``count`` fragments of ``length`` steps from a rollout, never across an episode end.

    A start ``(t, n)`` is drawn uniformly among all positions whose next ``length`` steps in env
    ``n`` lie within one episode (fragments may overlap).

    Raises:
        ValueError: if no window of ``length`` steps fits in any episode piece of the rollout.
    """
    T, N = rollout.episode_end.shape
    if length < 1:
        raise ValueError(f"fragment length must be >= 1, got {length}")
    # an episode end at step t means t+1 starts a new episode; a window [t, t+length) is valid
    # iff no episode ends at steps t .. t+length-2.
    ends = rollout.episode_end.astype(np.int64)  # (T, N)
    cum = np.vstack([np.zeros((1, N), np.int64), np.cumsum(ends, axis=0)])  # (T+1, N)
    starts = np.arange(T - length + 1)
    if len(starts) == 0:
        raise ValueError(f"fragment length {length} exceeds the rollout length {T}")
    crossing = cum[starts + length - 1] - cum[starts]  # ends within [t, t+length-2]
    valid_t, valid_n = np.nonzero(crossing == 0)
    if len(valid_t) == 0:
        raise ValueError(f"no fragment of {length} steps fits inside one episode of the rollout")
    pick = rng.integers(len(valid_t), size=count)
    out = []
    for t, n in zip(valid_t[pick], valid_n[pick]):
        sl = slice(t, t + length)
        out.append(Fragment(obs=rollout.obs[sl, n], acts=rollout.env_actions[sl, n],
                            true_rewards=rollout.true_rewards[sl, n], start=int(t)))
    return out


class QuerySelector(Protocol):
    """Chooses ``n`` of the candidate pairs to show the teacher."""

    def __call__(self, candidates: Sequence[Pair], n: int, model: RewardEnsemble,
                 rng: np.random.Generator) -> list[Pair]: ...


def _random(candidates: Sequence[Pair], n: int, model: RewardEnsemble, rng: np.random.Generator) -> list[Pair]:
    idx = rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)
    return [candidates[i] for i in idx]


def _probs(candidates: Sequence[Pair], model: RewardEnsemble) -> torch.Tensor:
    """``P_e[left ≻ right]`` of every member for every candidate, ``(E, B)``."""
    left = model.features(torch.from_numpy(np.stack([a.obs for a, _ in candidates])),
                          torch.from_numpy(np.stack([a.acts for a, _ in candidates])))
    right = model.features(torch.from_numpy(np.stack([b.obs for _, b in candidates])),
                           torch.from_numpy(np.stack([b.acts for _, b in candidates])))
    return model.preference_probs(left, right)


def _disagreement(candidates: Sequence[Pair], n: int, model: RewardEnsemble, rng: np.random.Generator) -> list[Pair]:
    p = _probs(candidates, model)  # (E, B)
    score = p.var(0).numpy() if p.shape[0] > 1 else rng.random(len(candidates))
    order = np.argsort(-score, kind="stable")[:n]
    return [candidates[i] for i in order]


def _entropy(candidates: Sequence[Pair], n: int, model: RewardEnsemble, rng: np.random.Generator) -> list[Pair]:
    p = _probs(candidates, model).mean(0).clamp(1e-6, 1 - 1e-6)  # (B,) the ensemble's P[left ≻ right]
    score = -(p * p.log() + (1 - p) * (1 - p).log()).numpy()
    order = np.argsort(-score, kind="stable")[:n]
    return [candidates[i] for i in order]


SELECTORS: dict[str, QuerySelector] = {"random": _random, "disagreement": _disagreement, "entropy": _entropy}


def select_queries(
    rollout: Rollout | Trajectories,
    n: int,
    *,
    model: RewardEnsemble,
    fragment_length: int,
    method: QuerySelection = "disagreement",
    oversample: int = 10,
    rng: np.random.Generator,
) -> list[Pair]:
    """Sample ``oversample × n`` candidate pairs from ``rollout`` and keep ``n`` by ``method``.

    Raises:
        ValueError: for an unknown method or ``oversample < 1``.
    """
    if method not in SELECTORS:
        raise ValueError(f"unknown query selection {method!r}; choose one of {', '.join(SELECTORS)}")
    if oversample < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    if n <= 0:
        return []
    m = n * (oversample if method != "random" else 1)
    frags = sample_fragments(rollout, fragment_length, 2 * m, rng)
    candidates = list(zip(frags[0::2], frags[1::2]))
    return SELECTORS[method](candidates, n, model, rng)
