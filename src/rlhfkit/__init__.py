"""rlhfkit: reinforcement learning from human feedback.

Choice models (:mod:`rlhfkit.choice`), RL math (:mod:`rlhfkit.rl`), feedback records and
teachers (:mod:`rlhfkit.feedback`), reward models (:mod:`rlhfkit.reward`) and the
preference-based RL loop for gymnasium tasks (:mod:`rlhfkit.control`).
"""

__version__ = "0.1.0"
