"""``rlhf lm ppo``'s Safe RLHF, fine-grained and AI-judge options: a run with all of them, their restoration
on ``--resume``, the judge as a reward function (order-swap symmetry by hand), and clear errors (exit 2,
nothing trained) for bad input."""

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

def very_low(prompts, completions, completion_ids, **kw):
    return [sum(t < 32 for t in ids) / len(ids) for ids in completion_ids]

def per_char(prompts, completions, **kw):
    return [[(k + 1, 0.1) for k in range(len(c))] for c in completions]
'''


def _invoke(args: list[str]):
    result = runner.invoke(app, ["lm", "ppo", *args], env=ENV)
    return result, " ".join(result.output.split())


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ppo_cli")
    model = build_tiny(["Q: 1+2= A: 3", "abc"], root / "model",
                       TinySpec(arch="llama", vocab_size=262, n_layers=1, d_model=32, n_heads=2, max_positions=64))
    data = root / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q: {i}+1= A:", "reference": f" {i + 1}"}) + "\n"
                            for i in range(8)))
    rewards = root / "rewards.py"
    rewards.write_text(REWARDS)
    return {"root": root, "model": model, "data": data, "rewards": rewards}


def _base(s: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--model", str(s["model"]), "--data", str(s["data"]), "--out", str(out), "--prompts-per-step", "4",
            "--max-new-tokens", "4", "--max-length", "40", "--lr", "1e-3", *extra]


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_safe_fine_grained_and_judge_options_run_are_saved_and_restored_on_resume(setup):
    from rlhfkit.cli.lm_online import CURVES

    r = setup["rewards"]
    out = setup["root"] / "run"
    options = ["--reward", f"{r}:low_ids", "--cost", f"{r}:very_low", "--cost-weight", "2", "--cost-threshold", "0.01",
               "--lambda-init", "0.5", "--lambda-lr", "0.2", "--lambda-max", "3", "--segment-reward", f"{r}:per_char",
               "--segment-weight", "0.5", "--judge", str(setup["model"]), "--judge-reference-column", "reference",
               "--judge-principle", "Prefer the right sum."]
    # --max-train-s stops the run after its first step (with a checkpoint); --resume, with the same saved
    # time limit, trains one more
    result, text = _invoke(_base(setup, out, *options, "--max-steps", "3", "--max-train-s", "0.001"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    saved = json.loads((out / "train_args.json").read_text())
    assert (saved["ppo"]["cost_threshold"], saved["ppo"]["lambda_init"], saved["ppo"]["lambda_lr"],
            saved["ppo"]["lambda_max"]) == (0.01, 0.5, 0.2, 3.0)
    assert saved["extra"] == {"--critic": None, "--gold": [], "--ptx-data": None, "--cost": [f"{r}:very_low"],
                              "--cost-weight": [2.0], "--segment-reward": [f"{r}:per_char"], "--segment-weight": [0.5],
                              "--judge": str(setup["model"]), "--judge-principle": "Prefer the right sum.",
                              "--judge-reference-column": "reference"}
    assert [x["step"] for x in _rows(out) if "cost/mean" in x] == [1]
    result, text = _invoke(["--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    steps = [x for x in _rows(out) if "cost/mean" in x]
    assert [x["step"] for x in steps] == [1, 2]
    judge_key = f"reward/judge:{setup['model'].name}:reference/mean"
    for x in steps:  # cost, λ, segments and judge all restored from train_args.json and the checkpoint
        assert {"lagrange/lambda", "lagrange/lambda_next", "loss/cost_value", "reward/segments/mean",
                judge_key} <= set(x)
        assert -1.0 <= x[judge_key] <= 1.0 and x["lagrange/lambda"] <= 3.0
        # per_char scores 0.1 per character, weight 0.5: the segment reward is 0.05 × the text length (≤ 4 chars)
        assert 0.0 < x["reward/segments/mean"] <= 0.05 * 4 + 1e-6
    assert steps[1]["lagrange/lambda"] == pytest.approx(steps[0]["lagrange/lambda_next"])  # λ carried over
    assert steps[1]["lagrange/lambda_next"] != steps[1]["lagrange/lambda"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and {"cost/mean", "lagrange/lambda_next", "reward/segments/mean"} <= set(summary)
    assert {"kl/beta", "lagrange/lambda", "loss/value", "reward/mean", "kl/sequence", "cost/mean"} <= set(CURVES["ppo"])
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --resume refuses new values of the saved options
    result, text = _invoke(["--out", str(out), "--resume", "--cost", f"{r}:low_ids"])
    assert result.exit_code == 2 and "--cost" in text and "differs from the run's" in text


def test_segment_rewards_or_a_judge_stand_in_for_reward(setup):
    out = setup["root"] / "seg_only"
    result, text = _invoke(_base(setup, out, "--segment-reward", f"{setup['rewards']}:per_char", "--max-steps", "1"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads((out / "train_args.json").read_text())["rewards"] == []
    assert any("reward/segments/mean" in x for x in _rows(out))


@pytest.mark.parametrize("case", ["no_reward", "judge_without_column", "column_without_judge", "missing_column",
                                  "principle_without_judge", "judge_not_a_model", "cost_weights", "segment_weights",
                                  "lambda_init", "lambda_max", "bad_cost"])
def test_bad_options_exit_2_before_training(setup, case):
    r, m = setup["rewards"], str(setup["model"])
    extra, message = {
        "no_reward": ([], "at least one --reward are required (or --resume with --out); PPO also takes "
                          "--segment-reward or --judge"),
        "judge_without_column": (["--judge", m], "--judge and --judge-reference-column go together"),
        "column_without_judge": (["--reward", "regex:.*", "--judge-reference-column", "reference"],
                                 "--judge and --judge-reference-column go together"),
        "missing_column": (["--judge", m, "--judge-reference-column", "gold"],
                           "--judge-reference-column 'gold' is not a column of the prompt data; it has: reference"),
        "principle_without_judge": (["--reward", "regex:.*", "--judge-principle", "Be kind."],
                                    "--judge-principle needs --judge DIR"),
        "judge_not_a_model": (["--judge", str(setup["root"]), "--judge-reference-column", "reference"],
                              f"--judge {setup['root']} is not a Hugging Face model directory"),
        "cost_weights": (["--reward", "regex:.*", "--cost", f"{r}:very_low", "--cost-weight", "1",
                          "--cost-weight", "2"],
                         "1 --cost but 2 --cost-weight: give one weight per --cost, in order"),
        "segment_weights": (["--segment-reward", f"{r}:per_char", "--segment-weight", "1", "--segment-weight", "1"],
                            "1 --segment-reward but 2 --segment-weight"),
        "lambda_init": (["--reward", "regex:.*", "--lambda-init", "0"],
                        "--lambda-init, --lambda-lr and --lambda-max must be > 0"),
        "lambda_max": (["--reward", "regex:.*", "--lambda-max", "-1"], "--lambda-max must be > 0"),
        "bad_cost": (["--reward", "regex:.*", "--cost", f"{r}:nothing"], "has no attribute 'nothing'"),
    }[case]
    out = setup["root"] / f"bad_{case}"
    result, text = _invoke(_base(setup, out, *extra, "--max-steps", "1"))
    assert result.exit_code == 2, text
    assert message in text, text
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# The judge as a reward function
# ----------------------------------------------------------------------------------------------


def test_judge_reward_is_twice_the_swapped_preference_minus_one(setup):
    from rlhfkit.language.judge import Judge, JudgeReward, load_judge
    from rlhfkit.language.rewards import RewardError

    judge = load_judge(setup["model"])
    reward = JudgeReward(judge, "reference")
    prompts, completions, refs = ["Q: 1+1= A:"] * 3, [" 2", " 3", " 2"], [" 3", " 2", " 2"]
    got = reward(prompts, completions, reference=refs)
    # r = 2·½(P[c ≻ ref | c first] + P[c ≻ ref | c second]) - 1, from the judge's two orders
    verdicts = judge.judge(prompts, completions, refs)
    assert got == pytest.approx([j.p_a_first + j.p_a_second - 1 for j in verdicts])
    assert got == pytest.approx([2 * j.p_a - 1 for j in verdicts])
    # swapping completion and reference negates the reward; a completion equal to its reference scores
    # exactly 0 (P = ½(p + 1 - p))
    assert got[0] == pytest.approx(-got[1], abs=1e-6) and got[2] == pytest.approx(0.0, abs=1e-6)
    assert reward(prompts[:2], completions[:2], reference=[None, " 2"])[0] is None  # no reference: left out
    with pytest.raises(RewardError, match="needs a 'reference' column"):
        reward(prompts, completions, answer=refs)
    with pytest.raises(ValueError, match="both orders"):
        JudgeReward(Judge(judge.model, judge.tokenizer, swap=False), "reference")
