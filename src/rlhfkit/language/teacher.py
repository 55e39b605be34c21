"""A synthetic teacher for text: the language twin of the control oracle.

It compares two sampled completions of a prompt by a *gold* reward function and answers with
B-Pref's imperfect-labeller knobs (Lee et al. 2021; :class:`rlhfkit.feedback.teachers.SyntheticTeacher`:
Bradley-Terry noise ``β``, mistakes ``ε``, skips, ties). With it the InstructGPT loop — sample
pairs, label them, fit a reward model (``rlhf lm rm``), optimise it with PPO — runs without a
person, and the gold reward the reward model only approximates stays known, so reward hacking can
be measured (Gao et al. 2022).

The labels are :class:`~rlhfkit.language.data.PreferenceExample` records, written as TRL's
explicit-prompt preference JSONL (``prompt``, ``chosen``, ``rejected``, ``tie``) that ``rlhf lm rm``
reads and ``rlhf label import`` moves into a labelling store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from rlhfkit.feedback.records import Outcome
from rlhfkit.feedback.teachers import make_teacher
from rlhfkit.language.data import PreferenceExample
from rlhfkit.language.generation import HFGenerator, SamplingParams
from rlhfkit.language.online import PromptStream, score_rollout
from rlhfkit.language.prompts import PromptExample, encode_prompts
from rlhfkit.language.rewards import RewardFunction, check_columns

__all__ = ["LabelledPairs", "PairTeacher", "TextTeacher", "label_sampled_pairs", "write_preferences"]


class PairTeacher(Protocol):
    """What :func:`label_sampled_pairs` asks of a teacher: a name, the gold reward functions scored on
    every pair (the synthetic teacher answers from them; an AI judge only records them), and answers."""

    name: str
    gold: list[RewardFunction]

    def label_pairs(self, prompts: Sequence[Any], left: Sequence[Any], right: Sequence[Any],
                    gold_left: np.ndarray, gold_right: np.ndarray) -> list[Outcome]:
        """One outcome per pair of completions ``(left[i], right[i])`` of ``prompts[i]`` (``B`` each), given
        their gold rewards ``(B,)`` each."""
        ...


class TextTeacher:
    """Labels pairs of completions by a gold reward, with a B-Pref teacher's irrationalities.

    Args:
        gold: the gold reward functions (their weighted sum is the teacher's "return").
        kind: a B-Pref teacher kind (``oracle``, ``stochastic``, ``mistake``, ``skip``, ``equal``;
            ``myopic`` has no meaning for a whole text and is refused).
        seed: the teacher's random seed.
        return_scale: typical absolute gold reward, which sets the stochastic teacher's ``β`` and the
            skip/equal thresholds (:func:`rlhfkit.feedback.teachers.make_teacher`).
        overrides: any ``SyntheticTeacher`` knob (``beta``, ``epsilon``, ...).

    Raises:
        ValueError: for an unknown kind, ``myopic``, or no gold reward.
    """

    def __init__(self, gold: Sequence[RewardFunction], kind: str = "oracle", *, seed: int = 0,
                 return_scale: float = 1.0, **overrides: float | None):
        if not gold:
            raise ValueError("a text teacher needs at least one gold reward function")
        if kind == "myopic":
            raise ValueError("the myopic teacher discounts steps of a trajectory; a text has no steps to discount")
        self.gold = list(gold)
        self.teacher = make_teacher(kind, seed=seed, return_scale=return_scale, **overrides)
        self.name = f"text-{kind}"

    def label_scores(self, left: np.ndarray, right: np.ndarray) -> list[Outcome]:
        """Answer pairs given the gold rewards of their left and right completions, ``(B,)`` each."""
        return self.teacher.answer(np.stack([np.asarray(left, float), np.asarray(right, float)], 1))

    def label_pairs(self, prompts: Sequence[Any], left: Sequence[Any], right: Sequence[Any],
                    gold_left: np.ndarray, gold_right: np.ndarray) -> list[Outcome]:
        """:class:`PairTeacher`'s answer: from the gold rewards alone (:meth:`label_scores`)."""
        return self.label_scores(gold_left, gold_right)


@dataclass
class LabelledPairs:
    """What :func:`label_sampled_pairs` produced."""

    examples: list[PreferenceExample]
    gold_chosen: list[float] = field(default_factory=list)
    gold_rejected: list[float] = field(default_factory=list)
    skipped: int = 0
    """Pairs the teacher skipped."""
    identical: int = 0
    """Pairs whose two completions were the same text (nothing to compare)."""
    blank: int = 0
    """Pairs with an empty completion (not a valid preference row)."""

    @property
    def ties(self) -> int:
        """Pairs answered as ties."""
        return sum(e.tie for e in self.examples)


def label_sampled_pairs(model: Any, tokenizer: Any, prompts: Sequence[PromptExample], teacher: PairTeacher, *,
                        n_pairs: int, max_new_tokens: int, temperature: float = 1.0, max_length: int = 1024,
                        batch_prompts: int = 64, seed: int = 0) -> LabelledPairs:
    """Sample two completions of ``n_pairs`` prompts from ``model`` and let ``teacher`` compare them
    (a :class:`TextTeacher`, or an AI judge: :class:`rlhfkit.language.judge.JudgeTeacher`).

    Prompts are taken in a seeded random order (cycling when ``n_pairs`` exceeds them). A LEFT or
    RIGHT answer becomes ``chosen``/``rejected``; a tie is kept with ``tie=True``; skipped pairs,
    pairs of identical completions and pairs with an empty completion are counted and dropped.

    Raises:
        ValueError: for ``n_pairs < 1``.
        RewardError: from the gold reward functions.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    check_columns(teacher.gold, list(prompts[0].columns))
    ids = encode_prompts(tokenizer, [p.prompt for p in prompts], max_length - max_new_tokens)
    generator = HFGenerator(model, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id)
    stream = PromptStream(len(prompts), seed)
    out = LabelledPairs([])
    done, step = 0, 0
    model.eval()
    with torch.no_grad():
        while done < n_pairs:
            batch = stream.take(min(batch_prompts, n_pairs - done))
            rollout = generator.generate([ids[i] for i in batch], SamplingParams(2, max_new_tokens, temperature),
                                         seed=seed * 1_000_003 + step)
            scored = score_rollout(tokenizer, rollout, batch, prompts, teacher.gold)
            gold = scored.rewards.view(-1, 2).numpy()  # (b, 2)
            answers = teacher.label_pairs([prompts[i].prompt for i in batch], scored.texts[0::2], scored.texts[1::2],
                                          gold[:, 0], gold[:, 1])
            for k, i in enumerate(batch):
                a, b, outcome = scored.texts[2 * k], scored.texts[2 * k + 1], answers[k]
                if outcome in (Outcome.SKIP, Outcome.CANT_TELL):
                    out.skipped += 1
                elif a == b:
                    out.identical += 1
                elif not _text(a).strip() or not _text(b).strip():
                    out.blank += 1
                else:
                    chosen, rejected = (b, a) if outcome == Outcome.RIGHT else (a, b)
                    out.examples.append(PreferenceExample(prompts[i].prompt, chosen, rejected,
                                                          tie=outcome in (Outcome.TIE, Outcome.BOTH_BAD),
                                                          source=f"{teacher.name}:{done + k}"))
                    out.gold_chosen.append(float(gold[k, 0 if outcome != Outcome.RIGHT else 1]))
                    out.gold_rejected.append(float(gold[k, 1 if outcome != Outcome.RIGHT else 0]))
            done += len(batch)
            step += 1
    return out


def _text(x: Any) -> str:
    return x if isinstance(x, str) else " ".join(m.get("content", "") for m in x)


def write_preferences(path: str | Path, examples: Sequence[PreferenceExample]) -> Path:
    """Write preference records as TRL's explicit-prompt JSONL (``prompt``, ``chosen``, ``rejected``,
    ``tie``), one row per line; ``rlhf lm rm --data`` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for e in examples:
            row = {"prompt": _plain(e.prompt), "chosen": _plain(e.chosen), "rejected": _plain(e.rejected)}
            if e.tie:
                row["tie"] = True
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _plain(x: Any) -> Any:
    return x if isinstance(x, str) else [dict(m) for m in x]
