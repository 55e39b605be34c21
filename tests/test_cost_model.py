"""Safe RLHF's cost model (Dai et al. 2023, Eq. 6): ``cost_pair_loss`` against hand-computed values, the
safety labels in the records and the loader, ``rlhf lm rm --cost`` learning a cost whose sign says
"unsafe", and its directory as ``rlhf lm ppo --cost DIR``."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhfkit.choice import bradley_terry_nll, cost_pair_loss, reward_pair_loss
from rlhfkit.language.data import DataError, PreferenceExample, load_data
from rlhfkit.language.tiny import TinySpec, build_tiny

ENV = {"COLUMNS": "200", "OMP_NUM_THREADS": "1"}
runner = CliRunner()


def nls(x: float) -> float:
    """-log σ(x) = log(1 + e^-x)."""
    return math.log1p(math.exp(-x))


def _t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# The loss, by hand
# ----------------------------------------------------------------------------------------------


def test_cost_pair_loss_by_hand():
    # chosen = the safer response: the loss wants C(rejected) > C(chosen), and C > 0 exactly for unsafe
    # A: C_c = 0, C_r = 1, no labels:            -log σ(1 - 0)                                 = 0.313262
    assert cost_pair_loss(_t(0.0), _t(1.0)).item() == pytest.approx(nls(1.0)) == pytest.approx(0.3132617)
    # B: A with chosen safe (s = -1), rejected unsafe (s = +1): + -log σ(-1·0) + -log σ(+1·1)
    #    = 0.313262 + 0.693147 + 0.313262 = 1.319671
    B = cost_pair_loss(_t(0.0), _t(1.0), sign_chosen=_t(-1.0), sign_rejected=_t(1.0)).item()
    assert B == pytest.approx(2 * nls(1.0) + math.log(2.0)) == pytest.approx(1.3196706)
    # C: everything wrong, C_c = 2 (safe), C_r = -1 (unsafe):
    #    -log σ(-1 - 2) - log σ(-1·2) - log σ(+1·-1) = 3.048587 + 2.126928 + 1.313262 = 6.488777
    C = cost_pair_loss(_t(2.0), _t(-1.0), sign_chosen=_t(-1.0), sign_rejected=_t(1.0)).item()
    assert C == pytest.approx(nls(-3.0) + nls(-2.0) + nls(-1.0)) == pytest.approx(6.488777, abs=1e-6)
    # a batch (B,) = 3: sign 0 (unlabelled) drops its term, labels are per row and per response
    loss = cost_pair_loss(_t(0.0, 2.0, 2.0), _t(1.0, -1.0, -1.0), sign_chosen=_t(0.0, -1.0, 0.0),
                          sign_rejected=_t(0.0, 1.0, 1.0))
    torch.testing.assert_close(loss, _t(nls(1.0), nls(-3.0) + nls(-2.0) + nls(-1.0), nls(-3.0) + nls(-1.0)))
    # a tie (target ½) on A: -(½ log σ(1) + ½ log σ(-1)) = ½ (0.313262 + 1.313262) = 0.813262
    assert cost_pair_loss(_t(0.0), _t(1.0), _t(0.5)).item() == pytest.approx(0.8132617)
    # a margin of 1: the harmful response must cost 1 more, -log σ(1 - 0 - 1) = ln 2
    assert cost_pair_loss(_t(0.0), _t(1.0), margin=1.0).item() == pytest.approx(math.log(2.0))
    # (B, E) = (1, 2): head 0 is case B, head 1 case C → mean 3.904224; bootstrap weights [2, 0] → B
    cc, cr = _t(0.0, 2.0).view(1, 2), _t(1.0, -1.0).view(1, 2)
    signs = dict(sign_chosen=_t(-1.0), sign_rejected=_t(1.0))
    assert cost_pair_loss(cc, cr, **signs).item() == pytest.approx(0.5 * (B + C)) == pytest.approx(3.904224, abs=1e-6)
    assert cost_pair_loss(cc, cr, weights=_t(2.0, 0.0).view(1, 2), **signs).item() == pytest.approx(B)


def test_cost_pair_loss_identities_gradient_and_errors():
    g = torch.Generator().manual_seed(0)
    cc, cr, target = torch.randn(6, generator=g), torch.randn(6, generator=g), torch.rand(6, generator=g)
    # without labels it is Bradley-Terry on the costs with the harmful response "winning", i.e. the reward
    # loss on -C
    torch.testing.assert_close(cost_pair_loss(cc, cr, target), bradley_terry_nll(cr, cc, target))
    torch.testing.assert_close(cost_pair_loss(cc, cr, target), reward_pair_loss(-cc, -cr, target))
    # its gradient raises the harmful response's cost and lowers the safer one's; the sign term pushes a
    # safe response's cost below zero even when the pair is ordered right
    c_safe, c_harm = torch.tensor([0.5], requires_grad=True), torch.tensor([2.0], requires_grad=True)
    cost_pair_loss(c_safe, c_harm, sign_chosen=torch.tensor([-1.0]), sign_rejected=torch.tensor([1.0])).sum().backward()
    assert c_safe.grad.item() > 0 and c_harm.grad.item() < 0  # gradient descent: C_safe down, C_harm up
    with pytest.raises(ValueError, match="safety signs must be"):
        cost_pair_loss(_t(0.0), _t(1.0), sign_chosen=_t(2.0))
    with pytest.raises(ValueError, match=r"\(B,\) = \(1,\)"):
        cost_pair_loss(_t(0.0), _t(1.0), sign_rejected=_t(1.0, 1.0))
    with pytest.raises(ValueError, match="differ in shape"):
        cost_pair_loss(_t(0.0, 1.0), _t(1.0))
    with pytest.raises(ValueError, match="target must lie in"):
        cost_pair_loss(_t(0.0), _t(1.0), _t(1.5))


def test_reward_pair_loss_moved_to_the_math_layer_and_is_re_exported():
    from rlhfkit.language import reward

    assert reward.reward_pair_loss is reward_pair_loss and reward.cost_pair_loss is cost_pair_loss
    assert reward_pair_loss.__module__ == "rlhfkit.choice"


# ----------------------------------------------------------------------------------------------
# Safety labels: records, loader, encoding, the trainer's loss
# ----------------------------------------------------------------------------------------------


def test_safety_labels_in_records_and_the_loader(tmp_path):
    e = PreferenceExample("Q", " a", " b", chosen_safe=1, rejected_safe=0)
    assert (e.chosen_safe, e.rejected_safe) == (True, False)
    assert PreferenceExample("Q", " a", " b").chosen_safe is None
    with pytest.raises(ValueError, match='"rejected_safe": expected true'):
        PreferenceExample("Q", " a", " b", rejected_safe="no")
    path = tmp_path / "safety.jsonl"
    rows = [{"prompt": "Q1", "chosen": " fine", "rejected": " harm", "chosen_safe": True, "rejected_safe": False},
            {"prompt": "Q2", "chosen": " good", "rejected": " hurt"},
            {"prompt": "Q3", "chosen": " sure", "rejected": " kill", "rejected_safe": "no"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"safety.jsonl, line 3: .*rejected_safe"):
        load_data(path)
    loaded = load_data(path, skip_bad=True)
    assert loaded.skipped == 1
    a, b = loaded.examples
    assert (a.chosen_safe, a.rejected_safe, b.chosen_safe, b.rejected_safe) == (True, False, None, None)


def test_trainer_loss_and_metrics_of_a_cost_model(cost_setup):
    from rlhfkit.language.models import load_tokenizer
    from rlhfkit.language.reward import _items_loss, encode_preferences

    tok = load_tokenizer(cost_setup["model"])
    items = encode_preferences(tok, [PreferenceExample("Q", " fine", " harm", chosen_safe=True, rejected_safe=False),
                                     PreferenceExample("Q", " good", " hurt")], 32)
    assert [it.safety for it in items] == [(-1, 1), (0, 0)]
    costs = torch.tensor([[-1.0], [2.0], [0.5], [0.0]])  # rows: (chosen, rejected) of each pair, E = 1
    loss, metrics = _items_loss(costs, items, seed=0, cost=True)
    # pair 1: -log σ(3) - log σ(1) - log σ(2); pair 2 (no labels): -log σ(-0.5)
    assert loss.item() == pytest.approx(nls(3.0) + nls(1.0) + nls(2.0) + nls(-0.5), rel=1e-5)
    assert metrics["train/accuracy"] == (1.0, 2.0)  # pair 1 ordered right (safer costs less), pair 2 not
    assert metrics["train/safety_accuracy"] == (2.0, 2.0)  # both labelled responses on the right side of 0
    assert metrics["train/margin"] == pytest.approx((3.0 - 0.5, 2.0))


# ----------------------------------------------------------------------------------------------
# rlhf lm rm --cost, and the directory as rlhf lm ppo --cost
# ----------------------------------------------------------------------------------------------

SAFE, MILD, SEVERE = ["fine", "good", "hello", "sure"], ["rude", "mean"], ["kill", "harm", "hurt", "steal"]


@pytest.fixture(scope="module")
def cost_setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cost")
    model = build_tiny(["Q: 1+2= A: 3", "abc"], root / "model",
                       TinySpec(arch="llama", vocab_size=262, n_layers=1, d_model=32, n_heads=2, max_positions=64))
    rng = random.Random(0)
    rows = []
    for i in range(120):
        if i % 3 == 2:  # both unsafe, the mild one chosen: only the safety-sign term says a mild answer costs > 0
            row = {"prompt": f"Q{i}:", "chosen": " " + rng.choice(MILD), "rejected": " " + rng.choice(SEVERE),
                   "chosen_safe": False, "rejected_safe": False}
        else:  # safe vs severe, labelled in half the rows
            row = {"prompt": f"Q{i}:", "chosen": " " + rng.choice(SAFE), "rejected": " " + rng.choice(SEVERE)}
            if i % 2 == 0:
                row.update(chosen_safe=True, rejected_safe=False)
        rows.append(row)
    data = root / "safety.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Q{i}:"}) + "\n" for i in range(8)))
    return {"root": root, "model": model, "data": data, "prompts": prompts}


@pytest.fixture(scope="module")
def cost_model(cost_setup) -> tuple[Path, str]:
    """``rlhf lm rm --cost`` on the safety pairs: the run directory and what the command printed."""
    from rlhfkit.cli import app

    out = cost_setup["root"] / "cm"
    result = runner.invoke(app, ["lm", "rm", "--cost", "--model", str(cost_setup["model"]), "--data",
                                 str(cost_setup["data"]), "--out", str(out), "--max-steps", "60", "--batch-size", "16",
                                 "--lr", "3e-3", "--warmup-ratio", "0", "--max-length", "32", "--val-fraction", "0.2"],
                           env=ENV)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output


def test_rm_cost_learns_a_cost_whose_sign_says_unsafe(cost_model):
    from rlhfkit.language.rewards import load_reward_function

    out, printed = cost_model
    assert "cost model" in printed
    assert json.loads((out / "config.json").read_text())["cost_model"] is True
    assert json.loads((out / "train_args.json").read_text())["cost"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val/accuracy"] >= 0.9 and summary["val/safety_accuracy"] >= 0.9, summary
    # as a function, as `rlhf lm ppo --cost DIR` loads it: unsafe responses cost > 0, safe ones < 0, and the
    # mild answers, only ever the *safer* of their pairs, still cost > 0 (the safety-sign term), less than severe
    cost = load_reward_function(str(out))
    safe, mild, severe = (cost.func(["Q7:"] * len(ws), [" " + w for w in ws]) for ws in (SAFE, MILD, SEVERE))
    assert max(safe) < 0 < min(mild) and max(mild) < min(severe), (safe, mild, severe)


def test_cost_model_directory_drives_ppo_lagrangian(cost_setup, cost_model):
    from rlhfkit.cli import app

    cm = cost_model[0]
    out = cost_setup["root"] / "ppo"
    base = ["lm", "ppo", "--model", str(cost_setup["model"]), "--data", str(cost_setup["prompts"]),
            "--prompts-per-step", "4", "--max-new-tokens", "4", "--max-length", "32", "--lr", "1e-3"]
    result = runner.invoke(app, [*base, "--out", str(out), "--reward", "regex:.*", "--cost", str(cm),
                                 "--cost-threshold", "-5", "--max-steps", "2"], env=ENV)
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "cost/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    # the threshold -5 is far below any cost: λ rises at every step
    assert all(r["lagrange/lambda_next"] > r["lagrange/lambda"] for r in steps)
    # a cost model given as a reward (its sign is the opposite) is warned about
    result = runner.invoke(app, [*base, "--out", str(cost_setup["root"] / "bad"), "--reward", str(cm),
                                 "--cost-weight", "1"], env=ENV)
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "is a cost model" in text and "0 --cost but 1 --cost-weight" in text
    assert not (cost_setup["root"] / "bad").exists()
