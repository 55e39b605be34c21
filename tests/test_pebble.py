"""PEBBLE: the feedback schedule, a short run on Pendulum that goes through every phase, the SAC
baseline, configs and the CLI's --algo."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from rlhfkit.control.config import PebbleConfig, apply_overrides, config_from_dict, make_config
from rlhfkit.control.pebble import feedback_schedule, train_pebble
from rlhfkit.control.sac import ReplayBuffer, SACConfig


def test_feedback_schedule_spends_the_budget_in_even_sessions():
    c = make_config("Pendulum-v1", algo="pebble", total_labels=200, total_steps=50_000)
    c = replace(c, pebble=PebbleConfig(seed_steps=1000, unsup_steps=4000, feedback_every=2500))
    s = feedback_schedule(c)
    # first session at 5,000 with 25% (50); the other 150 over the sessions that fit in the first half:
    # 7,500 … 25,000 (8 sessions: 6 × 19 + 2 × 18)
    assert s[0] == (5000, 50)
    assert [t for t, _ in s[1:]] == list(range(7500, 25001, 2500))
    assert [n for _, n in s[1:]] == [19] * 6 + [18] * 2
    assert sum(n for _, n in s) == 200
    c = replace(c, pebble=replace(c.pebble, label_sessions=3))
    assert [n for _, n in feedback_schedule(c)] == [50, 50, 50, 50]


def test_pebble_config_validation_and_round_trip():
    c = make_config("Pendulum-v1", algo="pebble", total_steps=20_000)
    c.validate()
    assert config_from_dict(json.loads(json.dumps(c.to_dict()))) == c
    c2 = apply_overrides(c, ["sac.batch_size=128", "pebble.unsup_steps=0"])
    assert c2.sac.batch_size == 128 and c2.pebble.unsup_steps == 0
    with pytest.raises(ValueError, match="leaves no training"):
        make_config("Pendulum-v1", algo="pebble", total_steps=4000).validate()
    with pytest.raises(ValueError, match="algo"):
        make_config("Pendulum-v1", algo="dqn").validate()
    with pytest.raises(ValueError, match="sac.batch_size"):
        apply_overrides(c, ["sac.batch_size=0"]).validate()


def _small(**kw):
    c = make_config("Pendulum-v1", algo="pebble", total_labels=20, total_steps=3000, seed=0, **kw)
    return replace(c, sac=SACConfig(batch_size=64, hidden_sizes=(32, 32)),
                   pebble=PebbleConfig(seed_steps=500, unsup_steps=600, feedback_every=500, log_every=500))


def test_pebble_run_goes_through_every_phase_and_relabels(tmp_path, monkeypatch):
    calls = []
    original = ReplayBuffer.relabel

    def counting(self, fn, chunk=65_536):
        original(self, fn, chunk)
        calls.append(len(self))
        # after relabelling, every stored reward is the model's reward of its (o, a)
        np.testing.assert_allclose(self.flat("rewards").numpy(), fn(self.flat("obs"), self.flat("env_actions")).numpy(),
                                   rtol=1e-5, atol=1e-5)

    monkeypatch.setattr(ReplayBuffer, "relabel", counting)
    config = _small()
    result = train_pebble(config, str(tmp_path / "run"))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows][:3] == ["seed", "unsupervised", "preferences"]
    assert result.labels == 20 and result.env_steps == 3000 and len(result.eval_returns) == config.eval_episodes
    assert calls == [t for t, _ in feedback_schedule(config)]  # one relabelling per session, of the whole buffer
    assert rows[-1]["labels"] == 20 and "loss/critic" in rows[-1] and "sac/alpha" in rows[-1]
    assert (tmp_path / "run" / "checkpoint" / "agent.safetensors").is_file()
    from rlhfkit.control.loop import evaluate_run

    assert len(evaluate_run(str(tmp_path / "run"), episodes=2)) == 2


def test_pebble_refuses_discrete_actions_and_resuming_nothing(tmp_path):
    with pytest.raises(ValueError, match="--algo ppo"):
        train_pebble(make_config("CartPole-v1", algo="pebble", total_steps=20_000), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="--resume: .* is not a run directory"):
        train_pebble(_small(), str(tmp_path / "b"), resume=True)


def test_cli_algo_pebble(tmp_path):
    from typer.testing import CliRunner

    from rlhfkit.cli import app

    r = CliRunner().invoke(app, ["control", "train", "--algo", "pebble", "--steps", "3000", "--labels", "20",
                                 "--out", str(tmp_path / "run"), "--set", "sac.batch_size=64",
                                 "--set", "sac.hidden_sizes=32,32", "--set", "pebble.seed_steps=400",
                                 "--set", "pebble.unsup_steps=600", "--set", "pebble.feedback_every=500"])
    assert r.exit_code == 0, r.output
    assert "PEBBLE" in r.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["algo"] == "pebble"
    r = CliRunner().invoke(app, ["control", "train", "--algo", "sac", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "algo" in r.output


def test_updates_per_step_sets_the_update_to_data_ratio(tmp_path, monkeypatch):
    from rlhfkit.control.sac import SACAgent

    counts = []
    original = SACAgent.update

    def counting(self, batch, rewards=None):
        counts.append(1)
        return original(self, batch, rewards)

    monkeypatch.setattr(SACAgent, "update", counting)
    config = _small()
    config = replace(config, total_steps=2000, sac=replace(config.sac, updates_per_step=0.5))
    train_pebble(config, str(tmp_path / "run"))
    # updates from the first step after the 500 seed steps to the end: 1,500 transitions at ratio ½
    assert len(counts) == 750


def test_sac_baseline_learns_from_the_true_reward_at_every_update(tmp_path, monkeypatch):
    """The true-reward baseline updates SAC on every step after the seed steps, on the env's reward,
    never on the state-entropy reward (a regression: it once stopped after the pre-training window)."""
    from rlhfkit.control.pebble import train_sac_baseline
    from rlhfkit.control.sac import SACAgent

    seen = []
    original = SACAgent.update

    def spy(self, batch, rewards=None):
        seen.append((rewards is None, bool(torch.equal(batch["rewards"], batch["true_rewards"]))))
        return original(self, batch, rewards)

    monkeypatch.setattr(SACAgent, "update", spy)
    config = replace(_small(), total_steps=2000)  # 500 seed steps; PEBBLE's pre-training would end at 1,100
    result = train_sac_baseline(config, str(tmp_path / "run"))
    assert len(seen) == 1500 and all(own and true for own, true in seen)
    assert result.labels == 0


def test_qpa_and_surf_options_are_reachable_and_checked():
    c = make_config("Pendulum-v1", algo="pebble", total_steps=20_000)
    c2 = apply_overrides(c, ["pebble.qpa=true", "pebble.qpa_window=5", "pebble.qpa_replay=0.25", "pebble.surf=true",
                             "pebble.surf_tau=0.99", "pebble.surf_weight=0.5", "pebble.surf_ratio=4",
                             "pebble.surf_crop=3", "pebble.checkpoint_every=2000"])
    c2.validate()
    assert c2.pebble == replace(c.pebble, qpa=True, qpa_window=5, qpa_replay=0.25, surf=True, surf_tau=0.99,
                                surf_weight=0.5, surf_ratio=4, surf_crop=3, checkpoint_every=2000)
    assert config_from_dict(json.loads(json.dumps(c2.to_dict()))) == c2
    for bad, match in ((["pebble.surf_tau=0.5"], "surf_tau must lie"), (["pebble.qpa_replay=2"], "qpa_replay"),
                       (["pebble.qpa_window=0"], "qpa_window must be >= 1"),
                       (["pebble.checkpoint_every=0"], "checkpoint_every"),
                       (["pebble.surf=true", "pebble.surf_crop=50"], "surf_crop 50 must be shorter")):
        with pytest.raises(ValueError, match=match):
            apply_overrides(c, bad).validate()


def _quarter(config):  # one SAC update per 4 transitions: these tests check bookkeeping, not learning
    return replace(config, sac=replace(config.sac, updates_per_step=0.25, hidden_sizes=(16, 16)))


def test_qpa_queries_come_from_the_last_episodes_and_replay_mixes_them_in(tmp_path, monkeypatch):
    import rlhfkit.control.pebble as pebble

    windows, methods, hybrid = [], [], []
    session, sample_hybrid = pebble.labelling_session, ReplayBuffer.sample_hybrid

    def spy_session(source, n, **kw):
        windows.append(source.obs.shape[0])
        methods.append(kw["method"])
        return session(source, n, **kw)

    def spy_hybrid(self, batch_size, recent_steps, recent_frac, generator=None):
        hybrid.append((recent_steps, recent_frac))
        return sample_hybrid(self, batch_size, recent_steps, recent_frac, generator)

    monkeypatch.setattr(pebble, "labelling_session", spy_session)
    monkeypatch.setattr(ReplayBuffer, "sample_hybrid", spy_hybrid)
    config = _quarter(_small())
    config = replace(config, pebble=replace(config.pebble, qpa=True, qpa_window=2))
    assert feedback_schedule(config) == [(1100, 5), (1600, 15)]
    result = train_pebble(config, str(tmp_path / "run"))
    assert result.labels == 20
    # Pendulum's episodes end every 200 steps (199, 399, …). At 1,100 the last 2 whole episodes are
    # 600-999 and the running one 1000-1099: 500 steps; at 1,600 (an episode just ended): 1200-1599.
    assert windows == [500, 400] and methods == ["random", "random"]
    # hybrid batches from the first session to the last (1,100 … 1,599), one update per 4 steps:
    # updates fall on multiples of 4 (the first at 504), so 1,100, 1,104, …, 1,596: 125 of them
    assert len(hybrid) == 125 and {f for _, f in hybrid} == {0.5}
    # the window holds the last 2 whole episodes and the running one: 500 steps at 1,100 (600-1099),
    # growing by a step a step until the end at 1,199 moves its start by an episode
    assert hybrid[0][0] == 500 and hybrid[1][0] == 504 and all(400 <= w < 600 for w, _ in hybrid)


def test_surf_run_fits_on_pseudo_labels(tmp_path, monkeypatch):
    import rlhfkit.control.labelling as labelling

    seen = []
    fit = labelling.fit_reward_ensemble

    def spy(model, comparisons, **kw):
        seen.append((len(comparisons), kw["unlabelled"][0].shape, kw["crop"], kw["tau"], kw["unlabelled_weight"]))
        return fit(model, comparisons, **kw)

    monkeypatch.setattr(labelling, "fit_reward_ensemble", spy)
    config = _quarter(_small())
    config = replace(config, pebble=replace(config.pebble, surf=True, surf_ratio=3, surf_tau=0.9))
    result = train_pebble(config, str(tmp_path / "run"))
    assert result.labels == 20
    # 3 unlabelled pairs per label held, of 50-step fragments of (3 obs + 1 action) features
    assert seen == [(5, (15, 50, 4), 5, 0.9, 1.0), (20, (60, 50, 4), 5, 0.9, 1.0)]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    fitted = [r for r in rows if "reward/pseudo_label_frac" in r]
    assert len(fitted) == 2 and all(0.0 <= r["reward/pseudo_label_frac"] <= 1.0 for r in fitted)
