"""Fitting strengths: MAP Bradley-Terry / Davidson / Plackett-Luce by L-BFGS, bootstrap intervals (see :mod:`rlhfkit.rank`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from rlhfkit.choice import LEFT, RIGHT, TIE, bradley_terry_nll, davidson_nll, plackett_luce_nll
from rlhfkit.rank.records import Comparisons, Rankings, RankConfig
from rlhfkit.rank.ratings import Ratings


_DTYPE = torch.float64
_DTYPE = torch.float64

# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------


def recency_weights(time: np.ndarray, half_life: float | None, now: float | None = None) -> np.ndarray:
    """``(B,)`` weights ``2^(−(now − time) / half_life)``; all 1 when ``half_life`` is None.

    ``time`` in days; ``now`` defaults to the newest ``time``.
    """
    time = np.asarray(time, dtype=np.float64)
    if half_life is None:
        return np.ones_like(time)
    now = float(time.max()) if now is None else now
    return np.exp2(-(now - time) / half_life)


def _nll_davidson(s_l: Tensor, s_r: Tensor, outcome: Tensor, log_nu: Tensor) -> Tensor:
    return davidson_nll(s_l, s_r, outcome, log_nu.exp())


_HALF_TARGET = torch.tensor([1.0, 0.0, 0.5], dtype=_DTYPE)  # indexed by LEFT, RIGHT, TIE


def _nll_half(s_l: Tensor, s_r: Tensor, outcome: Tensor, log_nu: Tensor) -> Tensor:
    return bradley_terry_nll(s_l, s_r, _HALF_TARGET[outcome])


_PAIR_NLL = {"davidson": _nll_davidson, "half": _nll_half}  # keys: records.TIE_MODELS


def _lbfgs(params: list[Tensor], objective, max_iter: int, tol: float = 1e-6) -> None:
    """Minimise the convex ``objective()`` over ``params`` in place: L-BFGS, two-loop recursion
    (Nocedal & Wright 2006, Alg. 7.4, memory 20) with a backtracking Armijo line search (Alg. 3.1).

    Stops when the largest gradient entry is below ``tol`` or the objective stops changing.
    Our own few lines rather than ``torch.optim.LBFGS``, whose constructor imports
    ``torch._dynamo`` (about 2 s on a cold process, 50× the fit itself). Runs on one intra-op
    thread: these problems are small, where threads cost more than they give (16 ms vs 0.4 ms an
    evaluation on a busy 2-core machine); the caller's thread count is restored afterwards.
    """
    sizes = [p.numel() for p in params]

    def evaluate(x: Tensor) -> tuple[float, Tensor]:
        with torch.no_grad():
            for p, chunk in zip(params, x.split(sizes)):
                p.copy_(chunk.view_as(p))
        loss = objective()
        grads = torch.autograd.grad(loss, params)
        return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.cat([p.detach().reshape(-1) for p in params])
        f, g = evaluate(x)
        memory: list[tuple[Tensor, Tensor, float]] = []  # (s, y, 1 / y·s)
        for _ in range(max_iter):
            if float(g.abs().max()) <= tol:
                break
            q, alphas = g.clone(), []
            for s_k, y_k, rho in reversed(memory):
                alpha = rho * float(s_k @ q)
                q -= alpha * y_k
                alphas.append(alpha)
            if memory:
                s_k, y_k, _ = memory[-1]
                q *= float(s_k @ y_k) / float(y_k @ y_k)
            else:
                q /= max(1.0, float(g.abs().sum()))
            for (s_k, y_k, rho), alpha in zip(memory, reversed(alphas)):
                q += s_k * (alpha - rho * float(y_k @ q))
            d = -q
            slope = float(g @ d)
            if slope >= 0:  # not a descent direction: restart from steepest descent
                memory.clear()
                d, slope = -g / max(1.0, float(g.abs().sum())), -float(g @ g) / max(1.0, float(g.abs().sum()))
            t = 1.0
            while True:
                f_new, g_new = evaluate(x + t * d)
                if f_new <= f + 1e-4 * t * slope or t < 1e-10:
                    break
                t *= 0.5
            if f_new > f:  # no progress possible at this precision
                evaluate(x)
                break
            s_k, y_k = t * d, g_new - g
            ys = float(y_k @ s_k)
            if ys > 1e-12:
                memory = [*memory[-19:], (s_k, y_k, 1.0 / ys)]
            converged = f - f_new <= 1e-12 * max(1.0, abs(f))
            x, f, g = x + s_k, f_new, g_new
            if converged:
                break
    finally:
        torch.set_num_threads(threads)


def _bootstrap(
    fit_once, base: np.ndarray, n: int, config: RankConfig
) -> np.ndarray:
    """Percentile intervals ``(N, 2)`` from ``n`` refits on resampled weights."""
    rng = np.random.default_rng(config.seed)
    draws = np.stack([fit_once(rng.multinomial(len(base), np.full(len(base), 1.0 / len(base))) * base)
                      for _ in range(n)])  # (n, N)
    alpha = (1 - config.level) / 2
    return np.quantile(draws, [alpha, 1 - alpha], axis=0).T


def fit_bradley_terry(comparisons: Comparisons, config: RankConfig = RankConfig()) -> Ratings:
    """Fit item strengths to pairwise outcomes by MAP (see the module docstring for the model).

    Each comparison's likelihood is :func:`rlhfkit.choice.bradley_terry_nll` (Bradley & Terry
    1952) — or, when the data has ties, :func:`rlhfkit.choice.davidson_nll` with a fitted tie
    parameter ``ν`` (Davidson 1970, Eq. 2.1) or half a win (``config.tie_model = "half"``) — on
    scores ``s_left = θ_l + x_l·β + h·home``, ``s_right = θ_r + x_r·β`` (covariates ``x``
    centred on their training mean).

    Args:
        comparisons: ``B`` outcomes among ``N`` items.
        config: prior, recency, ties, bootstrap; see :class:`RankConfig`.

    Returns:
        :class:`Ratings` with ``(N,)`` strengths (and ``(N, 2)`` intervals if
        ``config.n_bootstrap > 0``).

    Raises:
        ValueError: if there are no comparisons, or ``half_life`` is set but ``time`` is not.
    """
    c = comparisons
    if len(c) == 0:
        raise ValueError("no comparisons to fit")
    if config.half_life is not None and c.time is None:
        raise ValueError("half_life needs the comparisons' time (days)")
    n, f = len(c.names), len(c.feature_names)
    base = np.ones(len(c)) if c.weight is None else c.weight.copy()
    if c.time is not None:
        base *= recency_weights(c.time, config.half_life)
    left, right = torch.as_tensor(c.left), torch.as_tensor(c.right)
    outcome = torch.as_tensor(c.outcome)
    x_mean = np.concatenate([c.features_left, c.features_right]).mean(0) if f else np.zeros(0)  # (F,)
    # Covariates centred on their training mean: an item with average covariates has strength θ.
    x_l = torch.as_tensor(c.features_left - x_mean if f else np.zeros((len(c), 0)), dtype=_DTYPE)  # (B, F)
    x_r = torch.as_tensor(c.features_right - x_mean if f else np.zeros((len(c), 0)), dtype=_DTYPE)  # (B, F)
    fit_home = config.fit_home and c.home is not None and bool(np.any(c.home != 0))
    home = torch.as_tensor(c.home if fit_home else np.zeros(len(c)), dtype=_DTYPE)
    has_ties = bool(np.any(c.outcome == TIE))
    fit_nu = has_ties and config.tie_model == "davidson"
    pair_nll = _PAIR_NLL["davidson" if fit_nu else "half"]
    latest = _latest_features(c, n, f, x_mean)
    theta = torch.zeros(n, dtype=_DTYPE, requires_grad=True)
    beta = torch.zeros(f, dtype=_DTYPE, requires_grad=True)
    h = torch.zeros((), dtype=_DTYPE, requires_grad=fit_home)
    log_nu = torch.tensor(math.log(0.5) if fit_nu else 0.0, dtype=_DTYPE, requires_grad=fit_nu)
    params = [p for p in (theta, beta, h, log_nu) if p.requires_grad]
    lam, kappa = config.prior_precision, config.coef_precision

    def fit_once(weight: np.ndarray, start: list[Tensor] | None = None) -> np.ndarray:
        w = torch.as_tensor(weight, dtype=_DTYPE)
        with torch.no_grad():
            for p, p0 in zip((theta, beta, h, log_nu), start or ()):
                p.copy_(p0)

        def objective() -> Tensor:
            s_l = theta[left] + x_l @ beta + h * home  # (B,)
            s_r = theta[right] + x_r @ beta  # (B,)
            nll = (w * pair_nll(s_l, s_r, outcome, log_nu)).sum()
            return nll + 0.5 * lam * theta.square().sum() + 0.5 * kappa * (beta.square().sum() + h.square())

        _lbfgs(params, objective, config.max_iter)
        with torch.no_grad():
            return (theta + torch.as_tensor(latest - x_mean) @ beta).numpy().copy()

    fit_once(base)
    point = [p.detach().clone() for p in (theta, beta, h, log_nu)]
    intervals = None
    if config.n_bootstrap:
        intervals = _bootstrap(lambda w: fit_once(w, point), base, config.n_bootstrap, config)
    theta_hat, beta_hat, h_hat, log_nu_hat = (p.numpy() for p in point)
    wins = np.bincount(c.left[c.outcome == LEFT], minlength=n) + np.bincount(c.right[c.outcome == RIGHT], minlength=n)
    losses = np.bincount(c.right[c.outcome == LEFT], minlength=n) + np.bincount(c.left[c.outcome == RIGHT], minlength=n)
    ties = np.bincount(c.left[c.outcome == TIE], minlength=n) + np.bincount(c.right[c.outcome == TIE], minlength=n)
    return Ratings(
        names=c.names, offsets=theta_hat.copy(), coef=beta_hat.copy(), feature_names=c.feature_names,
        latest_features=latest,
        feature_mean=x_mean, home_advantage=float(h_hat), nu=float(np.exp(log_nu_hat)) if fit_nu else 0.0,
        wins=wins, losses=losses, ties=ties, config=config, intervals=intervals,
    )


def _latest_features(c: Comparisons, n: int, f: int, default: np.ndarray) -> np.ndarray:
    """``(N, F)`` each item's covariates at its most recent comparison (by time, else by row);
    ``default`` for an item without comparisons."""
    latest = np.tile(default, (n, 1))
    if not f:
        return latest
    order = np.argsort(c.time, kind="stable") if c.time is not None else np.arange(len(c))
    items = np.stack([c.left[order], c.right[order]], axis=1).ravel()  # (2B,) in time order
    feats = np.stack([c.features_left[order], c.features_right[order]], axis=1).reshape(-1, f)  # (2B, F)
    seen, last_from_end = np.unique(items[::-1], return_index=True)
    latest[seen] = feats[::-1][last_from_end]
    return latest


def fit_plackett_luce(rankings: Rankings, config: RankConfig = RankConfig()) -> Ratings:
    """Fit item strengths to multi-way rankings by MAP under Plackett-Luce.

    ``P[ranking] = Π_k exp(θ_(k)) / Σ_{j≥k} exp(θ_(j))`` (Plackett 1975; Luce 1959), via
    :func:`rlhfkit.choice.plackett_luce_nll`, with the Gaussian prior and recency weights of
    :func:`fit_bradley_terry`. A list of two items is a Bradley-Terry comparison.

    Args:
        rankings: ``R`` lists of up to ``K`` of ``N`` items, best first.
        config: see :class:`RankConfig` (ties and home do not apply).

    Returns:
        :class:`Ratings`; ``wins[i]`` counts the items ranked below ``i`` over all lists.

    Raises:
        ValueError: if there are no rankings, or ``half_life`` is set but ``time`` is not.
    """
    r = rankings
    if len(r) == 0:
        raise ValueError("no rankings to fit")
    if config.half_life is not None and r.time is None:
        raise ValueError("half_life needs the rankings' time (days)")
    n = len(r.names)
    base = np.ones(len(r)) if r.weight is None else r.weight.copy()
    if r.time is not None:
        base *= recency_weights(r.time, config.half_life)
    mask = torch.as_tensor(r.items >= 0)  # (R, K)
    items = torch.as_tensor(np.maximum(r.items, 0))  # (R, K)
    theta = torch.zeros(n, dtype=_DTYPE, requires_grad=True)
    lam = config.prior_precision

    def fit_once(weight: np.ndarray, start: Tensor | None = None) -> np.ndarray:
        w = torch.as_tensor(weight, dtype=_DTYPE)
        if start is not None:
            with torch.no_grad():
                theta.copy_(start)

        def objective() -> Tensor:
            nll = plackett_luce_nll(theta[items], mask)  # (R,)
            return (w * nll).sum() + 0.5 * lam * theta.square().sum()

        _lbfgs([theta], objective, config.max_iter)
        return theta.detach().numpy().copy()

    point = fit_once(base)
    start = torch.as_tensor(point)
    intervals = _bootstrap(lambda w: fit_once(w, start), base, config.n_bootstrap, config) if config.n_bootstrap else None
    wins, losses = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for row in r.items:
        real = row[row >= 0]
        k = len(real)
        wins[real] += k - 1 - np.arange(k)
        losses[real] += np.arange(k)
    return Ratings(
        names=r.names, offsets=point, coef=np.zeros(0), feature_names=(), latest_features=np.zeros((n, 0)),
        feature_mean=np.zeros(0), home_advantage=0.0, nu=0.0, wins=wins, losses=losses,
        ties=np.zeros(n, dtype=np.int64), config=config, intervals=intervals,
    )
