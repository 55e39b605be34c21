"""Deep RL from human preferences on gymnasium tasks (Christiano et al. 2017)."""

from rlhfkit.control.config import PRESETS, TrainConfig, make_config
from rlhfkit.control.envs import CARTPOLE_COS_ID, FixedHorizon, make_env, make_vec_env
from rlhfkit.control.loop import RunResult, label_schedule, train, train_baseline
from rlhfkit.control.ppo import PPOAgent, PPOConfig
from rlhfkit.control.wrappers import LearnedReward

__all__ = ["CARTPOLE_COS_ID", "PRESETS", "FixedHorizon", "LearnedReward", "PPOAgent", "PPOConfig", "RunResult",
           "TrainConfig", "label_schedule", "make_config", "make_env", "make_vec_env", "train", "train_baseline"]
