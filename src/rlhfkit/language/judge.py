"""An AI judge as teacher (RLAIF; Bai et al. 2022, "Constitutional AI", §4; Lee et al. 2023, "RLAIF").

A local causal LM reads a written principle, the prompt and two responses, and is asked which is
better; its preference is read off the probabilities of the two answer tokens at the end of the
question, not from sampled text (Lee et al. 2023, §2.1: the "soft" preference from the log-probs
of "1" and "2"). Language models favour one position (Wang et al. 2023, "Large language models are
not fair evaluators"), so each pair is asked in both orders and the two preferences are averaged:
``p = ½ (P[A ≻ B | A first] + P[A ≻ B | B first])``. When ``|p - ½|`` is below ``tie_margin`` the
judge answers a tie.

The judge serves three ways: as a teacher of sampled pairs (:class:`JudgeTeacher`, ``rlhf lm label
--teacher judge``), with :func:`judge_report` measuring its position bias and its agreement with
gold labels; and as a reward function (:class:`JudgeReward`, ``rlhf lm ppo --judge``) that scores a
completion against a reference response, ``2·P[completion ≻ reference] - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhfkit.feedback.records import Outcome
from rlhfkit.language.generation import left_pad
from rlhfkit.language.rewards import RewardError, RewardFunction

__all__ = ["DEFAULT_PRINCIPLE", "DEFAULT_TEMPLATE", "Judge", "JudgeReward", "JudgeTeacher", "Judgement", "judge_report",
           "load_judge"]

DEFAULT_PRINCIPLE = "Choose the response that answers the question correctly, helpfully and honestly."
DEFAULT_TEMPLATE = ("{principle}\n\nQuestion: {prompt}\n\nResponse 1: {first}\n\nResponse 2: {second}\n\n"
                    "The better response is Response")
"""The judge's question; it ends where the answer token (" 1" or " 2") comes next."""


@dataclass(frozen=True)
class Judgement:
    """The judge's view of one pair ``(a, b)``.

    Attributes:
        p_a: ``P[a ≻ b]`` averaged over both orders.
        p_a_first: ``P[a ≻ b]`` with ``a`` shown first.
        p_a_second: ``P[a ≻ b]`` with ``a`` shown second.
        outcome: LEFT (a), RIGHT (b) or TIE.
    """

    p_a: float
    p_a_first: float
    p_a_second: float
    outcome: Outcome

    @property
    def position_bias(self) -> float:
        """``P[first wins]`` minus ½, averaged over the two orders (0 for an unbiased judge)."""
        return 0.5 * (self.p_a_first + (1.0 - self.p_a_second)) - 0.5


class Judge:
    """A causal-LM judge of response pairs.

    Args:
        model: a causal LM (``load_causal_lm``), used in eval mode without gradients.
        tokenizer: its tokenizer.
        principle: the written principle the judge applies.
        template: the question, with ``{principle}``, ``{prompt}``, ``{first}``, ``{second}``; it must
            end right before the answer token.
        answers: the two answer strings (the token after ``template`` for response 1 and 2); None:
            ``" 1"``/``" 2"``, or ``"1"``/``"2"`` after a space where those are not single tokens.
        tie_margin: answer a tie when ``|p - ½| < tie_margin``.
        swap: ask both orders (False: only ``a`` first — to measure the bias the swap removes).
        batch_size: questions per forward pass.

    Raises:
        ValueError: if an answer string is not a single token, or ``tie_margin`` is outside ``[0, ½)``.
    """

    def __init__(self, model: Any, tokenizer: Any, *, principle: str = DEFAULT_PRINCIPLE,
                 template: str = DEFAULT_TEMPLATE, answers: tuple[str, str] | None = None, tie_margin: float = 0.05,
                 swap: bool = True, batch_size: int = 16):
        if answers is None:  # " 1" / " 2" for BPE vocabularies; "1" / "2" after a space for character-level ones
            answers = (" 1", " 2")
            if any(len(tokenizer(x, add_special_tokens=False)["input_ids"]) != 1 for x in answers):
                answers, template = ("1", "2"), template + " "
        ids = [tokenizer(x, add_special_tokens=False)["input_ids"] for x in answers]
        if any(len(i) != 1 for i in ids):
            raise ValueError(f"each answer must be one token for this tokenizer; {answers!r} encode to {ids}")
        if not 0 <= tie_margin < 0.5:
            raise ValueError(f"tie_margin must be in [0, 0.5), got {tie_margin}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.principle, self.template, self.tie_margin, self.swap = principle, template, tie_margin, swap
        self.answer_ids = (ids[0][0], ids[1][0])
        self.batch_size = batch_size
        self.name = "judge"

    def _p_first(self, questions: list[str]) -> np.ndarray:
        """``P[response 1 is better]`` of each question, from the two answer tokens' probabilities."""
        out = []
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with torch.no_grad():
            for i in range(0, len(questions), self.batch_size):
                ids = [self.tokenizer(q, add_special_tokens=True)["input_ids"] for q in questions[i:i + self.batch_size]]
                input_ids, mask = left_pad(ids, pad)
                positions = (mask.cumsum(-1) - 1).clamp_min(0)
                logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                    logits_to_keep=1).logits[:, -1].float()  # (b, V)
                two = logits[:, list(self.answer_ids)].log_softmax(-1)  # renormalised over the two answers
                out.append(two[:, 0].exp())
        return torch.cat(out).numpy() if out else np.zeros(0)

    def judge(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Judgement]:
        """Compare ``a[i]`` with ``b[i]`` as answers to ``prompts[i]``.

        Raises:
            ValueError: on lists of different lengths.
        """
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"prompts, a and b differ in length: {len(prompts)}, {len(a)}, {len(b)}")
        fill = dict(principle=self.principle)
        first = self._p_first([self.template.format(prompt=p, first=x, second=y, **fill)
                               for p, x, y in zip(prompts, a, b)])
        if self.swap:
            second = 1.0 - self._p_first([self.template.format(prompt=p, first=y, second=x, **fill)
                                          for p, x, y in zip(prompts, a, b)])
        else:
            second = first
        out = []
        for p1, p2 in zip(first, second):
            p = 0.5 * (float(p1) + float(p2))
            outcome = Outcome.TIE if abs(p - 0.5) < self.tie_margin else Outcome.LEFT if p > 0.5 else Outcome.RIGHT
            out.append(Judgement(p, float(p1), float(p2), outcome))
        return out


