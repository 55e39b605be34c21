"""RL math shared by control and language models: GAE, PPO losses, KL estimators."""

from rlhfkit.rl.advantages import gae
from rlhfkit.rl.kl import kl_estimate
from rlhfkit.rl.ppo import AdaptiveKLController, masked_mean, ppo_clip_loss, ppo_kl_penalty_loss, value_loss

__all__ = [
    "AdaptiveKLController",
    "gae",
    "kl_estimate",
    "masked_mean",
    "ppo_clip_loss",
    "ppo_kl_penalty_loss",
    "value_loss",
]
