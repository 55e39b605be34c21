"""Held-out preference accuracy on real human data: HH-RLHF harmless-base, tiny models, CPU.

The 1,000-pair sample in ../shared/data/hh-rlhf (997 usable: 3 rows have an empty chosen
response) is cut into 5 fixed folds (seed 0). For each fold a tokenizer and a tiny Llama
(4 layers × 256, byte-level BPE 8k — the issue's TRL setup) are built on the other four folds,
a pipeline is trained there (10% of them held out to pick the best weights), and the fold is
scored: each of the 997 pairs is scored exactly once by a model that never saw it. Printed per
fold and pooled, next to the "the shorter response is chosen" heuristic on the same pairs.

    .venv/bin/python bench/lm_hh.py rm              # reward model from scratch
    .venv/bin/python bench/lm_hh.py sft-rm          # SFT on chosen, then the reward model
    .venv/bin/python bench/lm_hh.py dpo             # SFT on chosen, then DPO (implicit-reward accuracy)
    .venv/bin/python bench/lm_hh.py rm --folds 1    # only fold 0 (the fixed 80/20 split)
    .venv/bin/python bench/lm_hh.py rm --members 3 --pooling last,mean   # an ensemble of 3 seeded RMs
    .venv/bin/python bench/lm_hh.py combine a.json b.json   # ensemble of runs saved with --scores

Accuracy: fraction of held-out pairs with r(chosen) > r(rejected) (reward model) or with
β·log π/π_ref(chosen) > β·log π/π_ref(rejected) (DPO).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rlhfkit.language.data import SFTExample, load_data, sft_from_preferences, train_val_split
from rlhfkit.language.dpo import DPOSettings, reference_logprobs, train_dpo
from rlhfkit.language.logprobs import encode
from rlhfkit.language.models import load_causal_lm, load_reward_model, load_tokenizer, save_model
from rlhfkit.language.reward import encode_preferences, rewards_of, train_reward_model
from rlhfkit.language.sft import train_sft
from rlhfkit.language.tiny import TinySpec, build_tiny, texts_of
from rlhfkit.language.train import TrainArgs, set_threads

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless_base_sample.jsonl"


def folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` fixed disjoint folds of ``range(n)`` (a seeded permutation cut in ``k`` parts)."""
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def shorter_is_chosen(tok, examples) -> float:
    """Accuracy of "the response with fewer tokens is chosen" (equal length: half a point)."""
    score = 0.0
    for ex in examples:
        c, r = len(tok(ex.chosen)["input_ids"]), len(tok(ex.rejected)["input_ids"])
        score += 1.0 if c < r else 0.5 if c == r else 0.0
    return score / len(examples)


def reward_margins(model, tok, test, max_length: int) -> list[float]:
    """``r(chosen) - r(rejected)`` of each test pair (mean over heads)."""
    items = encode_preferences(tok, test, max_length)
    with torch.no_grad():
        r = rewards_of(model, [it.responses for it in items], tok.pad_token_id).mean(-1)
    return (r[0::2] - r[1::2]).tolist()


def dpo_margins(model, ref, tok, test, beta: float, max_length: int) -> list[float]:
    """``β log π/π_ref(chosen) - β log π/π_ref(rejected)`` of each test pair."""
    pairs = [(encode(tok, ex.prompt, ex.chosen, max_length=max_length),
              encode(tok, ex.prompt, ex.rejected, max_length=max_length)) for ex in test]
    lp_ref = reference_logprobs(ref, pairs, tok.pad_token_id)
    lp = reference_logprobs(model, pairs, tok.pad_token_id)
    return (beta * ((lp[:, 0] - lp_ref[:, 0]) - (lp[:, 1] - lp_ref[:, 1]))).tolist()


