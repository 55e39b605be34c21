"""Online RL for language models: generation, reward functions, prompt data and the GRPO trainer.

Models are char-level (the 256 bytes + 6 special tokens, no merges) with 1 layer of width 32 and
run on one thread; every trainer run is a few seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlhfkit.language.data import DataError
from rlhfkit.language.generation import HFGenerator, Rollout, SamplingParams, left_pad
from rlhfkit.language.grpo import GRPOSettings, evaluate_greedy, train_grpo
from rlhfkit.language.logprobs import Encoded, pack, packed_token_logprobs, token_logprobs, unflatten_tokens
from rlhfkit.language.models import load_causal_lm, load_reward_model, load_tokenizer, save_model
from rlhfkit.language.prompts import PromptExample, encode_prompt, load_prompts
from rlhfkit.language.rewards import (
    RewardError,
    ImplicitReward,
    RewardFunction,
    RewardModelReward,
    check_columns,
    exact_match,
    load_reward_function,
    regex_reward,
    score_completions,
)
from rlhfkit.language.tiny import TinySpec, build_tiny
from rlhfkit.language.train import TrainArgs

CHAR = TinySpec(arch="llama", vocab_size=262, n_layers=1, d_model=32, n_heads=2, max_positions=64)


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory) -> Path:
    """A randomly initialised char-level llama (no merges: one token per byte)."""
    return build_tiny(["Q: 1+2= A: 3", "abc"], tmp_path_factory.mktemp("char") / "llama", CHAR)


@pytest.fixture(scope="module")
def tok(char_dir):
    return load_tokenizer(char_dir)


def _ids(tok, text: str) -> tuple[int, ...]:
    return tuple(tok(text)["input_ids"])


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def test_left_pad_layout():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="empty"):
        left_pad([[1], []], 0)


def test_same_seed_same_completions_and_shared_prompt_changes_nothing(char_dir, tok):
    model = load_causal_lm(char_dir)
    prompts = [_ids(tok, "Q: 12+34= A:"), _ids(tok, "hi")]  # different lengths: left padding
    params = SamplingParams(n=4, max_new_tokens=6)
    shared = HFGenerator(model, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, share_prompt=True)
    plain = HFGenerator(model, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, share_prompt=False)
    a, b = shared.generate(prompts, params, seed=7), shared.generate(prompts, params, seed=7)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, shared.generate(prompts, params, seed=8).completion_ids)
    c = plain.generate(prompts, params, seed=7)
    assert torch.equal(a.completion_ids, c.completion_ids)
    torch.testing.assert_close(a.sampling_logprobs, c.sampling_logprobs, atol=1e-5, rtol=0)
    assert a.n_completions == 8 and a.prompt_of(5) == prompts[1] and a.group_size == 4
    # the caller's random state is left alone
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    shared.generate(prompts, params, seed=1)
    assert torch.equal(torch.rand(1), before)


def test_sampling_logprobs_are_the_tempered_policys_and_masks_stop_at_eos(char_dir, tok):
    model = load_causal_lm(char_dir)
    eos = tok.eos_token_id
    prompts = [_ids(tok, "abc")]
    with torch.no_grad():  # make EOS likely (its output row along the mean final hidden state), so some finish early
        h = model(torch.tensor(prompts), output_hidden_states=True).hidden_states[-1][0].mean(0)
        model.lm_head.weight[eos] = 4.0 * h / h.norm() ** 2
    gen = HFGenerator(model, pad_id=tok.pad_token_id, eos_id=eos)
    r = gen.generate(prompts, SamplingParams(n=16, max_new_tokens=5, temperature=0.7), seed=0)
    assert 0 < int(r.finished.sum()) < r.n_completions
    for i in range(r.n_completions):
        comp = r.completion(i)
        n = len(comp)
        assert r.completion_mask[i, :n].all() and not r.completion_mask[i, n:].any()
        assert bool(r.finished[i]) == (comp[-1] == eos)
        assert eos not in comp[:-1]
        assert (r.completion_ids[i, n:] == tok.pad_token_id).all()
        x = torch.tensor([prompts[0] + comp])
        with torch.no_grad():
            expected = torch.log_softmax(model(x).logits[0, :-1] / 0.7, -1).gather(-1, x[0, 1:, None]).squeeze(-1)
        torch.testing.assert_close(r.sampling_logprobs[i, :n], expected[-n:], atol=1e-5, rtol=0)
        assert (r.sampling_logprobs[i, n:] == 0).all()


def test_top_k_one_is_greedy_and_greedy_is_deterministic(char_dir, tok):
    model = load_causal_lm(char_dir)
    gen = HFGenerator(model, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)
    prompts = [_ids(tok, "abc"), _ids(tok, "Q: 1")]
    greedy = gen.generate(prompts, SamplingParams(n=2, max_new_tokens=4, temperature=0.0), seed=0)
    top1 = gen.generate(prompts, SamplingParams(n=2, max_new_tokens=4, top_k=1), seed=5)
    assert torch.equal(greedy.completion_ids, top1.completion_ids)
    assert torch.equal(greedy.completion_ids[0], greedy.completion_ids[1])


def test_sampling_params_and_rollout_checks():
    for bad in (dict(n=0), dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0), dict(top_k=-1)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)  # type: ignore[arg-type]
    z = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="N = P · G"):
        Rollout(((1,),), z.long(), z.bool(), torch.zeros(3, dtype=torch.bool), z, group_size=2)


# ----------------------------------------------------------------------------------------------
# Per-token log-probs of packed groups
# ----------------------------------------------------------------------------------------------


def test_packed_token_logprobs_equal_full_forward_per_token(char_dir, tok):
    model = load_causal_lm(char_dir)
    prompt = _ids(tok, "Q: 5+6= A:")
    comps = [(60, 61, tok.eos_token_id), (62,), (63, 64, 65, 66)]
    group = [Encoded(prompt + c, len(prompt)) for c in comps]
    batch = pack([group], tok.pad_token_id)
    assert int(batch.segment.eq(0).sum()) == len(prompt) - 1  # the prompt runs once
    with torch.no_grad():
        got = unflatten_tokens(packed_token_logprobs(model, batch, temperature=0.5), batch, 5)  # (3, 5)
        for i, c in enumerate(comps):
            x = torch.tensor([prompt + c])
            full = token_logprobs(model(x).logits / 0.5, x)[0, -len(c):]
            torch.testing.assert_close(got[i, :len(c)], full, atol=1e-5, rtol=0)
            assert (got[i, len(c):] == 0).all()


# ----------------------------------------------------------------------------------------------
# Reward functions
# ----------------------------------------------------------------------------------------------


def test_builtin_rewards_by_hand():
    assert exact_match(["q"] * 3, [" 95", "95 ", " 9"], answer=[" 95", "95", "95"]) == [1.0, 1.0, 0.0]
    assert exact_match(["q"], [[{"role": "assistant", "content": " 7"}]], answer=["7"]) == [1.0]
    with pytest.raises(RewardError, match="answer"):
        exact_match(["q"], ["x"])
    fmt = regex_reward(r"<a>\d+</a>")
    assert fmt(["q"] * 3, ["<a>12</a>", "<a>12</a> more", "<a>x</a>"]) == [1.0, 0.0, 0.0]
    with pytest.raises(RewardError, match="does not compile"):
        regex_reward("(")


def test_load_reward_function_from_module_file_and_builtins(tmp_path):
    assert load_reward_function("exact_match").func is exact_match
    assert load_reward_function("rlhfkit.language.rewards:exact_match").func is exact_match
    assert load_reward_function("regex:a+", weight=0.5).weight == 0.5
    f = tmp_path / "my_rewards.py"
    f.write_text("def length(prompts, completions, **kw):\n    return [float(len(c)) for c in completions]\n"
                 "not_callable = 3\n"
                 "def one_arg(completions):\n    return []\n")
    rf = load_reward_function(f"{f}:length")
    assert rf.func(["p", "p"], ["ab", "c"]) == [2.0, 1.0] and rf.name == f"{f}:length"
    for spec, message in [(f"{f}:missing", "no attribute 'missing'"), (f"{f}:not_callable", "not callable"),
                          (f"{f}:one_arg", "must accept"), (f"{tmp_path}/nope.py:f", "no such file"),
                          ("no_such_module_xyz:f", "cannot import module"), ("just_a_name", "expected module:function")]:
        with pytest.raises(RewardError, match=message):
            load_reward_function(spec)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(RewardError, match="importing .* failed: RuntimeError: boom"):
        load_reward_function(f"{broken}:f")


def test_score_completions_weights_none_and_bad_returns():
    def half(prompts, completions, **kw):
        return [0.5 if c == "a" else None for c in completions]

    def ones(prompts, completions, **kw):
        return [1.0] * len(completions)

    fs = [RewardFunction("half", half, 2.0), RewardFunction("ones", ones, -1.0)]
    total, per = score_completions(fs, ["p", "p"], ["a", "b"], {})
    # a: 2 · 0.5 - 1 = 0; b: None counts 0 → -1
    assert total.tolist() == [0.0, -1.0]
    assert per[0].tolist() == [0.5, 1.0] and math.isnan(per[1, 0])
    bad = {
        "wrong length": (lambda p, c, **k: [1.0], "returned 1 values for 2 completions"),
        "not a list": (lambda p, c, **k: 1.0, "returned float"),
        "a string": (lambda p, c, **k: ["x", "y"], "returned 'x'"),
        "nan": (lambda p, c, **k: [float("nan"), 1.0], "returned nan for completion 0; rewards must be finite"),
        "raises": (lambda p, c, **k: 1 / 0, "raised ZeroDivisionError"),
    }
    for name, (func, message) in bad.items():
        with pytest.raises(RewardError, match=f"reward function {name} {message}" if name != "raises" else message):
            score_completions([RewardFunction(name, func)], ["p", "p"], ["a", "b"], {})
    # columns reach the function by name
    seen = {}

    def spy(prompts, completions, answer, completion_ids, **kw):
        seen.update(answer=answer, ids=completion_ids)
        return [0.0] * len(completions)

    score_completions([RewardFunction("spy", spy)], ["p"], ["a"], {"answer": ["x"], "completion_ids": [[1]]})
    assert seen == {"answer": ["x"], "ids": [[1]]}


def test_check_columns_names_the_missing_column():
    def needs(prompts, completions, answer, solution, hint=None, **kw):
        return []

    check_columns([RewardFunction("needs", needs)], ["answer", "solution"])
    with pytest.raises(RewardError, match="needs a column 'solution'.*answer"):
        check_columns([RewardFunction("needs", needs)], ["answer"])


def test_reward_model_directory_as_a_reward_function(char_dir, tok, tmp_path):
    rm = load_reward_model(char_dir, pad_token_id=tok.pad_token_id)
    save_model(rm, tok, tmp_path / "rm")
    reward = load_reward_function(str(tmp_path / "rm"))
    assert isinstance(reward.func, RewardModelReward) and reward.name == "rm:rm"
    values = reward.func(["Q: 1+2= A:", "abc"], [" 3", " d"])
    from rlhfkit.language.logprobs import encode, pad
    from rlhfkit.language.reward import score

    rm.eval()
    with torch.no_grad():
        expected = score(rm, pad([encode(tok, "Q: 1+2= A:", " 3", max_length=64),
                                  encode(tok, "abc", " d", max_length=64)], tok.pad_token_id)).mean(-1)
    assert values == pytest.approx(expected.tolist(), abs=1e-5)
    with pytest.raises(RewardError, match="not a model directory"):
        load_reward_function(str(tmp_path))


def test_implicit_reward_of_a_dpo_model(char_dir, tok, tmp_path):
    """β [log π(y|x) − log π_ref(y|x)] from two models' own token log-probs, computed by hand here."""
    policy = load_causal_lm(char_dir)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(3)))
    save_model(policy, tok, tmp_path / "dpo")
    reward = load_reward_function(f"implicit:{tmp_path / 'dpo'},{char_dir},0.5")
    assert isinstance(reward.func, ImplicitReward) and reward.name.startswith("implicit:")
    values = reward.func(["Q: 1+2= A:", "abc"], [" 3", " dd"])

    def seq_logprob(model, prompt, completion) -> float:
        p_ids, full = _ids(tok, prompt), list(_ids(tok, prompt + completion)) + [tok.eos_token_id]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].float(), -1)
        return sum(float(logp[t - 1, full[t]]) for t in range(len(p_ids), len(full)))  # completion and EOS

    ref = load_causal_lm(char_dir).eval()
    policy.eval()
    expected = [0.5 * (seq_logprob(policy, p, c) - seq_logprob(ref, p, c)) for p, c in (("Q: 1+2= A:", " 3"),
                                                                                       ("abc", " dd"))]
    assert values == pytest.approx(expected, abs=1e-4)
    assert abs(values[0]) > 1e-3  # the perturbed policy differs from its reference
    assert ImplicitReward(char_dir, char_dir)(["abc"], [" d"]) == pytest.approx([0.0], abs=1e-6)
    with pytest.raises(RewardError, match="MODEL_DIR,REF_DIR"):
        load_reward_function(f"implicit:{char_dir}")
    with pytest.raises(RewardError, match="not a model directory"):
        load_reward_function(f"implicit:{tmp_path},{char_dir}")
    with pytest.raises(RewardError, match="not a number"):
        load_reward_function(f"implicit:{char_dir},{char_dir},big")
    # SimPO's reward: (β/|y|) log π(y|x), no reference; |y| counts the completion and EOS
    simpo = load_reward_function(f"simpo:{tmp_path / 'dpo'},2.5")
    got = simpo.func(["Q: 1+2= A:", "abc"], [" 3", " dd"])
    lengths = [len(_ids(tok, p + c)) - len(_ids(tok, p)) + 1 for p, c in (("Q: 1+2= A:", " 3"), ("abc", " dd"))]
    expected = [2.5 * seq_logprob(policy, p, c) / n for (p, c), n in zip((("Q: 1+2= A:", " 3"), ("abc", " dd")),
                                                                         lengths)]
    assert got == pytest.approx(expected, abs=1e-4) and simpo.func.ref is None
    assert load_reward_function(f"simpo:{char_dir}").func.beta == 2.0
    with pytest.raises(RewardError, match="MODEL_DIR"):
        load_reward_function("simpo:")
    with pytest.raises(RewardError, match="not a model directory"):
        load_reward_function(f"simpo:{tmp_path}")


