"""Teachers: who answers the queries. Synthetic teachers follow B-Pref (Lee et al. 2021).

Every teacher implements the :class:`Teacher` protocol — a list of fragment pairs in, a list of
:class:`~rlhfkit.feedback.records.Outcome` out — so the loop cannot tell a script from a person.

B-Pref ("B-Pref: Benchmarking preference-based reinforcement learning", Lee et al. 2021, §3.2)
models an imperfect labeller with five knobs, all provided by :class:`SyntheticTeacher`:

- ``beta`` — *stochastic*: ``P[left] = σ(β (R_l - R_r))`` (Bradley-Terry, Boltzmann
  rationality); ``beta=None`` is a perfectly rational (deterministic) labeller;
- ``gamma`` — *myopic*: returns are ``Σ_t γ^(T-1-t) r_t``, weighting recent steps more;
- ``epsilon`` — *mistake*: the answer is flipped with probability ``ε``;
- ``skip_threshold`` — *skip*: if both returns are below it, the query is skipped;
- ``equal_threshold`` — *equal*: if ``|R_l - R_r|`` is below it, the answer is a tie.

The named presets of :data:`TEACHERS` are the B-Pref teacher kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from rlhfkit.feedback.records import Fragment, Outcome

__all__ = ["TEACHERS", "SyntheticTeacher", "Teacher", "TeacherKind", "make_teacher"]

Pair = tuple[Fragment, Fragment]


@runtime_checkable
class Teacher(Protocol):
    """Anything that answers comparison queries: a script, a person behind a web page, an AI judge."""

    name: str

    def label(self, pairs: Sequence[Pair]) -> list[Outcome]:
        """Return one outcome per ``(left, right)`` pair, in order."""
        ...


@dataclass
class SyntheticTeacher:
    """A scripted labeller that answers from the true rewards, with B-Pref's irrationalities.

    Args:
        beta: Boltzmann rationality ``β > 0`` (per unit of return), or None for deterministic.
        gamma: myopia discount in ``(0, 1]``; 1 weights every step equally.
        epsilon: probability of flipping a LEFT/RIGHT answer, in ``[0, 1]``.
        skip_threshold: skip when both (discounted) returns are below this, or None.
        equal_threshold: answer TIE when ``|R_l - R_r| <= equal_threshold``; the oracle uses 0,
            i.e. a tie only on exactly equal returns.
        seed: seed of the teacher's own random generator.
        name: recorded on every comparison.

    Raises:
        ValueError: for parameters outside their ranges.
    """

    beta: float | None = None
    gamma: float = 1.0
    epsilon: float = 0.0
    skip_threshold: float | None = None
    equal_threshold: float = 0.0
    seed: int = 0
    name: str = "oracle"

    def __post_init__(self) -> None:
        if self.beta is not None and not self.beta > 0:
            raise ValueError(f"teacher beta must be > 0 or None, got {self.beta}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"teacher gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"teacher epsilon must be in [0, 1], got {self.epsilon}")
        if self.equal_threshold < 0:
            raise ValueError(f"teacher equal_threshold must be >= 0, got {self.equal_threshold}")
        self._rng = np.random.default_rng(self.seed)

    def returns(self, fragment: Fragment) -> float:
        """The teacher's (possibly myopic) return ``Σ_t γ^(T-1-t) r_t`` of one fragment."""
        r = fragment.true_rewards.astype(np.float64)
        weights = self.gamma ** np.arange(len(r) - 1, -1, -1, dtype=np.float64)
        return float(np.dot(weights, r))

    def label(self, pairs: Sequence[Pair]) -> list[Outcome]:
        """Answer each pair; see the class docstring for the model."""
        if not pairs:
            return []
        return self.answer(np.array([[self.returns(a), self.returns(b)] for a, b in pairs]))  # (B, 2)

    def answer(self, r: np.ndarray) -> list[Outcome]:
        """Answer pairs given their returns ``(B, 2)`` (left, right) with the teacher's knobs — the part
        shared by every synthetic teacher, whatever it compares (fragments, texts)."""
        r = np.asarray(r, dtype=np.float64).reshape(-1, 2)
        diff = r[:, 0] - r[:, 1]
        if self.beta is None:
            left = diff > 0
        else:
            p_left = 0.5 * (1.0 + np.tanh(0.5 * self.beta * diff))  # σ(β Δ), overflow-free
            left = self._rng.random(len(r)) < p_left
        flip = self._rng.random(len(r)) < self.epsilon
        left = left ^ flip
        out = np.where(left, int(Outcome.LEFT), int(Outcome.RIGHT))
        if self.beta is None:
            out = np.where(np.abs(diff) <= self.equal_threshold, int(Outcome.TIE), out)
        elif self.equal_threshold > 0:
            out = np.where(np.abs(diff) <= self.equal_threshold, int(Outcome.TIE), out)
        if self.skip_threshold is not None:
            out = np.where(r.max(axis=1) < self.skip_threshold, int(Outcome.SKIP), out)
        return [Outcome(int(o)) for o in out]


TeacherKind = Literal["oracle", "stochastic", "mistake", "skip", "equal", "myopic"]

TEACHERS: dict[str, dict] = {
    "oracle": {},
    "stochastic": {"beta": 1.0},
    "mistake": {"epsilon": 0.1},
    "skip": {"skip_threshold": None},  # set from the data by make_teacher's caller if wanted
    "equal": {"equal_threshold": None},
    "myopic": {"gamma": 0.9},
}
"""B-Pref teacher kinds (Lee et al. 2021, Table 1) with their default knobs. ``skip`` and
``equal`` thresholds are relative to the scale of returns, so :func:`make_teacher` takes them."""


def make_teacher(
    kind: str,
    *,
    seed: int = 0,
    return_scale: float = 1.0,
    **overrides: float | None,
) -> SyntheticTeacher:
    """Build a B-Pref synthetic teacher by name.

    ``skip`` skips a query when both returns are below the 10th percentile level
    ``-return_scale`` (B-Pref skips segments whose return is near the worst);
    ``equal`` answers a tie when ``|R_l - R_r| <= 0.1 · return_scale`` (B-Pref: δ_equal = 0.1
    of the average segment return's scale). ``return_scale`` is a typical absolute fragment
    return of the task (e.g. the mean ``|R|`` of the first batch of fragments).

    Args:
        kind: one of ``oracle, stochastic, mistake, skip, equal, myopic``.
        seed: the teacher's random seed.
        return_scale: typical absolute fragment return, > 0.
        overrides: any :class:`SyntheticTeacher` field (beta, gamma, epsilon, ...).

    Raises:
        ValueError: for an unknown kind (the message lists the known ones).
    """
    if kind not in TEACHERS:
        raise ValueError(f"unknown teacher {kind!r}; choose one of {', '.join(TEACHERS)}")
    if not return_scale > 0:
        raise ValueError(f"return_scale must be > 0, got {return_scale}")
    params: dict = dict(TEACHERS[kind])
    if kind == "skip":
        params["skip_threshold"] = -abs(return_scale)
    if kind == "equal":
        params["equal_threshold"] = 0.1 * abs(return_scale)
    if kind == "stochastic":
        params["beta"] = 1.0 / abs(return_scale) * 10.0
    params.update({k: v for k, v in overrides.items() if v is not None})
    return SyntheticTeacher(seed=seed, name=kind, **params)