def load_judge(model_dir: str | Path, **options: Any) -> Judge:
    """A :class:`Judge` on the causal LM and tokenizer in the local directory ``model_dir``.

    Args:
        model_dir: a Hugging Face causal-LM directory.
        options: :class:`Judge`'s keyword arguments (``principle``, ``tie_margin``, ``swap``, ...).

    Raises:
        FileNotFoundError: if the directory holds no model.
        ValueError: as :class:`Judge` (answer strings that are not one token, a bad ``tie_margin``).
    """
    from rlhfkit.language.models import load_causal_lm, load_tokenizer

    judge = Judge(load_causal_lm(model_dir), load_tokenizer(model_dir), **options)
    judge.name = f"judge:{Path(model_dir).name}"
    return judge


def _plain(x: Any) -> str:
    """A prompt or response as the judge reads it: text as is; a conversation as its messages' contents, one a line."""
    if isinstance(x, str):
        return x
    if isinstance(x, (list, tuple)):
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in x)
    return "" if x is None else str(x)


class JudgeReward:
    """The judge as a reward function: ``r = 2·P[completion ≻ reference] - 1`` in ``[-1, 1]``.

    Each completion is compared with the reference response of its row (the data column
    ``reference_column``) in both orders (the judge's ``swap``; Wang et al. 2023), so the reward
    is ``p = ½ (P[c ≻ ref | c first] + P[c ≻ ref | c second])`` rescaled: 0 when the judge finds
    the completion as good as the reference, +1 when surely better (RLAIF with a reference, Lee
    et al. 2023, §2.1's soft preference). Rows without a reference get None (left out).

    Args:
        judge: the :class:`Judge` (its ``tie_margin`` plays no part: the reward is the soft ``p``).
        reference_column: the prompt-data column holding the reference responses.

    Raises:
        ValueError: if ``judge.swap`` is False (one order would carry the position bias into the reward).
    """

    def __init__(self, judge: Judge, reference_column: str):
        if not judge.swap:
            raise ValueError("a judge reward asks both orders; build the Judge with swap=True")
        self.judge, self.reference_column = judge, reference_column
        self.__name__ = f"{judge.name}:{reference_column}"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        """``(N,)`` rewards of ``N`` completions (TRL's reward-function signature).

        Raises:
            RewardError: if the data has no ``reference_column``.
        """
        refs = columns.get(self.reference_column)
        if refs is None:
            raise RewardError(f"the judge reward needs a {self.reference_column!r} column (the reference response); "
                              f"the prompt data has: {', '.join(sorted(columns)) or 'no columns besides the prompt'}")
        rows = [i for i, r in enumerate(refs) if r is not None and _plain(r).strip()]
        out: list[float | None] = [None] * len(completions)
        verdicts = self.judge.judge([_plain(prompts[i]) for i in rows], [_plain(completions[i]) for i in rows],
                                    [_plain(refs[i]) for i in rows])
        for i, j in zip(rows, verdicts):
            out[i] = 2.0 * j.p_a - 1.0
        return out


