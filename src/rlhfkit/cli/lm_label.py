"""``rlhf lm label``: sample pairs of completions and label them with a synthetic teacher or an AI judge.

    rlhf lm label --model runs/sft --data prompts.jsonl --teacher oracle --gold exact_match \\
        --pairs 1000 --out prefs.jsonl
    rlhf lm label --model runs/sft --data prompts.jsonl --teacher mistake --epsilon 0.2 --gold my.py:score \\
        --out noisy.jsonl
    rlhf lm label --model runs/sft --data prompts.jsonl --teacher judge --judge-model runs/judge \\
        --gold exact_match --pairs 500 --out judged.jsonl       # + judged.agreement.json

Two completions of each prompt are sampled from ``--model`` and compared: by a synthetic teacher
from the ``--gold`` reward functions, with B-Pref's knobs (Lee et al. 2021; the language twin of the
control oracle, :class:`rlhfkit.language.teacher.TextTeacher`), or by an AI judge (RLAIF, Bai et al.
2022; Lee et al. 2023; :class:`rlhfkit.language.judge.Judge`). ``--out`` receives preference JSONL
(``prompt``, ``chosen``, ``rejected``, ``tie``) for ``rlhf lm rm --data`` or ``rlhf label import``.
With a judge, its position bias — and with ``--gold`` its agreement with the gold labels — goes to
``<out>.agreement.json`` beside the output.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from rlhfkit.cli.lm import THREADS, _fail, app, console
from rlhfkit.cli.lm_online import _prompts, _rewards

Opt = typer.Option

SYNTHETIC = ("oracle", "stochastic", "mistake", "skip", "equal", "myopic")
"""The B-Pref teacher kinds (:data:`rlhfkit.feedback.teachers.TEACHERS`); ``judge`` is the AI judge."""


def agreement_path(out: Path) -> Path:
    """Where the judge's statistics go: ``prefs.jsonl`` → ``prefs.agreement.json``, beside the output."""
    return out.with_name(out.stem + ".agreement.json") if out.suffix else out.with_name(out.name + ".agreement.json")


