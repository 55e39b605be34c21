"""Reward functions for online RL on language models: verifiable checks, format regexes, reward models.

A reward function has TRL's signature, so functions written for TRL's ``GRPOTrainer`` work
unchanged::

    def reward(prompts: list, completions: list, **columns) -> list[float | None]: ...

``prompts`` and ``completions`` are strings (or, for conversational data, message lists: the
completion is ``[{"role": "assistant", "content": text}]``), one entry per completion — a prompt
repeats ``G`` times. ``columns`` holds every other column of the prompt data, repeated the same
way (e.g. ``answer``), and ``completion_ids`` (the token ids). ``None`` means "does not apply to
this completion": it is left out of that function's statistics and counts as 0 in the weighted
sum (as in TRL). Several functions are summed with weights.

On the command line a function is named ``module:function`` (importable), ``path/to/file.py:function``,
a reward-model directory written by ``rlhf lm rm``, or a built-in: ``exact_match`` (the completion
equals the ``answer`` column, surrounding whitespace ignored), ``regex:PATTERN`` (1 if the whole
completion matches ``PATTERN``), ``implicit:MODEL_DIR,REF_DIR[,BETA]`` (a DPO-trained model's implicit
reward against its reference, :class:`ImplicitReward`) or ``simpo:MODEL_DIR[,BETA]`` (a SimPO-trained
model's length-normalised log-likelihood, the same class without a reference).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["ImplicitReward", "RewardError", "RewardFunction", "RewardModelReward", "check_columns", "exact_match", "segment_scores",
           "token_ends", "load_reward_function", "regex_reward",
           "score_completions"]


class RewardError(ValueError):
    """A reward function that cannot be loaded, or that returned something other than one number
    (or None) per completion; the message names the function."""


def _text(x: Any) -> str:
    """A completion or answer as text (the content of a one-message conversation)."""
    if isinstance(x, (list, tuple)) and x and isinstance(x[-1], dict):
        return str(x[-1].get("content", ""))
    return str(x)


def exact_match(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any] | None = None,
                **columns: Any) -> list[float]:
    """1.0 where the completion equals the ``answer`` column (leading/trailing whitespace ignored), else 0.0.

    Raises:
        RewardError: if the data has no ``answer`` column.
    """
    if answer is None:
        raise RewardError("exact_match needs an 'answer' column in the prompt data")
    return [float(_text(c).strip() == str(a).strip()) for c, a in zip(completions, answer)]


def regex_reward(pattern: str) -> Callable[..., list[float]]:
    """A reward of 1.0 for completions that match ``pattern`` as a whole (``re.fullmatch``, DOTALL), else 0.0.

    The usual format reward of R1-style training, e.g. ``r"<think>.*</think>\\s*<answer>.*</answer>"``.

    Raises:
        RewardError: for a pattern that does not compile.
    """
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise RewardError(f"regex reward {pattern!r} does not compile: {e}") from None

    def regex(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        return [float(compiled.fullmatch(_text(c)) is not None) for c in completions]

    regex.__name__ = f"regex:{pattern}"
    return regex


class RewardModelReward:
    """A reward model directory (``rlhf lm rm``) as a reward function: the mean of its heads'
    scores of ``prompt + completion`` (:func:`rlhfkit.language.reward.score`), in the reward
    model's units.

    Args:
        model_dir: the directory (model, tokenizer, its pooling in the config).
        max_length: longest scored sequence in tokens (the prompt is cut from the left first).
        batch_size: sequences per forward pass.

    Raises:
        FileNotFoundError: if the directory holds no model.
    """

    def __init__(self, model_dir: str | Path, *, max_length: int = 1024, batch_size: int = 32):
        from rlhfkit.language.models import load_reward_model, load_tokenizer

        self.__name__ = f"rm:{Path(model_dir).name}"
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_reward_model(model_dir, pad_token_id=self.tokenizer.pad_token_id).eval()
        self.max_length, self.batch_size = max_length, batch_size

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        from rlhfkit.language.data import render
        from rlhfkit.language.logprobs import encode, pad
        from rlhfkit.language.reward import score

        encoded = [encode(self.tokenizer, *render(self.tokenizer, p, c), max_length=self.max_length)
                   for p, c in zip(prompts, completions)]
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(encoded), self.batch_size):
                scores = score(self.model, pad(encoded[i:i + self.batch_size], self.tokenizer.pad_token_id))  # (b, E)
                out += scores.mean(-1).tolist()
        return out


class ImplicitReward:
    """A DPO- or SimPO-trained policy as a reward function.

    With a reference, the DPO implicit reward ``r(x, y) = β [log π_θ(y | x) − log π_ref(y | x)]``
    (Rafailov et al. 2023, Eq. 5, the partition term dropped: it depends on ``x`` only, so it cancels
    between completions of one prompt). Without one (``ref_dir=None``), SimPO's reward
    ``r(x, y) = (β / |y|) log π_θ(y | x)``, the length-averaged log-likelihood (Meng et al. 2024, Eq. 4).
    Nats × ``β``; ``|y|`` counts the completion's tokens and EOS.

    A language model fitted to preference pairs this way keeps its language-model head, so what it
    knows about good completions (their likelihood) is not discarded for a fresh scalar head, which
    matters when there are few labels (``bench/instructgpt_arith.py``: 81% held-out pair accuracy
    from 1,000 labels against 61% for a scalar-head reward model on the same backbone).

    Args:
        model_dir: the DPO- or SimPO-trained policy (``rlhf lm dpo``'s output).
        ref_dir: its reference (the model DPO started from), or None for SimPO's reward.
        beta: the ``β`` it was trained with.
        max_length: longest scored sequence in tokens (the prompt is cut from the left first).
        max_tokens: padded tokens per forward pass.

    Raises:
        FileNotFoundError: if a directory holds no model.
    """

    def __init__(self, model_dir: str | Path, ref_dir: str | Path | None = None, *, beta: float = 0.1,
                 max_length: int = 1024, max_tokens: int = 8192):
        from rlhfkit.language.models import load_causal_lm, load_tokenizer

        self.__name__ = f"{'implicit' if ref_dir is not None else 'simpo'}:{Path(model_dir).name}"
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_causal_lm(model_dir).eval()
        self.ref = load_causal_lm(ref_dir).eval() if ref_dir is not None else None
        self.beta, self.max_length, self.max_tokens = beta, max_length, max_tokens

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        from rlhfkit.language.data import render
        from rlhfkit.language.logprobs import encode, run_chunked, sequence_logprobs

        encoded = [encode(self.tokenizer, *render(self.tokenizer, p, c), max_length=self.max_length)
                   for p, c in zip(prompts, completions)]
        average = self.ref is None  # SimPO: length-normalised, no reference

        def logprobs(model: Any) -> torch.Tensor:
            return run_chunked(lambda b: sequence_logprobs(model, b, average=average)[0], encoded,
                               self.tokenizer.pad_token_id, max_tokens=self.max_tokens)

        with torch.no_grad():
            r = logprobs(self.model) if self.ref is None else logprobs(self.model) - logprobs(self.ref)
        return (self.beta * r).tolist()


@dataclass(frozen=True)
class RewardFunction:
    """A named, weighted reward function."""

    name: str
    func: Callable[..., Sequence[float | None]]
    weight: float = 1.0


def _simpo(spec: str) -> ImplicitReward:
    """``simpo:MODEL_DIR[,BETA]`` → :class:`ImplicitReward` without a reference (β default 2, SimPO's)."""
    parts = spec[len("simpo:"):].split(",")
    if len(parts) not in (1, 2) or not parts[0]:
        raise RewardError(f"reward {spec!r}: expected simpo:MODEL_DIR[,BETA]")
    if not (Path(parts[0]) / "config.json").is_file():
        raise RewardError(f"reward {spec!r}: {parts[0]} is not a model directory (no config.json)")
    try:
        beta = float(parts[1]) if len(parts) == 2 else 2.0
    except ValueError:
        raise RewardError(f"reward {spec!r}: BETA {parts[1]!r} is not a number") from None
    return ImplicitReward(parts[0], None, beta=beta)


def _implicit(spec: str) -> ImplicitReward:
    """``implicit:MODEL_DIR,REF_DIR[,BETA]`` → :class:`ImplicitReward`."""
    parts = spec[len("implicit:"):].split(",")
    if len(parts) not in (2, 3):
        raise RewardError(f"reward {spec!r}: expected implicit:MODEL_DIR,REF_DIR[,BETA]")
    for d in parts[:2]:
        if not (Path(d) / "config.json").is_file():
            raise RewardError(f"reward {spec!r}: {d} is not a model directory (no config.json)")
    try:
        beta = float(parts[2]) if len(parts) == 3 else 0.1
    except ValueError:
        raise RewardError(f"reward {spec!r}: BETA {parts[2]!r} is not a number") from None
    return ImplicitReward(parts[0], parts[1], beta=beta)


def _from_file(path: Path, attr: str, spec: str) -> Any:
    if not path.is_file():
        raise RewardError(f"reward {spec!r}: no such file {path}")
    name = f"_rlhfkit_reward_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise RewardError(f"reward {spec!r}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the user's module failed to run: say so, with the cause
        raise RewardError(f"reward {spec!r}: importing {path} failed: {type(e).__name__}: {e}") from e
    return module


def load_reward_function(spec: str, *, weight: float = 1.0) -> RewardFunction:
    """Resolve a reward named on the command line (see the module docstring) into a :class:`RewardFunction`.

    Raises:
        RewardError: for a module, file or attribute that does not exist or fails to import, an
            attribute that is not callable or does not take ``(prompts, completions, ...)``, or a
            bad regex.
    """
    if spec == "exact_match":
        return RewardFunction(spec, exact_match, weight)
    if spec.startswith("regex:"):
        return RewardFunction(spec, regex_reward(spec[len("regex:"):]), weight)
    if spec.startswith("implicit:"):
        return RewardFunction(spec, _implicit(spec), weight)
    if spec.startswith("simpo:"):
        return RewardFunction(spec, _simpo(spec), weight)
    if Path(spec).is_dir():
        if not (Path(spec) / "config.json").is_file():
            raise RewardError(f"reward {spec!r} is a directory but not a model directory (no config.json)")
        return RewardFunction(f"rm:{Path(spec).name}", RewardModelReward(spec), weight)
    if ":" not in spec:
        raise RewardError(f"reward {spec!r}: expected module:function, path/to/file.py:function, a reward-model "
                          "directory, exact_match or regex:PATTERN")
    where, attr = spec.rsplit(":", 1)
    if where.endswith(".py") or "/" in where:
        module = _from_file(Path(where), attr, spec)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:
            raise RewardError(f"reward {spec!r}: cannot import module {where!r}: {type(e).__name__}: {e}") from e
    func = getattr(module, attr, None)
    if func is None:
        raise RewardError(f"reward {spec!r}: {where} has no attribute {attr!r}")
    if not callable(func):
        raise RewardError(f"reward {spec!r}: {attr} is not callable")
    try:
        inspect.signature(func).bind_partial([], [])
    except TypeError as e:
        raise RewardError(f"reward {spec!r}: {attr} must accept (prompts, completions, **columns): {e}") from None
    except ValueError:  # builtins without a signature: let the first call tell
        pass
    return RewardFunction(spec, func, weight)


def check_columns(functions: Sequence[RewardFunction], columns: Sequence[str]) -> None:
    """Check, before any training, that every reward function's required keyword arguments are data columns.

    A required parameter after ``(prompts, completions)`` (no default, not ``*args``/``**kwargs``)
    must be a column of the prompt data or ``completion_ids``.

    Raises:
        RewardError: naming the function, the missing column and the columns there are.
    """
    available = set(columns) | {"completion_ids", "prompts", "completions"}
    for rf in functions:
        try:
            params = list(inspect.signature(rf.func).parameters.values())
        except (TypeError, ValueError):
            continue
        for param in params[2:]:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.default is not param.empty:
                continue
            if param.name not in available:
                raise RewardError(f"reward function {rf.name} needs a column {param.name!r}, but the prompt data "
                                  f"has only: {', '.join(sorted(columns)) or 'no columns besides the prompt'}")


def score_completions(functions: Sequence[RewardFunction], prompts: Sequence[Any], completions: Sequence[Any],
                      columns: dict[str, Sequence[Any]]) -> tuple[Tensor, Tensor]:
    """Call every reward function on a batch and combine them.

    Args:
        functions: the weighted functions.
        prompts, completions: ``N`` entries each.
        columns: extra keyword arguments, each ``N`` entries (data columns, ``completion_ids``).

    Returns:
        ``(rewards (N,), per_function (N, F))``: the weighted sum (None counts 0) and each
        function's raw values (NaN where it returned None).

    Raises:
        RewardError: naming the function, if it raises, returns something that is not a
            sequence of ``N`` numbers or None, or returns NaN or an infinity.
    """
    N = len(completions)
    values = torch.full((N, len(functions)), math.nan, dtype=torch.float32)
    for f, rf in enumerate(functions):
        try:
            out = rf.func(list(prompts), list(completions), **columns)
        except RewardError:
            raise
        except Exception as e:
            raise RewardError(f"reward function {rf.name} raised {type(e).__name__}: {e}") from e
        if isinstance(out, Tensor):
            out = out.tolist()
        if not isinstance(out, Sequence) or isinstance(out, (str, bytes)):
            raise RewardError(f"reward function {rf.name} returned {type(out).__name__}; expected a list of {N} "
                              "floats (or None)")
        if len(out) != N:
            raise RewardError(f"reward function {rf.name} returned {len(out)} values for {N} completions")
        for i, v in enumerate(out):
            if v is None:
                continue
            if not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
                raise RewardError(f"reward function {rf.name} returned {v!r} (a {type(v).__name__}) for completion "
                                  f"{i}; expected a float or None")
            if not math.isfinite(float(v)):
                raise RewardError(f"reward function {rf.name} returned {v} for completion {i}; rewards must be "
                                  "finite (None skips a completion)")
            values[i, f] = float(v)
    weights = torch.tensor([rf.weight for rf in functions], dtype=torch.float32)
    rewards = (values * weights).nan_to_num(0.0).sum(-1) if functions else torch.zeros(N)
    return rewards, values


def token_ends(tokenizer: Any, completion_ids: Sequence[int]) -> list[int]:
    """For each token of a completion, the length of the decoded text up to and including it
    (special tokens dropped): the character offset at which that token ends."""
    return [len(tokenizer.decode(list(completion_ids[:k + 1]), skip_special_tokens=True))
            for k in range(len(completion_ids))]


def segment_scores(functions: Sequence[RewardFunction], tokenizer: Any, prompts: Sequence[Any],
                   completions: Sequence[Any], completion_ids: Sequence[Sequence[int]],
                   columns: dict[str, Sequence[Any]], length: int) -> Tensor:
    """Fine-grained rewards (Wu et al. 2023) as a dense ``(N, length)`` tensor of per-token rewards.

    A segment reward function has the usual signature but returns, for each completion, a list of
    ``(end, score)`` pairs: a segment (a sentence, an answer, a span it marks) ending at character
    ``end`` of the completion text and its score. The score lands on the token that holds the
    segment's last character (:func:`rlhfkit.rl.segment_rewards`), weighted by the function's weight;
    scores of several functions on one token add up.

    Raises:
        RewardError: naming the function, if it raises, returns the wrong number of lists, or a list
            entry that is not ``(end, score)`` with ``0 < end`` and a finite score.
    """
    from rlhfkit.rl import segment_rewards

    N = len(completions)
    ends: list[list[int]] = [[] for _ in range(N)]
    scores: list[list[float]] = [[] for _ in range(N)]
    offsets = [token_ends(tokenizer, ids) for ids in completion_ids]
    for rf in functions:
        try:
            out = rf.func(list(prompts), list(completions), completion_ids=completion_ids, **columns)
        except Exception as e:
            raise RewardError(f"segment reward function {rf.name} raised {type(e).__name__}: {e}") from e
        if not isinstance(out, Sequence) or len(out) != N:
            raise RewardError(f"segment reward function {rf.name} must return one list of (end, score) per "
                              f"completion ({N}), got {type(out).__name__}"
                              f"{f' of {len(out)}' if isinstance(out, Sequence) else ''}")
        for i, segments in enumerate(out):
            for seg in segments:
                try:
                    end, score = int(seg[0]), float(seg[1])
                except (TypeError, ValueError, IndexError):
                    raise RewardError(f"segment reward function {rf.name}: completion {i} has {seg!r}; expected "
                                      "(end, score)") from None
                if end < 1 or not math.isfinite(score):
                    raise RewardError(f"segment reward function {rf.name}: completion {i} has end {end} and score "
                                      f"{score}; need end >= 1 and a finite score")
                token = next((k for k, e in enumerate(offsets[i]) if e >= end), len(offsets[i]) - 1)
                if token < 0:
                    continue  # an empty completion has no token to hold a segment
                ends[i].append(token)
                scores[i].append(rf.weight * score)
    return segment_rewards(ends, scores, (N, length))