class JudgeTeacher:
    """The judge as the teacher of sampled pairs (:func:`rlhfkit.language.teacher.label_sampled_pairs`).

    It answers from the judge alone. Gold reward functions, when given, are scored on every pair
    but only recorded: with them :func:`judge_report` measures the judge's agreement with the
    labels a gold oracle would give. Every judged pair is kept in :attr:`judged` as
    ``(judgement, gold_left, gold_right)``.

    Args:
        judge: the :class:`Judge`.
        gold: gold reward functions to watch (none: no agreement statistics).
    """

    def __init__(self, judge: Judge, gold: Sequence[RewardFunction] = ()):
        self.judge, self.gold, self.name = judge, list(gold), getattr(judge, "name", "judge")
        self.judged: list[tuple[Judgement, float, float]] = []

    def label_pairs(self, prompts: Sequence[Any], left: Sequence[Any], right: Sequence[Any],
                    gold_left: Sequence[float], gold_right: Sequence[float]) -> list[Outcome]:
        """One outcome per pair ``(left[i], right[i])`` of ``prompts[i]``, ``B`` each: LEFT, RIGHT or TIE."""
        verdicts = self.judge.judge([_plain(p) for p in prompts], [_plain(x) for x in left], [_plain(y) for y in right])
        self.judged += [(j, float(a), float(b)) for j, a, b in zip(verdicts, gold_left, gold_right)]
        return [j.outcome for j in verdicts]


def judge_report(judged: Sequence[tuple[Judgement, float, float]], *, swap: bool,
                 with_gold: bool) -> dict[str, float | int]:
    """Position bias of a judge and, with gold scores, its agreement with a gold oracle.

    - ``position_bias``: ``P[the response shown first wins] - ½``, averaged over pairs and the
      orders asked. With ``swap`` it is the mean :attr:`Judgement.position_bias`; with one order
      it is ``mean(P[a ≻ b | a first]) - ½``, unbiased when ``a`` and ``b`` are exchangeable (two
      samples of one policy). 0 for a judge without position bias (Wang et al. 2023).
    - ``order_flip_rate`` (``swap`` only): pairs whose winner changes with the order.
    - with gold: ``agreement`` (the judge's LEFT/RIGHT/TIE equals the gold oracle's: the higher
      gold reward wins, equal is a tie), ``cohen_kappa`` (:func:`rlhfkit.feedback.agreement.cohen_kappa`)
      and ``decided_agreement`` (over pairs neither calls a tie).

    Args:
        judged: ``(judgement, gold_left, gold_right)`` per pair (:attr:`JudgeTeacher.judged`).
        swap: whether the judge asked both orders.
        with_gold: whether the gold scores are real (else they are ignored).

    Returns:
        ``{"pairs", "ties", "position_bias", ["order_flip_rate"], ["agreement", "cohen_kappa",
        "decided_pairs", "decided_agreement"]}``; NaN where nothing was counted.

    Raises:
        ValueError: if ``judged`` is empty.
    """
    from rlhfkit.feedback.agreement import cohen_kappa

    if not judged:
        raise ValueError("judge_report needs at least one judged pair")
    js = [j for j, _, _ in judged]
    first_wins = [j.position_bias + 0.5 if swap else j.p_a_first for j in js]
    out: dict[str, float | int] = {"pairs": len(js), "ties": sum(j.outcome == Outcome.TIE for j in js),
                                   "position_bias": float(np.mean(first_wins)) - 0.5}
    if swap:
        out["order_flip_rate"] = float(np.mean([(j.p_a_first > 0.5) != (j.p_a_second > 0.5) for j in js]))
    if with_gold:
        gold = [Outcome.LEFT if a > b else Outcome.RIGHT if a < b else Outcome.TIE for _, a, b in judged]
        mine = [j.outcome for j in js]
        decided = [(g, m) for g, m in zip(gold, mine) if Outcome.TIE not in (g, m)]
        out.update(agreement=float(np.mean([g == m for g, m in zip(gold, mine)])),
                   cohen_kappa=cohen_kappa([int(g) for g in gold], [int(m) for m in mine]),
                   decided_pairs=len(decided),
                   decided_agreement=float(np.mean([g == m for g, m in decided])) if decided else math.nan)
    return out
