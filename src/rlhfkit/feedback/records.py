"""Feedback records: trajectory fragments and the labels a teacher gives about them.

Records are frozen dataclasses that check their shapes on construction, so a malformed record
fails where it is made, not deep inside a training step. The labelling web page writes exactly
these. Shapes: ``T`` time steps of a fragment, ``K`` items of a ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

__all__ = ["Comparison", "Fragment", "Outcome", "Ranking"]


class Outcome(IntEnum):
    """A teacher's answer to "which of the two fragments is better?"."""

    LEFT = 0
    RIGHT = 1
    TIE = 2
    SKIP = 3
    """The teacher could not or would not compare (B-Pref's skip); not used for training."""
    BOTH_BAD = 4
    """Neither fragment is any good (a person's answer); trained as a tie, target 0.5."""
    CANT_TELL = 5
    """The fragments are incomparable; dropped like SKIP (Christiano et al. 2017, §2.2.3)."""

    @property
    def target(self) -> float | None:
        """``P[left ≻ right]`` as a training label: 1.0, 0.0, 0.5 for a tie or both bad, None for
        SKIP and CANT_TELL (not used for training)."""
        return {Outcome.LEFT: 1.0, Outcome.RIGHT: 0.0, Outcome.TIE: 0.5, Outcome.BOTH_BAD: 0.5}.get(self)


def _readonly(x: np.ndarray) -> np.ndarray:
    x = np.array(x, copy=True)
    x.setflags(write=False)
    return x


@dataclass(frozen=True, eq=False)
class Fragment:
    """A contiguous piece of one episode: ``T`` observations, the actions taken, true rewards.

    Attributes:
        obs: ``(T, obs_dim)`` float32 observations ``o_t``.
        acts: ``(T, act_dim)`` float32 continuous actions, or ``(T,)`` int64 discrete actions.
        true_rewards: ``(T,)`` float32 environment rewards ``r_t``. Only teachers and evaluation
            read these; the reward model never does.
        episode: id of the episode the fragment was cut from (for bookkeeping), -1 if unknown.
        start: index of the fragment's first step within its episode.

    Raises:
        ValueError: if the arrays' lengths differ, ``obs`` is not 2-D, ``T == 0`` or a value is
            not finite.
    """

    obs: np.ndarray
    acts: np.ndarray
    true_rewards: np.ndarray
    episode: int = -1
    start: int = 0

    def __post_init__(self) -> None:
        obs = _readonly(np.asarray(self.obs, dtype=np.float32))
        acts = np.asarray(self.acts)
        acts = _readonly(acts.astype(np.int64 if np.issubdtype(acts.dtype, np.integer) else np.float32))
        rew = _readonly(np.asarray(self.true_rewards, dtype=np.float32))
        if obs.ndim != 2:
            raise ValueError(f"Fragment.obs must be (T, obs_dim), got shape {obs.shape}")
        T = obs.shape[0]
        if T == 0:
            raise ValueError("Fragment must have at least one step (T >= 1)")
        if acts.ndim not in (1, 2) or acts.shape[0] != T:
            raise ValueError(f"Fragment.acts must be (T,) or (T, act_dim) with T={T}, got shape {acts.shape}")
        if rew.shape != (T,):
            raise ValueError(f"Fragment.true_rewards must be (T,) with T={T}, got shape {rew.shape}")
        for name, x in (("obs", obs), ("acts", acts), ("true_rewards", rew)):
            if not np.all(np.isfinite(x)):
                raise ValueError(f"Fragment.{name} contains NaN or infinite values")
        object.__setattr__(self, "obs", obs)
        object.__setattr__(self, "acts", acts)
        object.__setattr__(self, "true_rewards", rew)

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def true_return(self) -> float:
        """Undiscounted sum of the true rewards, ``Σ_t r_t``."""
        return float(self.true_rewards.sum())


@dataclass(frozen=True, eq=False)
class Comparison:
    """A teacher's answer about two fragments shown as (left, right).

    Raises:
        ValueError: if the two fragments differ in length or in observation/action shape.
    """

    left: Fragment
    right: Fragment
    outcome: Outcome
    teacher: str = ""

    def __post_init__(self) -> None:
        if self.left.obs.shape != self.right.obs.shape or self.left.acts.shape != self.right.acts.shape:
            raise ValueError(
                f"Comparison fragments must have equal shapes, got obs {self.left.obs.shape} vs "
                f"{self.right.obs.shape}, acts {self.left.acts.shape} vs {self.right.acts.shape}"
            )
        object.__setattr__(self, "outcome", Outcome(self.outcome))


@dataclass(frozen=True, eq=False)
class Ranking:
    """A teacher's ordering of ``K >= 2`` fragments, best first.

    Attributes:
        fragments: the ``K`` fragments as shown.
        order: ``(K,)`` int indices into ``fragments``, best first (a permutation of ``0..K-1``).

    Raises:
        ValueError: if fewer than two fragments, or ``order`` is not a permutation.
    """

    fragments: tuple[Fragment, ...]
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    teacher: str = ""

    def __post_init__(self) -> None:
        frags = tuple(self.fragments)
        order = _readonly(np.asarray(self.order, dtype=np.int64))
        if len(frags) < 2:
            raise ValueError(f"Ranking needs at least 2 fragments, got {len(frags)}")
        if sorted(order.tolist()) != list(range(len(frags))):
            raise ValueError(f"Ranking.order must be a permutation of 0..{len(frags) - 1}, got {order.tolist()}")
        object.__setattr__(self, "fragments", frags)
        object.__setattr__(self, "order", order)
