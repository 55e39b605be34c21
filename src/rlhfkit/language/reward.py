"""Reward models for language: a transformer backbone with a scalar head, fitted to preferences.

``r_θ(x, y)`` is the score head's output at the last token (EOS) of prompt ``x`` + response
``y`` (``AutoModelForSequenceClassification``, so the result is a normal HF directory that TRL
and others load). The losses are the project's one set of choice models (:mod:`rlhfkit.choice`):

- pairs: Bradley-Terry ``-log σ(r(x, y_c) - r(x, y_r) - m)`` (Ouyang et al. 2022, Eq. 1; the
  optional margin ``m`` is Llama 2's, Touvron et al. 2023, Eq. 2); a tie is the soft target ½;
- ranked lists without ties: Plackett-Luce over the K responses (Plackett 1975; with K = 2 it is
  Bradley-Terry); lists with ties: every pair, ties as ½ (InstructGPT also trains on all
  ``K(K-1)/2`` pairs of a ranking, §3.5);
- a cost model (Safe RLHF, Dai et al. 2023, Eq. 6; ``cost=True``): the same network trained so that
  the *less* safe response of a pair (``rejected``) costs more, plus, where a row labels its
  responses safe or unsafe (``chosen_safe``/``rejected_safe``), ``-log σ(s·C(y))`` with ``s = +1``
  unsafe and ``-1`` safe (:func:`rlhfkit.choice.cost_pair_loss`); ranked lists (safest first) by
  Plackett-Luce on ``-C``;
- an ensemble: ``E`` score heads on one backbone, each trained on its own bootstrap resample
  (Poisson(1) weights per pair and head; Oza & Russell 2001's online bagging); the reward is the
  heads' mean and their standard deviation measures disagreement (Christiano et al. 2017, §2.2.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlhfkit.choice import cost_pair_loss, plackett_luce_nll, reward_pair_loss
from rlhfkit.language.logprobs import (CHUNK_TOKENS, Encoded, PackedBatch, PaddedBatch, can_pack, encode, forward,
                                       run_chunked, run_packed)
from rlhfkit.language.train import Fitted, TrainArgs, chunk_budget, fit

__all__ = ["RewardItem", "cost_pair_loss", "encode_preferences", "packed_rewards", "rewards_of", "reward_pair_loss",
           "score", "train_reward_model"]
# reward_pair_loss and cost_pair_loss live in the math layer (rlhfkit.choice); re-exported here


@dataclass(frozen=True)
class RewardItem:
    """One training unit: two or more tokenised responses to one prompt.

    Attributes:
        responses: the responses' encodings; for a pair ``(chosen, rejected)``; for a ranked list
            best first.
        target: for a pair, ``P[chosen ≻ rejected]`` (1.0, or 0.5 for a tie); None for a list.
        margin: Llama 2 margin (score units) for a pair.
        index: the example's position in the training set (seeds its bootstrap weights).
        safety: for a pair, the safety signs of ``(chosen, rejected)`` for a cost model: +1 labelled
            unsafe, -1 labelled safe, 0 unlabelled.
    """

    responses: tuple[Encoded, ...]
    target: float | None = 1.0
    margin: float = 0.0
    index: int = 0
    safety: tuple[int, int] = (0, 0)

    @property
    def n_tokens(self) -> int:
        return sum(len(r) for r in self.responses)


def _pairs_of_ranking(ranks: Sequence[int]) -> list[tuple[int, int, float]]:
    out = []
    for i in range(len(ranks)):
        for j in range(i + 1, len(ranks)):
            if ranks[i] == ranks[j]:
                out.append((i, j, 0.5))
            else:
                out.append((i, j, 1.0) if ranks[i] < ranks[j] else (j, i, 1.0))
    return out


def encode_preferences(tokenizer: Any, examples: Sequence[Any], max_length: int) -> list[RewardItem]:
    """Tokenise preference pairs and ranked lists into :class:`RewardItem` s.

    ``PreferenceExample`` → a pair (target ½ if ``tie``); ``RankedExample`` without ties → one
    Plackett-Luce list in rank order; with ties → its pairs (ties ½).
    """
    from rlhfkit.language.data import render

    def enc(prompt: Any, response: Any) -> Encoded:
        p, c = render(tokenizer, prompt, response)
        return encode(tokenizer, p, c, max_length=max_length)

    items: list[RewardItem] = []
    for ex in examples:
        if hasattr(ex, "responses"):
            ranks = list(ex.ranks)
            encs = [enc(ex.prompt, r) for r in ex.responses]
            if len(set(ranks)) == len(ranks):
                order = sorted(range(len(ranks)), key=lambda k: ranks[k])
                items.append(RewardItem(tuple(encs[k] for k in order), None, 0.0, len(items)))
            else:
                for a, b, t in _pairs_of_ranking(ranks):
                    items.append(RewardItem((encs[a], encs[b]), t, 0.0, len(items)))
        else:
            items.append(RewardItem((enc(ex.prompt, ex.chosen), enc(ex.prompt, ex.rejected)),
                                    0.5 if getattr(ex, "tie", False) else 1.0,
                                    float(getattr(ex, "margin", None) or 0.0), len(items),
                                    (_sign(getattr(ex, "chosen_safe", None)),
                                     _sign(getattr(ex, "rejected_safe", None)))))
    return items


def _sign(safe: bool | None) -> int:
    """Safe RLHF's safety sign of a response: -1 labelled safe, +1 labelled unsafe, 0 unlabelled."""
    return 0 if safe is None else -1 if safe else 1


