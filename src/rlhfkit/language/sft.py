"""Supervised fine-tuning: maximum likelihood on demonstration completions (InstructGPT step 1).

The loss is the negative log-likelihood of the completion tokens only (prompt tokens and
padding masked out, EOS included), averaged over all completion tokens of the global batch
(Ouyang et al. 2022, §3.5 "Supervised fine-tuning").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from rlhfkit.language.logprobs import CHUNK_TOKENS, Encoded, PaddedBatch, encode, packed_logprobs, run_packed, token_logprobs
from rlhfkit.language.train import Fitted, TrainArgs, chunk_budget, fit

__all__ = ["encode_sft", "sft_loss", "train_sft"]


def sft_loss(logits: Tensor, batch: PaddedBatch) -> tuple[Tensor, Tensor]:
    """Summed negative log-likelihood of the completion tokens.

    ``L = -Σ_{b,t} m_{b,t} · log π(x_{b,t} | x_{b,<t})``; the caller divides by the number of
    completion tokens of the global batch.

    Args:
        logits: ``(B, T, V)``.
        batch: the padded batch (its ``completion_mask`` selects the scored tokens).

    Returns:
        ``(loss_sum, n_tokens)``: scalar NLL sum in nats and the number of scored tokens.
    """
    lp = token_logprobs(logits, batch.input_ids)  # (B, T)
    mask = batch.completion_mask
    return -(lp * mask).sum(), mask.sum()


@dataclass(frozen=True)
class _Batch:
    items: tuple[Encoded, ...]

    @property
    def n_tokens(self) -> int:
        return sum(len(e) for e in self.items)


def encode_sft(tokenizer: Any, examples: Sequence[Any], max_length: int) -> list[Encoded]:
    """Tokenise ``SFTExample``-like records (``prompt``, ``completion``; conversations rendered)."""
    from rlhfkit.language.data import render

    out = []
    for ex in examples:
        prompt, completion = render(tokenizer, ex.prompt, ex.completion)
        out.append(encode(tokenizer, prompt, completion, max_length=max_length))
    return out


def train_sft(model: Any, tokenizer: Any, train: Sequence[Any], val: Sequence[Any], args: TrainArgs, *,
              out: str | Path | None = None, accelerator: Any = None, progress: Any = None,
              evaluate: Callable[[Any], dict[str, float]] | None = None,
              select: tuple[str, Literal["min", "max"]] = ("val/loss", "min")) -> Fitted:
    """Fine-tune a causal LM on (prompt, completion) examples.

    Args:
        model: a causal LM (``AutoModelForCausalLM``), trained in place.
        tokenizer: its tokenizer.
        train, val: ``SFTExample``-like records (see :mod:`rlhfkit.language.data`).
        args: optimisation settings; validation picks the best weights by ``val/loss``.
        out: where metrics are written.
        evaluate: ``evaluate(model) -> {"val/...": value}`` run at each evaluation instead of the
            validation loss on ``val`` (e.g. a task's held-out accuracy); ``val`` may then be empty.
        select: the metric and direction that pick the best weights.

    Returns:
        :class:`~rlhfkit.language.train.Fitted`; validation metrics ``val/loss`` (nats per
        completion token) and ``val/perplexity``.
    """
    train_enc = encode_sft(tokenizer, train, args.max_length)
    val_enc = encode_sft(tokenizer, val, args.max_length)
    pad_id = tokenizer.pad_token_id

    def collate(items: list[Encoded]) -> _Batch:
        return _Batch(tuple(items))

    def nll(m: Any, batch: _Batch, max_tokens: int) -> tuple[Tensor, Tensor]:
        """Summed NLL and scored tokens; only completion positions go through the vocabulary projection."""
        lp_n = run_packed(lambda pb: torch.stack([x.to(torch.float32) for x in packed_logprobs(m, pb)], -1),
                          [[e] for e in batch.items], pad_id, max_tokens=max_tokens)  # (B, 2): log-prob, tokens
        return -lp_n[:, 0].sum(), lp_n[:, 1].sum()

    def loss_sum(m: Any, batch: _Batch) -> tuple[Tensor, dict]:
        loss, n = nll(m, batch, chunk_budget(m, args))
        return loss, {"train/loss": (loss.item(), n.item())}

    def units(items: list[Encoded]) -> float:
        return float(sum(len(e) - max(e.n_prompt, 1) for e in items))

    def validation_loss(m: Any, items: Sequence[Encoded]) -> dict[str, float]:
        if evaluate is not None:
            return evaluate(m)
        total, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(items), 16):
                loss, k = nll(m, collate(list(items[i:i + 16])), CHUNK_TOKENS)
                total, n = total + loss.item(), n + int(k)
        return {"val/loss": total / n, "val/perplexity": float(torch.exp(torch.tensor(total / n)))}

    if evaluate is not None and not val_enc:
        val_enc = [None]  # fit evaluates only when there are validation items
    return fit(model, train_enc, val_enc, collate=collate, loss_sum=loss_sum, units=units,
               lengths=[len(e) for e in train_enc], args=args, evaluate=validation_loss, select=select,
               out=out, accelerator=accelerator, progress=progress)
