"""Sampling completions from the policy: the one seam between the online trainers and a generation engine.

The trainers (GRPO, RLOO, later PPO) ask a :class:`Generator` for ``G`` completions of each of a
batch of prompts and get back a :class:`Rollout` — token ids, masks, whether each completion
ended with EOS, and the log-probabilities under which its tokens were sampled. Nothing else of
the engine leaks into them, so a serving engine (vLLM on a GPU) can take :class:`HFGenerator`'s
place by implementing the two methods of the protocol.

:class:`HFGenerator` runs transformers' ``generate`` on the policy itself (KV cache, left
padding, temperature / top-p / top-k, stop at EOS). The ``G`` completions of a prompt share it:
the prompts are run once to fill the KV cache, which is then repeated ``G`` times, so the prompt
is computed once per group rather than once per completion (``share_prompt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = ["Generator", "HFGenerator", "Rollout", "SamplingParams", "left_pad"]


@dataclass(frozen=True)
class SamplingParams:
    """How completions are sampled."""

    n: int = 8
    """``G``: completions per prompt."""
    max_new_tokens: int = 256
    """Longest completion, in tokens (EOS included); a completion cut here is unfinished."""
    temperature: float = 1.0
    """Softmax temperature; 1 samples from the policy itself, 0 decodes greedily (the most likely token)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches ``top_p`` (1: off)."""
    top_k: int = 0
    """Keep only the ``top_k`` most likely tokens (0: off)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n (completions per prompt) must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {self.top_k}")


@dataclass(frozen=True)
class Rollout:
    """``N = P · G`` sampled completions of ``P`` prompts, prompt-major (prompt 0's ``G`` first).

    Attributes:
        prompt_ids: the ``P`` prompts' token ids.
        completion_ids: ``(N, T)`` completion tokens, right-padded with the pad id; ``T`` is the
            longest completion (at most ``max_new_tokens``).
        completion_mask: ``(N, T)`` bool, True on the completion's tokens, its EOS included.
        finished: ``(N,)`` bool, the completion ended with EOS (False: cut at ``max_new_tokens``).
        sampling_logprobs: ``(N, T)`` float32 log-probability of each token under the distribution
            it was sampled from (temperature, top-p and top-k applied; greedy: the untempered
            policy's), 0 on padding, in nats.
        group_size: ``G``.
    """

    prompt_ids: tuple[tuple[int, ...], ...]
    completion_ids: Tensor
    completion_mask: Tensor
    finished: Tensor
    sampling_logprobs: Tensor
    group_size: int

    def __post_init__(self) -> None:
        N = len(self.prompt_ids) * self.group_size
        for name in ("completion_ids", "completion_mask", "sampling_logprobs"):
            t = getattr(self, name)
            if t.ndim != 2 or t.shape[0] != N:
                raise ValueError(f"Rollout.{name} must be (N, T) with N = P · G = {N}, got {tuple(t.shape)}")
        if self.finished.shape != (N,):
            raise ValueError(f"Rollout.finished must be ({N},), got {tuple(self.finished.shape)}")

    @property
    def n_completions(self) -> int:
        """``N``."""
        return self.completion_ids.shape[0]

    @property
    def lengths(self) -> Tensor:
        """``(N,)`` completion lengths in tokens (EOS included)."""
        return self.completion_mask.sum(-1)

    def completion(self, i: int) -> tuple[int, ...]:
        """Completion ``i``'s tokens (EOS included, padding dropped)."""
        return tuple(self.completion_ids[i, : int(self.completion_mask[i].sum())].tolist())

    def prompt_of(self, i: int) -> tuple[int, ...]:
        """The prompt of completion ``i``."""
        return self.prompt_ids[i // self.group_size]


class Generator(Protocol):
    """What the online trainers need from a generation engine."""

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *, seed: int) -> Rollout:
        """``params.n`` completions of each prompt (token ids, no padding); the same seed gives the same rollout."""
        ...

    def sync(self, model: Any) -> None:
        """Take the policy's current weights (an engine holding its own copy reloads them; HF: nothing to do)."""
        ...


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad token id sequences: ``(input_ids (B, T), attention_mask (B, T))``.

    ``[[5, 6, 7], [8]]`` with ``pad_id = 0`` gives ``[[5, 6, 7], [0, 0, 8]]`` and mask
    ``[[1, 1, 1], [0, 0, 1]]`` — every sequence ends in the last column, where generation continues.

    Raises:
        ValueError: on no sequences or an empty one.
    """
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("left_pad needs at least one sequence and no empty sequence (a prompt needs a token)")
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, T - len(s):] = torch.tensor(list(s), dtype=torch.long)
        mask[i, T - len(s):] = 1
    return ids, mask


def _cache_kwarg() -> str:
    """``generate``'s name for a pre-filled KV cache: ``cache`` from transformers 5.40 on, ``past_key_values`` before."""
    try:
        from transformers.generation.utils import ALL_CACHE_NAMES
    except ImportError:
        return "past_key_values"
    return "cache" if "cache" in ALL_CACHE_NAMES else "past_key_values"


