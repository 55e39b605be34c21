"""Benchmark: fine-grained (per-answer) rewards against one holistic reward in PPO (issue 14).

The task: three two-digit sums in one prompt, ``"Q: 12+34,56+17,81+19 A:"``, answered
``" 46,73,100"``. Fine-grained RLHF (Wu et al. 2023) scores each answer as a segment and puts its
score on the answer's last token; the holistic run gets the same total — the share of the three
answers right — once, on the last token. Both runs have the same PPO settings, seed, SFT start and
KL penalty; the held-out metric is the per-answer greedy accuracy on 500 problems.

1. ``prepare``: a char-level Llama (as ``grpo_arith.py``'s, 4 layers, hidden 128) SFT'd on 3,000
   problems at lr 1e-3, batch 64, evaluating every 25 steps on 300 choosing problems and keeping the
   checkpoint whose per-answer accuracy is nearest 25% (a start with room to learn).
2. ``race``: PPO with segment rewards and PPO with the holistic reward, ``--steps`` steps each,
   evaluated every ``--eval-every`` steps; the steps each needs to reach the holistic run's final
   accuracy, a table and ``finegrained.png``.

    .venv/bin/python bench/finegrained_arith.py all
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "finegrained_arith"
TARGET_START = 0.25
MAX_NEW = 14  # " 146,163,190" is 12 characters: room for EOS after the longest answer (the 2026-12-02 run had 12)


def problems() -> dict[str, list[tuple[tuple[int, int], ...]]]:
    import numpy as np

    rng = np.random.default_rng(1)
    xs = rng.integers(10, 100, size=(8800, 3, 2))
    triples = [tuple((int(a), int(b)) for a, b in row) for row in xs]
    return {"eval": triples[:500], "choose": triples[500:800], "sft": triples[800:3800], "train": triples[3800:]}


def prompt(triple) -> str:
    return "Q: " + ",".join(f"{a}+{b}" for a, b in triple) + " A:"


def answer(triple) -> str:
    return " " + ",".join(str(a + b) for a, b in triple)


def _answers(completion: str) -> list[tuple[str, int]]:
    """The comma-separated answers of a completion with the character offset where each ends."""
    out, pos = [], 0
    for part in completion.split(","):
        pos += len(part)
        out.append((part.strip(), pos))
        pos += 1
    return out


def holistic(prompts, completions, answer, **columns):
    """The share of the three sums answered right (an answer in the wrong place counts wrong)."""
    scores = []
    for c, a in zip(completions, answer):
        want, got = a.strip().split(","), [x for x, _ in _answers(c)]
        scores.append(sum(g == w for g, w in zip(got, want)) / len(want))
    return scores


def per_answer(prompts, completions, answer, **columns):
    """Segment reward: ``1/3`` on the last character of each right answer, 0 on a wrong one (so the scores
    of a completion sum to :func:`holistic`)."""
    out = []
    for c, a in zip(completions, answer):
        want = a.strip().split(",")
        segs = [(end, float(g == w) / len(want)) for (g, end), w in zip(_answers(c), want) if end > 0]
        out.append(segs)
    return out


def write_jsonl(path: Path, triples) -> None:
    path.write_text("".join(json.dumps({"prompt": prompt(t), "answer": answer(t)}) + "\n" for t in triples))


def prepare(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    from rlhfkit.language.data import SFTExample
    from rlhfkit.language.models import load_causal_lm, load_tokenizer, save_model
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.rewards import RewardFunction
    from rlhfkit.language.sft import train_sft
    from rlhfkit.language.tiny import TinySpec, build_tiny
    from rlhfkit.language.train import TrainArgs

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ps = problems()
    for name in ("eval", "choose", "train"):
        write_jsonl(out / f"{name}.jsonl", ps[name])
    spec = TinySpec(arch="llama", vocab_size=262, n_layers=4, d_model=128, n_heads=4, mlp_size=512,
                    max_positions=64, seed=0)
    base = build_tiny([prompt(t) + answer(t) for t in ps["sft"]], out / "base", spec) if not a.init else Path(a.init)
    tok, model = load_tokenizer(base), load_causal_lm(base)
    choose = load_prompts(out / "choose.jsonl").examples
    reward = [RewardFunction("holistic", holistic)]
    curve = []

    def nearest(m) -> dict[str, float]:
        acc = evaluate_greedy(m, tok, choose, reward, max_new_tokens=MAX_NEW)["eval/reward"]
        curve.append(acc)
        return {"val/accuracy": acc, "val/closeness": -abs(acc - TARGET_START)}

    train = [SFTExample(prompt=prompt(t), completion=answer(t)) for t in ps["sft"]]
    args = TrainArgs(lr=1e-3, max_steps=a.sft_steps, batch_size=64, schedule="constant", warmup_ratio=0.0,
                     val_fraction=0.0, eval_every=25, max_length=48, seed=0)
    t0 = time.perf_counter()
    fitted = train_sft(model, tok, train, [], args, evaluate=nearest, select=("val/closeness", "max"))
    save_model(fitted.model, tok, out / "sft")
    info = {"sft_steps_run": a.sft_steps, "init": a.init, "choose_accuracy": fitted.best.get("val/accuracy"),
            "sft_s": round(time.perf_counter() - t0, 1), "choose_curve": curve}
    (out / "sft.json").write_text(json.dumps(info))
    print(json.dumps({k: v for k, v in info.items() if k != "choose_curve"}))


def race(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    from instructgpt_arith import run_ppo

    from rlhfkit.language.models import load_tokenizer
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.ppo import PPOSettings
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.rewards import RewardFunction
    from rlhfkit.language.train import TrainArgs

    out = Path(a.out)
    if a.only == "report" and a.seeds:
        return _report_seeds(out, a)
    tok = load_tokenizer(out / "sft")
    train, held = load_prompts(out / "train.jsonl").examples, load_prompts(out / "eval.jsonl").examples
    score = RewardFunction("holistic", holistic)

    def evaluate(m) -> dict[str, float]:
        return {"eval/accuracy": evaluate_greedy(m, tok, held, [score], max_new_tokens=MAX_NEW)["eval/reward"]}

    args = TrainArgs(lr=a.lr, max_steps=a.steps, schedule="constant", warmup_ratio=0.0, max_length=48, seed=a.seed)
    settings = PPOSettings(prompts_per_step=a.prompts_per_step, num_generations=a.generations, ppo_epochs=1,
                           mini_batches=1, max_new_tokens=MAX_NEW, beta=a.beta, eval_every=a.eval_every)
    runs = {}
    for name in ("holistic", "fine-grained"):
        run_name = _run_name(name, a.seed)
        if a.only is not None and a.only != name:
            record = out / "runs" / run_name / "record.json"
            if record.is_file():
                runs[name] = json.loads(record.read_text())
            continue
        kw = {"segments": [RewardFunction("per_answer", per_answer)]} if name == "fine-grained" else {}
        runs[name] = run_ppo(run_name, out, [] if kw else [score], model_dir=out / "sft", train=train, held=held,
                             evaluate=evaluate, args=args, settings=settings, gold=[score] if kw else [], **kw)
        c = runs[name]["curve"]
        print(f"{name}: {c[0]['accuracy']:.3f} → {c[-1]['accuracy']:.3f} in {runs[name]['train_wall_s']:.0f} s, "
              f"{runs[name]['steps']} steps", flush=True)
    if len(runs) < 2:
        return
    final = runs["holistic"]["curve"][-1]["accuracy"]
    reach = {n: next((c["step"] for c in r["curve"] if c["accuracy"] >= final), None) for n, r in runs.items()}
    lines = [f"fine-grained vs holistic PPO, {a.steps} steps of {a.prompts_per_step} prompts × {a.generations}, β {a.beta}, lr {a.lr}, "
             f"seed {a.seed}; per-answer greedy accuracy on 500 held-out problems",
             *(f"{n:12s} " + "  ".join(f"{c['step']}:{c['accuracy']:.3f}" for c in r["curve"]) for n, r in runs.items()),
             *(f"{n:12s} reaches the holistic final accuracy {final:.3f} at step {reach[n]}" for n in runs)]
    ok = reach["fine-grained"] is not None and reach["fine-grained"] < reach["holistic"]
    lines.append(f"{'PASS' if ok else 'FAIL'}  fine-grained reaches the holistic run's final accuracy in fewer steps")
    print("\n".join(lines))
    (out / "race.txt").write_text("\n".join(lines) + "\n")
    _plot(runs, out / "finegrained.png")


def _run_name(arm: str, seed: int) -> str:
    """Run directory of one arm: ``holistic`` / ``fine-grained`` for seed 0 (the first measured runs), else
    ``holistic-s1`` ..."""
    return arm if seed == 0 else f"{arm}-s{seed}"


def _report_seeds(out: Path, a: argparse.Namespace) -> None:
    """The race over several seeds: each arm's mean curve over the seeds whose two runs are saved, and the
    step where the fine-grained mean first reaches the holistic mean's final accuracy."""
    import numpy as np

    seeds = [s for s in a.seeds if all((out / "runs" / _run_name(n, s) / "record.json").is_file()
                                       for n in ("holistic", "fine-grained"))]
    if not seeds:
        raise SystemExit(f"no seed of {a.seeds} has both runs saved under {out / 'runs'}")
    mean = {}
    for n in ("holistic", "fine-grained"):
        curves = [json.loads((out / "runs" / _run_name(n, s) / "record.json").read_text())["curve"] for s in seeds]
        steps = [c["step"] for c in curves[0]]
        acc = np.array([[c["accuracy"] for c in cv][:len(steps)] for cv in curves])
        mean[n] = {"curve": [{"step": st, "accuracy": float(v)} for st, v in zip(steps, acc.mean(0))],
                   "per_seed": acc}
    final = mean["holistic"]["curve"][-1]["accuracy"]
    reach = {n: next((c["step"] for c in r["curve"] if c["accuracy"] >= final), None) for n, r in mean.items()}
    lines = [f"fine-grained vs holistic PPO, mean over seeds {','.join(map(str, seeds))}; {a.steps} steps of "
             f"{a.prompts_per_step} prompts × {a.generations}, β {a.beta}, lr {a.lr}; per-answer greedy accuracy on "
             "500 held-out problems",
             *(f"{n:12s} " + "  ".join(f"{c['step']}:{c['accuracy']:.3f}" for c in r["curve"]) for n, r in mean.items()),
             *(f"{n:12s} seed {s}: " + "  ".join(f"{v:.3f}" for v in r["per_seed"][i]) for n, r in mean.items()
               for i, s in enumerate(seeds)),
             *(f"{n:12s} mean reaches the holistic mean's final accuracy {final:.3f} at step {reach[n]}" for n in mean)]
    ok = reach["fine-grained"] is not None and reach["fine-grained"] < reach["holistic"]
    lines.append(f"{'PASS' if ok else 'FAIL'}  fine-grained reaches the holistic run's final accuracy in fewer steps "
                 f"({len(seeds)} seeds)")
    print("\n".join(lines))
    (out / "race_seeds.txt").write_text("\n".join(lines) + "\n")
    _plot(mean, out / "finegrained_seeds.png")


def _plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in runs.items():
        ax.plot([c["step"] for c in r["curve"]], [100 * c["accuracy"] for c in r["curve"]], marker="o", ms=3,
                label=f"{name} reward")
    ax.set_xlabel("PPO step")
    ax.set_ylabel("per-answer held-out accuracy (%)")
    ax.set_title("Fine-grained vs holistic reward, three sums per prompt")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cmd", choices=["prepare", "race", "all"])
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sft-steps", type=int, default=3000, help="prepare: SFT steps (3,000 reach ~23%% per answer)")
    p.add_argument("--init", default=None, help="prepare: continue SFT from this model directory (default: a new model)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--only", choices=["holistic", "fine-grained", "report"], default=None,
                   help="run one arm (two processes side by side), or only report the saved runs")
    p.add_argument("--beta", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=None,
                   help="race --only report: the mean over these seeds' saved runs (e.g. 0,1,2)")
    a = p.parse_args(argv)
    for fn in {"prepare": [prepare], "race": [race], "all": [prepare, race]}[a.cmd]:
        fn(a)


if __name__ == "__main__":
    main()
