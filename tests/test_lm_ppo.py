"""RLHF PPO for language models: a tiny run that learns, the KL penalty and controller at work, PPO-ptx,
a separate critic, the watched gold reward and its over-optimisation plot, resume, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhfkit.language.data import SFTExample
from rlhfkit.language.models import load_causal_lm, load_reward_model, load_tokenizer, save_model
from rlhfkit.language.ppo import PPOSettings, train_ppo
from rlhfkit.language.prompts import PromptExample
from rlhfkit.language.rewards import RewardFunction
from rlhfkit.language.tiny import TinySpec, build_tiny
from rlhfkit.language.train import TrainArgs

CHAR = TinySpec(arch="llama", vocab_size=262, n_layers=1, d_model=32, n_heads=2, max_positions=64)


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory) -> Path:
    return build_tiny(["Q: 1+2= A: 3", "abc"], tmp_path_factory.mktemp("ppo") / "llama", CHAR)


@pytest.fixture(scope="module")
def tok(char_dir):
    return load_tokenizer(char_dir)


def low_ids(prompts, completions, completion_ids, **kw):
    """The toy task: the fraction of completion tokens with an id below 64 (~25% for a random model)."""
    return [sum(t < 64 for t in ids) / len(ids) for ids in completion_ids]


def first_low(prompts, completions, completion_ids, **kw):
    """A 'gold' that agrees with low_ids on the first token only."""
    return [float(ids[0] < 64) for ids in completion_ids]


PROMPTS = [PromptExample(f"Q: {i}+{i + 1}= A:", {}) for i in range(16)]


def _ppo(char_dir, tok, *, steps: int, out=None, resume=False, lr=1e-2, critic=None, **settings):
    model = load_causal_lm(char_dir)
    args = TrainArgs(lr=lr, max_steps=steps, warmup_ratio=0.0, schedule="constant", max_length=32, seed=0)
    s = PPOSettings(**{"prompts_per_step": 8, "num_generations": 2, "max_new_tokens": 6, "ppo_epochs": 2,
                       "mini_batches": 2, **settings})
    r = train_ppo(model, tok, PROMPTS, [RewardFunction("low_ids", low_ids)], args, s, critic=critic,
                  gold=[RewardFunction("first_low", first_low)], out=out, resume=resume,
                  ptx=[SFTExample(prompt="", completion="abc abc abc")] if s.ptx_coef else ())
    return model, r


def test_ppo_raises_the_reward_of_a_toy_task(char_dir, tok, tmp_path):
    _, r = _ppo(char_dir, tok, steps=40, beta=0.0, out=tmp_path / "run")
    rewards = [h["reward/mean"] for h in r.history if "reward/mean" in h]
    start, end = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert start < 0.4 and end > 0.7, (start, end)
    seen = {k for h in r.history for k in h}
    for key in ("gold/mean", "kl/sequence", "kl/beta", "loss/policy", "loss/value", "policy/clip_fraction",
                "value/mean", "completions/mean_length"):
        assert key in seen, key
    assert (tmp_path / "run" / "overoptimisation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "run" / "value_head.safetensors").is_file()
    kls = [h["kl/sequence"] for h in r.history if "kl/sequence" in h]
    assert kls[0] == pytest.approx(0.0, abs=1e-5) and kls[-1] > 0.5  # the policy left the reference


def test_kl_penalty_holds_the_policy_near_the_reference(char_dir, tok):
    _, free = _ppo(char_dir, tok, steps=25, beta=0.0)
    _, held = _ppo(char_dir, tok, steps=25, beta=1.0)
    kl = lambda r: sum(h["kl/sequence"] for h in r.history[-5:] if "kl/sequence" in h) / 5  # noqa: E731
    assert kl(held) < 0.5 * kl(free), (kl(held), kl(free))


def test_adaptive_controller_raises_beta_while_kl_is_above_target(char_dir, tok):
    _, r = _ppo(char_dir, tok, steps=20, beta=0.01, kl_target=0.05, kl_horizon=50)
    rows = [h for h in r.history if "kl/beta" in h]
    above = [h for h in rows if h["kl/sequence"] > 0.06]
    assert above, "the run never exceeded the target"
    for h in above:
        assert h["kl/beta_next"] > h["kl/beta"]
    assert rows[-1]["kl/beta"] > 0.01


def test_ptx_term_is_logged_and_lowers_the_text_loss(char_dir, tok):
    _, r = _ppo(char_dir, tok, steps=15, beta=0.0, ptx_coef=1.0, lr=3e-3)
    ptx = [h["loss/ptx"] for h in r.history if "loss/ptx" in h]
    assert len(ptx) == 15 and ptx[-1] < ptx[0]


def test_separate_critic_from_a_reward_model_directory(char_dir, tok, tmp_path):
    rm = load_reward_model(char_dir, pad_token_id=tok.pad_token_id)
    save_model(rm, tok, tmp_path / "rm")
    _, r = _ppo(char_dir, tok, steps=4, critic=load_reward_model(tmp_path / "rm"))
    values = [h["value/mean"] for h in r.history if "value/mean" in h]
    assert values[0] != 0.0  # the critic's head is not the zero-initialised value head
    assert all(torch.isfinite(torch.tensor(h["loss/value"])) for h in r.history if "loss/value" in h)


def test_resume_continues_the_same_run(char_dir, tok, tmp_path):
    whole, _ = _ppo(char_dir, tok, steps=4, kl_target=0.1)
    _ppo(char_dir, tok, steps=2, kl_target=0.1, out=tmp_path / "run")
    resumed, r = _ppo(char_dir, tok, steps=4, kl_target=0.1, out=tmp_path / "run", resume=True)
    for (k, v), (_, w) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(v, w, msg=k)


def test_ppo_cli(char_dir, tmp_path):
    from rlhfkit.cli import app

    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q: {i}+1= A:"}) + "\n" for i in range(8)))
    rewards = tmp_path / "r.py"
    rewards.write_text("def low_ids(prompts, completions, completion_ids, **kw):\n"
                       "    return [sum(t < 64 for t in ids) / len(ids) for ids in completion_ids]\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["lm", "ppo", "--model", str(char_dir), "--data", str(data), "--out", str(out),
                                      "--reward", f"{rewards}:low_ids", "--gold", f"{rewards}:low_ids",
                                      "--prompts-per-step", "4", "--max-new-tokens", "4", "--max-length", "32",
                                      "--max-steps", "2", "--kl-target", "1", "--lr", "1e-3",
                                      "--log-completions-every", "1"],
                                env={"COLUMNS": "200", "OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    for name in ("model.safetensors", "value_head.safetensors", "metrics.jsonl", "curves.png", "overoptimisation.png",
                 "summary.json", "completions.jsonl", "checkpoint/state.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and "kl/beta" in summary and "gold/mean" in summary
    result = CliRunner().invoke(app, ["lm", "ppo", "--model", str(char_dir), "--data", str(data), "--out",
                                      str(tmp_path / "bad"), "--reward", f"{rewards}:low_ids", "--ptx-coef", "0.5"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "--ptx-data" in result.output


# ----------------------------------------------------------------------------------------------
# The synthetic text teacher
# ----------------------------------------------------------------------------------------------


def test_text_teacher_labels_sampled_pairs_by_the_gold_reward(char_dir, tok, tmp_path):
    from rlhfkit.language.data import load_data
    from rlhfkit.language.teacher import TextTeacher, label_sampled_pairs, write_preferences

    model = load_causal_lm(char_dir)
    oracle = TextTeacher([RewardFunction("low_ids", low_ids)], "oracle")
    pairs = label_sampled_pairs(model, tok, PROMPTS, oracle, n_pairs=40, max_new_tokens=5, seed=0)
    assert len(pairs.examples) + pairs.skipped + pairs.identical + pairs.blank == 40
    assert pairs.examples and pairs.ties > 0  # equal gold scores (same count of low ids) are ties
    for e, c, r in zip(pairs.examples, pairs.gold_chosen, pairs.gold_rejected):
        assert (c == r) if e.tie else (c > r)  # the oracle prefers the higher gold reward
    path = write_preferences(tmp_path / "prefs.jsonl", pairs.examples)
    back = load_data(path).examples
    assert [(b.prompt, b.chosen, b.rejected, b.tie) for b in back] == \
        [(e.prompt, e.chosen, e.rejected, e.tie) for e in pairs.examples]
    # a mistake-making teacher flips about ε of the strict answers
    flips = TextTeacher([RewardFunction("low_ids", low_ids)], "mistake", epsilon=0.5, seed=1)
    answers = flips.label_scores(torch.ones(400).numpy(), torch.zeros(400).numpy())
    assert 150 < sum(int(a) == 1 for a in answers) < 250  # RIGHT (wrong) about half the time
    with pytest.raises(ValueError, match="myopic"):
        TextTeacher([RewardFunction("low_ids", low_ids)], "myopic")


# ----------------------------------------------------------------------------------------------
# The AI judge
# ----------------------------------------------------------------------------------------------


def test_judge_order_swap_is_symmetric_and_removes_position_bias(char_dir, tok):
    from rlhfkit.feedback.records import Outcome
    from rlhfkit.language.judge import Judge

    model = load_causal_lm(char_dir)
    prompts, a, b = ["Q: 1+2= A:"] * 3, [" 3", " 4", " 3"], [" 5", " 3", " 33"]
    judge = Judge(model, tok, tie_margin=0.0)
    ab, ba = judge.judge(prompts, a, b), judge.judge(prompts, b, a)
    for x, y in zip(ab, ba):
        assert x.p_a == pytest.approx(1.0 - y.p_a, abs=1e-6)  # swapping the pair swaps the verdict exactly
        assert {x.outcome, y.outcome} <= {Outcome.LEFT, Outcome.RIGHT} and x.outcome != y.outcome
    one_order = Judge(model, tok, swap=False)
    raw = [j.p_a for j in one_order.judge(prompts, a, b)]
    raw_swapped = [j.p_a for j in one_order.judge(prompts, b, a)]
    bias = [p + q - 1.0 for p, q in zip(raw, raw_swapped)]  # 0 for a judge without position bias
    assert max(abs(x) for x in bias) > 1e-4  # a random model has one; the swap cancels it above
    assert all(0.0 <= j.p_a <= 1.0 for j in ab)
    assert Judge(model, tok, tie_margin=0.49).judge(prompts[:1], a[:1], b[:1])[0].outcome == Outcome.TIE


# ----------------------------------------------------------------------------------------------
# Fine-grained rewards and Safe RLHF
# ----------------------------------------------------------------------------------------------


def test_segment_scores_land_on_each_segments_last_token(tok):
    from rlhfkit.language.rewards import RewardError, segment_scores

    def per_answer(prompts, completions, **kw):  # "ab,cd": segments end at characters 2 and 5
        return [[(2, 1.0), (5, -1.0)] for _ in completions]

    ids = [tok("ab,cd", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]  # char-level: 5 tokens + EOS
    dense = segment_scores([RewardFunction("per_answer", per_answer, 0.5)], tok, ["q"], ["ab,cd"], ids, {}, 7)
    torch.testing.assert_close(dense, torch.tensor([[0.0, 0.5, 0.0, 0.0, -0.5, 0.0, 0.0]]))
    with pytest.raises(RewardError, match="one list of"):
        segment_scores([RewardFunction("bad", lambda p, c, **k: [])], tok, ["q"], ["ab"], ids, {}, 7)
    with pytest.raises(RewardError, match="expected"):
        segment_scores([RewardFunction("bad", lambda p, c, **k: [[3.0]])], tok, ["q"], ["ab"], ids, {}, 7)


def test_fine_grained_segment_rewards_train(char_dir, tok):
    def each_low_token(prompts, completions, completion_ids, **kw):  # a segment per character, scored on its own
        return [[(k + 1, float(t < 64)) for k, t in enumerate(ids) if t != tok.eos_token_id]
                for ids in completion_ids]

    model = load_causal_lm(char_dir)
    args = TrainArgs(lr=1e-2, max_steps=25, warmup_ratio=0.0, schedule="constant", max_length=32, seed=0)
    s = PPOSettings(prompts_per_step=8, num_generations=2, max_new_tokens=6, ppo_epochs=2, beta=0.0)
    r = train_ppo(model, tok, PROMPTS, [], args, s, segments=[RewardFunction("each", each_low_token)])
    seg = [h["reward/segments/mean"] for h in r.history if "reward/segments/mean" in h]
    assert sum(seg[-5:]) / 5 > 1.5 * sum(seg[:5]) / 5


def test_safe_rlhf_lambda_rises_while_the_cost_is_above_its_threshold(char_dir, tok):
    def very_low(prompts, completions, completion_ids, **kw):  # the cost: tokens below 32, a subset of the reward's
        return [sum(t < 32 for t in ids) / len(ids) for ids in completion_ids]

    model = load_causal_lm(char_dir)
    args = TrainArgs(lr=1e-2, max_steps=20, warmup_ratio=0.0, schedule="constant", max_length=32, seed=0)
    s = PPOSettings(prompts_per_step=8, num_generations=2, max_new_tokens=6, ppo_epochs=2, beta=0.0,
                    cost_threshold=0.02, lambda_init=0.5, lambda_lr=0.5)
    r = train_ppo(model, tok, PROMPTS, [RewardFunction("low_ids", low_ids)], args, s,
                  costs=[RewardFunction("very_low", very_low)])
    rows = [h for h in r.history if "cost/mean" in h]
    for h in rows:  # λ's step has the sign of (cost - d)
        assert (h["lagrange/lambda_next"] > h["lagrange/lambda"]) == (h["cost/mean"] > 0.02)
    assert "loss/cost_value" in rows[-1]
