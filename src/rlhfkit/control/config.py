"""Run configuration of the preference-based RL loop, with per-environment presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from rlhfkit.control.envs import CARTPOLE_COS_ID, check_env_id, check_termination
from rlhfkit.control.ppo import PPOConfig
from rlhfkit.control.sac import SACConfig
from rlhfkit.feedback.teachers import TEACHERS
from rlhfkit.reward.ensemble import RewardConfig

__all__ = ["PRESETS", "PebbleConfig", "TrainConfig", "apply_overrides", "coerce_value", "config_from_dict", "make_config"]


@dataclass(frozen=True)
class PebbleConfig:
    """The schedule of PEBBLE (Lee et al. 2021), the off-policy loop (``algo="pebble"``). Defaults are
    B-Pref's, scaled to budgets of 50k-500k env steps."""

    seed_steps: int = 1_000
    """Env steps of uniform random actions before any update."""
    unsup_steps: int = 4_000
    """Env steps of unsupervised pre-training on the k-NN state-entropy reward after the seed steps
    (0: off). The first labels are asked when it ends."""
    knn_k: int = 5
    """``k`` of the state-entropy reward."""
    feedback_every: int = 2_500
    """Env steps between labelling sessions (B-Pref's ``num_interact``)."""
    label_sessions: int | None = None
    """Sessions after the first that share the rest of the label budget evenly (None: as many as fit
    in the first half of the step budget)."""
    query_window: int | None = None
    """Query fragments come from the last this many env steps per env (None: the whole buffer)."""
    reset_critic: bool = True
    """Re-initialise the critics when the first reward model replaces the entropy reward."""
    log_every: int = 1_000
    """Env steps between metrics records."""
    checkpoint_every: int = 10_000
    """Env steps between checkpoints (agent, optimisers, reward model, replay buffer, counters, random
    states) that ``--resume`` continues from; one is also written after every labelling session and at
    the end. The replay buffer makes each a few MB (Pendulum, 50k steps) to a few hundred (MuJoCo, 1M)."""
    qpa: bool = False
    """QPA (Hu et al. 2023, "Query-Policy Misalignment in Preference-Based RL", ICLR 2024): queries drawn
    uniformly from the last ``qpa_window`` episodes only (the policy-aligned buffer, §4.1; this replaces
    ``query_window`` and ``query_selection``), and hybrid experience replay while labels remain (§4.2):
    a ``qpa_replay`` fraction of every SAC batch from those episodes. A loop option rather than a
    ``--query`` method, since it changes the replay as well as the queries."""
    qpa_window: int = 10
    """Episodes in QPA's policy-aligned buffer (the authors' ``max_reward_buffer_size`` on DMControl: 10)."""
    qpa_replay: float = 0.5
    """Fraction of each SAC batch from the policy-aligned buffer under QPA (the authors' ``her_ratio``)."""
    surf: bool = False
    """SURF (Park et al. 2022, ICLR 2022): fit r̂ also on confidently pseudo-labelled unlabelled pairs
    from the buffer, with temporal-crop augmentation of labelled and pseudo-labelled pairs
    (:mod:`rlhfkit.reward.surf`)."""
    surf_tau: float = 0.95
    """SURF's pseudo-label confidence threshold ``τ`` on the ensemble's mean preference (the authors'
    ``threshold_u``)."""
    surf_weight: float = 1.0
    """SURF's weight ``λ`` of the unlabelled loss (``lambda_u``; 0 keeps only the crops)."""
    surf_ratio: int = 10
    """Unlabelled pairs per label held (SURF's ``inv_label_ratio``), drawn afresh from the buffer at each fit."""
    surf_crop: int = 5
    """Crop windows of ``fragment_length - surf_crop … fragment_length`` steps (SURF's ``crop_range``; 0: none)."""

    def validate(self) -> None:
        """Raises ValueError naming the field that is out of range."""
        for name in ("seed_steps", "unsup_steps", "surf_crop"):
            if getattr(self, name) < 0:
                raise ValueError(f"pebble.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("knn_k", "feedback_every", "log_every", "checkpoint_every", "qpa_window", "surf_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"pebble.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.qpa_replay <= 1.0:
            raise ValueError(f"pebble.qpa_replay must lie in [0, 1], got {self.qpa_replay}")
        if not 0.5 < self.surf_tau <= 1.0:
            raise ValueError(f"pebble.surf_tau must lie in (0.5, 1], got {self.surf_tau}")
        if self.surf_weight < 0:
            raise ValueError(f"pebble.surf_weight must be >= 0, got {self.surf_weight}")
        if self.label_sessions is not None and self.label_sessions < 0:
            raise ValueError(f"pebble.label_sessions must be >= 0, got {self.label_sessions}")
        if self.query_window is not None and self.query_window < 1:
            raise ValueError(f"pebble.query_window must be >= 1, got {self.query_window}")


ALGOS = ("ppo", "pebble")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run of Deep RL from human preferences needs (Christiano et al. 2017)."""

    env_id: str = "Pendulum-v1"
    """gymnasium environment id."""
    algo: Literal["ppo", "pebble"] = "ppo"
    """The learner: on-policy PPO (Christiano et al. 2017) or off-policy SAC with PEBBLE's pre-training
    and relabelling (Lee et al. 2021)."""
    total_steps: int = 50_000
    """Env-step budget, the initial random-policy rollouts included."""
    total_labels: int = 200
    """Label budget (comparisons asked of the teacher)."""
    initial_label_frac: float = 0.25
    """Fraction of the label budget asked before any policy training, on rollouts of the
    initial (random) policy; the paper front-loads 25%."""
    initial_label_count: int | None = None
    """Explicit size of the initial batch of labels; overrides ``initial_label_frac``."""
    fragment_length: int = 50
    """Steps per trajectory fragment."""
    query_selection: Literal["random", "disagreement"] = "disagreement"
    """How queries are picked among candidates (§2.2.4)."""
    oversample: int = 10
    """Candidates per query for disagreement selection; the paper samples 10×."""
    teacher: str = "oracle"
    """Synthetic teacher kind (B-Pref): oracle, stochastic, mistake, skip, equal, myopic."""
    seed: int = 0
    """Seed of everything: envs, networks, teacher, query sampling."""
    horizon: int | None = None
    """Fixed episode length (no early termination, §3.1), or None for the env's own limit."""
    termination: str = "absorb"
    """What a training episode does where the env would terminate: ``"absorb"`` (with ``horizon``, sit in an
    absorbing state of reward 0 until the horizon) or ``"penalty"`` (MuJoCo locomotion only: keep simulating
    with ``terminate_when_unhealthy=False``, the healthy bonus lost while fallen; Christiano et al. 2017,
    App. A.1) or ``"height"`` (Hopper-v5, Walker2d-v5: the same with the reward forward speed plus torso height,
    no torque cost, as rl-teacher builds the paper's Hopper; :class:`rlhfkit.control.envs.HeightReward`). A run
    is evaluated on its own task and, unless ``"absorb"``, also on the standard one
    (:func:`rlhfkit.control.envs.make_env`)."""
    label_decay_steps: int | None = None
    """``T₀`` of the label rate ∝ T₀ / (T + T₀) after the initial batch; None: total_steps / 4."""
    label_every: int = 1
    """PPO loop: iterations between labelling sessions (each followed by a reward-model refit). The labels
    the schedule gives to the iterations in between are asked at the session that starts their block, so
    the total and the decay are kept while the refits, which dominate the wall time once fragments are long
    and labels many (Hopper, 1,400 labels of 188 steps: 31 s per refit), happen ``label_every`` times less
    often. The paper fits the predictor asynchronously (Christiano et al. 2017, §2.1)."""
    reward_norm: str = "rollout"
    """PPO loop: where r̂'s outputs are renormalised to mean 0, std 1 after each refit: ``"rollout"`` (the
    iteration's rollout, the policy's current data) or ``"initial"`` (the fragments of the initial labels,
    asked on the random policy: a fixed reference, so a better policy earns a larger r̂ and a refit moves
    the value function's targets less). Christiano et al. 2017 (§2.2.3) normalise r̂ to zero mean and a
    constant standard deviation without naming the data. Measured (HalfCheetah-v5, 700 labels, 500k steps,
    seeds 0-4, bench/results/christiano_mujoco.txt): mean true return 1,794.4 with ``"rollout"``, 2,015.3
    with ``"initial"`` — within the seed spread (per seed −1,245 … +2,215), so the default stays."""
    reward_epochs_initial: int = 200
    """Max epochs of the first reward-model fit (early stopping decides)."""
    reward_epochs: int = 50
    """Max epochs of each later (warm-started) fit."""
    eval_episodes: int = 10
    """Episodes of the final evaluation of the deterministic policy on the true reward."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    pebble: PebbleConfig = field(default_factory=PebbleConfig)

    @property
    def initial_labels(self) -> int:
        """Labels asked before policy training: ``initial_label_count`` if set, else
        ``round(initial_label_frac · total_labels)`` (at least 1)."""
        if self.initial_label_count is not None:
            return self.initial_label_count
        return max(1, round(self.initial_label_frac * self.total_labels))

    @property
    def rollout_steps(self) -> int:
        """Env steps per iteration: ``n_envs · n_steps`` (PPO), or one vector step of ``sac.n_envs`` (PEBBLE)."""
        return self.sac.n_envs if self.algo == "pebble" else self.ppo.n_envs * self.ppo.n_steps

    @property
    def steps_run(self) -> int:
        """Env steps a run actually takes: :attr:`total_steps` rounded down to whole rollouts of
        :attr:`rollout_steps` (``--steps 10000`` with 8 envs × 256 steps runs 8,192)."""
        return self.rollout_steps * max(self.total_steps // self.rollout_steps, 1)

    def validate(self) -> None:
        """Check the budgets and names before any work starts.

        Raises:
            ValueError: naming the offending field and what was expected.
        """
        check_env_id(self.env_id)
        if self.algo not in ALGOS:
            raise ValueError(f"algo (--algo) must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.total_steps <= 0:
            raise ValueError(f"total_steps (--steps) must be positive, got {self.total_steps}")
        if self.total_labels <= 0:
            raise ValueError(f"total_labels (--labels) must be positive, got {self.total_labels}")
        if not 0.0 < self.initial_label_frac <= 1.0:
            raise ValueError(f"initial_label_frac must be in (0, 1], got {self.initial_label_frac}")
        if self.total_labels < self.initial_labels:
            raise ValueError(
                f"total_labels (--labels) {self.total_labels} is smaller than the initial batch of "
                f"{self.initial_labels} labels (initial_label_count)"
            )
        if self.initial_labels < 2:
            raise ValueError(
                f"the initial batch would hold {self.initial_labels} label(s) "
                f"({self.initial_label_frac:.0%} of --labels {self.total_labels}); the reward model needs at least 2: "
                "raise --labels or initial_label_frac"
            )
        if self.algo == "pebble":
            self._validate_pebble()
        elif self.total_steps < 2 * self.rollout_steps:
            raise ValueError(
                f"total_steps={self.total_steps} is less than two rollouts of {self.rollout_steps} steps "
                f"(n_envs={self.ppo.n_envs} × n_steps={self.ppo.n_steps}); nothing would be trained"
            )
        if self.query_selection not in ("random", "disagreement", "entropy"):
            raise ValueError(f"query_selection (--query) must be 'disagreement', 'entropy' or 'random', got "
                             f"{self.query_selection!r}")
        if self.teacher not in TEACHERS and self.teacher != "human":
            raise ValueError(f"unknown teacher {self.teacher!r} (--teacher); choose one of {', '.join(TEACHERS)} "
                             "or human")
        if self.fragment_length < 1 or (self.algo == "ppo" and self.fragment_length > self.ppo.n_steps):
            raise ValueError(f"fragment_length must be in [1, n_steps={self.ppo.n_steps}], got {self.fragment_length}")
        if self.label_every < 1:
            raise ValueError(f"label_every must be >= 1, got {self.label_every}")
        if self.horizon is not None and self.horizon < self.fragment_length:
            raise ValueError(f"horizon {self.horizon} is shorter than fragment_length {self.fragment_length}")
        check_termination(self.env_id, self.termination)
        if self.reward_norm not in REWARD_NORMS:
            raise ValueError(f"reward_norm must be one of {', '.join(REWARD_NORMS)}, got {self.reward_norm!r}")

    def _validate_pebble(self) -> None:
        self.sac.validate()
        self.pebble.validate()
        first = self.pebble.seed_steps + self.pebble.unsup_steps
        if self.total_steps <= first:
            raise ValueError(f"total_steps (--steps) {self.total_steps} leaves no training after the "
                             f"{self.pebble.seed_steps} seed and {self.pebble.unsup_steps} unsupervised steps "
                             "(pebble.seed_steps, pebble.unsup_steps)")
        if self.pebble.query_window is not None and self.pebble.query_window < self.fragment_length:
            raise ValueError(f"pebble.query_window {self.pebble.query_window} is shorter than fragment_length "
                             f"{self.fragment_length}")
        if self.pebble.surf and self.pebble.surf_crop >= self.fragment_length:
            raise ValueError(f"pebble.surf_crop {self.pebble.surf_crop} must be shorter than fragment_length "
                             f"{self.fragment_length}")
        if self.pebble.seed_steps + self.pebble.unsup_steps < self.fragment_length * self.sac.n_envs:
            raise ValueError(f"the first labels come after {first} env steps, too few for fragments of "
                             f"{self.fragment_length} steps: raise pebble.seed_steps")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of every field (what ``config.json`` holds)."""
        return dataclasses.asdict(self)


REWARD_NORMS = ("rollout", "initial")
"""Reference data of r̂'s output normalisation in the PPO loop (:attr:`TrainConfig.reward_norm`)."""


PRESETS: dict[str, dict[str, Any]] = {
    # imitation's tuned Pendulum PPO (2048 steps over 8 envs, γ 0.97, clip 0.1, entropy 0.01,
    # 32×32 nets) with 20 epochs per update and lr 3e-3 instead of 10 and 2e-3: with a true
    # 50k-step budget there are only 23 updates. Measured here, seeds 0-2, 200 oracle labels:
    # mean true return -173 (lr 3e-3, 20 epochs) vs -202 (2e-3, 20) and -209 (3e-3, 10); lr 5e-3,
    # entropy 0, γ 0.9, λ 0.98, gSDE, 128-step rollouts, clip 0.2, batch 128, 64×64 nets and
    # fragments of 100 steps were all no better (bench/results/control.txt, issue 2's note).
    "Pendulum-v1": {
        "fragment_length": 50,
        "ppo": PPOConfig(n_envs=8, n_steps=256, batch_size=64, n_epochs=20, lr=3e-3, gamma=0.97, gae_lambda=0.95,
                         clip_range=0.1, ent_coef=0.01, hidden_sizes=(32, 32)),
    },
    CARTPOLE_COS_ID: {
        "fragment_length": 25,
        "ppo": PPOConfig(n_envs=8, n_steps=256, batch_size=256, n_epochs=10, lr=1e-3, gamma=0.99, gae_lambda=0.95,
                         clip_range=0.2, ent_coef=0.0),
    },
    # a labelling session (and refit) every 8 PPO iterations: 0.75 of true-reward PPO's env steps/s with 30-step
    # fragments (bench/results/christiano_mujoco.txt)
    "HalfCheetah-v5": {"fragment_length": 50, "label_every": 8, "ppo": PPOConfig(n_envs=4, n_steps=512)},
    # the robot keeps moving after a fall and loses its healthy bonus (the paper's handling); with an absorbing
    # state the policy learned to fall at once and exploit r̂ in the frozen pose. Refits of 1.5 s (188-step)
    # fragments dominate the wall time: a session every 16 iterations instead of 8 and early stopping after 5
    # epochs without improvement instead of 10 take a 500k-step, 700-label run from 0.47 to 0.77 of true-reward
    # PPO's env steps/s, true return 0.89 of it over seeds 0-4 (0.74 before; bench/results/christiano_mujoco.txt)
    "Hopper-v5": {"fragment_length": 50, "horizon": 1000, "termination": "penalty", "label_every": 16,
                  "reward": RewardConfig(patience=5), "ppo": PPOConfig(n_envs=4, n_steps=512)},
}
"""Per-environment defaults; anything not listed comes from :class:`TrainConfig`."""


PEBBLE_PRESETS: dict[str, dict[str, Any]] = {
    # 64×64 nets and batch 128: 2.7 ms per SAC update on one core here (256×256, batch 256: 14 ms); one
    # update per 2 transitions: seeds 0-2 score -145.9/-136.8/-166.9 in 108-128 s (1 per transition:
    # -142.2/-136.3/-165.8 in 157-192 s), bench/results/control_pebble.txt
    "Pendulum-v1": {"fragment_length": 50,
                    "sac": SACConfig(hidden_sizes=(64, 64), batch_size=128, updates_per_step=0.5)},
    # QPA on: 200 oracle labels, 100k steps, SAC 128×128 at 0.5 updates per transition, seeds 0-2: true return
    # 1,645.6 / 619.8 / 2,878.0 (mean 1,714.5) with QPA against 528.1 / 531.3 (seeds 0-1) without; true-reward
    # SAC 1,077.1 / 3,132.0 / 1,964.6 (bench/results/control_pebble.txt)
    "HalfCheetah-v5": {"fragment_length": 50, "pebble": PebbleConfig(seed_steps=1_000, unsup_steps=9_000,
                                                                      feedback_every=10_000, qpa=True)},
    "Hopper-v5": {"fragment_length": 50, "horizon": 1000, "termination": "penalty",
                  "pebble": PebbleConfig(seed_steps=1_000, unsup_steps=9_000, feedback_every=10_000)},
}
"""Per-environment defaults of the PEBBLE loop (``algo="pebble"``), on top of :data:`PRESETS`'s non-PPO fields."""


def make_config(env_id: str, **overrides: Any) -> TrainConfig:
    """The preset for ``env_id`` (and ``algo``, PPO by default) with ``overrides`` (None values are
    ignored) applied on top."""
    base: dict[str, Any] = {"env_id": env_id, **PRESETS.get(env_id, {})}
    if overrides.get("algo") == "pebble":
        base.update(PEBBLE_PRESETS.get(env_id, {}))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from :meth:`TrainConfig.to_dict` output (e.g. config.json)."""
    d = dict(d)
    pp, rw, sc, pb = d.pop("ppo", None), d.pop("reward", None), d.pop("sac", None), d.pop("pebble", None)
    ppo = PPOConfig(**{**pp, "hidden_sizes": tuple(pp["hidden_sizes"])}) if pp else PPOConfig()
    reward = RewardConfig(**{**rw, "hidden_sizes": tuple(rw["hidden_sizes"])}) if rw else RewardConfig()
    sac = SACConfig(**{**sc, "hidden_sizes": tuple(sc["hidden_sizes"]),
                       "log_std_bounds": tuple(sc["log_std_bounds"])}) if sc else SACConfig()
    pebble = PebbleConfig(**pb) if pb else PebbleConfig()
    return TrainConfig(**d, ppo=ppo, reward=reward, sac=sac, pebble=pebble)


def save_config(config: TrainConfig, path: str) -> None:
    """Write ``config`` as indented JSON to ``path``."""
    with open(path, "w") as f:
        json.dump(config.to_dict(), f, indent=2)


def coerce_value(text: str, current: Any, where: str) -> Any:
    """Parse ``text`` as the type of ``current`` (bool, int, float, tuple of ints, None or str).

    Raises:
        ValueError: naming ``where`` when ``text`` is not of that type.
    """
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected true/false, got {text!r}")
    if isinstance(current, tuple):
        return tuple(int(x) for x in text.split(",") if x)
    if text.lower() == "none":
        return None
    casts = {float: (float,), int: (int,)}.get(type(current), (int, float) if current is None else ())
    for cast in casts:
        try:
            return cast(text)
        except ValueError:
            continue
    if casts and current is not None:
        raise ValueError(f"{where}: expected {type(current).__name__}, got {text!r}")
    return text


def apply_overrides(config: TrainConfig, assignments: list[str]) -> TrainConfig:
    """Apply ``key=value`` strings (dotted for nested configs: ``ppo.lr=1e-3``) to a config.

    Raises:
        ValueError: for a malformed assignment, an unknown field (listing the known ones) or a
            value of the wrong type.
    """
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. ppo.lr=1e-3")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) == 1:
            target, name = config, parts[0]
        elif len(parts) == 2 and parts[0] in ("ppo", "reward", "sac", "pebble"):
            target, name = getattr(config, parts[0]), parts[1]
        else:
            raise ValueError(f"--set {key!r}: use a field of TrainConfig, or ppo.FIELD / reward.FIELD / "
                             "sac.FIELD / pebble.FIELD")
        fields = {f.name for f in dataclasses.fields(target)}
        if name not in fields:
            raise ValueError(f"--set {key!r}: unknown field; known: {', '.join(sorted(fields))}")
        value = coerce_value(text.strip(), getattr(target, name), f"--set {key}")
        new = dataclasses.replace(target, **{name: value})
        config = new if len(parts) == 1 else dataclasses.replace(config, **{parts[0]: new})
    return config