# ----------------------------------------------------------------------------------------------
# Prompt data
# ----------------------------------------------------------------------------------------------


def test_load_prompts_keeps_columns_and_names_bad_rows(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "Q: 1+2= A:", "answer": " 3"}) + "\n"
                 + json.dumps({"prompt": [{"role": "user", "content": "hi"}], "answer": "x"}) + "\n")
    data = load_prompts(f)
    assert [e.prompt for e in data.examples][0] == "Q: 1+2= A:" and data.columns == ["answer"]
    assert data.examples[1].columns == {"answer": "x"} and data.examples[1].source == f"{f}:2"
    no_prompt = tmp_path / "q.jsonl"
    no_prompt.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(DataError, match="no 'prompt' column.*question"):
        load_prompts(no_prompt)
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"prompt": "  "}) + "\n")
    with pytest.raises(DataError, match=r"line 2, field \"prompt\": empty prompt"):
        load_prompts(empty)
    assert load_prompts(empty, skip_bad=True).skipped == 1


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


def low_ids(prompts, completions, completion_ids, **kw):
    """The toy task: the fraction of completion tokens with an id below 64 (~25% for a random model)."""
    return [sum(t < 64 for t in ids) / len(ids) for ids in completion_ids]


def _prompts(n: int = 16) -> list[PromptExample]:
    return [PromptExample(f"Q: {i}+{i + 1}= A:", {"answer": f" {2 * i + 1}"}) for i in range(n)]


