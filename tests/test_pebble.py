"""PEBBLE: the feedback schedule, a short run on Pendulum that goes through every phase, the SAC
baseline, configs and the CLI's --algo."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

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


def test_pebble_refuses_discrete_actions_and_resume(tmp_path):
    with pytest.raises(ValueError, match="--algo ppo"):
        train_pebble(make_config("CartPole-v1", algo="pebble", total_steps=20_000), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="resume"):
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
