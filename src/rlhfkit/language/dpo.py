"""Direct preference optimisation: the policy is its own reward model (Rafailov et al. 2023).

The trainer of the losses in :mod:`rlhfkit.rl.preference` — DPO (``sigmoid``), conservative DPO
(``cdpo``), IPO (``ipo``, length-averaged log-probs) and SimPO (``simpo``, length-averaged, no
reference: Meng et al. 2024). The reference log-probabilities are computed once, before training,
with the initial policy (or a given reference model), and kept; the reference model is then freed.
SimPO needs none and skips that pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlhfkit.language.logprobs import CHUNK_TOKENS, Encoded, can_pack, packed_logprobs, run_packed
from rlhfkit.language.train import Fitted, TrainArgs, chunk_budget, fit
from rlhfkit.rl.preference import PREFERENCE_LOSSES, LossType, dpo_loss

__all__ = ["DPOItem", "DPOSettings", "dpo_loss", "evaluate_dpo", "pair_logprobs", "reference_logprobs", "train_dpo"]


@dataclass(frozen=True)
class DPOSettings:
    """DPO-specific settings."""

    beta: float = 0.1
    """``β``: strength of the KL regularisation to the reference (implicit reward scale)."""
    loss_type: LossType = "sigmoid"
    """``sigmoid`` (DPO), ``cdpo`` (conservative DPO), ``ipo`` or ``simpo`` (reference-free)."""
    label_smoothing: float = 0.0
    """``ε`` of cDPO: the probability that a label is flipped, in ``[0, 0.5)``."""
    margin: float = 0.0
    """SimPO's target reward margin ``γ ≥ 0`` (Meng et al. 2024, Eq. 6); only ``simpo`` uses it."""

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if self.loss_type not in PREFERENCE_LOSSES:
            raise ValueError(f"loss_type must be one of {', '.join(PREFERENCE_LOSSES)}, got {self.loss_type!r}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


@dataclass(frozen=True)
class DPOItem:
    """A tokenised pair and its reference log-probs (summed and length-averaged)."""

    chosen: Encoded
    rejected: Encoded
    ref_chosen: float
    ref_rejected: float
    ref_chosen_avg: float
    ref_rejected_avg: float

    @property
    def n_tokens(self) -> int:
        return len(self.chosen) + len(self.rejected)


@dataclass(frozen=True)
class _Batch:
    pairs: tuple[tuple[Encoded, Encoded], ...]  # (chosen, rejected)
    ref: Tensor  # (4, B): sums c, r; averages c, r

    @property
    def n_tokens(self) -> int:
        return sum(len(c) + len(r) for c, r in self.pairs)


def pair_logprobs(model: Any, pairs: Sequence[tuple[Encoded, Encoded]], pad_id: int, *,
                  max_tokens: int = CHUNK_TOKENS, share_prefix: bool = True) -> tuple[Tensor, Tensor]:
    """``log π(y | x)`` of each pair's chosen and rejected completion: ``(logprobs (N, 2), n_tokens (N, 2))``.

    A pair's shared prompt prefix runs once when ``share_prefix`` and the model allows it
    (:func:`rlhfkit.language.logprobs.run_packed`); chunks hold at most ``max_tokens`` padded
    tokens (0: one chunk). Gradients flow when called with them enabled.
    """
    def lp_and_length(pb: Any) -> Tensor:
        lp, n = packed_logprobs(model, pb)
        return torch.stack([lp, n.to(lp.dtype)], -1)

    lp_n = run_packed(lp_and_length, pairs, pad_id, max_tokens=max_tokens,
                      share_prefix=share_prefix and can_pack(model))  # (2N, 2), chosen then rejected per pair
    return lp_n[:, 0].reshape(-1, 2), lp_n[:, 1].reshape(-1, 2)


def reference_logprobs(model: Any, pairs: Sequence[tuple[Encoded, Encoded]], pad_id: int, *,
                       batch_size: int = 16, share_prefix: bool = True) -> Tensor:
    """``log π_ref`` of each pair's chosen and rejected completion, computed once without gradients.

    Returns:
        ``(N, 4)``: summed chosen, summed rejected, averaged chosen, averaged rejected (nats).
    """
    model.eval()
    rows = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            lp, n = pair_logprobs(model, pairs[i:i + batch_size], pad_id, share_prefix=share_prefix)  # (b, 2) each
            rows.append(torch.cat([lp, lp / n.clamp(min=1)], dim=-1))
    return torch.cat(rows) if rows else torch.zeros((0, 4))


def _encode_pairs(tokenizer: Any, examples: Sequence[Any], max_length: int) -> list[tuple[Encoded, Encoded]]:
    from rlhfkit.language.data import render
    from rlhfkit.language.logprobs import encode

    out = []
    for ex in examples:
        pc, c = render(tokenizer, ex.prompt, ex.chosen)
        pr, r = render(tokenizer, ex.prompt, ex.rejected)
        out.append((encode(tokenizer, pc, c, max_length=max_length), encode(tokenizer, pr, r, max_length=max_length)))
    return out


def _ref_rows(ref_model: Any, pairs: Sequence[tuple[Encoded, Encoded]], pad_id: int, settings: DPOSettings, *,
              share_prefix: bool = True) -> Tensor:
    """:func:`reference_logprobs` rows ``(N, 4)``, or zeros for SimPO, which has no reference."""
    if settings.loss_type == "simpo":
        return torch.zeros((len(pairs), 4))
    return reference_logprobs(ref_model, pairs, pad_id, share_prefix=share_prefix)


def _items(pairs: Sequence[tuple[Encoded, Encoded]], ref: Tensor) -> list[DPOItem]:
    return [DPOItem(c, r, *map(float, ref[i])) for i, (c, r) in enumerate(pairs)]


def _pair_metrics(losses: Tensor, cr: Tensor, rr: Tensor, prefix: str) -> dict[str, tuple[float, float]]:
    n = float(len(losses))
    return {f"{prefix}/loss": (float(losses.detach().sum()), n),
            f"{prefix}/rewards/chosen": (float(cr.sum()), n), f"{prefix}/rewards/rejected": (float(rr.sum()), n),
            f"{prefix}/rewards/margins": (float((cr - rr).sum()), n),
            f"{prefix}/rewards/accuracies": (float((cr > rr).float().sum()), n)}


def _collate(items: Sequence[DPOItem], pad_id: int) -> _Batch:
    pairs = tuple((it.chosen, it.rejected) for it in items)
    ref_t = torch.tensor([[it.ref_chosen, it.ref_rejected, it.ref_chosen_avg, it.ref_rejected_avg]
                          for it in items], dtype=torch.float32).T  # (4, B)
    return _Batch(pairs, ref_t)


def _pair_losses(m: Any, batch: _Batch, settings: DPOSettings, pad_id: int, max_tokens: int,
                 share_prefix: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    ipo = settings.loss_type in ("ipo", "simpo")  # length-averaged log-probs
    lp, n = pair_logprobs(m, batch.pairs, pad_id, max_tokens=max_tokens, share_prefix=share_prefix)  # (B, 2) each
    if ipo:
        lp = lp / n.clamp(min=1)
    rc, rr = (batch.ref[2], batch.ref[3]) if ipo else (batch.ref[0], batch.ref[1])
    return dpo_loss(lp[:, 0], lp[:, 1], rc, rr, beta=settings.beta, loss_type=settings.loss_type,
                    label_smoothing=settings.label_smoothing, margin=settings.margin)


def _evaluate_items(m: Any, items: Sequence[DPOItem], pad_id: int, settings: DPOSettings,
                    batch_size: int = 16, share_prefix: bool = True) -> dict[str, float]:
    sums: dict[str, tuple[float, float]] = {}
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            batch = _collate(items[i:i + batch_size], pad_id)
            for k, (s, n) in _pair_metrics(*_pair_losses(m, batch, settings, pad_id, CHUNK_TOKENS, share_prefix),
                                                 "val").items():
                a, c = sums.get(k, (0.0, 0.0))
                sums[k] = (a + s, c + n)
    return {k: s / n for k, (s, n) in sums.items()}


def evaluate_dpo(model: Any, ref_model: Any, tokenizer: Any, examples: Sequence[Any], settings: DPOSettings,
                 max_length: int = 512) -> dict[str, float]:
    """Held-out DPO metrics of ``model`` against ``ref_model`` on preference examples (ties skipped).

    Returns:
        ``val/loss``, ``val/rewards/chosen``, ``val/rewards/rejected``, ``val/rewards/margins`` and
        ``val/rewards/accuracies`` — the fraction of pairs whose implicit reward
        ``β log π/π_ref`` is higher for the chosen response.
    """
    examples = [ex for ex in examples if not getattr(ex, "tie", False)]
    pairs = _encode_pairs(tokenizer, examples, max_length)
    items = _items(pairs, _ref_rows(ref_model, pairs, tokenizer.pad_token_id, settings))
    model.eval()
    return _evaluate_items(model, items, tokenizer.pad_token_id, settings)


def train_dpo(model: Any, tokenizer: Any, train: Sequence[Any], val: Sequence[Any], args: TrainArgs,
              settings: DPOSettings = DPOSettings(), *, ref_model: Any = None, out: str | Path | None = None,
              accelerator: Any = None, progress: Any = None) -> Fitted:
    """Train a policy with DPO on preference pairs.

    Args:
        model: the policy (a causal LM, usually the SFT model), trained in place.
        tokenizer: its tokenizer.
        train, val: ``PreferenceExample`` records (ties are skipped: DPO has no tie term).
        args: optimisation settings; validation selects the best weights by
            ``val/rewards/accuracies`` (the implicit reward's held-out pairwise accuracy).
        settings: β, loss type and label smoothing.
        ref_model: the reference policy; None: the initial ``model`` (its log-probs are computed
            before the first update).
        out: where metrics are written.

    Returns:
        :class:`~rlhfkit.language.train.Fitted` with ``train/…`` and ``val/…`` metrics:
        ``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
        ``rewards/accuracies`` (TRL's names).
    """
    train = [ex for ex in train if not getattr(ex, "tie", False)]
    val = [ex for ex in val if not getattr(ex, "tie", False)]
    pad_id = tokenizer.pad_token_id
    train_pairs = _encode_pairs(tokenizer, train, args.max_length)
    val_pairs = _encode_pairs(tokenizer, val, args.max_length)
    ref = ref_model if ref_model is not None else model
    train_items, val_items = (_items(p, _ref_rows(ref, p, pad_id, settings, share_prefix=args.share_prefix))
                              for p in (train_pairs, val_pairs))

    def collate(items: list[DPOItem]) -> _Batch:
        return _collate(items, pad_id)

    def loss_sum(m: Any, batch: _Batch) -> tuple[Tensor, dict]:
        losses, cr, rr = _pair_losses(m, batch, settings, pad_id, chunk_budget(m, args), args.share_prefix)
        return losses.sum(), _pair_metrics(losses, cr, rr, "train")

    def evaluate(m: Any, items: Sequence[DPOItem]) -> dict[str, float]:
        return _evaluate_items(m, items, pad_id, settings, share_prefix=args.share_prefix)

    model.train()
    return fit(model, train_items, val_items, collate=collate, loss_sum=loss_sum, units=lambda items: float(len(items)),
               lengths=[it.n_tokens for it in train_items], args=args, evaluate=evaluate,
               select=("val/rewards/accuracies", "max"), out=out, accelerator=accelerator, progress=progress)