def _train(char_dir, tok, *, steps: int, out=None, resume=False, **settings):
    model = load_causal_lm(char_dir)
    args = TrainArgs(lr=settings.pop("lr", 3e-3), max_steps=steps, warmup_ratio=0.0, schedule="constant",
                     max_length=32, seed=0)
    s = GRPOSettings(**{"num_generations": 4, "prompts_per_step": 4, "max_new_tokens": 6, **settings})
    result = train_grpo(model, tok, _prompts(), [RewardFunction("low_ids", low_ids)], args, s, out=out, resume=resume)
    return model, result


def test_grpo_raises_the_reward_of_a_toy_task(char_dir, tok):
    model, result = _train(char_dir, tok, steps=60, num_generations=8, lr=1e-2)
    rewards = [h["reward/mean"] for h in result.history if "reward/mean" in h]
    start, end = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert start < 0.4 and end > 0.8, (start, end)
    seen = {k for h in result.history for k in h}
    for key in ("reward/std", "reward/low_ids/mean", "reward/zero_std_fraction", "completions/mean_length",
                "completions/clipped_ratio", "loss/policy", "policy/clip_fraction", "train/grad_norm",
                "time/generate_s", "time/train_s"):
        assert key in seen, key
    assert "policy/kl" not in seen  # β = 0: no reference model
    assert result.completions == 60 * 4 * 8 and result.trained_tokens > result.completion_tokens > 0
    assert 0 < result.computed_tokens < result.trained_tokens  # the last steps' groups all score 1: skipped
    assert result.wall_s == pytest.approx(result.generate_s + result.reward_s + result.train_s, rel=0.2)


