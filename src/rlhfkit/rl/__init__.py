"""RL math shared by control and language models: DPO-family losses, GAE, group advantages, PPO and GRPO losses, KL estimators
and controllers, RLHF per-token rewards, the Safe RLHF Lagrangian, SAC's losses and PEBBLE's state entropy."""

from rlhfkit.rl.advantages import GROUP_ESTIMATORS, gae, group_advantages
from rlhfkit.rl.grpo import LOSS_AGGREGATIONS, aggregate_loss, grpo_token_loss, sequence_log_ratio
from rlhfkit.rl.kl import kl_estimate
from rlhfkit.rl.preference import PREFERENCE_LOSSES, dpo_loss
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
from rlhfkit.rl.sac import (
    knn_state_entropy,
    sac_actor_loss,
    sac_critic_loss,
    sac_target,
    sac_temperature_loss,
    soft_update,
    tanh_gaussian_sample,
)

__all__ = [
    "GROUP_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "PREFERENCE_LOSSES",
    "AdaptiveKLController",
    "FixedKLController",
    "ProportionalKLController",
    "aggregate_loss",
    "dpo_loss",
    "gae",
    "group_advantages",
    "grpo_token_loss",
    "kl_estimate",
    "knn_state_entropy",
    "lagrange_update",
    "masked_mean",
    "ppo_clip_loss",
    "ppo_kl_penalty_loss",
    "sac_actor_loss",
    "sac_critic_loss",
    "sac_target",
    "sac_temperature_loss",
    "safe_advantages",
    "segment_rewards",
    "sequence_log_ratio",
    "soft_update",
    "tanh_gaussian_sample",
    "token_advantages",
    "token_rewards",
    "value_loss",
    "whiten",
]
