"""RL math shared by control and language models: GAE, group advantages, PPO and GRPO losses, KL estimators
and controllers, RLHF per-token rewards, the Safe RLHF Lagrangian."""

from rlhfkit.rl.advantages import GROUP_ESTIMATORS, gae, group_advantages
from rlhfkit.rl.grpo import LOSS_AGGREGATIONS, aggregate_loss, grpo_token_loss, sequence_log_ratio
from rlhfkit.rl.kl import kl_estimate
from rlhfkit.rl.ppo import AdaptiveKLController, masked_mean, ppo_clip_loss, ppo_kl_penalty_loss, value_loss
from rlhfkit.rl.rlhf import (
    FixedKLController,
    ProportionalKLController,
    lagrange_update,
    safe_advantages,
    segment_rewards,
    token_advantages,
    token_rewards,
    whiten,
)

__all__ = [
    "GROUP_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "AdaptiveKLController",
    "FixedKLController",
    "ProportionalKLController",
    "aggregate_loss",
    "gae",
    "group_advantages",
    "grpo_token_loss",
    "kl_estimate",
    "lagrange_update",
    "masked_mean",
    "ppo_clip_loss",
    "ppo_kl_penalty_loss",
    "safe_advantages",
    "segment_rewards",
    "sequence_log_ratio",
    "token_advantages",
    "token_rewards",
    "value_loss",
    "whiten",
]
