"""PEBBLE --resume: interrupted mid-pre-training, mid-training, and inside a labelling session; the
checkpoint restores every tensor and random state; the CLI continues a run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from rlhfkit.control.checkpoint import RunDir, load_comparisons
from rlhfkit.control.config import PebbleConfig, make_config
from rlhfkit.control.pebble import feedback_schedule, train_pebble
from rlhfkit.control.pebble_checkpoint import PebbleProgress, load_pebble_checkpoint, save_pebble_checkpoint
from rlhfkit.control.sac import ReplayBuffer, SACAgent, SACConfig, StateEntropyReward
from rlhfkit.feedback import make_teacher
from rlhfkit.reward import RewardConfig, RewardEnsemble


class _Interrupt(Exception):
    pass


class CountingTeacher:
    """An oracle that remembers every pair it was asked about."""

    def __init__(self) -> None:
        self.inner = make_teacher("oracle")
        self.name = self.inner.name
        self.asked: list = []

    def label(self, pairs):
        self.asked.extend(pairs)
        return self.inner.label(pairs)


def _small(**pebble):
    c = make_config("Pendulum-v1", algo="pebble", total_labels=20, total_steps=3000, seed=0, eval_episodes=2,
                    reward_epochs_initial=30, reward_epochs=10)
    settings = {"seed_steps": 500, "unsup_steps": 600, "feedback_every": 500, "log_every": 500,
                "checkpoint_every": 500, **pebble}
    return replace(c, sac=SACConfig(batch_size=32, hidden_sizes=(16, 16), updates_per_step=0.25),
                   reward=RewardConfig(hidden_sizes=(32,)),
                   pebble=PebbleConfig(**settings))


def _stop_at(env_steps: int):
    def callback(record):
        if record["env_steps"] == env_steps:
            raise _Interrupt

    return callback


def _same_labels(old, new) -> None:
    assert len(new) >= len(old)
    for a, b in zip(old, new):
        assert a.outcome is b.outcome and a.teacher == b.teacher
        for side in ("left", "right"):
            np.testing.assert_array_equal(getattr(a, side).obs, getattr(b, side).obs)
            np.testing.assert_array_equal(getattr(a, side).acts, getattr(b, side).acts)


def _check_finished(out, config, teacher_calls: int) -> None:
    run = RunDir(out)
    rows = run.read_metrics()
    steps = [r["env_steps"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 3000  # no step logged twice
    assert rows[-1]["labels"] == config.total_labels
    assert len(load_comparisons(run.comparisons_path)) == config.total_labels
    assert teacher_calls == config.total_labels  # over both processes: every label asked once
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["labels"] == config.total_labels and summary["env_steps"] == 3000


def test_schedule_of_the_small_run():
    # the tests below interrupt between these sessions: 5 labels at 1,100 and 15 at 1,600
    assert feedback_schedule(_small()) == [(1100, 5), (1600, 15)]


def test_resume_mid_pretraining(tmp_path):
    out, config = str(tmp_path / "run"), _small()
    first = CountingTeacher()
    with pytest.raises(_Interrupt):
        train_pebble(config, out, teacher=first, on_iteration=_stop_at(1000))
    run = RunDir(out)
    state = json.loads((run.ckpt / "state.json").read_text())
    assert state["env_steps"] == 1000 and state["labels"] == 0 and not state["pebble"]["fitted"]
    assert not run.comparisons_path.exists() and first.asked == []
    assert [r["phase"] for r in run.read_metrics()] == ["seed", "unsupervised"]

    second = CountingTeacher()
    result = train_pebble(make_config("Pendulum-v1", algo="pebble"), out, resume=True, teacher=second)
    assert result.labels == 20 and result.env_steps == 3000
    assert [r["phase"] for r in run.read_metrics()][:3] == ["seed", "unsupervised", "preferences"]
    _check_finished(out, config, len(second.asked))


def test_resume_mid_training_keeps_the_labels_and_asks_only_the_rest(tmp_path):
    out, config = str(tmp_path / "run"), _small(checkpoint_every=1000)
    first = CountingTeacher()
    with pytest.raises(_Interrupt):
        train_pebble(config, out, teacher=first, on_iteration=_stop_at(1500))
    run = RunDir(out)
    # checkpoints at 1,000 and after the session at 1,100; records at 500, 1,000, 1,500
    assert json.loads((run.ckpt / "state.json").read_text())["env_steps"] == 1100
    old = load_comparisons(run.comparisons_path)
    assert len(old) == len(first.asked) == 5

    second = CountingTeacher()
    train_pebble(config, out, resume=True, teacher=second)
    assert len(second.asked) == 15
    new = load_comparisons(run.comparisons_path)
    _same_labels(old, new)  # the labels before the interruption are kept, first and in order
    _check_finished(out, config, len(first.asked) + len(second.asked))
    assert [r["env_steps"] for r in run.read_metrics()][:3] == [500, 1000, 1500]  # 1,500 logged again, once


def test_labels_asked_after_the_last_checkpoint_are_spent_not_asked_again(tmp_path, monkeypatch):
    import rlhfkit.control.labelling as labelling

    out, config = str(tmp_path / "run"), _small(checkpoint_every=10_000)
    original = labelling.fit_reward_ensemble

    def fit_then_crash(model, comparisons, **kw):
        if len(comparisons) == 20:  # the second session: its 15 labels are saved, its checkpoint is not
            raise _Interrupt
        return original(model, comparisons, **kw)

    monkeypatch.setattr(labelling, "fit_reward_ensemble", fit_then_crash)
    first = CountingTeacher()
    with pytest.raises(_Interrupt):
        train_pebble(config, out, teacher=first)
    monkeypatch.setattr(labelling, "fit_reward_ensemble", original)
    run = RunDir(out)
    assert json.loads((run.ckpt / "state.json").read_text())["labels"] == 5  # the session checkpoint at 1,100
    saved = load_comparisons(run.comparisons_path)
    assert len(saved) == len(first.asked) == 20

    second = CountingTeacher()
    train_pebble(config, out, resume=True, teacher=second)
    assert second.asked == []  # the 15 banked labels were spent at 1,600
    _same_labels(saved, load_comparisons(run.comparisons_path))
    _check_finished(out, config, len(first.asked))
    row = next(r for r in run.read_metrics() if r["env_steps"] == 2000)
    assert row["labels"] == 20


def test_the_checkpoint_restores_every_tensor_and_random_state(tmp_path):
    import gymnasium as gym

    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    act_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def build():
        agent = SACAgent(obs_space, act_space, SACConfig(batch_size=8, hidden_sizes=(8,)), seed=0)
        return (agent, RewardEnsemble(3, 1, False, RewardConfig(hidden_sizes=(8,))), ReplayBuffer(40, 2, 3, 1),
                StateEntropyReward(5), np.random.default_rng(0), torch.Generator().manual_seed(0))

    agent, model, buffer, entropy, rng, gen = build()
    rand = np.random.default_rng(1)
    for _ in range(25):  # wraps the 20-step ring
        buffer.add(obs=rand.normal(size=(2, 3)), actions=rand.uniform(-1, 1, (2, 1)),
                   env_actions=rand.uniform(-2, 2, (2, 1)), next_obs=rand.normal(size=(2, 3)),
                   true_rewards=rand.normal(size=2), rewards=rand.normal(size=2), terminated=np.zeros(2),
                   episode_end=rand.random(2) < 0.1)
    for _ in range(3):
        batch = buffer.sample(8, gen)
        agent.update(batch, rewards=entropy(batch["next_obs"], buffer.flat("obs")))
    model.set_input_stats(torch.randn(50, 4))
    model.normalize_outputs(torch.randn(50, 4))
    rng.random(7)
    teacher = make_teacher("stochastic", seed=3)
    teacher._rng.random(5)
    progress = PebbleProgress(env_steps=50, credit=0.5, fitted=True, last_log_steps=40, wall_s=1.5, return_scale=2.0,
                              sessions_done=[30])
    run = RunDir(tmp_path / "run")
    save_pebble_checkpoint(run, agent=agent, model=model, buffer=buffer, entropy=entropy, progress=progress,
                           labels=4, log_every=10, rng=rng, generator=gen, teacher=teacher)

    agent2, model2, buffer2, entropy2, rng2, gen2 = build()
    loaded, state = load_pebble_checkpoint(run, agent=agent2, model=model2, buffer=buffer2, entropy=entropy2,
                                           rng=rng2, generator=gen2)
    assert loaded == progress and state["labels"] == 4 and agent2.updates == agent.updates == 3
    for a, b in ((agent, agent2), (model, model2), (entropy.stats, entropy2.stats)):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(v, w, msg=k)
    for name, opt in agent.optimizers.items():
        st, st2 = opt.state_dict()["state"], agent2.optimizers[name].state_dict()["state"]
        for pid in st:
            for k in st[pid]:
                torch.testing.assert_close(st[pid][k], st2[pid][k])
    assert (buffer2.pos, buffer2.full) == (buffer.pos, buffer.full)
    for k in ReplayBuffer.FIELDS:
        torch.testing.assert_close(buffer2.data[k], buffer.data[k])
    # every random stream continues exactly where it stopped
    assert rng2.random() == rng.random()
    torch.testing.assert_close(torch.rand(3, generator=gen2), torch.rand(3, generator=gen))
    torch.testing.assert_close(agent2.random_actions(2)[0], agent.random_actions(2)[0])
    teacher2 = make_teacher("stochastic", seed=3)
    from rlhfkit.control.pebble_checkpoint import restore_teacher_rng

    restore_teacher_rng(teacher2, state)
    assert teacher2._rng.random() == teacher._rng.random()


def test_resume_refuses_a_checkpoint_without_its_replay_buffer(tmp_path):
    out, config = str(tmp_path / "run"), _small()
    with pytest.raises(_Interrupt):
        train_pebble(config, out, on_iteration=_stop_at(500))
    (RunDir(out).ckpt / "replay.safetensors").unlink()
    with pytest.raises(ValueError, match="has no replay buffer"):
        train_pebble(config, out, resume=True)
    with pytest.raises(ValueError, match="is not a run directory"):
        train_pebble(config, str(tmp_path / "nothing"), resume=True)


def test_cli_resumes_an_interrupted_pebble_run(tmp_path):
    from typer.testing import CliRunner

    from rlhfkit.cli import app

    out, config = tmp_path / "run", _small()
    with pytest.raises(_Interrupt):
        train_pebble(config, str(out), on_iteration=_stop_at(1500))
    r = CliRunner().invoke(app, ["control", "train", "--algo", "pebble", "--out", str(out), "--resume"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "(resumed)" in r.output and "PEBBLE" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == 20 and summary["env_steps"] == 3000
    assert len(load_comparisons(out / "comparisons.npz")) == 20
    r = CliRunner().invoke(app, ["control", "train", "--algo", "ppo", "--out", str(out), "--resume"])
    assert r.exit_code == 2 and "conflicts with the run" in r.output
