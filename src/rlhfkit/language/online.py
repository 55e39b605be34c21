"""What the online trainers (GRPO and its family, PPO) share: the prompt stream, scoring a rollout
with the reward functions, per-token log-probs (and values) of packed groups, greedy evaluation,
the run's timing and step metrics.

Each trainer step is the same skeleton — take prompts, sample completions
(:mod:`rlhfkit.language.generation`), score them (:mod:`rlhfkit.language.rewards`), compute
advantages, update — and only the advantages and the loss differ between GRPO and PPO.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlhfkit.language.generation import HFGenerator, Rollout, SamplingParams
from rlhfkit.language.logprobs import Encoded, can_pack, packed_token_outputs, run_packed, unflatten_tokens
from rlhfkit.language.prompts import PromptExample, encode_prompts
from rlhfkit.language.rewards import RewardFunction, score_completions

__all__ = ["OnlineResult", "PromptStream", "ScoredRollout", "completion_logprobs", "decode_completions",
           "evaluate_greedy", "reduce_metrics", "reward_stats", "rollout_groups", "score_rollout"]


@dataclass
class OnlineResult:
    """What an online trainer returns. Times in seconds; generation, reward and training add up to
    ``wall_s`` (less bookkeeping), evaluation excluded."""

    model: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    wall_s: float = 0.0
    generate_s: float = 0.0
    reward_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    completions: int = 0
    completion_tokens: int = 0
    trained_tokens: int = 0
    """Tokens of the sequences the updates were taken over (prompt + completion of every completion,
    once per pass; a shared prompt counts once per completion, as in a one-sequence-per-row
    trainer). GRPO's groups without signal count too: their gradient is exactly zero, known without a
    forward pass."""
    computed_tokens: int = 0
    """Tokens through the training forward passes: as ``trained_tokens`` less skipped groups."""

    @property
    def completions_per_s(self) -> float:
        """Completions sampled per second of training wall time."""
        return self.completions / self.wall_s if self.wall_s else 0.0

    @property
    def trained_tokens_per_s(self) -> float:
        """Trained tokens per second of training wall time."""
        return self.trained_tokens / self.wall_s if self.wall_s else 0.0


class PromptStream:
    """An endless, seeded stream of prompt indices: a fresh permutation every epoch; resumable from
    ``(epoch, position)``."""

    def __init__(self, n: int, seed: int, epoch: int = 0, position: int = 0):
        self.n, self.seed, self.epoch, self.position = n, seed, epoch, position
        self._order = np.random.default_rng([seed, epoch]).permutation(n)

    def take(self, k: int) -> list[int]:
        """The next ``k`` prompt indices."""
        out = []
        while len(out) < k:
            if self.position == self.n:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            out.append(int(self._order[self.position]))
            self.position += 1
        return out


def decode_completions(tokenizer: Any, rollout: Rollout, conversational: bool) -> list[Any]:
    """The completions as text (special tokens dropped), or as one assistant message each for
    conversational prompts — what TRL hands reward functions."""
    texts = tokenizer.batch_decode([rollout.completion(i) for i in range(rollout.n_completions)],
                                   skip_special_tokens=True)
    return [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts


@dataclass
class ScoredRollout:
    """A rollout with its texts and rewards; ``N`` completions, prompt-major.

    Attributes:
        rollout: the sampled tokens.
        prompts: ``(N,)`` index into the prompt data of each completion's prompt.
        texts: the decoded completions.
        rewards: ``(N,)`` the weighted sum of the reward functions.
        per_function: ``(N, F)`` each function's value (NaN where it returned None).
    """

    rollout: Rollout
    prompts: list[int]
    texts: list[Any]
    rewards: Tensor
    per_function: Tensor


def score_rollout(tokenizer: Any, rollout: Rollout, batch: Sequence[int], data: Sequence[PromptExample],
                  rewards: Sequence[RewardFunction]) -> ScoredRollout:
    """Decode a rollout of the prompts ``batch`` (indices into ``data``) and score it with ``rewards``,
    passing every data column and ``completion_ids`` by name.

    Raises:
        RewardError: as :func:`rlhfkit.language.rewards.score_completions`.
    """
    conversational = not isinstance(data[batch[0]].prompt, str)
    texts = decode_completions(tokenizer, rollout, conversational)
    rep = [i for i in batch for _ in range(rollout.group_size)]
    columns = {k: [data[i].columns.get(k) for i in rep] for k in data[batch[0]].columns}
    columns["completion_ids"] = [list(rollout.completion(j)) for j in range(rollout.n_completions)]
    total, per = score_completions(rewards, [data[i].prompt for i in rep], texts, columns)
    return ScoredRollout(rollout, rep, texts, total, per)


def rollout_groups(rollout: Rollout) -> list[list[Encoded]]:
    """Each prompt's completions as encoded prompt + completion sequences, one list per prompt (a
    group packs into one row that runs the prompt once)."""
    G = rollout.group_size
    return [[Encoded(rollout.prompt_of(j) + rollout.completion(j), len(rollout.prompt_of(j)))
             for j in range(g * G, (g + 1) * G)] for g in range(rollout.n_completions // G)]


def completion_logprobs(model: Any, groups: Sequence[Sequence[Encoded]], pad_id: int, T: int, *, temperature: float,
                        max_tokens: int, share_prefix: bool,
                        value_head: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs ``(S, T)`` of the completion tokens of every sequence of ``groups`` (group
    order, left-aligned, 0 after each end) under the tempered policy, and with ``value_head`` the
    values ``V(s_t)`` of the state before each token — the head on the hidden state that predicts
    the token: ``(S, T)`` for a head with one output, ``(S, T, H)`` for ``H`` outputs.
    """
    def fn(pb: Any) -> Tensor:
        lp, hidden = packed_token_outputs(model, pb, temperature=temperature, return_hidden=value_head is not None)
        rows = [unflatten_tokens(lp, pb, T)]
        if value_head is not None:
            values = value_head(hidden).float()  # (M, H)
            rows += [unflatten_tokens(values[:, h], pb, T) for h in range(values.shape[-1])]
        return torch.stack(rows, -1)  # (s, T, 1 + H)

    out = run_packed(fn, groups, pad_id, max_tokens=max_tokens, share_prefix=share_prefix and can_pack(model))
    if value_head is None:
        return out[..., 0], None
    return out[..., 0], (out[..., 1] if out.shape[-1] == 2 else out[..., 1:])