@dataclass(frozen=True)
class _Batch:
    sequences: tuple[Encoded, ...]  # every item's responses, in item order
    items: tuple[RewardItem, ...]

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


def score(model: Any, batch: PaddedBatch) -> Tensor:
    """Rewards of a padded batch of full sequences: ``(B, E)``.

    ``config.reward_pooling`` chooses how: ``"last"`` (default, what every HF loader does) is the
    heads' output at the last real token (the EOS); ``"mean"`` averages the heads' per-token
    outputs over the response's tokens (``completion_mask``) — per-token rewards normalised by
    length, which learns lexical preferences from few pairs; ``"sum"`` adds them up — a dense
    per-token reward whose total also carries the response's length (a constant per-token term
    is a length preference).
    """
    inner = getattr(model, "module", model)  # under DDP the HF model is model.module
    pooling = getattr(inner.config, "reward_pooling", "last")
    if pooling not in ("mean", "sum"):
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    # through the (possibly DDP-wrapped) forward, so gradients synchronise
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    rows, cols = batch.completion_mask.nonzero(as_tuple=True)  # the response tokens, row by row
    return _pool(inner.score(out.hidden_states[-1][rows, cols]).float(), rows, len(batch.input_ids), pooling)


def _pool(per_token: Tensor, seq: Tensor, n_seq: int, pooling: str) -> Tensor:
    """Sum (``"sum"``) or mean (``"mean"``) of per-token rewards ``(M, E)`` by sequence ``seq (M,)``: ``(S, E)``."""
    sums = torch.zeros((n_seq, per_token.shape[-1]), dtype=per_token.dtype).index_add(0, seq, per_token)
    if pooling == "sum":
        return sums
    return sums / torch.bincount(seq, minlength=n_seq).clamp(min=1).unsqueeze(-1).to(sums.dtype)


def packed_rewards(model: Any, batch: PackedBatch) -> Tensor:
    """:func:`score` of each sequence of a packed batch (:func:`rlhfkit.language.logprobs.pack`): ``(S, E)``.

    The score head runs on the final hidden states at each sequence's last token (``"last"``
    pooling) or on its completion tokens, averaged (``"mean"``) or summed (``"sum"``).
    """
    inner = getattr(model, "module", model)
    pooling = getattr(inner.config, "reward_pooling", "last")
    hidden = forward(model, batch, output_hidden_states=True).hidden_states[-1].flatten(0, 1)  # (R*T, D)
    if pooling not in ("mean", "sum"):
        return inner.score(hidden[batch.last]).float()  # (S, E)
    return _pool(inner.score(hidden[batch.completion]).float(), batch.completion_seq, batch.n_sequences, pooling)


def rewards_of(model: Any, groups: Sequence[Sequence[Encoded]], pad_id: int, *, max_tokens: int = CHUNK_TOKENS,
               share_prefix: bool = True) -> Tensor:
    """Rewards of every response of ``groups`` (responses to one prompt each): ``(S, E)``, groups flattened in order.

    Each group's shared prompt prefix runs once when ``share_prefix`` and the model allows it
    (:func:`rlhfkit.language.logprobs.run_packed`); otherwise each response runs alone, in
    length-sorted chunks of at most ``max_tokens`` padded tokens (0: one chunk).
    """
    if share_prefix and can_pack(model) and hasattr(getattr(model, "module", model), "score"):
        return run_packed(lambda pb: packed_rewards(model, pb), groups, pad_id, max_tokens=max_tokens)
    return run_chunked(lambda pb: score(model, pb), [x for g in groups for x in g], pad_id, max_tokens=max_tokens)