def all_text(examples: list) -> list[SFTExample]:
    """Every dialogue of the pairs, chosen and rejected, as plain text (language-model pretraining)."""
    return [SFTExample(prompt="", completion=ex.prompt + r) for ex in examples for r in (ex.chosen, ex.rejected)]


def run_member(what: str, train_all: list, test: list, a: argparse.Namespace, seed: int, pooling: str,
               work: Path) -> dict:
    """Train one model of ``what`` (seed ``seed``: its initialisation and its 90/10 train/validation cut
    of ``train_all``) and return its margins on ``test`` and its times."""
    build_tiny(texts_of(train_all), work / "tiny", TinySpec(n_layers=a.layers, d_model=a.d_model, seed=seed))
    tok = load_tokenizer(work / "tiny")
    train, val = train_val_split(train_all, 0.1, seed)
    out: dict = {}
    base = work / "tiny"
    if what in ("sft-rm", "dpo"):
        sft_args = TrainArgs(lr=a.sft_lr, epochs=a.sft_epochs, batch_size=16, max_length=a.max_length, seed=seed)
        demos = sft_from_preferences if a.sft_data == "chosen" else all_text
        fitted = train_sft(load_causal_lm(base), tok, demos(train), demos(val), sft_args)
        save_model(fitted.model, tok, work / "sft")
        base = work / "sft"
        out["sft_s"] = fitted.wall_s + fitted.eval_s
    args = TrainArgs(lr=a.lr, epochs=a.epochs, batch_size=a.batch_size, max_length=a.max_length, seed=seed,
                     eval_every=a.eval_every, weight_decay=a.weight_decay, warmup_ratio=0.1)
    if what in ("rm", "sft-rm"):
        rm = load_reward_model(base, num_heads=a.heads, pad_token_id=tok.pad_token_id, pooling=pooling)
        fitted = train_reward_model(rm, tok, train, val, args)
        fitted.model.eval()
        out["margins"] = reward_margins(fitted.model, tok, test, a.max_length)
    else:
        settings = DPOSettings(beta=a.beta, loss_type=a.loss)
        fitted = train_dpo(load_causal_lm(base), tok, train, val, args, settings)
        out["margins"] = dpo_margins(fitted.model, load_causal_lm(base), tok, test, a.beta, a.max_length)
    out.update(best_step=fitted.best.get("step"), train_s=fitted.wall_s, tokens_per_s=fitted.tokens_per_s)
    return out


def run_fold(what: str, train_all: list, test: list, a: argparse.Namespace, work: Path) -> dict:
    """Train ``a.members`` models of ``what`` on ``train_all`` and score ``test`` with their ensemble
    (the mean of each member's margins divided by their standard deviation on ``test``)."""
    t0 = time.perf_counter()
    poolings = a.pooling.split(",")
    members = [run_member(what, train_all, test, a, a.seed + j, poolings[j % len(poolings)], work / f"m{j}")
               for j in range(a.members)]
    margins = [np.asarray(m["margins"]) for m in members]
    ensemble = sum(m / (m.std() or 1.0) for m in margins) / len(margins)
    tok = load_tokenizer(work / "m0" / "tiny")
    return {"accuracy": float(np.mean(ensemble > 0)), "members": [float(np.mean(m > 0)) for m in margins],
            "heuristic": shorter_is_chosen(tok, test), "margins": ensemble.tolist(),
            "best_step": [m["best_step"] for m in members], "train_s": sum(m["train_s"] for m in members),
            "tokens_per_s": float(np.mean([m["tokens_per_s"] for m in members])),
            "total_s": time.perf_counter() - t0}


def combine(paths: list[Path]) -> None:
    """Accuracy of each ``--scores`` file and of their ensemble (margins divided by their standard
    deviation within each fold, then averaged) — the ensemble of models trained in separate runs."""
    parts = folds(997, 5)
    margins = {}
    for p in paths:
        m = json.loads(p.read_text())["margins"]
        margins[p.stem] = np.array([m[str(i)] for i in range(997)])
        print(f"{p.stem}: accuracy {np.mean(margins[p.stem] > 0):.4f}")
    z = np.zeros(997)
    for m in margins.values():
        for idx in parts:
            z[idx] += m[idx] / (m[idx].std() or 1.0)
    print(f"ensemble of {len(paths)}: accuracy {np.mean(z > 0):.4f} over 997 pairs")