def evaluate_greedy(model: Any, tokenizer: Any, prompts: Sequence[PromptExample], rewards: Sequence[RewardFunction],
                    *, max_new_tokens: int, max_length: int = 1024, batch_size: int = 256) -> dict[str, float]:
    """Mean reward of greedy completions of held-out prompts: ``eval/reward`` and ``eval/<function>``.

    Raises:
        RewardError: as :func:`rlhfkit.language.rewards.score_completions`.
    """
    generator = HFGenerator(model, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                            batch_size=batch_size)
    ids = encode_prompts(tokenizer, [p.prompt for p in prompts], max_length)
    rollout = generator.generate(ids, SamplingParams(1, max_new_tokens, temperature=0.0), seed=0)
    scored = score_rollout(tokenizer, rollout, list(range(len(prompts))), prompts, rewards)
    out = {"eval/reward": float(scored.rewards.mean())}
    for f, rf in enumerate(rewards):
        out[f"eval/{rf.name}"] = float(scored.per_function[:, f].nanmean())
    return out


def reward_stats(prefix: str, x: Tensor) -> dict[str, float]:
    """``{prefix}/mean`` and ``{prefix}/std`` over the non-NaN entries (nothing if there are none)."""
    x = x[~x.isnan()]
    if not len(x):
        return {}
    return {f"{prefix}/mean": float(x.mean()), f"{prefix}/std": float(x.std()) if len(x) > 1 else 0.0}


def reduce_metrics(metrics: dict[str, list[float]], acc: Any, keys: Sequence[str],
                   summed: Sequence[str] = ()) -> dict[str, float]:
    """A step's metrics: the mean over its updates. Over processes the ``summed`` metrics add up (each
    process holds its share of, e.g., a loss normalised over the whole batch) and the others are
    averaged over what each process ran. ``keys`` must be the same list on every process."""
    sums = torch.tensor([[sum(metrics.get(k, [])), len(metrics.get(k, []))] for k in keys],
                        dtype=torch.float64)  # (K, 2)
    if acc.num_processes > 1:
        sums = acc.reduce(sums, reduction="sum")
    out = {}
    for i, k in enumerate(keys):
        total, n = float(sums[i, 0]), float(sums[i, 1])
        if n:
            out[k] = total / (n / acc.num_processes) if k in summed else total / n
    return out
