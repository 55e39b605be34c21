"""One labelling session, the step both preference loops share (the PPO loop of Christiano et al. 2017,
§2.2, and PEBBLE, Lee et al. 2021, Algorithm 2)::

    select n queries from the fragments of ``source``        (query selection, §2.2.4)
    ask the teacher; append the answers; save every label    (labels are never lost)
    refit r̂ on all labels (warm start)                       (§2.2.3; SURF's pseudo-labels if asked)
    renormalise r̂'s outputs on recent transitions

What the loops do around it differs: PEBBLE relabels its replay buffer afterwards, PPO does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlhfkit.control.checkpoint import RunDir, save_comparisons
from rlhfkit.control.ppo import Rollout
from rlhfkit.control.queries import Pair, QuerySelection, sample_fragments, select_queries
from rlhfkit.control.sac import Trajectories
from rlhfkit.feedback.records import Comparison
from rlhfkit.feedback.teachers import Teacher
from rlhfkit.reward.ensemble import RewardEnsemble, fit_reward_ensemble

__all__ = ["Labels", "SurfOptions", "ask_teacher", "fragment_features", "labelling_session"]


def ask_teacher(teacher: Teacher, pairs: list[Pair], comparisons: list[Comparison]) -> None:
    """Ask ``teacher`` about ``pairs`` and append one :class:`Comparison` per answer to ``comparisons``."""
    for (left, right), outcome in zip(pairs, teacher.label(pairs)):
        comparisons.append(Comparison(left, right, outcome, teacher.name))


@dataclass
class Labels:
    """The labels of a run: ``used`` (what r̂ is fitted on, in the order asked) and ``banked``: labels
    found in the run's label file beyond its last checkpoint (the run stopped after asking them and
    before saving its state). A resumed run spends banked labels before asking the teacher again, so
    no label is lost and none is asked twice."""

    used: list[Comparison]
    banked: list[Comparison]

    @classmethod
    def resumed(cls, saved: list[Comparison], n_checkpointed: int) -> Labels:
        """Split the label file's ``saved`` comparisons at the checkpoint's count ``n_checkpointed``.

        Raises:
            ValueError: if the file holds fewer labels than the checkpoint counted (a damaged run).
        """
        if len(saved) < n_checkpointed:
            raise ValueError(f"the label file holds {len(saved)} labels but the checkpoint counted "
                             f"{n_checkpointed}: the run directory is damaged")
        return cls(list(saved[:n_checkpointed]), list(saved[n_checkpointed:]))

    def __len__(self) -> int:
        """Labels used so far."""
        return len(self.used)


@dataclass(frozen=True)
class SurfOptions:
    """SURF's semi-supervised reward learning in a session (Park et al. 2022; :mod:`rlhfkit.reward.surf`)."""

    tau: float = 0.95
    """Pseudo-label confidence threshold."""
    weight: float = 1.0
    """``λ``, the weight of the unlabelled loss."""
    ratio: int = 10
    """Unlabelled pairs drawn per label held (SURF's ``inv_label_ratio``)."""
    crop: int = 5
    """Crop windows ``T - crop … T`` steps long (0: no temporal augmentation)."""


def fragment_features(model: RewardEnsemble, frags: list) -> torch.Tensor:
    """``(B, T, D)`` reward-model features of fragments ``frags`` (:meth:`RewardEnsemble.features`)."""
    return model.features(torch.from_numpy(np.stack([f.obs for f in frags])),
                          torch.from_numpy(np.stack([f.acts for f in frags])))


def labelling_session(
    source: Rollout | Trajectories,
    n: int,
    *,
    model: RewardEnsemble,
    teacher: Teacher,
    labels: Labels,
    run: RunDir,
    norm_features: torch.Tensor,
    fragment_length: int,
    method: QuerySelection,
    oversample: int,
    rng: np.random.Generator,
    seed: int,
    epochs: int,
    surf: SurfOptions | None = None,
) -> dict[str, float]:
    """Run one session (module docstring): ``n`` new labels (banked ones first), the refit, the renormalisation.

    Args:
        source: time-ordered ``(T, N, ...)`` transitions queries are cut from (a rollout, or the replay
            buffer's :meth:`~rlhfkit.control.sac.ReplayBuffer.trajectories`).
        n: labels to add (≥ 0).
        model: the reward ensemble, refitted in place.
        teacher: who answers.
        labels: the run's labels; ``n`` are appended to ``labels.used``.
        run: where the label file ``comparisons.npz`` is rewritten (used and banked labels).
        norm_features: ``(M, D)`` features of recent transitions for :meth:`RewardEnsemble.normalize_outputs`.
        fragment_length: steps per fragment.
        method: query selection (:data:`rlhfkit.control.queries.SELECTORS`).
        oversample: candidates per query for ``disagreement`` and ``entropy``.
        rng: query sampling.
        seed: seed of the fit.
        epochs: max epochs of the fit.
        surf: SURF's pseudo-labels and crops (unlabelled pairs cut uniformly from ``source``), or None.

    Returns:
        The fit's metrics (:func:`~rlhfkit.reward.ensemble.fit_reward_ensemble`) and ``feedback/asked``,
        ``feedback/banked`` (labels taken from the bank).

    Raises:
        ValueError: if no fragment fits in ``source`` or no label is usable.
    """
    reuse = labels.banked[:n]
    del labels.banked[: len(reuse)]
    pairs = select_queries(source, n - len(reuse), model=model, fragment_length=fragment_length, method=method,
                           oversample=oversample, rng=rng)
    labels.used.extend(reuse)
    ask_teacher(teacher, pairs, labels.used)
    save_comparisons(run.comparisons_path, labels.used + labels.banked)
    extra: dict = {}
    if surf is not None:
        frags = sample_fragments(source, fragment_length, 2 * surf.ratio * len(labels.used), rng)
        extra = {"crop": surf.crop, "tau": surf.tau, "unlabelled_weight": surf.weight,
                 "unlabelled": (fragment_features(model, frags[0::2]), fragment_features(model, frags[1::2])) if frags else None}
    metrics = fit_reward_ensemble(model, labels.used, seed=seed, max_epochs=epochs, **extra)
    model.normalize_outputs(norm_features)
    return {**metrics, "feedback/asked": float(len(pairs)), "feedback/banked": float(len(reuse))}
