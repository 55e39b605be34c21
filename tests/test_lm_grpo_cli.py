"""``rlhf lm grpo``: a short run end to end, --resume, and a clear error (exit 2, nothing trained) for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.language.tiny import TinySpec, build_tiny

ENV = {"COLUMNS": "200", "OMP_NUM_THREADS": "1"}
runner = CliRunner()

REWARDS = '''
def low_ids(prompts, completions, completion_ids, **kw):
    return [sum(t < 64 for t in ids) / len(ids) for ids in completion_ids]

def needs_answer(prompts, completions, answer, **kw):
    return [float(c.strip() == a.strip()) for c, a in zip(completions, answer)]

def too_few(prompts, completions, **kw):
    return [0.0]
'''


def _invoke(args: list[str]):
    result = runner.invoke(app, ["lm", "grpo", *args], env=ENV)
    return result, " ".join(result.output.split())


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("grpo_cli")
    model = build_tiny(["Q: 1+2= A: 3"], root / "model",
                       TinySpec(arch="llama", vocab_size=262, n_layers=1, d_model=32, n_heads=2, max_positions=64))
    data = root / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q: {i}+1= A:", "answer": f" {i + 1}"}) + "\n" for i in range(12)))
    rewards = root / "rewards.py"
    rewards.write_text(REWARDS)
    return {"root": root, "model": model, "data": data, "rewards": rewards}


def _base(s: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--model", str(s["model"]), "--data", str(s["data"]), "--out", str(out), "-G", "4",
            "--prompts-per-step", "2", "--max-new-tokens", "4", "--max-length", "32", "--lr", "1e-3", *extra]


def test_grpo_run_writes_the_run_directory_and_resumes(setup):
    out = setup["root"] / "run"
    result, text = _invoke(_base(setup, out, "--reward", f"{setup['rewards']}:low_ids", "--reward", "exact_match",
                                 "--reward-weight", "1", "--reward-weight", "0.5", "--max-steps", "3",
                                 "--log-completions-every", "2", "--eval-data", str(setup["data"]), "--save-every", "2"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "completions at step 2" in text and "GRPO" in text
    for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl", "curves.png", "summary.json",
                 "train_args.json", "completions.jsonl", "checkpoint/state.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2, 3]
    assert any(f"reward/{setup['rewards']}:low_ids/mean" in r for r in rows)
    assert any("eval/reward" in r for r in rows)
    logged = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert len(logged) == 8 and {"prompt", "completion", "reward", "advantage", "exact_match"} <= set(logged[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and "eval/reward" in summary
    # a finished run is not overwritten by accident
    result, text = _invoke(_base(setup, out, "--reward", "exact_match", "--max-steps", "3"))
    assert result.exit_code == 2 and "already holds a run" in text and "--resume" in text
    # --resume continues with the saved settings (here: to step 3 of 3, so one more is a no-op save)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3
    result, text = _invoke(["--out", str(out), "--resume", "--model", str(setup["root"])])
    assert result.exit_code == 2 and "differs from the run's" in text


@pytest.mark.parametrize("case", ["no_prompt_column", "bad_reward", "missing_attr", "wrong_length", "g_one",
                                  "missing_column", "weights", "not_a_model"])
def test_bad_input_stops_with_a_clear_error(setup, case):
    s, out = setup, setup["root"] / f"bad_{case}"
    data = s["root"] / "no_prompt.jsonl"
    data.write_text(json.dumps({"question": "x"}) + "\n")
    args, expected = {
        "no_prompt_column": (_base(s, out, "--reward", "exact_match")[:2] + ["--data", str(data), "--out", str(out),
                                                                             "--reward", "exact_match"],
                             "no 'prompt' column"),
        "bad_reward": (_base(s, out, "--reward", "no_such_module_abc:f"), "cannot import module 'no_such_module_abc'"),
        "missing_attr": (_base(s, out, "--reward", f"{s['rewards']}:nope"), "has no attribute 'nope'"),
        "wrong_length": (_base(s, out, "--reward", f"{s['rewards']}:too_few", "--max-steps", "2"),
                         "returned 1 values for 8 completions (nothing was trained"),
        "g_one": (_base(s, out, "--reward", "exact_match") + ["-G", "1"], "--num-generations (G) must be >= 2"),
        "missing_column": (_base(s, out, "--reward", f"{s['rewards']}:needs_answer", "--prompt-column", "prompt")
                           [:2] + ["--data", str(s["root"] / "only_prompt.jsonl"), "--out", str(out), "--reward",
                                   f"{s['rewards']}:needs_answer"], "needs a column 'answer'"),
        "weights": (_base(s, out, "--reward", "exact_match", "--reward-weight", "1", "--reward-weight", "2"),
                    "1 --reward but 2 --reward-weight"),
        "not_a_model": (["--model", str(s["root"]), "--data", str(s["data"]), "--out", str(out), "--reward",
                         "exact_match"], "is not a Hugging Face model directory"),
    }[case]
    (s["root"] / "only_prompt.jsonl").write_text(json.dumps({"prompt": "Q: 1+1= A:"}) + "\n")
    result, text = _invoke(args)
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert expected in text, text
    assert not (out / "model.safetensors").exists()
