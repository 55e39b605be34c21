"""Per-sample estimators of KL divergence from log-probabilities (Schulman 2020).

For samples ``x ~ q`` and ``log r = log p(x) - log q(x)``, the estimators of ``KL[q ‖ p]`` are
``k1 = -log r`` (unbiased, can be negative), ``k2 = ½ (log r)²`` (biased, low variance) and
``k3 = (r - 1) - log r`` (unbiased, non-negative). Source: J. Schulman, "Approximating KL
divergence", 2020. In RLHF ``q`` is the policy and ``p`` the reference model, so pass
``logprobs`` (policy) and ``ref_logprobs``.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

__all__ = ["kl_estimate"]

KLEstimator = Literal["k1", "k2", "k3"]


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-sample estimate of ``KL[π ‖ π_ref]`` from actions/tokens sampled from ``π``.

    Args:
        logprobs: ``(B, T)`` (or any shape) log π(x) of the sampled actions or tokens.
        ref_logprobs: same shape, log π_ref(x).
        estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (see the module docstring).

    Returns:
        Tensor of the input shape, in nats.

    Raises:
        ValueError: on mismatched shapes or an unknown estimator name.
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} differ")
    log_r = ref_logprobs - logprobs
    estimators = {"k1": lambda: -log_r, "k2": lambda: 0.5 * log_r**2, "k3": lambda: log_r.exp() - 1.0 - log_r}
    if estimator not in estimators:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {sorted(estimators)}")
    return estimators[estimator]()
