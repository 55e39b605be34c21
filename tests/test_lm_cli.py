"""The ``rlhf lm`` command line: tiny → SFT / reward model / DPO runs of two steps on the
HH-RLHF sample, and the error messages for bad input (exit code 2 before any training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app

HH = Path(__file__).parent / "data" / "hh_rlhf_harmless_200.jsonl"
# a wide terminal so that rich does not wrap messages; one thread (the CLI's set_threads reads OMP_NUM_THREADS)
ENV = {"COLUMNS": "200", "OMP_NUM_THREADS": "1"}
STEPS = ["--max-steps", "2", "--batch-size", "4", "--max-length", "64"]
RUN_FILES = ("model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl", "curves.png", "summary.json",
             "train_args.json")

runner = CliRunner()


# one torch thread: tests/conftest.py's autouse fixture


def _invoke(args: list[str]):
    result = runner.invoke(app, ["lm", *args], env=ENV)
    return result, " ".join(result.output.split())  # normalise rich's line breaks


def _ok(args: list[str]) -> str:
    result, out = _invoke(args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """``rlhf lm tiny`` on the HH-RLHF sample: a 1-layer llama, d_model 32, vocabulary 400."""
    out = tmp_path_factory.mktemp("cli") / "tiny"
    printed = _ok(["tiny", "--data", str(HH), "--out", str(out), "--layers", "1", "--d-model", "32", "--heads", "2",
                   "--vocab", "400", "--max-positions", "128"])
    assert "llama model" in printed and "vocabulary 400" in printed and "600 texts" in printed  # 200 × (prompt, chosen, rejected)
    spec = json.loads((out / "tiny.json").read_text())
    assert (spec["n_layers"], spec["d_model"], spec["n_heads"], spec["vocab_size"]) == (1, 32, 2, 400)
    return out


def _run_dir(out: Path) -> tuple[dict, list[dict]]:
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
    return json.loads((out / "summary.json").read_text()), rows


def test_sft_run(tiny, tmp_path):
    from rlhfkit.language.models import load_causal_lm

    out = tmp_path / "sft"
    printed = _ok(["sft", "--model", str(tiny), "--data", str(HH), "--out", str(out), *STEPS])
    summary, rows = _run_dir(out)
    assert summary["steps"] == 2 and summary["step"] == 2 and summary["val/loss"] > 0
    assert any("val/perplexity" in r for r in rows)
    assert "SFT" in printed and f"in {out}" in printed
    args = json.loads((out / "train_args.json").read_text())
    assert args["train"]["max_steps"] == 2 and args["train"]["lr"] == 3e-4 and args["data"] == str(HH)
    assert load_causal_lm(out).config.model_type == "llama"


def test_reward_model_ensemble_run_with_eval_file(tiny, tmp_path):
    from rlhfkit.language.models import load_reward_model

    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(HH.read_text().splitlines(keepends=True)[:10]))
    out = tmp_path / "rm"
    printed = _ok(["rm", "--model", str(tiny), "--data", str(HH), "--out", str(out), "--heads", "2",
                   "--eval-file", str(held_out), *STEPS])
    summary, rows = _run_dir(out)
    assert summary["steps"] == 2
    for key in ("val/accuracy", "val/disagreement", "held_out/loss", "held_out/accuracy", "held_out/disagreement"):
        assert key in summary, key
    assert 0 <= summary["held_out/accuracy"] <= 1 and summary["held_out/disagreement"] >= 0
    assert "reward model" in printed
    assert json.loads((out / "train_args.json").read_text())["heads"] == 2
    rm = load_reward_model(out, num_heads=2)
    assert type(rm).__name__ == "LlamaForSequenceClassification" and rm.config.num_labels == 2


def test_dpo_ipo_run(tiny, tmp_path):
    out = tmp_path / "dpo"
    printed = _ok(["dpo", "--model", str(tiny), "--data", str(HH), "--out", str(out), "--loss", "ipo",
                   "--beta", "0.5", *STEPS])
    summary, rows = _run_dir(out)
    assert summary["steps"] == 2
    for key in ("val/loss", "val/rewards/accuracies", "val/rewards/margins"):
        assert key in summary, key
    # step 1 starts at π = π_ref: the IPO loss is (0 - 1/(2β))² = 1
    assert rows[0]["train/loss"] == pytest.approx(1.0, abs=1e-4)
    assert "DPO" in printed
    settings = json.loads((out / "train_args.json").read_text())["dpo"]
    assert settings == {"beta": 0.5, "loss_type": "ipo", "label_smoothing": 0.0, "margin": 0.0}


def test_cdpo_defaults_label_smoothing(tiny, tmp_path):
    out = tmp_path / "cdpo"
    _ok(["dpo", "--model", str(tiny), "--data", str(HH), "--out", str(out), "--loss", "cdpo", "--max-steps", "1",
         "--batch-size", "4", "--max-length", "32", "--val-fraction", "0.05"])
    assert json.loads((out / "train_args.json").read_text())["dpo"]["label_smoothing"] == 0.1


def _bad_rows(path: Path, n: int = 20) -> Path:
    """An explicit-prompt preference file whose 3rd line has an empty "chosen"."""
    rows = [{"prompt": f"Question {i}:", "chosen": f" yes {i}", "rejected": f" no {i}"} for i in range(n)]
    rows[2]["chosen"] = ""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_row_names_file_line_and_field_and_skip_bad_runs(tiny, tmp_path):
    bad = _bad_rows(tmp_path / "bad.jsonl")
    out = tmp_path / "rm"
    result, printed = _invoke(["rm", "--model", str(tiny), "--data", str(bad), "--out", str(out), *STEPS])
    assert result.exit_code == 2, result.output
    assert f'{bad}, line 3, field "chosen": empty response' in printed
    assert "--skip-bad" in printed
    assert not (out / "metrics.jsonl").exists()
    printed = _ok(["rm", "--model", str(tiny), "--data", str(bad), "--out", str(out), "--skip-bad", *STEPS])
    assert "skipped 1 bad rows" in printed and f"{bad}, line 3" in printed
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


@pytest.mark.parametrize("command, extra, message", [
    ("sft", ["--data", "{tmp}/nope.jsonl"], "no such data file: {tmp}/nope.jsonl"),
    ("sft", ["--model", "{tmp}"], "--model {tmp} is not a Hugging Face model directory (no config.json)"),
    ("rm", ["--heads", "0"], "--heads must be at least 1, got 0"),
    ("dpo", ["--loss", "kto"], "--loss must be one of sigmoid, cdpo, ipo, simpo, got 'kto'"),
    ("dpo", ["--beta", "0"], "beta must be positive"),
    ("dpo", ["--ref", "{tmp}"], "--ref {tmp} is not a Hugging Face model directory"),
    ("sft", ["--lr", "-1"], "lr must be positive, got -1.0"),
    ("rm", ["--val-fraction", "1"], "--val-fraction must be in [0, 1)"),
    ("rm", ["--out", "{tmp}/taken"], "--out {tmp}/taken exists and is not an rlhfkit run directory"),
])
def test_bad_input_exits_2_before_training(tiny, tmp_path, command, extra, message):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    out = tmp_path / "run"
    base = {"--model": str(tiny), "--data": str(HH), "--out": str(out)}
    extra = [x.replace("{tmp}", str(tmp_path)) for x in extra]
    for flag, value in zip(extra[::2], extra[1::2]):
        base[flag] = value
    args = [command, *[x for kv in base.items() for x in kv], *STEPS]
    result, printed = _invoke(args)
    assert result.exit_code == 2, (args, result.output, result.exception)
    assert "error:" in printed and message.replace("{tmp}", str(tmp_path)) in printed, printed
    assert not (out / "metrics.jsonl").exists() and not (out / "model.safetensors").exists()


def test_tiny_rejects_a_bad_spec_and_missing_data(tmp_path):
    result, printed = _invoke(["tiny", "--data", str(HH), "--out", str(tmp_path / "t"), "--d-model", "30",
                               "--heads", "4"])
    assert result.exit_code == 2 and "d_model (30) must be divisible by n_heads (4)" in printed
    result, printed = _invoke(["tiny", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "t")])
    assert result.exit_code == 2 and f"no such data file: {tmp_path / 'none.jsonl'}" in printed
    assert not (tmp_path / "t" / "config.json").exists()
