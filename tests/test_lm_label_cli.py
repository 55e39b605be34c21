"""``rlhf lm label``: sampled pairs labelled by a synthetic teacher (B-Pref knobs) or an AI judge, the output
never overwritten by accident, the judge's position bias and agreement with gold labels (by hand and on a
run), and clear errors (exit 2) for bad options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.feedback.records import Outcome
from rlhfkit.language.data import load_data
from rlhfkit.language.judge import Judgement, judge_report
from rlhfkit.language.tiny import TinySpec, build_tiny

ENV = {"COLUMNS": "200", "OMP_NUM_THREADS": "1"}
runner = CliRunner()

GOLD = '''
def low_ids(prompts, completions, completion_ids, **kw):
    return [sum(t < 64 for t in ids) / len(ids) for ids in completion_ids]
'''


def _invoke(args: list[str]):
    result = runner.invoke(app, ["lm", "label", *args], env=ENV)
    return result, " ".join(result.output.split())


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("label_cli")
    model = build_tiny(["Q: 1+2= A: 3", "abc"], root / "model",
                       TinySpec(arch="llama", vocab_size=262, n_layers=1, d_model=32, n_heads=2, max_positions=64))
    data = root / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q: {i}+1= A:"}) + "\n" for i in range(6)))
    gold = root / "gold.py"
    gold.write_text(GOLD)
    return {"root": root, "model": model, "data": data, "gold": f"{gold}:low_ids"}


def _base(s: dict, out: Path, *extra: str) -> list[str]:
    return ["--model", str(s["model"]), "--data", str(s["data"]), "--out", str(out), "--pairs", "24",
            "--max-new-tokens", "5", "--max-length", "40", *extra]


def _summary(text: str, key: str) -> str:
    return text.split(f" {key} ", 1)[1].split()[1]  # the table row "│ key │ value │"


def test_oracle_labels_are_written_summarised_and_never_overwritten(setup):
    out = setup["root"] / "oracle.jsonl"
    result, text = _invoke(_base(setup, out, "--gold", setup["gold"]))
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = load_data(out).examples
    assert 0 < len(rows) <= 24 and f"{len(rows)} preference rows" in text
    assert int(_summary(text, "kept")) == len(rows) and int(_summary(text, "ties")) == sum(r.tie for r in rows)
    assert int(_summary(text, "skipped")) == 0
    assert _summary(text, "gold_agreement") == "1.000"  # the oracle always prefers the higher gold reward
    # labels are never overwritten by accident
    before = out.read_text()
    result, text = _invoke(_base(setup, out, "--gold", setup["gold"], "--seed", "1"))
    assert result.exit_code == 2 and "exists; pass --overwrite" in text and out.read_text() == before
    result, text = _invoke(_base(setup, out, "--gold", setup["gold"], "--seed", "1", "--overwrite"))
    assert result.exit_code == 0 and out.read_text() != before


def test_b_pref_knobs_reach_the_synthetic_teacher(setup):
    # ε = 1: every strict answer flipped, so no decided pair agrees with the gold reward
    result, text = _invoke(_base(setup, setup["root"] / "flipped.jsonl", "--gold", setup["gold"], "--teacher",
                                 "mistake", "--epsilon", "1"))
    assert result.exit_code == 0, result.output
    assert _summary(text, "gold_agreement") == "0.000"
    # skip: both gold rewards below the threshold → the pair is skipped and counted
    result, text = _invoke(_base(setup, setup["root"] / "skips.jsonl", "--gold", setup["gold"], "--teacher", "skip",
                                 "--skip-threshold", "2"))
    assert result.exit_code == 2 and "no pair was kept (24 skipped" in text
    assert not (setup["root"] / "skips.jsonl").exists()


def test_judge_labels_with_position_bias_and_gold_agreement(setup):
    out = setup["root"] / "judged.jsonl"
    result, text = _invoke(_base(setup, out, "--teacher", "judge", "--judge-model", str(setup["model"]),
                                 "--gold", setup["gold"], "--tie-margin", "0"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    stats = json.loads((setup["root"] / "judged.agreement.json").read_text())
    assert stats["swap"] is True and stats["pairs"] == 24 and stats["tie_margin"] == 0.0
    assert {"position_bias", "order_flip_rate", "agreement", "cohen_kappa", "decided_agreement"} <= set(stats)
    assert -0.5 <= stats["position_bias"] <= 0.5 and 0.0 <= stats["agreement"] <= 1.0
    assert f"{stats['agreement']:.3f}" == _summary(text, "judge/agreement")
    rows = load_data(out).examples
    assert len(rows) == 24 - int(_summary(text, "identical")) - int(_summary(text, "blank"))
    # one order only: the bias is measured from the pairs' random order, and there is no flip rate
    result, text = _invoke(_base(setup, setup["root"] / "one_order.jsonl", "--teacher", "judge", "--judge-model",
                                 str(setup["model"]), "--no-swap"))
    assert result.exit_code == 0, result.output
    stats = json.loads((setup["root"] / "one_order.agreement.json").read_text())
    assert stats["swap"] is False and "order_flip_rate" not in stats and "agreement" not in stats


def test_judge_report_by_hand():
    def j(first: float, second: float, outcome: Outcome) -> Judgement:
        return Judgement(0.5 * (first + second), first, second, outcome)

    judged = [(j(0.8, 0.6, Outcome.LEFT), 1.0, 0.0),    # bias ½(0.8 + 0.4) - ½ = 0.1;    gold LEFT: agree
              (j(0.3, 0.1, Outcome.RIGHT), 0.0, 1.0),   # bias ½(0.3 + 0.9) - ½ = 0.1;    gold RIGHT: agree
              (j(0.7, 0.35, Outcome.TIE), 2.0, 1.0),    # bias ½(0.7 + 0.65) - ½ = 0.175; flips; gold LEFT
              (j(0.6, 0.7, Outcome.LEFT), 0.0, 0.0)]    # bias ½(0.6 + 0.3) - ½ = -0.05;  gold TIE
    report = judge_report(judged, swap=True, with_gold=True)
    assert report["position_bias"] == pytest.approx((0.1 + 0.1 + 0.175 - 0.05) / 4)
    assert report["order_flip_rate"] == 0.25 and report["ties"] == 1 and report["pairs"] == 4
    assert report["agreement"] == 0.5 and report["decided_pairs"] == 2 and report["decided_agreement"] == 1.0
    # κ: gold (L, R, L, T), judge (L, R, T, L): p_o = ½, p_e = (2·2 + 1·1 + 1·1)/16 = 3/8,
    # κ = (½ - 3/8)/(5/8) = 0.2
    assert report["cohen_kappa"] == pytest.approx(0.2)
    # one order asked: P[first wins] is P[a ≻ b | a first]: mean(0.8, 0.3, 0.7, 0.6) - ½ = 0.1
    one = judge_report(judged, swap=False, with_gold=False)
    assert one["position_bias"] == pytest.approx(0.1) and "order_flip_rate" not in one and "agreement" not in one
    with pytest.raises(ValueError, match="at least one"):
        judge_report([], swap=True, with_gold=False)


@pytest.mark.parametrize("case", ["unknown", "myopic", "no_gold", "no_judge_model", "knob_with_judge",
                                  "judge_option_with_oracle", "pairs", "max_new_tokens", "temperature", "not_a_model",
                                  "tie_margin", "return_scale", "bad_gold"])
def test_bad_options_exit_2(setup, case):
    m, g = str(setup["model"]), setup["gold"]
    extra, message = {
        "unknown": (["--teacher", "human", "--gold", g], "--teacher must be one of oracle, stochastic, mistake, skip, "
                                                         "equal, myopic or judge, got 'human'"),
        "myopic": (["--teacher", "myopic", "--gold", g], "--teacher myopic: the myopic teacher discounts steps"),
        "no_gold": (["--teacher", "stochastic"], "--teacher stochastic answers from gold rewards: give at least one "
                                                 "--gold"),
        "no_judge_model": (["--teacher", "judge"], "--teacher judge needs --judge-model DIR"),
        "knob_with_judge": (["--teacher", "judge", "--judge-model", m, "--epsilon", "0.1"],
                            "--epsilon sets a synthetic teacher; --teacher judge does not use it"),
        "judge_option_with_oracle": (["--gold", g, "--no-swap"], "--no-swap is for --teacher judge, not --teacher "
                                                                 "oracle"),
        "pairs": (["--gold", g, "--pairs", "0"], "--pairs must be at least 1, got 0"),
        "max_new_tokens": (["--gold", g, "--max-new-tokens", "40"], "--max-new-tokens must be at least 1 and below "
                                                                    "--max-length (40)"),
        "temperature": (["--gold", g, "--temperature", "0"], "--temperature must be > 0"),
        "not_a_model": (["--teacher", "judge", "--judge-model", str(setup["root"])],
                        "is not a Hugging Face model directory"),
        "tie_margin": (["--teacher", "judge", "--judge-model", m, "--tie-margin", "0.7"],
                       "--tie-margin must be in [0, 0.5), got 0.7"),
        "return_scale": (["--gold", g, "--return-scale", "0"], "--teacher oracle: --return-scale must be > 0"),
        "bad_gold": (["--gold", "nowhere.py:f"], "no such file nowhere.py"),
    }[case]
    out = setup["root"] / f"bad_{case}.jsonl"
    result, text = _invoke(_base(setup, out, *extra))
    assert result.exit_code == 2, text
    assert message in text, text
    assert not out.exists()