def _bootstrap(items: Sequence[RewardItem], heads: int, seed: int) -> Tensor | None:
    if heads == 1:
        return None
    w = [np.random.default_rng([seed, it.index]).poisson(1.0, heads) for it in items]
    return torch.tensor(np.stack(w), dtype=torch.float32)  # (B, E)


def _items_loss(rewards: Tensor, items: Sequence[RewardItem], seed: int, cost: bool = False) -> tuple[Tensor, dict]:
    """Summed loss and metric sums over items whose responses' rewards are consecutive rows of ``rewards``
    (costs with ``cost``: the better, safer response must score *lower*)."""
    heads = rewards.shape[-1]
    weights = _bootstrap(items, heads, seed)
    at, pair_rows, losses = 0, [], []
    for k, it in enumerate(items):
        n = len(it.responses)
        if it.target is None:  # a ranked list, best (safest) first
            r = rewards[at:at + n].T  # (E, K)
            pl = plackett_luce_nll(-r if cost else r)  # (E,)
            losses.append((pl * (weights[k] if weights is not None else 1.0)).mean())
        else:
            pair_rows.append((k, at))
        at += n
    metrics: dict[str, tuple[float, float]] = {}
    if pair_rows:
        idx = torch.tensor([a for _, a in pair_rows])
        rc, rr = rewards[idx], rewards[idx + 1]  # (P, E)
        target = torch.tensor([items[k].target for k, _ in pair_rows], dtype=rewards.dtype)
        margin = torch.tensor([items[k].margin for k, _ in pair_rows], dtype=rewards.dtype)
        w = weights[[k for k, _ in pair_rows]] if weights is not None else None
        if cost:
            signs = torch.tensor([items[k].safety for k, _ in pair_rows], dtype=rewards.dtype)  # (P, 2)
            losses.append(cost_pair_loss(rc, rr, target, sign_chosen=signs[:, 0], sign_rejected=signs[:, 1],
                                         margin=margin, weights=w).sum())
            metrics.update(_safety_hits(torch.stack([rc.mean(-1), rr.mean(-1)], -1).detach(), signs, "train"))
        else:
            losses.append(reward_pair_loss(rc, rr, target, margin=margin, weights=w).sum())
        decided = target != 0.5
        diff = (rc.mean(-1) - rr.mean(-1)).detach() * (-1 if cost else 1)  # > 0: the pair is ordered right
        metrics["train/accuracy"] = (float((diff[decided] > 0).sum()), float(decided.sum()))
        metrics["train/margin"] = (float(diff[decided].sum()), float(decided.sum()))
    loss = torch.stack([x.reshape(()) for x in losses]).sum()
    metrics["train/loss"] = (loss.item(), float(len(items)))
    return loss, metrics


def _safety_hits(costs: Tensor, signs: Tensor, prefix: str) -> dict[str, tuple[float, float]]:
    """``{prefix/safety_accuracy: (hits, labelled)}``: labelled responses whose cost has their safety sign
    (``C > 0`` unsafe); ``costs`` and ``signs`` ``(P, 2)``. Empty without labels."""
    labelled = signs != 0
    if not labelled.any():
        return {}
    hits = (torch.sign(costs) == signs) & labelled
    return {f"{prefix}/safety_accuracy": (float(hits.sum()), float(labelled.sum()))}


