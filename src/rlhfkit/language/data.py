"""Preference and SFT data for language models, in the Hugging Face / TRL dataset formats.

The column conventions are TRL's ("Dataset formats and types",
https://huggingface.co/docs/trl/dataset_formats): a dataset is *standard* (plain strings) or
*conversational* (lists of ``{"role", "content"}`` messages), and its *type* follows from its
columns. One row of each type this module reads (JSONL shown; JSON, Parquet and ``datasets``
directories hold the same columns)::

    # preference, explicit prompt (optional "tie": bool, "margin": float, "chosen_safe"/"rejected_safe": bool)
    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}
    # preference, implicit prompt (HH-RLHF, Bai et al. 2022): the prompt is the shared prefix
    {"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "rejected": "\\n\\nHuman: Hi\\n\\nAssistant: Go away."}
    # preference, conversational
    {"prompt": [{"role": "user", "content": "What color is the sky?"}],
     "chosen": [{"role": "assistant", "content": "It is blue."}],
     "rejected": [{"role": "assistant", "content": "It is green."}]}
    # preference, conversational with implicit prompt (the common message prefix)
    {"chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
     "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Green."}]}
    # ranked list of K >= 2 responses, 0 = best, equal ranks are ties (not a TRL type)
    {"prompt": "The sky is", "responses": [" blue.", " green.", " azure."], "ranks": [0, 2, 0]}
    # rated / unpaired preference (KTO): label true/false, or +1/-1
    {"prompt": "The sky is", "completion": " blue.", "label": true}
    # SFT: prompt-completion, language modelling text, or a conversation
    {"prompt": "The sky is", "completion": " blue."}
    {"text": "The sky is blue."}
    {"messages": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}]}

:func:`load_data` returns frozen records (:class:`PreferenceExample`, :class:`RankedExample`,
:class:`RatedExample`, :class:`SFTExample`) whose completions never include the prompt. A bad
row raises :class:`DataError` naming the file, line (row for Parquet / ``datasets``) and field,
or, with ``skip_bad=True``, is counted and skipped. Nothing is ever downloaded.

Conversations are turned into text by the tokenizer's chat template in :func:`render`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rlhfkit.language.datafiles import DataError, _Bad, _read
from rlhfkit.language.records import (
    LoadedData,
    Message,
    PreferenceExample,
    RankedExample,
    RatedExample,
    SFTExample,
    Text,
)

__all__ = [
    "DataError",
    "LoadedData",
    "Message",
    "PreferenceExample",
    "RankedExample",
    "RatedExample",
    "SFTExample",
    "Text",
    "load_data",
    "pairs_from_ranked",
    "render",
    "sft_from_preferences",
    "split_implicit_prompt",
    "train_val_split",
]

T = TypeVar("T")
ROLES = ("system", "user", "assistant", "tool")
HH_ASSISTANT = "\n\nAssistant:"
_MAX_ERRORS = 20


# ----------------------------------------------------------------------------------------------
# Field checks
# ----------------------------------------------------------------------------------------------


def _get(row: Mapping, name: str) -> Any:
    value = row.get(name)
    if value is None:
        present = ", ".join(k for k, v in row.items() if v is not None) or "no fields"
        raise _Bad(name, f"missing (the row has {present})")
    return value


def _messages(value: Sequence, name: str, where: str) -> tuple[Message, ...]:
    """Check a conversation; keys other than role/content are kept unless None (Parquet fills them)."""
    out = []
    for i, m in enumerate(value, 1):
        if not isinstance(m, Mapping):
            raise _Bad(name, f"{where}message {i} is {type(m).__name__}, expected a {{role, content}} object")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise _Bad(name, f"{where}message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise _Bad(name, f"{where}message {i} has content of type {type(content).__name__}, expected a string")
        out.append({k: v for k, v in m.items() if v is not None})
    return tuple(out)


def _blank(text: Text) -> bool:
    return not text.strip() if isinstance(text, str) else all(not m["content"].strip() for m in text)


def _text(value: Any, name: str, *, response: bool, where: str = "") -> Text:
    """A string, or a list of messages (returned as a tuple); responses must not be blank."""
    if isinstance(value, str):
        text: Text = value
    elif isinstance(value, (list, tuple)):
        text = _messages(value, name, where)
    else:
        got = type(value).__name__
        raise _Bad(name, f"{where}expected a string or a list of {{role, content}} messages, got {got}")
    if response and _blank(text):
        raise _Bad(name, f"{where}empty response")
    return text


def _same_format(named: Sequence[tuple[str, Text]]) -> None:
    """All of prompt/chosen/... plain text, or all conversations (an empty prompt fits both)."""
    kinds = {name: isinstance(t, str) for name, t in named if not (name == "prompt" and t == "")}
    if len(set(kinds.values())) > 1:
        first = next(iter(kinds.values()))
        odd = next(name for name, is_str in kinds.items() if is_str != first)
        desc = ", ".join(f"{n}: {'plain text' if s else 'a conversation'}" for n, s in kinds.items())
        raise _Bad(odd, f"plain text and conversations mixed in one row ({desc})")


def _bool(value: Any, name: str, *, signs: bool) -> bool:
    """true/false; with ``signs``, also +1/-1 (and 1/0 without)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and (value in (1, -1) if signs else value in (1, 0)):
        return value == 1
    need = "true/false or +1/-1" if signs else "true/false"
    raise _Bad(name, f"expected {need}, got {value!r}")