def test_same_seed_same_run(char_dir, tok):
    _, a = _train(char_dir, tok, steps=3)
    _, b = _train(char_dir, tok, steps=3)
    keys = ("reward/mean", "loss/policy", "train/grad_norm")
    assert [[h[k] for k in keys] for h in a.history] == [[h[k] for k in keys] for h in b.history]


def test_beta_loads_a_reference_and_mu_uses_old_logprobs(char_dir, tok):
    _, r = _train(char_dir, tok, steps=3, beta=0.1, lr=3e-2)
    kls = [h["policy/kl"] for h in r.history]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)  # the policy is the reference at the first update
    assert kls[-1] > 1e-4
    assert all(h["policy/approx_kl"] == pytest.approx(0.0, abs=1e-6) for h in r.history)  # μ = 1: on-policy
    _, r = _train(char_dir, tok, steps=3, beta=0.1, num_iterations=2, mini_batches=2, lr=3e-2)
    assert max(h["policy/approx_kl"] for h in r.history) > 1e-4  # later mini-batches are off-policy
    assert max(h["policy/clip_fraction"] for h in r.history) > 0


def test_resume_continues_the_same_run(char_dir, tok, tmp_path):
    whole, _ = _train(char_dir, tok, steps=4)
    _train(char_dir, tok, steps=2, out=tmp_path / "run")
    resumed, r = _train(char_dir, tok, steps=4, out=tmp_path / "run", resume=True)
    for (k, v), (_, w) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(v, w, msg=k)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines if "reward/mean" in x] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot resume"):
        _train(char_dir, tok, steps=2, out=tmp_path / "empty", resume=True)


