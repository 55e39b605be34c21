"""Reward models: the control ensemble r̂(o, a), its fitting on comparisons, and SURF's temporal crops
and pseudo-labels."""

from rlhfkit.reward.ensemble import (
    ComparisonBatch,
    RewardConfig,
    RewardEnsemble,
    comparisons_to_batch,
    evaluate_reward_ensemble,
    fit_reward_ensemble,
)
from rlhfkit.reward.surf import crop_windows, pseudo_labels, temporal_crop_masks, window_mask

__all__ = ["ComparisonBatch", "RewardConfig", "RewardEnsemble", "comparisons_to_batch", "crop_windows",
           "evaluate_reward_ensemble", "fit_reward_ensemble", "pseudo_labels", "temporal_crop_masks", "window_mask"]