# ----------------------------------------------------------------------------------------------
# Row parsers: (row, columns, assistant_marker) -> record; raise _Bad
# ----------------------------------------------------------------------------------------------


def _preference(row: Mapping, cols: set[str], marker: str) -> dict:
    if "prompt" in cols:
        prompt = _text(_get(row, "prompt"), "prompt", response=False)
        chosen = _text(_get(row, "chosen"), "chosen", response=True)
        rejected = _text(_get(row, "rejected"), "rejected", response=True)
        _same_format([("prompt", prompt), ("chosen", chosen), ("rejected", rejected)])
        if chosen == rejected:
            raise _Bad("rejected", 'identical to "chosen"')
    else:
        full_c = _text(_get(row, "chosen"), "chosen", response=True)
        full_r = _text(_get(row, "rejected"), "rejected", response=True)
        _same_format([("chosen", full_c), ("rejected", full_r)])
        if full_c == full_r:
            raise _Bad("rejected", 'identical to "chosen"')
        if isinstance(full_c, str):
            try:
                prompt, chosen, rejected = split_implicit_prompt(full_c, full_r, marker)
            except ValueError as exc:
                raise _Bad("chosen", str(exc)) from None
        else:
            k = 0
            while k < min(len(full_c), len(full_r)) and full_c[k] == full_r[k]:
                k += 1
            if k == 0:
                raise _Bad("chosen", "no prompt column and the conversations share no first message (implicit prompt)")
            prompt, chosen, rejected = full_c[:k], full_c[k:], full_r[k:]
        for name, text in (("chosen", chosen), ("rejected", rejected)):
            if not text or _blank(text):
                raise _Bad(name, "empty response after removing the implicit prompt")
    tie = _bool(row["tie"], "tie", signs=False) if row.get("tie") is not None else False
    margin = row.get("margin")
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise _Bad("margin", f"expected a finite number, got {margin!r}")
        margin = float(margin)
    return dict(prompt=prompt, chosen=chosen, rejected=rejected, tie=tie, margin=margin,
                chosen_safe=row.get("chosen_safe"), rejected_safe=row.get("rejected_safe"))  # the record checks them


def _ranked(row: Mapping, cols: set[str], marker: str) -> dict:
    prompt = _text(_get(row, "prompt"), "prompt", response=False) if "prompt" in cols else ""
    raw = _get(row, "responses")
    if not isinstance(raw, (list, tuple)):
        raise _Bad("responses", f"expected a list of responses, got {type(raw).__name__}")
    if len(raw) < 2:
        raise _Bad("responses", f"a ranking needs at least 2 responses, got {len(raw)}")
    responses = tuple(_text(r, "responses", response=True, where=f"response {i}: ") for i, r in enumerate(raw, 1))
    _same_format([("prompt", prompt)] + [("responses", r) for r in responses])
    ranks = _get(row, "ranks")
    if not isinstance(ranks, (list, tuple)) or not all(
        isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in ranks
    ):
        raise _Bad("ranks", f"expected a list of non-negative ints (0 = best), got {ranks!r}")
    if len(ranks) != len(responses):
        raise _Bad("ranks", f"{len(ranks)} ranks for {len(responses)} responses")
    for i in range(len(responses)):
        for j in range(i + 1, len(responses)):
            if responses[i] == responses[j]:
                raise _Bad("responses", f"responses {i + 1} and {j + 1} are identical")
    return dict(prompt=prompt, responses=responses, ranks=tuple(ranks))


