"""An AI judge as teacher (RLAIF; Bai et al. 2022, "Constitutional AI", §4; Lee et al. 2023, "RLAIF").

A local causal LM reads a written principle, the prompt and two responses, and is asked which is
better; its preference is read off the probabilities of the two answer tokens at the end of the
question, not from sampled text (Lee et al. 2023, §2.1: the "soft" preference from the log-probs
of "1" and "2"). Language models favour one position (Wang et al. 2023, "Large language models are
not fair evaluators"), so each pair is asked in both orders and the two preferences are averaged:
``p = ½ (P[A ≻ B | A first] + P[A ≻ B | B first])``. When ``|p - ½|`` is below ``tie_margin`` the
judge answers a tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlhfkit.feedback.records import Outcome
from rlhfkit.language.generation import left_pad

__all__ = ["DEFAULT_PRINCIPLE", "DEFAULT_TEMPLATE", "Judge", "Judgement"]

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
