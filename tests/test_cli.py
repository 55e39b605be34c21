"""The ``rlhf control`` command line: small real runs through typer, and its error messages."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rlhfkit.cli import app

runner = CliRunner()
SMALL = ["--set", "ppo.n_envs=2", "--set", "ppo.n_steps=64", "--set", "eval_episodes=2"]


def _ok(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return " ".join(result.output.split())  # rich wraps lines at the terminal width


def test_baseline_train_resume_and_eval_write_a_run(tmp_path):
    base, run = tmp_path / "base", tmp_path / "run"
    _ok(["control", "baseline", "--env", "rlhfkit/CartPoleCos-v0", "--steps", "256", "--out", str(base), *SMALL])
    assert json.loads((base / "summary.json").read_text())["env_steps"] == 256
    out = _ok(["control", "train", "--env", "rlhfkit/CartPoleCos-v0", "--steps", "256", "--labels", "8",
               "--fragment-length", "10", "--out", str(run), "--baseline", str(base), *SMALL])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["labels"] == 8 and summary["env_steps"] == 256 and len(summary["eval_returns"]) == 2
    assert "mean true return" in out and (run / "curve.png").stat().st_size > 1000
    rows = len((run / "metrics.jsonl").read_text().splitlines())
    _ok(["control", "train", "--out", str(run), "--resume"])  # nothing left of the budget: only re-evaluates
    assert len((run / "metrics.jsonl").read_text().splitlines()) == rows
    out = _ok(["control", "eval", str(run), "--episodes", "3"])
    assert "mean true return over 3 episodes" in out


def test_bad_input_fails_before_training_with_a_clear_message(tmp_path):
    cases = [
        (["--env", "NoSuchEnv-v0"], "unknown environment id 'NoSuchEnv-v0'"),
        (["--steps", "0"], "must be positive"),
        (["--labels", "10", "--set", "initial_label_count=20"], "smaller than the initial batch"),
        (["--resume"], "is not a run directory"),
        (["--set", "ppo.nope=1"], "unknown field"),
        (["--teacher", "grumpy"], "unknown teacher 'grumpy'"),
    ]
    for args, message in cases:
        out = tmp_path / "x"
        result = runner.invoke(app, ["control", "train", "--out", str(out), *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
        assert not (out / "metrics.jsonl").exists()
    result = runner.invoke(app, ["control", "eval", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "is not a run directory" in " ".join(result.output.split())