def _rated(row: Mapping, cols: set[str], marker: str) -> dict:
    prompt = _text(_get(row, "prompt"), "prompt", response=False) if "prompt" in cols else ""
    completion = _text(_get(row, "completion"), "completion", response=True)
    _same_format([("prompt", prompt), ("completion", completion)])
    return dict(prompt=prompt, completion=completion, label=_bool(_get(row, "label"), "label", signs=True))


def _sft_prompt_completion(row: Mapping, cols: set[str], marker: str) -> dict:
    prompt = _text(_get(row, "prompt"), "prompt", response=False)
    completion = _text(_get(row, "completion"), "completion", response=True)
    _same_format([("prompt", prompt), ("completion", completion)])
    return dict(prompt=prompt, completion=completion)


def _sft_text(row: Mapping, cols: set[str], marker: str) -> dict:
    text = _get(row, "text")
    if not isinstance(text, str):
        raise _Bad("text", f"expected a string, got {type(text).__name__} (conversations go in a \"messages\" column)")
    return dict(prompt="", completion=_text(text, "text", response=True))


def _sft_messages(row: Mapping, cols: set[str], marker: str) -> dict:
    msgs = _get(row, "messages")
    if not isinstance(msgs, (list, tuple)):
        raise _Bad("messages", f"expected a list of {{role, content}} messages, got {type(msgs).__name__}")
    msgs = _messages(msgs, "messages", "")
    j = len(msgs)
    while j > 0 and msgs[j - 1]["role"] == "assistant":
        j -= 1
    if j == len(msgs):
        raise _Bad("messages", "the conversation must end with an assistant message (the completion)")
    if _blank(msgs[j:]):
        raise _Bad("messages", "empty response (the final assistant message is blank)")
    return dict(prompt=msgs[:j], completion=msgs[j:])


# kind -> variants, each (required columns, row parser, record class); the first variant whose
# columns are all present is used.
_FORMATS: dict[str, list[tuple[tuple[str, ...], Any, type]]] = {
    "preference": [(("chosen", "rejected"), _preference, PreferenceExample)],
    "ranked": [(("responses", "ranks"), _ranked, RankedExample)],
    "rated": [(("completion", "label"), _rated, RatedExample)],
    "sft": [
        (("prompt", "completion"), _sft_prompt_completion, SFTExample),
        (("messages",), _sft_messages, SFTExample),
        (("text",), _sft_text, SFTExample),
    ],
}
_EXPECTED = (
    "chosen+rejected (preference), responses+ranks (ranked), completion+label (rated), "
    "prompt+completion | messages | text (sft)"
)


def _detect(path: str, columns: list[str], kind: str):
    """Pick (kind, parser, record class) from the column names."""
    cols = set(columns)
    found = ", ".join(columns) or "none"

    def variant(k: str):
        return next((v for v in _FORMATS[k] if all(c in cols for c in v[0])), None)

    if kind != "auto":
        v = variant(kind)
        if v is None:
            need = " | ".join("+".join(req) for req, _, _ in _FORMATS[kind])
            raise DataError(path, None, None, f"kind={kind!r} needs columns {need}; the columns are: {found}")
        return kind, v
    specific = [k for k in ("preference", "ranked", "rated") if variant(k)]
    if len(specific) > 1:
        raise DataError(
            path, None, None, f"the columns ({found}) fit more than one kind ({', '.join(specific)}); pass kind=..."
        )
    if specific:
        return specific[0], variant(specific[0])
    sft = variant("sft")
    if sft is not None and sft[0] != ("prompt", "completion") and {"messages", "text"} <= cols:
        raise DataError(path, None, None, f'both "messages" and "text" columns ({found}); keep one of them')
    if sft is None:
        raise DataError(
            path, None, None, f"cannot tell the kind of data from the columns ({found}); expected {_EXPECTED}"
        )
    return "sft", sft


# ----------------------------------------------------------------------------------------------
# Loading (the files themselves are read by rlhfkit.language.datafiles)
# ----------------------------------------------------------------------------------------------