def test_bad_reward_stops_before_any_update(char_dir, tok):
    model = load_causal_lm(char_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainArgs(lr=1e-2, max_steps=2, max_length=32)
    s = GRPOSettings(num_generations=2, prompts_per_step=2, max_new_tokens=3)
    with pytest.raises(RewardError, match="returned 1 values for 4 completions"):
        train_grpo(model, tok, _prompts(), [RewardFunction("short", lambda p, c, **k: [1.0])], args, s)
    with pytest.raises(RewardError, match="needs a column 'solution'"):
        train_grpo(model, tok, _prompts(), [RewardFunction("sol", lambda p, c, solution: [])], args, s)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="num_generations"):
        GRPOSettings(num_generations=1)
    with pytest.raises(ValueError, match="no reward functions"):
        train_grpo(model, tok, _prompts(), [], args, s)


def test_evaluate_greedy_and_encode_prompt(char_dir, tok):
    model = load_causal_lm(char_dir)
    ex = _prompts(4)
    out = evaluate_greedy(model, tok, ex, [RewardFunction("low_ids", low_ids), RewardFunction("em", exact_match)],
                          max_new_tokens=4)
    assert set(out) == {"eval/reward", "eval/low_ids", "eval/em"}
    assert out["eval/reward"] == pytest.approx(out["eval/low_ids"] + out["eval/em"])
    assert encode_prompt(tok, "abcdef", 3) == _ids(tok, "def")


