"""Supervised fine-tuning: maximum likelihood on demonstration completions (InstructGPT step 1).

The loss is the negative log-likelihood of the completion tokens only (prompt tokens and
padding masked out, EOS included), averaged over all completion tokens of the global batch
(Ouyang et al. 2022, §3.5 "Supervised fine-tuning").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlhfkit.language.logprobs import Encoded, PaddedBatch, encode, pad, token_logprobs
from rlhfkit.language.train import Fitted, TrainArgs, fit

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


def encode_sft(tokenizer: Any, examples: Sequence[Any], max_length: int) -> list[Encoded]:
    """Tokenise ``SFTExample``-like records (``prompt``, ``completion``; conversations rendered)."""
    from rlhfkit.language.data import render

    out = []
    for ex in examples:
        prompt, completion = render(tokenizer, ex.prompt, ex.completion)
        out.append(encode(tokenizer, prompt, completion, max_length=max_length))
    return out


def train_sft(model: Any, tokenizer: Any, train: Sequence[Any], val: Sequence[Any], args: TrainArgs, *,
              out: str | Path | None = None, accelerator: Any = None, progress: Any = None) -> Fitted:
    """Fine-tune a causal LM on (prompt, completion) examples.

    Args:
        model: a causal LM (``AutoModelForCausalLM``), trained in place.
        tokenizer: its tokenizer.
        train, val: ``SFTExample``-like records (see :mod:`rlhfkit.language.data`).
        args: optimisation settings; validation picks the best weights by ``val/loss``.
        out: where metrics are written.

    Returns:
        :class:`~rlhfkit.language.train.Fitted`; validation metrics ``val/loss`` (nats per
        completion token) and ``val/perplexity``.
    """
    train_enc = encode_sft(tokenizer, train, args.max_length)
    val_enc = encode_sft(tokenizer, val, args.max_length)
    pad_id = tokenizer.pad_token_id

    def collate(items: list[Encoded]) -> PaddedBatch:
        return pad(items, pad_id)

    def loss_sum(m: Any, batch: PaddedBatch) -> tuple[Tensor, dict]:
        logits = m(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss, n = sft_loss(logits, batch)
        return loss, {"train/loss": (loss.item(), n.item())}

    def units(items: list[Encoded]) -> float:
        return float(sum(len(e) - e.n_prompt for e in items))

    def evaluate(m: Any, items: Sequence[Encoded]) -> dict[str, float]:
        total, n = 0.0, 0
        for i in range(0, len(items), 16):
            batch = collate(list(items[i:i + 16]))
            loss, k = sft_loss(m(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
            total, n = total + loss.item(), n + int(k)
        return {"val/loss": total / n, "val/perplexity": float(torch.exp(torch.tensor(total / n)))}

    return fit(model, train_enc, val_enc, collate=collate, loss_sum=loss_sum, units=units,
               lengths=[len(e) for e in train_enc], args=args, evaluate=evaluate, select=("val/loss", "min"),
               out=out, accelerator=accelerator, progress=progress)
