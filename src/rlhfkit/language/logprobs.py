"""Tokenising (prompt, completion) pairs, padding them, and the one masked sequence log-probability.

Every language trainer (SFT, reward model, DPO, later PPO and GRPO) goes through these
functions, so the masking of prompt tokens, padding and EOS is written once.

A completion is tokenised apart from its prompt and appended to it, followed by EOS:
``prompt_ids + completion_ids + [eos]``. The completion mask is True on the completion's tokens
and its EOS — the tokens a policy is trained on and scored by. Sequences longer than
``max_length`` lose prompt tokens from the left first (the end of the prompt, next to the
response, is kept), then completion tokens from the right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["CHUNK_TOKENS", "Encoded", "PaddedBatch", "encode", "length_chunks", "pad", "run_chunked", "sequence_logprobs",
           "token_logprobs"]


CHUNK_TOKENS = 4096
"""Default padded-token budget of one forward chunk (:func:`run_chunked`)."""


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: ``input_ids`` of ``n_prompt`` prompt tokens then the completion (and EOS)."""

    input_ids: tuple[int, ...]
    n_prompt: int
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer: Any, prompt: str, completion: str, *, max_length: int, add_eos: bool = True) -> Encoded:
    """Tokenise one (prompt, completion) pair (see the module docstring for the layout and truncation).

    The prompt is encoded with the tokenizer's special tokens (a BOS if it adds one), the
    completion without, and ``tokenizer.eos_token_id`` is appended when ``add_eos``.

    Raises:
        ValueError: for ``max_length < 2``, an empty completion, or ``add_eos`` with a tokenizer
            that has no EOS token.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    p_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"]) if prompt else []
    c_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if add_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token or pass add_eos=False")
        c_ids.append(tokenizer.eos_token_id)
    if not c_ids:
        raise ValueError("empty completion: nothing to score")
    truncated = len(p_ids) + len(c_ids) > max_length
    if truncated:
        keep_prompt = max(max_length - len(c_ids), 0)
        p_ids = p_ids[len(p_ids) - keep_prompt:] if keep_prompt > 0 else []
        c_ids = c_ids[: max_length - len(p_ids)]
    return Encoded(tuple(p_ids + c_ids), len(p_ids), truncated)


@dataclass(frozen=True)
class PaddedBatch:
    """A right-padded batch.

    Attributes:
        input_ids: ``(B, T)`` token ids, ``pad_id`` after each sequence's end.
        attention_mask: ``(B, T)`` 1 on real tokens, 0 on padding.
        completion_mask: ``(B, T)`` bool, True on completion tokens (incl. EOS).
    """

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return int(self.attention_mask.sum())


def pad(examples: Sequence[Encoded], pad_id: int, *, pad_to_multiple_of: int = 1) -> PaddedBatch:
    """Right-pad encoded examples into one batch.

    Two examples, ``a`` = prompt ``[5, 6]`` + completion ``[7, eos]`` and ``b`` = prompt ``[5]``
    + completion ``[8, 9, 10, eos]``, with ``pad_id = 0`` (``eos = 2``)::

        input_ids        [[5, 6, 7, 2, 0],      attention_mask  [[1, 1, 1, 1, 0],
                          [5, 8, 9, 10, 2]]                      [1, 1, 1, 1, 1]]
        completion_mask  [[F, F, T, T, F],
                          [F, T, T, T, T]]

    The first token of a sequence is never in the completion mask (nothing predicts it), even
    with an empty prompt.

    Raises:
        ValueError: on an empty list.
    """
    if not examples:
        raise ValueError("cannot pad an empty batch")
    T = max(len(e) for e in examples)
    T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    B = len(examples)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    completion_mask = torch.zeros((B, T), dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e)
        input_ids[i, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        attention_mask[i, :n] = 1
        completion_mask[i, max(e.n_prompt, 1):n] = True  # token 0 has no context: never scored
    return PaddedBatch(input_ids, attention_mask, completion_mask)


def token_logprobs(logits: Tensor, input_ids: Tensor) -> Tensor:
    """Log-probability of each token given the ones before it.

    Args:
        logits: ``(B, T, V)`` next-token logits (position ``t`` predicts token ``t + 1``).
        input_ids: ``(B, T)`` the tokens.

    Returns:
        ``(B, T)``: entry ``t`` is ``log p(x_t | x_<t)``; entry 0 (no context) is 0.

    Raises:
        ValueError: on mismatched shapes.
    """
    if logits.ndim != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(f"logits must be (B, T, V) matching input_ids (B, T); got {tuple(logits.shape)} "
                         f"and {tuple(input_ids.shape)}")
    logits = logits[:, :-1].float()  # (B, T-1, V)
    targets = input_ids[:, 1:].unsqueeze(-1)  # (B, T-1, 1)
    lp = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (B, T-1)
    return torch.nn.functional.pad(lp, (1, 0))  # (B, T)


def sequence_logprobs(model: Any, batch: PaddedBatch, *, average: bool = False) -> tuple[Tensor, Tensor]:
    """Summed (or mean) log-probability of each completion under ``model``: ``log π(y | x)``.

    ``log π(y | x) = Σ_t m_t · log π(x_t | x_<t)`` with ``m`` the completion mask (prompt tokens
    and padding excluded, EOS included) — the quantity DPO's ratios and PPO's per-token KL are
    built from (Rafailov et al. 2023, Eq. 7; Ouyang et al. 2022, Eq. 2).

    Args:
        model: a causal LM (``model(input_ids, attention_mask).logits`` is ``(B, T, V)``).
        batch: a :class:`PaddedBatch`.
        average: divide by the number of completion tokens (IPO's length-normalised log-probs).

    Returns:
        ``(logprobs (B,), n_tokens (B,))``: the log-probabilities in nats and the completion
        lengths in tokens.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, T, V)
    per_token = token_logprobs(logits, batch.input_ids)  # (B, T)
    mask = batch.completion_mask
    n = mask.sum(-1)  # (B,)
    total = (per_token * mask).sum(-1)  # (B,)
    return (total / n.clamp(min=1) if average else total), n


def length_chunks(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped longest first into chunks whose padded size (count × longest) is at most
    ``max_tokens`` (a chunk holds at least one sequence). ``max_tokens <= 0``: one chunk in order."""
    if max_tokens <= 0:
        return [list(range(len(lengths)))]
    chunks: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        if current and (len(current) + 1) * lengths[current[0]] > max_tokens:
            chunks.append(current)
            current = []
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


def run_chunked(fn: Callable[[PaddedBatch], Tensor], sequences: Sequence[Encoded], pad_id: int, *,
                max_tokens: int) -> Tensor:
    """``fn`` over length-sorted chunks of ``sequences`` (:func:`length_chunks`), results in input order.

    The sequences of one optimiser step need not share one padded tensor: each is scored on its
    own (causal attention, right padding), so running them in chunks of similar length gives the
    same values with less padding — the same loss and gradient, less compute. ``fn`` maps a
    padded chunk of ``n`` sequences to a tensor with ``n`` rows.
    """
    chunks = length_chunks([len(s) for s in sequences], max_tokens)
    outs = [fn(pad([sequences[i] for i in c], pad_id)) for c in chunks]
    order = torch.tensor([i for c in chunks for i in c])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    return torch.cat(outs)[inverse]