_CACHE_KWARG = _cache_kwarg()


class _RecordLogprobs:
    """A logits processor that keeps the log-softmax of the sampling distribution of the step before
    and reads off the log-probability of the token that step sampled.

    ``generate`` runs custom processors before its sampling warpers (temperature, top-k, top-p), so
    this one applies transformers' own warpers to a copy of the scores to see what is sampled from.
    """

    def __init__(self, params: SamplingParams) -> None:
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.warpers: list[Any] = []
        if params.temperature > 0:
            if params.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                self.warpers.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(params.top_p))
        self.previous: Tensor | None = None
        self.taken: list[Tensor] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        self.read(input_ids[:, -1])
        warped = scores.float()
        for warper in self.warpers:
            warped = warper(input_ids, warped)
        self.previous = warped.log_softmax(-1)
        return scores

    def read(self, tokens: Tensor) -> None:
        if self.previous is not None:
            self.taken.append(self.previous.gather(-1, tokens[:, None]).squeeze(-1))
            self.previous = None


class HFGenerator:
    """:class:`Generator` on transformers' ``generate`` with the policy model itself.

    Args:
        model: the policy (a causal LM; a peft or DDP wrapper is looked through).
        pad_id: the tokenizer's pad token id.
        eos_id: the tokenizer's EOS token id (generation stops there).
        share_prompt: compute each prompt once and repeat its KV cache for its ``G`` completions
            (same tokens as without; less compute when prompts are long or ``G`` is large).
        batch_size: prompts per ``generate`` call (0: all at once).
    """

    def __init__(self, model: Any, *, pad_id: int, eos_id: int, share_prompt: bool = True, batch_size: int = 0):
        if eos_id is None:
            raise ValueError("HFGenerator needs an EOS token id: completions stop there")
        self.model = model
        self.pad_id, self.eos_id = pad_id, eos_id
        self.share_prompt = share_prompt
        self.batch_size = batch_size

    def sync(self, model: Any) -> None:
        """Nothing to do: ``generate`` runs on the policy's own weights."""
        self.model = model

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *, seed: int) -> Rollout:
        """``params.n`` completions of each prompt (see :class:`Generator`).

        Sampling draws from torch's global generator, seeded with ``seed`` inside
        ``torch.random.fork_rng`` (the caller's random state is left as it was).

        Raises:
            ValueError: on no prompts or an empty prompt.
        """
        prompts = [tuple(int(t) for t in p) for p in prompt_ids]
        step = self.batch_size or len(prompts)
        parts = []
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for i in range(0, len(prompts), step):
                parts.append(self._generate(prompts[i:i + step], params))
        T = max(p[0].shape[1] for p in parts)

        def cat(k: int, fill: Any) -> Tensor:
            return torch.cat([torch.nn.functional.pad(p[k], (0, T - p[k].shape[1]), value=fill) for p in parts])

        ids, mask, logprobs = cat(0, self.pad_id), cat(1, False), cat(2, 0.0)
        finished = torch.cat([p[3] for p in parts])
        return Rollout(tuple(prompts), ids, mask, finished, logprobs, params.n)

    def _generate(self, prompts: list[tuple[int, ...]], params: SamplingParams) -> tuple[Tensor, ...]:
        model = getattr(self.model, "module", self.model)
        was_training = model.training
        model.eval()
        G = params.n
        input_ids, attention_mask = left_pad(prompts, self.pad_id)  # (P, Tp)
        kwargs: dict[str, Any] = {}
        if self.share_prompt and G > 1 and input_ids.shape[1] > 1:
            # the prompt, less its last token, once per group: the KV cache, repeated G times
            head, head_mask = input_ids[:, :-1], attention_mask[:, :-1]
            positions = (head_mask.cumsum(-1) - 1).clamp_min(0)
            cache = model(input_ids=head, attention_mask=head_mask, position_ids=positions, use_cache=True,
                          logits_to_keep=1).past_key_values
            cache.batch_repeat_interleave(G)
            kwargs[_CACHE_KWARG] = cache
        input_ids = input_ids.repeat_interleave(G, 0)  # (N, Tp)
        attention_mask = attention_mask.repeat_interleave(G, 0)
        record = _RecordLogprobs(params)
        sampling = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k) \
            if params.temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **sampling,
                             max_new_tokens=params.max_new_tokens, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
                             logits_processor=[record], return_dict_in_generate=False, **kwargs)
        completion = out[:, input_ids.shape[1]:]  # (N, T)
        record.read(completion[:, -1])
        logprobs = torch.stack(record.taken[:completion.shape[1]], 1) if record.taken else torch.zeros(len(out), 0)
        is_eos = completion == self.eos_id
        # tokens up to and including the first EOS
        mask = (is_eos.long().cumsum(-1) - is_eos.long()) == 0  # (N, T)
        finished = is_eos.any(-1)
        completion = completion.masked_fill(~mask, self.pad_id)
        if was_training:
            model.train()
        return completion, mask, logprobs.masked_fill(~mask, 0.0), finished
