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


def test_a_finished_run_is_not_overwritten_unless_asked(tmp_path):
    run = tmp_path / "run"
    args = ["control", "train", "--env", "rlhfkit/CartPoleCos-v0", "--steps", "256", "--labels", "8",
            "--fragment-length", "10", "--out", str(run), *SMALL]
    _ok(args)
    metrics = (run / "metrics.jsonl").read_text()
    summary = (run / "summary.json").read_text()
    result = runner.invoke(app, args)  # the same command again
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and "holds a finished run" in out and "--resume" in out and "--overwrite" in out
    assert (run / "metrics.jsonl").read_text() == metrics and (run / "summary.json").read_text() == summary
    result = runner.invoke(app, ["control", "baseline", "--env", "rlhfkit/CartPoleCos-v0", "--out", str(run)])
    assert result.exit_code == 2 and "holds a finished run" in " ".join(result.output.split())
    out = _ok([*args, "--overwrite"])
    assert "overwriting the previous run" in out and len((run / "metrics.jsonl").read_text().splitlines()) >= 1
    result = runner.invoke(app, [*args, "--overwrite", "--resume"])
    assert result.exit_code == 2 and "contradict" in result.output


def test_resume_uses_the_saved_run_and_refuses_conflicting_options(tmp_path):
    run = tmp_path / "run"
    _ok(["control", "train", "--env", "rlhfkit/CartPoleCos-v0", "--steps", "300", "--labels", "8",
         "--fragment-length", "10", "--out", str(run), *SMALL])
    out = _ok(["control", "train", "--out", str(run), "--resume"])
    assert "on rlhfkit/CartPoleCos-v0: 8 labels" in out and "Pendulum" not in out and "(resumed)" in out
    assert "300 env steps (runs 256: whole rollouts of 128)" in out
    for extra, message in ((["--env", "Pendulum-v1"], "--env Pendulum-v1 conflicts with the run"),
                           (["--labels", "9"], "--labels 9 conflicts"),
                           (["--set", "seed=3"], "--set cannot change a run being resumed")):
        result = runner.invoke(app, ["control", "train", "--out", str(run), "--resume", *extra])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    _ok(["control", "train", "--out", str(run), "--resume", "--env", "rlhfkit/CartPoleCos-v0"])  # agrees: fine


def test_errors_come_before_any_training_or_run_directory(tmp_path):
    import socket

    out = tmp_path / "x"
    result = runner.invoke(app, ["control", "train", "--out", str(out), "--query", "best"])
    assert result.exit_code == 2 and "--query" in result.output and "'best'" in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["control", "train", "--out", str(out), "--teacher", "human", "--port", str(port),
                                     *SMALL])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in text and "already in use" in text
    assert result.exception is None or isinstance(result.exception, SystemExit)  # one line, no traceback
    assert len(result.output.strip().splitlines()) <= 3 and not out.exists()  # no half-made run directory
    result = runner.invoke(app, ["control", "train", "--out", str(out), "--teacher", "human", "--port", "-1"])
    assert result.exit_code == 2 and "--port" in result.output and "greater than or equal to 0" in " ".join(
        result.output.split()) and not out.exists()


def test_help_names_arguments_and_shows_defaults():
    text = runner.invoke(app, ["control", "eval", "--help"], env={"COLUMNS": "200"}).output
    assert "{run}" not in text and "RUN" in text
    text = " ".join(runner.invoke(app, ["control", "train", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "[default: disagreement]" in text and "[default: 200]" in text and "[default: 50000]" in text