def load_data(
    path: str | os.PathLike,
    *,
    kind: str = "auto",
    skip_bad: bool = False,
    split: str = "train",
    assistant_marker: str = HH_ASSISTANT,
) -> LoadedData:
    """Read preference, ranked, rated or SFT examples from a local file, never the network.

    Formats: JSONL (``.jsonl``, blank lines ignored), JSON (``.json``: a list of objects or
    ``{"data" | "train": [...]}``), Parquet (``.parquet``) or a directory written by
    ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``split`` picks the DatasetDict split).

    With ``kind="auto"`` the kind follows the columns (TRL dataset-format docs): ``chosen`` +
    ``rejected`` → preference (explicit prompt with a ``prompt`` column, otherwise the implicit
    prompt, see :func:`split_implicit_prompt` and, for conversations, the common message prefix);
    ``responses`` + ``ranks`` → ranked; ``completion`` + ``label`` → rated; ``prompt`` +
    ``completion``, ``messages`` or ``text`` → sft. Other columns are ignored.

    Args:
        path: the file or directory.
        kind: ``"auto"``, ``"preference"``, ``"ranked"``, ``"rated"`` or ``"sft"``.
        skip_bad: skip bad rows, counting them in :attr:`LoadedData.skipped`, instead of raising.
        split: the split of a ``DatasetDict`` directory.
        assistant_marker: where the implicit prompt ends, HH-RLHF's ``"\\n\\nAssistant:"``.

    Returns:
        :class:`LoadedData` with the records in file order, each ``source="path:line"``.

    Raises:
        FileNotFoundError: no such path.
        DataError: an unknown format, an unreadable file, columns that fit no kind (or several),
            or no usable rows — always; and, unless ``skip_bad``, a bad row: a missing field,
            a wrong type (e.g. a number for "chosen", ranks not ints, a label not true/false or
            ±1, a message without a string role in system/user/assistant/tool and string
            content), an empty response, identical chosen and rejected, fewer than 2 ranked
            responses or as many ranks as responses, malformed JSON — naming file, line, field.
        ValueError: an unknown ``kind``.
    """
    if kind != "auto" and kind not in _FORMATS:
        raise ValueError(f"kind must be 'auto' or one of {sorted(_FORMATS)}, got {kind!r}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    rows, unit, columns = _read(p, split)
    if not rows:
        raise DataError(str(path), None, None, "no rows")
    kind, (_, parse, record) = _detect(str(path), columns, kind)
    cols = set(columns)

    def make(row: dict, line: int) -> Any:
        fields = parse(row, cols, assistant_marker)
        try:
            return record(**fields, source=f"{path}:{line}")
        except ValueError as exc:  # the record's own checks; the parsers should catch these first
            raise _Bad(None, str(exc)) from None

    examples, skipped, errors = _rows_to_records(str(path), rows, unit, make, skip_bad)
    return LoadedData(kind=kind, examples=examples, path=str(path), skipped=skipped, errors=errors)


def _rows_to_records(path: str, rows: list[tuple[int, Any]], unit: str, make: Any,
                     skip_bad: bool) -> tuple[list[Any], int, list[str]]:
    """``make(row, line)`` for every row: ``(records, skipped, first errors)``.

    A row that is malformed or not an object, or for which ``make`` raises ``_Bad``, raises a
    :class:`DataError` naming the file, line and field — or with ``skip_bad`` is counted and skipped.

    Raises:
        DataError: for a bad row (unless ``skip_bad``) or when no row is usable.
    """
    records: list[Any] = []
    skipped, errors = 0, []
    for line, row in rows:
        try:
            if isinstance(row, _Bad):
                raise row
            if not isinstance(row, dict):
                raise _Bad(None, f"expected an object with fields, got {type(row).__name__}")
            records.append(make(row, line))
        except _Bad as bad:
            err = DataError(path, line, bad.field, bad.reason, unit=unit)
            if not skip_bad:
                raise err from None
            skipped += 1
            if len(errors) < _MAX_ERRORS:
                errors.append(str(err))
    if not records:
        raise DataError(path, None, None, f"all {skipped} rows are bad; the first: {errors[0]}")
    return records, skipped, errors


# ----------------------------------------------------------------------------------------------
# Transformations
# ----------------------------------------------------------------------------------------------


def split_implicit_prompt(chosen: str, rejected: str, marker: str = HH_ASSISTANT) -> tuple[str, str, str]:
    """Split two full transcripts into (prompt, chosen completion, rejected completion).

    The prompt is the longest common prefix of ``chosen`` and ``rejected`` cut just after the
    last ``marker`` inside it: HH-RLHF stores whole dialogues, identical up to the final
    assistant turn (Bai et al. 2022, "Training a Helpful and Harmless Assistant with RLHF";
    TRL calls this the implicit prompt). The marker stays in the prompt and the completions
    keep their leading space::

        split_implicit_prompt("\\n\\nHuman: hi\\n\\nAssistant: Hello", "\\n\\nHuman: hi\\n\\nAssistant: Go")
        # ("\\n\\nHuman: hi\\n\\nAssistant:", " Hello", " Go")

    Raises:
        ValueError: if the common prefix holds no ``marker``.
    """
    n = len(os.path.commonprefix([chosen, rejected]))
    k = chosen.rfind(marker, 0, n)
    if k < 0:
        raise ValueError(
            f"no prompt column and no {marker!r} in the common prefix of chosen and rejected, so the implicit "
            f"prompt cannot be found (common prefix: {chosen[:n][:60]!r}); add a \"prompt\" column or pass "
            "assistant_marker="
        )
    end = k + len(marker)
    return chosen[:end], chosen[end:], rejected[end:]


def sft_from_preferences(examples: Sequence[PreferenceExample]) -> list[SFTExample]:
    """Demonstrations from comparisons: ``(prompt, chosen)`` of every example, ties included
    (InstructGPT-style SFT on the preferred responses of a preference set)."""
    return [SFTExample(prompt=e.prompt, completion=e.chosen, source=e.source) for e in examples]


def pairs_from_ranked(example: RankedExample) -> list[tuple[Text, Text, float]]:
    """All ``K(K-1)/2`` pairs of a ranking, as ``(left, right, P[left is better])``.

    The better response is on the left with target 1.0; tied responses (equal ranks) keep their
    list order with target 0.5. Pairs come in index order ``(0,1), (0,2), …, (K-2,K-1)`` — the
    InstructGPT reward-model loss uses all of them (Ouyang et al. 2022, eq. 1).
    """
    r, s = example.responses, example.ranks
    pairs = []
    for i in range(len(r)):
        for j in range(i + 1, len(r)):
            if s[i] == s[j]:
                pairs.append((r[i], r[j], 0.5))
            else:
                better, worse = (i, j) if s[i] < s[j] else (j, i)
                pairs.append((r[better], r[worse], 1.0))
    return pairs


def train_val_split(examples: Sequence[T], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[T], list[T]]:
    """Split ``examples`` at random into (train, val), each in the original order.

    The validation indices are the first ``n_val`` of ``numpy.random.default_rng(seed).permutation(n)``,
    with ``n_val = round(val_fraction * n)``, at least 1 when ``val_fraction > 0`` and ``n >= 2``,
    and at most ``n - 1``. Depends only on ``n``, ``val_fraction`` and ``seed`` (no global RNG).

    Raises:
        ValueError: ``val_fraction`` outside ``[0, 1)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(examples)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, max(n - 1, 0))
    is_val = np.zeros(n, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return [x for x, v in zip(examples, is_val) if not v], [x for x, v in zip(examples, is_val) if v]


def render(tokenizer, prompt: Text, completion: Text) -> tuple[str, str]:
    """Turn a (prompt, completion) into strings for tokenisation: ``prompt_text + completion_text``
    is the full training text.

    Plain strings are returned unchanged. Conversations go through the tokenizer's chat template:
    ``prompt_text = apply_chat_template(prompt, add_generation_prompt=True)`` and the completion
    is the rest of ``apply_chat_template(prompt + completion)`` (TRL's prompt-completion handling).

    Raises:
        ValueError: plain text mixed with a conversation, a tokenizer without ``chat_template``,
            or a template whose full rendering does not start with the prompt rendering (then the
            completion cannot be cut off by position).
    """
    if isinstance(prompt, str) and isinstance(completion, str):
        return prompt, completion
    if isinstance(completion, str) or (isinstance(prompt, str) and prompt != ""):
        raise ValueError("render: prompt and completion must both be plain text or both conversations")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "render: the data is conversational but the tokenizer has no chat_template; set tokenizer.chat_template "
            "to a Jinja template (see transformers' chat templating docs) or use plain-text data"
        )
    prompt_msgs = [] if isinstance(prompt, str) else list(prompt)
    prompt_text = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt_msgs + list(completion), tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "render: the chat template's rendering of prompt + completion does not start with its rendering of the "
            f"prompt with the generation prompt (prompt ends {prompt_text[-40:]!r}, full text has "
            f"{full_text[max(len(prompt_text) - 40, 0):len(prompt_text)]!r} there"
            "); the completion cannot be separated — fix the template's add_generation_prompt part"
        )
    return prompt_text, full_text[len(prompt_text):]