@app.command("label")
def label_cmd(
    model: Path = Opt(..., help="The policy whose completions are compared (usually the SFT model)."),
    data: Path = Opt(..., help="Prompts: JSONL, JSON, Parquet or a `datasets` directory with a prompt column; other "
                               "columns reach the gold reward functions."),
    out: Path = Opt(..., help="Preference JSONL to write (prompt, chosen, rejected, tie)."),
    teacher: str = Opt("oracle", help="oracle|stochastic|mistake|skip|equal|myopic (synthetic, from --gold) or judge "
                                      "(an AI judge, --judge-model)."),
    gold: Optional[list[str]] = Opt(None, help="Gold reward function, repeatable (as `rlhf lm grpo --reward`): the "
                                               "synthetic teacher answers from their sum; with --teacher judge they "
                                               "only measure the judge's agreement."),
    pairs: int = Opt(100, help="Pairs to sample and label (prompts cycle in a seeded order)."),
    max_new_tokens: int = Opt(64, help="Longest completion in tokens."),
    temperature: float = Opt(1.0, help="Sampling temperature (> 0)."),
    max_length: int = Opt(1024, help="Longest prompt + completion in tokens (prompts cut from the left)."),
    prompt_column: str = Opt("prompt", help="The column holding the prompt."),
    teacher_beta: Optional[float] = Opt(None, help="Synthetic teacher: Boltzmann rationality β (stochastic; default "
                                                   "10 / --return-scale)."),
    epsilon: Optional[float] = Opt(None, help="Synthetic teacher: probability of a flipped answer (mistake; 0.1)."),
    skip_threshold: Optional[float] = Opt(None, help="Synthetic teacher: skip pairs whose gold rewards are both below "
                                                     "this (skip; default -return-scale)."),
    equal_threshold: Optional[float] = Opt(None, help="Synthetic teacher: a tie when the gold rewards differ by at "
                                                      "most this (equal; default 0.1 · --return-scale)."),
    return_scale: float = Opt(1.0, help="Synthetic teacher: typical absolute gold reward, which scales β and the "
                                        "skip/equal thresholds."),
    judge_model: Optional[Path] = Opt(None, help="--teacher judge: a causal-LM directory."),
    judge_principle: Optional[str] = Opt(None, help="--teacher judge: the written principle (default: correct, "
                                                    "helpful and honest)."),
    no_swap: bool = Opt(False, "--no-swap", help="--teacher judge: ask one order only (to measure the position bias "
                                                 "the swap removes)."),
    tie_margin: Optional[float] = Opt(None, help="--teacher judge: a tie when |P(a ≻ b) - ½| is below this (0.05)."),
    seed: int = Opt(0, help="Seed of the prompt order, the sampling and the synthetic teacher."),
    overwrite: bool = Opt(False, help="Replace an existing --out file."),
    skip_bad: bool = Opt(False, help="Skip bad prompt rows (and count them)."),
    threads: int = THREADS,
) -> None:
    """Sample two completions per prompt and label each pair with a synthetic teacher or an AI judge."""
    from rlhfkit.language.rewards import RewardError
    from rlhfkit.language.teacher import label_sampled_pairs, write_preferences
    from rlhfkit.language.train import set_threads

    judged = teacher == "judge"
    _check(model, out, teacher, gold, judged, overwrite, pairs, max_new_tokens, max_length, temperature,
           knobs={"--teacher-beta": teacher_beta, "--epsilon": epsilon, "--skip-threshold": skip_threshold,
                  "--equal-threshold": equal_threshold},
           judge_options={"--judge-model": judge_model, "--judge-principle": judge_principle,
                          "--no-swap": no_swap or None, "--tie-margin": tie_margin})
    prompts = _prompts(data, prompt_column, skip_bad)
    functions = _rewards(list(gold or []), None, prompts.columns, "--gold")
    set_threads(threads)
    labeller = _judge_teacher(judge_model, judge_principle, not no_swap, tie_margin, functions) if judged else \
        _synthetic_teacher(teacher, functions, seed, return_scale, teacher_beta, epsilon, skip_threshold,
                           equal_threshold)
    from rlhfkit.language.models import load_causal_lm, load_tokenizer

    tok, policy = load_tokenizer(model), load_causal_lm(model)
    try:
        labelled = label_sampled_pairs(policy, tok, prompts.examples, labeller, n_pairs=pairs,
                                       max_new_tokens=max_new_tokens, temperature=temperature, max_length=max_length,
                                       seed=seed)
    except RewardError as e:
        _fail(str(e))
    summary: dict[str, Any] = {"pairs": pairs, "kept": len(labelled.examples), "ties": labelled.ties,
                               "skipped": labelled.skipped, "identical": labelled.identical, "blank": labelled.blank}
    if functions and not judged:
        decided = [(c, r) for e, c, r in zip(labelled.examples, labelled.gold_chosen, labelled.gold_rejected)
                   if not e.tie]
        summary["gold_agreement"] = sum(c > r for c, r in decided) / len(decided) if decided else float("nan")
    report = None
    if judged:
        from rlhfkit.language.judge import judge_report

        report = judge_report(labeller.judged, swap=not no_swap, with_gold=bool(functions))
        summary.update({f"judge/{k}": v for k, v in report.items() if k not in ("pairs", "ties")})
    _print(summary, f"{teacher} labels")
    if not labelled.examples:
        _fail(f"no pair was kept ({labelled.skipped} skipped, {labelled.identical} identical, {labelled.blank} with an "
              f"empty completion); nothing written to {out}")
    write_preferences(out, labelled.examples)
    console.print(f"{len(labelled.examples)} preference rows ({labelled.ties} ties) → {escape(str(out))}")
    if report is not None:
        path = agreement_path(out)
        report = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in report.items()}  # JSON null
        path.write_text(json.dumps({"judge": str(judge_model), "principle": labeller.judge.principle,
                                    "swap": not no_swap, "tie_margin": labeller.judge.tie_margin,
                                    "gold": list(gold or []), **report}, indent=2))
        console.print(f"judge statistics → {escape(str(path))}")


