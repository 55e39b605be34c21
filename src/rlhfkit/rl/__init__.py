"""RL math shared by control and language models: GAE, group advantages, PPO and GRPO losses, KL estimators."""

from rlhfkit.rl.advantages import GROUP_ESTIMATORS, gae, group_advantages
from rlhfkit.rl.grpo import LOSS_AGGREGATIONS, aggregate_loss, grpo_token_loss, sequence_log_ratio
from rlhfkit.rl.kl import kl_estimate
from rlhfkit.rl.ppo import AdaptiveKLController, masked_mean, ppo_clip_loss, ppo_kl_penalty_loss, value_loss

__all__ = [
    "GROUP_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "AdaptiveKLController",
    "aggregate_loss",
    "gae",
    "group_advantages",
    "grpo_token_loss",
    "kl_estimate",
    "masked_mean",
    "ppo_clip_loss",
    "ppo_kl_penalty_loss",
    "sequence_log_ratio",
    "value_loss",
]