def test_conversational_prompts_reach_rewards_as_messages(char_dir, tok):
    seen = []

    def spy(prompts, completions, **kw):
        seen.append((prompts[0], completions[0]))
        return [float(len(c[0]["content"])) for c in completions]

    model = load_causal_lm(char_dir)
    prompts = [PromptExample(({"role": "user", "content": f"say {i}"},), {}) for i in range(4)]
    args = TrainArgs(lr=1e-3, max_steps=1, max_length=48)
    train_grpo(model, tok, prompts, [RewardFunction("spy", spy)], args,
               GRPOSettings(num_generations=2, prompts_per_step=2, max_new_tokens=3))
    prompt, completion = seen[0]
    assert prompt[0]["role"] == "user" and completion[0]["role"] == "assistant"
    ids = encode_prompt(tok, prompt, 48)
    assert tok.decode(ids).endswith("<|assistant|>\n")  # the chat template's generation prompt


def test_lora_policy_uses_its_base_model_as_the_reference(char_dir, tok):
    from rlhfkit.language.models import apply_lora

    model = apply_lora(load_causal_lm(char_dir), r=4, alpha=8)
    base = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    args = TrainArgs(lr=3e-2, max_steps=3, max_length=32, warmup_ratio=0.0)
    r = train_grpo(model, tok, _prompts(), [RewardFunction("low_ids", low_ids)], args,
                   GRPOSettings(num_generations=4, prompts_per_step=4, max_new_tokens=6, beta=0.1))
    kls = [h["policy/kl"] for h in r.history]
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 1e-4  # adapters off = the reference
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items() if k in base)  # only adapters train


def test_skipping_groups_without_signal_changes_no_update(char_dir, tok):
    # β = 0 skips groups whose rewards are all equal; a vanishing β keeps every group in the forward pass
    # (the KL term needs them) and adds nothing measurable: the two runs must end with the same weights
    def coarse(prompts, completions, completion_ids, **kw):  # many groups score all 0 or all 1
        return [float(sum(t < 64 for t in ids) >= 2) for ids in completion_ids]

    runs = []
    for beta in (0.0, 1e-12):
        model = load_causal_lm(char_dir)
        args = TrainArgs(lr=1e-2, max_steps=4, max_length=32, warmup_ratio=0.0, seed=0)
        r = train_grpo(model, tok, _prompts(), [RewardFunction("coarse", coarse)], args,
                       GRPOSettings(num_generations=4, prompts_per_step=4, max_new_tokens=6, beta=beta))
        runs.append((model, r))
    (a, ra), (b, rb) = runs
    assert any(0 < h["reward/zero_std_fraction"] < 1 for h in ra.history if "reward/mean" in h)
    assert ra.computed_tokens < rb.computed_tokens == rb.trained_tokens == ra.trained_tokens
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(v, w, atol=1e-6, rtol=1e-5, msg=k)