def _check(model: Path, out: Path, teacher: str, gold: Optional[list[str]], judged: bool, overwrite: bool, pairs: int,
           max_new_tokens: int, max_length: int, temperature: float, *, knobs: dict[str, Any],
           judge_options: dict[str, Any]) -> None:
    """Every option check that needs no file read: exits 2 with the option's name."""
    if teacher not in (*SYNTHETIC, "judge"):
        _fail(f"--teacher must be one of {', '.join(SYNTHETIC)} or judge, got {teacher!r}")
    if not (model / "config.json").is_file():
        _fail(f"--model {model} is not a Hugging Face model directory (no config.json)")
    if judged:
        if judge_options["--judge-model"] is None:
            _fail("--teacher judge needs --judge-model DIR (a causal-LM directory)")
        if not (judge_options["--judge-model"] / "config.json").is_file():
            _fail(f"--judge-model {judge_options['--judge-model']} is not a Hugging Face model directory "
                  "(no config.json)")
        for name, value in knobs.items():
            if value is not None:
                _fail(f"{name} sets a synthetic teacher; --teacher judge does not use it")
    else:
        if not gold:
            _fail(f"--teacher {teacher} answers from gold rewards: give at least one --gold (or --teacher judge)")
        for name, value in judge_options.items():
            if value is not None:
                _fail(f"{name} is for --teacher judge, not --teacher {teacher}")
    if pairs < 1:
        _fail(f"--pairs must be at least 1, got {pairs}")
    if max_new_tokens < 1 or max_new_tokens >= max_length:
        _fail(f"--max-new-tokens must be at least 1 and below --max-length ({max_length}), got {max_new_tokens}")
    if not temperature > 0:
        _fail(f"--temperature must be > 0, got {temperature}")
    if out.is_dir():
        _fail(f"--out {out} is a directory; give a .jsonl file")
    for path in (out, agreement_path(out)) if judged else (out,):
        if path.exists() and not overwrite:
            _fail(f"{path} exists; pass --overwrite to replace it (labels are never overwritten by accident)")


def _synthetic_teacher(kind: str, gold: list, seed: int, return_scale: float, beta: Optional[float],
                       epsilon: Optional[float], skip_threshold: Optional[float],
                       equal_threshold: Optional[float]) -> Any:
    from rlhfkit.language.teacher import TextTeacher

    try:
        return TextTeacher(gold, kind, seed=seed, return_scale=return_scale, beta=beta, epsilon=epsilon,
                           skip_threshold=skip_threshold, equal_threshold=equal_threshold)
    except ValueError as e:
        names = {"beta": "--teacher-beta", "return_scale": "--return-scale", "equal_threshold": "--equal-threshold",
                 "epsilon": "--epsilon"}
        msg = re.sub(r"\b(?:teacher )?(beta|return_scale|equal_threshold|epsilon)\b", lambda m: names[m[1]], str(e))
        _fail(f"--teacher {kind}: {msg}")


def _judge_teacher(model_dir: Path, principle: Optional[str], swap: bool, tie_margin: Optional[float],
                   gold: list) -> Any:
    from rlhfkit.language.judge import DEFAULT_PRINCIPLE, JudgeTeacher, load_judge

    try:
        judge = load_judge(model_dir, principle=principle or DEFAULT_PRINCIPLE, swap=swap,
                           tie_margin=0.05 if tie_margin is None else tie_margin)
    except ValueError as e:
        _fail(f"--judge-model {model_dir}: {str(e).replace('tie_margin', '--tie-margin')}")
    return JudgeTeacher(judge, gold)


def _print(summary: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    table.add_column("")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(escape(k), f"{v:.3f}" if isinstance(v, float) else escape(str(v)))
    console.print(table)