def train_reward_model(model: Any, tokenizer: Any, train: Sequence[Any], val: Sequence[Any], args: TrainArgs, *,
                       out: str | Path | None = None, accelerator: Any = None, progress: Any = None,
                       cost: bool = False, select: tuple[str, str] = ("val/accuracy", "max")) -> Fitted:
    """Fit a reward model (or, with ``cost``, a Safe RLHF cost model) to preference pairs and ranked lists.

    Args:
        model: a sequence-classification model with ``E = config.num_labels`` heads
            (:func:`rlhfkit.language.models.load_reward_model`), trained in place.
        tokenizer: its tokenizer (with a pad token distinct from EOS, or EOS-appended inputs).
        train, val: ``PreferenceExample`` / ``RankedExample`` records.
        args: optimisation settings.
        select: the validation metric and direction that pick the best weights (default the highest
            ``val/accuracy``; ``("val/loss", "min")`` keeps the best-calibrated weights, which matters
            when many ties make accuracy coarse).
        out: where metrics are written.
        cost: train a cost model ``C`` (Dai et al. 2023, Eq. 6, :func:`rlhfkit.choice.cost_pair_loss`):
            ``chosen`` is the *safer* response and must cost less; rows with ``chosen_safe`` /
            ``rejected_safe`` labels add the safety-sign term.

    Returns:
        :class:`~rlhfkit.language.train.Fitted`; validation metrics (pairs only; ties skipped for
        accuracy): ``val/loss``, ``val/accuracy`` (fraction with ``r_c > r_r``; for a cost model
        ``C_c < C_r``), ``val/margin`` (mean ``r_c - r_r``; for a cost model ``C_r - C_c``),
        ``val/disagreement`` (mean std of the heads' margins; E > 1) and, for a cost model with
        labels, ``val/safety_accuracy`` (labelled responses with ``C > 0`` exactly when unsafe).
    """
    train_items = encode_preferences(tokenizer, train, args.max_length)
    val_items = encode_preferences(tokenizer, val, args.max_length)
    pad_id = tokenizer.pad_token_id

    def collate(items: list[RewardItem]) -> _Batch:
        return _Batch(tuple(r for it in items for r in it.responses), tuple(items))

    def loss_sum(m: Any, batch: _Batch) -> tuple[Tensor, dict]:
        rewards = rewards_of(m, [it.responses for it in batch.items], pad_id, max_tokens=chunk_budget(m, args),
                             share_prefix=args.share_prefix)
        return _items_loss(rewards, batch.items, args.seed, cost)

    def evaluate(m: Any, items: Sequence[RewardItem]) -> dict[str, float]:
        return evaluate_reward_model(m, pad_id, items, share_prefix=args.share_prefix, cost=cost)

    return fit(model, train_items, val_items, collate=collate, loss_sum=loss_sum, units=lambda items: float(len(items)),
               lengths=[it.n_tokens for it in train_items], args=args, evaluate=evaluate,
               select=select, out=out, accelerator=accelerator, progress=progress)


def evaluate_reward_model(model: Any, pad_id: int, items: Sequence[RewardItem], *, batch_size: int = 16,
                          share_prefix: bool = True, cost: bool = False) -> dict[str, float]:
    """Held-out metrics of a reward model, or with ``cost`` of a cost model (see :func:`train_reward_model`).

    Pairs contribute their Bradley-Terry loss (a cost model's: :func:`rlhfkit.choice.cost_pair_loss`);
    ranked lists their Plackett-Luce loss and every ordered pair they imply to the accuracy and
    margin. Ties count in the loss only.
    """
    orient = -1.0 if cost else 1.0  # a cost model scores the better (safer) response lower
    losses: list[Tensor] = []
    diffs: list[Tensor] = []  # r(better) - r(worse) (costs: C(worse) - C(better)), mean over heads, decided pairs
    spread: list[Tensor] = []
    safety = [0.0, 0.0]  # labelled responses whose cost has their safety sign, labelled responses
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            r = rewards_of(model, [it.responses for it in chunk], pad_id, share_prefix=share_prefix)  # (N, E)
            at = 0
            for it in chunk:
                k = len(it.responses)
                ri = r[at:at + k]  # (k, E), best first for a list; (chosen, rejected) for a pair
                at += k
                if it.target is None:
                    losses.append(plackett_luce_nll(orient * ri.T).mean().reshape(1))
                    hi, lo = torch.triu_indices(k, k, offset=1)
                    d = orient * (ri[hi] - ri[lo])  # (k(k-1)/2, E)
                else:
                    t = torch.tensor([it.target], dtype=r.dtype)
                    if cost:
                        signs = torch.tensor([it.safety], dtype=r.dtype)  # (1, 2)
                        losses.append(cost_pair_loss(ri[:1], ri[1:], t, sign_chosen=signs[:, 0],
                                                     sign_rejected=signs[:, 1], margin=it.margin))
                        for hits, n in _safety_hits(ri.mean(-1).view(1, 2), signs, "val").values():
                            safety[0], safety[1] = safety[0] + hits, safety[1] + n
                    else:
                        losses.append(reward_pair_loss(ri[:1], ri[1:], t, margin=it.margin))
                    if it.target == 0.5:
                        continue
                    d = orient * (ri[:1] - ri[1:])  # (1, E)
                diffs.append(d.mean(-1))
                spread.append(d.std(-1) if r.shape[-1] > 1 else torch.zeros(len(d)))
    diff = torch.cat(diffs) if diffs else torch.zeros(0)
    out = {"val/loss": float(torch.cat(losses).mean()) if losses else float("nan"),
           "val/accuracy": float((diff > 0).float().mean()) if len(diff) else float("nan"),
           "val/margin": float(diff.mean()) if len(diff) else float("nan")}
    if model.config.num_labels > 1:
        out["val/disagreement"] = float(torch.cat(spread).mean()) if spread else float("nan")
    if safety[1]:
        out["val/safety_accuracy"] = safety[0] / safety[1]
    return out
