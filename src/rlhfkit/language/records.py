"""The frozen records that :func:`rlhfkit.language.data.load_data` returns, one per row of a preference,
ranked, rated or SFT dataset (TRL's dataset types; the formats are described in
:mod:`rlhfkit.language.data`). Completions never include the prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LoadedData", "Message", "PreferenceExample", "RankedExample", "RatedExample", "SFTExample", "Text"]

Message = dict[str, str]
"""One chat message, ``{"role": "user" | "assistant" | "system" | "tool", "content": str}``."""
Text = str | tuple[Message, ...]
"""Plain text, or a conversation stored as a tuple of messages."""

def _freeze(text: Any) -> Any:
    """A conversation given as a list becomes a tuple (records are immutable)."""
    return tuple(text) if isinstance(text, list) else text


@dataclass(frozen=True)
class PreferenceExample:
    """One comparison of two completions of a prompt (TRL "preference" type).

    Attributes:
        prompt: the prompt; ``""`` only when the file has none.
        chosen, rejected: the completions only (without the prompt); never equal.
        tie: the labeller judged them equal (then "chosen" is just the left one).
        margin: optional preference strength, e.g. Llama 2's rating gap (Touvron et al. 2023, §3.2.2).
        source: ``"path:line"`` of the row.
        chosen_safe, rejected_safe: optional per-response safety labels (Safe RLHF, Dai et al. 2023,
            §3.2: the cost model's safety-sign term); True safe, False unsafe, None unlabelled. The
            columns accept true/false or 1/0.
    """

    prompt: Text
    chosen: Text
    rejected: Text
    tie: bool = False
    margin: float | None = None
    source: str = ""
    chosen_safe: bool | None = None
    rejected_safe: bool | None = None

    def __post_init__(self):
        for name in ("prompt", "chosen", "rejected"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected are identical")
        if not isinstance(self.tie, bool):
            raise ValueError(f"tie must be a bool, got {self.tie!r}")
        if self.margin is not None and not math.isfinite(self.margin):
            raise ValueError(f"margin must be finite, got {self.margin!r}")
        for name in ("chosen_safe", "rejected_safe"):
            object.__setattr__(self, name, _safety_label(getattr(self, name), name))


def _safety_label(value: Any, name: str) -> bool | None:
    """A safety label as True (safe) / False (unsafe) / None (none): true/false or 1/0 (a missing column: None).

    Raises:
        ValueError: naming the field, for anything else (``"yes"``, 2, ...).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise ValueError(f'field "{name}": expected true (safe) or false (unsafe), got {value!r}')


@dataclass(frozen=True)
class RankedExample:
    """K >= 2 responses to one prompt with their ranks.

    Attributes:
        prompt: the prompt.
        responses: (K,) completions.
        ranks: (K,) non-negative ints, 0 = best; equal ranks are ties.
        source: ``"path:line"`` of the row.
    """

    prompt: Text
    responses: tuple[Text, ...]
    ranks: tuple[int, ...]
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "prompt", _freeze(self.prompt))
        object.__setattr__(self, "responses", tuple(_freeze(r) for r in self.responses))
        object.__setattr__(self, "ranks", tuple(self.ranks))
        if len(self.responses) < 2:
            raise ValueError(f"a ranking needs K >= 2 responses, got {len(self.responses)}")
        if len(self.ranks) != len(self.responses):
            raise ValueError(f"{len(self.ranks)} ranks for {len(self.responses)} responses")
        if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in self.ranks):
            raise ValueError(f"ranks must be non-negative ints, got {self.ranks!r}")


@dataclass(frozen=True)
class RatedExample:
    """One completion with a thumbs-up/down label (TRL "unpaired preference", as in KTO).

    Attributes:
        prompt: the prompt.
        completion: the completion only.
        label: True = desirable, False = undesirable.
        source: ``"path:line"`` of the row.
    """

    prompt: Text
    completion: Text
    label: bool
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "prompt", _freeze(self.prompt))
        object.__setattr__(self, "completion", _freeze(self.completion))
        if not isinstance(self.label, bool):
            raise ValueError(f"label must be a bool, got {self.label!r}")


@dataclass(frozen=True)
class SFTExample:
    """A demonstration: the loss is on ``completion`` given ``prompt``.

    Language-modelling ``text`` rows have prompt ``""``; ``messages`` rows are split into the
    conversation before the final assistant turn(s) (prompt) and those turns (completion).
    """

    prompt: Text
    completion: Text
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "prompt", _freeze(self.prompt))
        object.__setattr__(self, "completion", _freeze(self.completion))


@dataclass
class LoadedData:
    """What :func:`load_data` read.

    Attributes:
        kind: which record type ``examples`` holds.
        examples: :class:`PreferenceExample`, :class:`RankedExample`, :class:`RatedExample` or
            :class:`SFTExample` records, in file order.
        path: the path read.
        skipped: rows skipped as bad (``skip_bad=True`` only).
        errors: the messages of the first 20 skipped rows.
    """

    kind: Literal["preference", "ranked", "rated", "sft"]
    examples: list
    path: str
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
