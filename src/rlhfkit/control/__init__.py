"""Deep RL from human preferences on gymnasium tasks: the PPO loop (Christiano et al. 2017) and the
off-policy PEBBLE loop (Lee et al. 2021)."""

from rlhfkit.control.config import PRESETS, PebbleConfig, TrainConfig, make_config
from rlhfkit.control.envs import CARTPOLE_COS_ID, FixedHorizon, make_env, make_vec_env
from rlhfkit.control.loop import RunResult, label_schedule, train, train_baseline
from rlhfkit.control.pebble import feedback_schedule, train_pebble, train_sac_baseline
from rlhfkit.control.ppo import PPOAgent, PPOConfig
from rlhfkit.control.sac import ReplayBuffer, SACAgent, SACConfig
from rlhfkit.control.wrappers import LearnedReward

__all__ = ["CARTPOLE_COS_ID", "PRESETS", "FixedHorizon", "LearnedReward", "PPOAgent", "PPOConfig", "PebbleConfig",
           "ReplayBuffer", "RunResult", "SACAgent", "SACConfig", "TrainConfig", "feedback_schedule", "label_schedule",
           "make_config", "make_env", "make_vec_env", "train", "train_baseline", "train_pebble", "train_sac_baseline"]