def main() -> None:
    """Run the folds and print per-fold and pooled accuracy."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["rm", "sft-rm", "dpo", "combine"],
                    help="combine: score the ensemble of --scores files given as FILES")
    ap.add_argument("files", nargs="*", type=Path, help="combine: the --scores files")
    ap.add_argument("--folds", type=int, default=5, help="folds to run (of 5); 1 = fold 0 only")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=15)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--heads", type=int, default=1, help="reward-model ensemble heads")
    ap.add_argument("--pooling", default="last",
                    help="reward-model pooling, last, mean or sum; a comma list alternates over the members")
    ap.add_argument("--members", type=int, default=1,
                    help="an ensemble of this many independently trained models (seeds seed, seed+1, ...)")
    ap.add_argument("--sft-lr", type=float, default=1e-3)
    ap.add_argument("--sft-epochs", type=float, default=3.0)
    ap.add_argument("--sft-data", default="chosen", choices=["chosen", "all-text"],
                    help="SFT on the chosen responses, or language modelling on every dialogue (sft-rm)")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--loss", default="sigmoid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", type=Path, default=None, help="append the JSON results here")
    ap.add_argument("--scores", type=Path, default=None,
                    help="write each held-out pair's margin here (JSON: pair index -> margin), for ensembles")
    a = ap.parse_args()
    if a.what == "combine":
        return combine(a.files)
    set_threads()
    examples = load_data(DATA, skip_bad=True).examples
    parts = folds(len(examples), 5)
    rows, correct, heur, n = [], 0.0, 0.0, 0
    margins: dict[int, float] = {}
    print(f"{a.what}: {len(examples)} HH-RLHF pairs, 5 folds; settings {vars(a)}")
    for k in range(a.folds):
        test_idx = set(parts[k].tolist())
        train_all = [ex for i, ex in enumerate(examples) if i not in test_idx]
        test = [examples[i] for i in sorted(test_idx)]
        with tempfile.TemporaryDirectory() as tmp:
            r = run_fold(a.what, train_all, test, a, Path(tmp))
        rows.append(r)
        margins.update(zip(sorted(test_idx), r.pop("margins")))
        correct, heur, n = correct + r["accuracy"] * len(test), heur + r["heuristic"] * len(test), n + len(test)
        each = f"  members {' '.join(f'{x:.3f}' for x in r['members'])}" if a.members > 1 else ""
        print(f"fold {k}: accuracy {r['accuracy']:.4f}{each}  shorter-is-chosen {r['heuristic']:.4f}  "
              f"best step {r['best_step']}  train {r['train_s']:.0f} s  {r['tokens_per_s']:.0f} tok/s  "
              f"fold total {r['total_s']:.0f} s", flush=True)
    summary = {"what": a.what, "folds": a.folds, "pairs": n, "accuracy": correct / n, "heuristic": heur / n,
               "mean_fold_total_s": float(np.mean([r["total_s"] for r in rows])), "settings": vars(a) | {"log": None}}
    print(f"pooled over {n} held-out pairs: accuracy {correct / n:.4f} (shorter-is-chosen {heur / n:.4f}); "
          f"mean time per fold {summary['mean_fold_total_s']:.0f} s")
    if a.scores:
        a.scores.write_text(json.dumps({"settings": vars(a) | {"log": None, "scores": None}, "margins": margins},
                                       default=str))
    if a.log:
        with a.log.open("a") as f:
            f.write(json.dumps(summary, default=str) + "\n")


if __name__ == "__main__":
    main()
