"""Reward models: the control ensemble r̂(o, a) and its fitting on comparisons."""

from rlhfkit.reward.ensemble import (
    ComparisonBatch,
    RewardConfig,
    RewardEnsemble,
    comparisons_to_batch,
    evaluate_reward_ensemble,
    fit_reward_ensemble,
)

__all__ = ["ComparisonBatch", "RewardConfig", "RewardEnsemble", "comparisons_to_batch",
           "evaluate_reward_ensemble", "fit_reward_ensemble"]
