"""Benchmark: an AI judge as teacher (RLAIF) — agreement with gold labels and position bias (issue 14).

No pretrained judge can be downloaded here, so the judge is a small causal LM taught to judge:
``grpo_arith.py``'s SFT'd char-level addition model, fine-tuned on judge questions
``"Q: 37+58= A:|1: 95|2: 96|best: "`` answered ``"1"`` or ``"2"``. Its training pairs are two
sampled completions of the SFT policy on training prompts, labelled by the oracle teacher with the
digit-credit gold of ``instructgpt_arith.py``; on a gold tie the training answer is ``"1"`` — the
first response — so the judge learns the position bias that real LLM judges show (Wang et al. 2023),
which the order swap must cancel. The judge itself is :class:`rlhfkit.language.judge.Judge`: the
preference is read off the probabilities of the answer tokens, both orders asked.

Measured on 500 held-out pairs (sampled the same way on held-out prompts, never trained on):
agreement with the gold labels (on pairs the gold does not tie; and Cohen's κ over LEFT/RIGHT/TIE on
all), the judge's position bias (P[first wins] − ½, from both orders), and the consistency of its
decisions when the two responses trade places, with and without the swap.

    .venv/bin/python bench/judge_arith.py all
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from grpo_arith import OUT as ARITH
from instructgpt_arith import digit_credit

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "judge_arith"
TEMPLATE = "{principle}{prompt}|1:{first}|2:{second}|best:"


def _pairs(model, tok, prompts, n: int, seed: int):
    from rlhfkit.language.rewards import RewardFunction
    from rlhfkit.language.teacher import TextTeacher, label_sampled_pairs

    teacher = TextTeacher([RewardFunction("digit_credit", digit_credit)], "oracle", seed=seed)
    return label_sampled_pairs(model, tok, prompts, teacher, n_pairs=n, max_new_tokens=5, seed=seed)


def prepare(a: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from rlhfkit.language.data import SFTExample
    from rlhfkit.language.models import load_causal_lm, load_tokenizer, save_model
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.sft import train_sft
    from rlhfkit.language.train import TrainArgs

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tok, model = load_tokenizer(ARITH / "sft"), load_causal_lm(ARITH / "sft")
    t0 = time.perf_counter()
    labelled = _pairs(model, tok, load_prompts(ARITH / "train.jsonl").examples, a.train_pairs, seed=1)
    rng = np.random.default_rng(0)
    train = []
    for e in labelled.examples:
        flip = bool(rng.integers(2))
        first, second = (e.rejected, e.chosen) if flip else (e.chosen, e.rejected)
        answer = "1" if e.tie else ("2" if flip else "1")  # on a tie: the first response (a position bias)
        train.append(SFTExample(prompt=TEMPLATE.format(principle="", prompt=e.prompt, first=first, second=second) + " ",
                                completion=answer))
    sample_s = time.perf_counter() - t0
    args = TrainArgs(lr=a.lr, max_steps=a.steps, batch_size=64, schedule="cosine", warmup_ratio=0.05,
                     val_fraction=0.0, max_length=64, seed=0)
    fitted = train_sft(model, tok, train, [], args)
    save_model(fitted.model, tok, out / "judge")
    info = {"train_pairs": len(train), "ties": labelled.ties, "sample_s": round(sample_s, 1),
            "sft_s": round(fitted.wall_s, 1), "steps": a.steps}
    (out / "judge.json").write_text(json.dumps(info))
    print(json.dumps(info))


def evaluate(a: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from rlhfkit.feedback.agreement import cohen_kappa
    from rlhfkit.feedback.records import Outcome
    from rlhfkit.language.judge import Judge
    from rlhfkit.language.models import load_causal_lm, load_tokenizer
    from rlhfkit.language.prompts import load_prompts

    out = Path(a.out)
    tok, policy = load_tokenizer(ARITH / "sft"), load_causal_lm(ARITH / "sft")
    held = _pairs(policy, tok, load_prompts(ARITH / "eval.jsonl").examples, a.eval_pairs + 60, seed=2)
    # gold: the oracle's label of (chosen, rejected) in that order: LEFT, or TIE
    ex = held.examples[:a.eval_pairs]
    rng = np.random.default_rng(3)
    flip = rng.integers(2, size=len(ex)).astype(bool)  # show the gold winner second half of the time
    a_txt = [e.rejected if f else e.chosen for e, f in zip(ex, flip)]
    b_txt = [e.chosen if f else e.rejected for e, f in zip(ex, flip)]
    gold = [Outcome.TIE if e.tie else (Outcome.RIGHT if f else Outcome.LEFT) for e, f in zip(ex, flip)]
    prompts = [e.prompt for e in ex]
    judge_model = load_causal_lm(out / "judge")
    lines = [f"AI judge on {len(ex)} held-out pairs of sampled completions (gold: digit credit; {sum(e.tie for e in ex)} gold ties); "
             f"judge: {out / 'judge'} ({json.loads((out / 'judge.json').read_text())})"]
    report = {}
    for swap in (False, True):
        judge = Judge(judge_model, tok, principle="", template=TEMPLATE, swap=swap, tie_margin=a.tie_margin)
        ab = judge.judge(prompts, a_txt, b_txt)
        ba = judge.judge(prompts, b_txt, a_txt)
        got = [j.outcome for j in ab]
        decided = [i for i, g in enumerate(gold) if g != Outcome.TIE]
        agree = float(np.mean([got[i] == gold[i] for i in decided]))
        mirror = {Outcome.LEFT: Outcome.RIGHT, Outcome.RIGHT: Outcome.LEFT, Outcome.TIE: Outcome.TIE}
        consistent = float(np.mean([mirror[x.outcome] == y.outcome for x, y in zip(ab, ba)]))
        first_wins = [o == Outcome.LEFT for o in (j.outcome for j in ab + ba) if o != Outcome.TIE]
        kappa = cohen_kappa([o.name for o in got], [o.name for o in gold])
        # the model's own bias: P[the response shown first wins] - ½, each pair asked in both orders
        bias = float(np.mean([0.5 * (x.p_a_first + y.p_a_first) for x, y in zip(ab, ba)])) - 0.5
        report["swap" if swap else "one order"] = {
            "agreement_on_gold_decided": agree, "cohen_kappa": kappa, "judge_ties": sum(o == Outcome.TIE for o in got),
            "order_consistency": consistent, "p_first_wins": float(np.mean(first_wins)) if first_wins else None,
            "position_bias": bias}
        lines.append(f"{'both orders' if swap else 'one order  '}: agreement with gold {100 * agree:.1f}% of "
                     f"{len(decided)} decided pairs, κ {kappa:.3f} (3 classes, all pairs), judge ties "
                     f"{report['swap' if swap else 'one order']['judge_ties']}; decisions unchanged when the responses "
                     f"trade places {100 * consistent:.1f}%, P[first shown wins] {np.mean(first_wins):.3f}; the "
                     f"model's position bias P[first]−½ = {bias:+.3f}")
    print("\n".join(lines))
    (out / "judge_eval.json").write_text(json.dumps(report, indent=1))
    (out / "judge.txt").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cmd", choices=["prepare", "eval", "all"])
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-pairs", type=int, default=6000)
    p.add_argument("--eval-pairs", type=int, default=500)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--tie-margin", type=float, default=0.1)
    a = p.parse_args(argv)
    for fn in {"prepare": [prepare], "eval": [evaluate], "all": [prepare, evaluate]}[a.cmd]:
        fn(a)


if __name__ == "__main__":
    main()
