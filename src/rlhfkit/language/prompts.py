"""Prompt data for online RL (GRPO, RLOO, PPO): TRL's "prompt-only" type plus any extra columns.

One row per prompt; the prompt is a string or a conversation, and every other column travels
with it to the reward functions (TRL's convention), e.g. the reference answer of a verifiable
task::

    {"prompt": "Q: 37+58= A:", "answer": " 95"}
    {"prompt": [{"role": "user", "content": "What is 37+58?"}], "answer": "95"}

Read from JSONL, JSON, Parquet or a local ``datasets`` directory like the other data
(:mod:`rlhfkit.language.data`); a bad row raises :class:`~rlhfkit.language.data.DataError` naming
the file, line and field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from rlhfkit.language.data import Text, _rows_to_records, _text
from rlhfkit.language.datafiles import DataError, _Bad, _read

__all__ = ["PromptData", "PromptExample", "encode_prompt", "encode_prompts", "load_prompts"]


@dataclass(frozen=True)
class PromptExample:
    """A prompt and the other columns of its row (passed to reward functions by name)."""

    prompt: Text
    columns: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass
class PromptData:
    """What :func:`load_prompts` read: the prompts in file order, the extra column names, skipped rows."""

    examples: list[PromptExample]
    columns: list[str]
    path: str
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def load_prompts(path: str | os.PathLike, *, prompt_column: str = "prompt", skip_bad: bool = False,
                 split: str = "train") -> PromptData:
    """Read prompts (and their extra columns) from a local file or ``datasets`` directory.

    Args:
        path: JSONL, JSON, Parquet or a ``save_to_disk`` directory.
        prompt_column: the column holding the prompt.
        skip_bad: skip and count bad rows instead of raising.
        split: the split of a ``DatasetDict`` directory.

    Raises:
        FileNotFoundError: no such path.
        DataError: an unreadable file, no ``prompt_column`` column, no usable rows; and unless
            ``skip_bad``, a row whose prompt is missing, empty, or neither a string nor a list of
            ``{role, content}`` messages — naming the file, line and field.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    rows, unit, columns = _read(p, split)
    if not rows:
        raise DataError(str(path), None, None, "no rows")
    if prompt_column not in columns:
        raise DataError(str(path), None, None, f"no {prompt_column!r} column (the columns are: "
                                               f"{', '.join(columns) or 'none'}); online RL needs a prompt per row")
    extra = [c for c in columns if c != prompt_column]

    def make(row: dict, line: int) -> PromptExample:
        value = row.get(prompt_column)
        if value is None:
            raise _Bad(prompt_column, "missing")
        try:
            prompt = _text(value, prompt_column, response=True)
        except _Bad as bad:
            raise _Bad(bad.field, "empty prompt" if bad.reason.endswith("empty response") else bad.reason) from None
        return PromptExample(prompt if isinstance(prompt, str) else tuple(prompt), {c: row.get(c) for c in extra},
                             f"{path}:{line}")

    examples, skipped, errors = _rows_to_records(str(path), rows, unit, make, skip_bad)
    return PromptData(examples, extra, str(path), skipped, errors)


def encode_prompts(tokenizer: Any, prompts: Sequence[Any], max_length: int) -> list[tuple[int, ...]]:
    """Token ids of prompts: plain text with the tokenizer's special tokens, a conversation through its
    chat template with the generation prompt; each cut from the left to ``max_length`` tokens.

    Raises:
        ValueError: for an empty encoding or a conversation with a tokenizer that has no chat template.
    """
    plain = [i for i, p in enumerate(prompts) if isinstance(p, str)]
    chats = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if chats and getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("conversational prompts need a tokenizer with a chat_template")
    out: list[tuple[int, ...]] = [()] * len(prompts)
    for idx, texts, special in (
            (plain, [prompts[i] for i in plain], True),
            (chats, [tokenizer.apply_chat_template(list(prompts[i]), tokenize=False, add_generation_prompt=True)
                     for i in chats], False)):
        if idx:
            for i, ids in zip(idx, tokenizer(texts, add_special_tokens=special)["input_ids"]):
                if not ids:
                    raise ValueError(f"the prompt {prompts[i]!r} encodes to no tokens")
                out[i] = tuple(ids[-max_length:])
    return out


def encode_prompt(tokenizer: Any, prompt: Any, max_length: int) -> tuple[int, ...]:
    """:func:`encode_prompts` of one prompt."""
    return encode_prompts(tokenizer, [prompt], max_length)[0]
