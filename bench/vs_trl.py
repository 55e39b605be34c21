"""Benchmark: rlhfkit's reward-model and DPO trainers against TRL 1.16's, same model, same batches.

1. Data: the HH-RLHF harmless sample (``load_data(..., skip_bad=True)``: 3 rows have an empty
   chosen response), split into prompt / chosen / rejected, kept only where prompt + completion
   + EOS of both responses fits ``--max-length`` under the tiny tokenizer and tokenises the same
   both ways (TRL: ``prompt + completion + eos`` as one string; rlhfkit: prompt and completion
   apart, EOS id appended). So TRL's reward trainer drops nothing, neither side truncates, and
   both see identical token sequences. The first ``steps × batch`` such pairs, in file order,
   are written to ``train.jsonl``: exactly one epoch, no partial batch.
2. Model: a tiny Llama with a byte-level BPE trained on the data (``rlhfkit.language.tiny``;
   4 layers × 256, 8k vocabulary; ``--small``: 2 × 64). For the reward model ONE
   sequence-classification checkpoint (``load_reward_model`` → ``save_pretrained``) is loaded
   by both libraries, so the score head is identical.
3. Runs, one at a time, each in a fresh process with the same torch thread count
   (``--threads``): rlhfkit (this venv, ``train_reward_model`` / ``train_dpo``; by default each
   pair's prompt prefix runs once, and once more with ``share_prefix=False`` to show what that
   gives) and TRL
   (``bench/.venv-trl``, ``bench/peers/trl_run.py``) with gradient checkpointing ON (TRL's
   default) and OFF, and for DPO also OFF with ``precompute_ref_log_probs=True``. Both: fp32,
   AdamW (TRL: fused) with the same lr, linear decay to 0 without warm-up, clipping at 1.0,
   no weight decay, the same ``max_steps``, and batches in file order (TRL: sequential sampler;
   rlhfkit: ``TrainArgs(shuffle=False)``).
4. Table: initial and final loss, steps, training-loop wall seconds, pair tokens per second
   and ours/TRL; PASS/FAIL for the initial losses (to 1e-5; reward: same head, DPO: ln 2),
   the token counts and the loss curves.

    bash bench/peers/setup_trl.sh          # bench/.venv-trl
    .venv/bin/python bench/vs_trl.py       # full size, 30 steps; log in bench/results/vs_trl.txt
    .venv/bin/python bench/vs_trl.py --small --steps 5     # plumbing check (log in bench/out/)

Timings compare only from a quiet machine; with another CPU job running they mean little.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRL_PY = HERE / ".venv-trl" / "bin" / "python"
TRL_RUN = HERE / "peers" / "trl_run.py"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless_base_sample.jsonl"
LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------
# The rlhfkit side: run in a fresh process (``--worker ours``), prints one JSON line
# ----------------------------------------------------------------------------------------------


def worker_ours(a: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    from rlhfkit.language.data import load_data
    from rlhfkit.language.dpo import DPOSettings, train_dpo
    from rlhfkit.language.models import load_causal_lm, load_reward_model, load_tokenizer
    from rlhfkit.language.reward import train_reward_model
    from rlhfkit.language.train import TrainArgs

    items = load_data(a.data, kind="preference").examples  # explicit prompt: file order
    # shuffle=False: batches in file order, as TRL's sequential sampler

    args = TrainArgs(lr=a.lr, max_steps=a.steps, batch_size=a.batch_size, max_length=a.max_length,
                     warmup_ratio=0.0, schedule="linear", weight_decay=0.0, max_grad_norm=1.0, val_fraction=0.0,
                     shuffle=False, seed=a.seed, gradient_checkpointing=a.gradient_checkpointing,
                     share_prefix=not a.no_share_prefix)
    tok = load_tokenizer(a.model)
    t0 = time.perf_counter()
    if a.trainer == "reward":
        model = load_reward_model(a.model)  # the saved checkpoint: the same head TRL loads
        t0 = time.perf_counter()
        fitted = train_reward_model(model, tok, items, [], args)
    else:
        model = load_causal_lm(a.model)
        t0 = time.perf_counter()
        fitted = train_dpo(model, tok, items, [], args, DPOSettings(beta=a.beta))  # reference = initial policy
    call_s = time.perf_counter() - t0
    losses = [h["train/loss"] for h in fitted.history if "train/loss" in h]
    return {"trainer": a.trainer, "initial_loss": losses[0], "losses": losses, "steps": fitted.steps,
            "wall_s": fitted.wall_s, "call_s": call_s, "tokens": fitted.tokens, "tokens_per_s": fitted.tokens_per_s,
            "gradient_checkpointing": a.gradient_checkpointing, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------------
# Preparation (this process)
# ----------------------------------------------------------------------------------------------


def prepare(a: argparse.Namespace, work: Path, say) -> dict:
    import torch

    from rlhfkit.language.data import load_data
    from rlhfkit.language.logprobs import encode
    from rlhfkit.language.models import load_reward_model, load_tokenizer, quiet_transformers
    from rlhfkit.language.tiny import TinySpec, build_tiny, texts_of

    quiet_transformers()
    loaded = load_data(a.data, kind="preference", skip_bad=True)
    examples = loaded.examples
    spec = (TinySpec(arch="llama", n_layers=2, d_model=64, n_heads=4, vocab_size=a.vocab, seed=a.seed) if a.small
            else TinySpec(arch="llama", n_layers=4, d_model=256, n_heads=4, vocab_size=a.vocab, seed=a.seed))
    model_dir = build_tiny(texts_of(examples), work / "tiny", spec)
    tok = load_tokenizer(model_dir)
    info = json.loads((model_dir / "tiny.json").read_text())

    torch.manual_seed(a.seed)
    rm_dir = work / "rm_init"
    load_reward_model(model_dir, pad_token_id=tok.pad_token_id).save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)

    eos = tok.eos_token
    kept, too_long, differ = [], 0, 0
    for ex in examples:
        if not all(isinstance(t, str) for t in (ex.prompt, ex.chosen, ex.rejected)):
            continue
        ok = True
        for completion in (ex.chosen, ex.rejected):
            trl_ids = tok(ex.prompt + completion + eos)["input_ids"]  # TRL: one string, EOS as text
            trl_prompt = tok(ex.prompt)["input_ids"]
            if len(trl_ids) > a.max_length:
                too_long += 1
                ok = False
                break
            ours = encode(tok, ex.prompt, completion, max_length=a.max_length)
            if list(ours.input_ids) != trl_ids or trl_ids[:len(trl_prompt)] != trl_prompt \
                    or ours.n_prompt != len(trl_prompt):
                differ += 1
                ok = False
                break
        if ok:
            kept.append(ex)
    need = a.steps * a.batch_size
    if len(kept) < need:
        raise SystemExit(f"only {len(kept)} pairs fit max_length {a.max_length}; {a.steps} steps × batch "
                         f"{a.batch_size} need {need}: lower --steps/--batch-size or raise --max-length")
    train = kept[:need]
    path = work / "train.jsonl"
    with path.open("w") as f:
        for ex in train:
            f.write(json.dumps({"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected}) + "\n")
    lengths = sorted(len(tok(ex.prompt + c + eos)["input_ids"]) for ex in train for c in (ex.chosen, ex.rejected))
    say(f"data: {a.data} — {len(examples)} pairs loaded ({loaded.skipped} bad rows skipped), {too_long} longer "
        f"than {a.max_length} tokens, {differ} tokenised differently by the two libraries; {len(kept)} kept, "
        f"the first {need} used in file order ({a.steps} steps × {a.batch_size})")
    say(f"       sequence lengths (prompt+completion+EOS): median {lengths[len(lengths) // 2]}, "
        f"max {lengths[-1]}, {sum(lengths)} tokens in the epoch")
    say(f"model: Llama {spec.n_layers} layers × {spec.d_model}, {spec.n_heads} heads, vocabulary {spec.vocab_size}, "
        f"{info['parameters']:,} parameters (causal LM); reward checkpoint {rm_dir} (fresh head, seed {a.seed})")
    return {"model": model_dir, "rm": rm_dir, "data": path}


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


def _last_json(proc: subprocess.CompletedProcess, what: str, log: Path) -> dict:
    log.write_text(f"$ {' '.join(map(str, proc.args))}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}); see {log}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_ours(a, trainer: str, paths: dict, work: Path, gc: bool = False, share: bool = True) -> dict:
    model = paths["rm"] if trainer == "reward" else paths["model"]
    lr = a.lr_rm if trainer == "reward" else a.lr_dpo
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "ours", "--trainer", trainer,
           "--model", str(model), "--data", str(paths["data"]), "--steps", str(a.steps),
           "--batch-size", str(a.batch_size), "--max-length", str(a.max_length), "--lr", str(lr),
           "--beta", str(a.beta), "--seed", str(a.seed), "--threads", str(a.threads)]
    if gc:
        cmd.append("--gradient-checkpointing")
    if not share:
        cmd.append("--no-share-prefix")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=_env(a.threads), cwd=ROOT)
    tag = f"{'-gc' if gc else ''}{'' if share else '-unshared'}"
    return _last_json(proc, f"rlhfkit {trainer}", work / f"ours-{trainer}{tag}.log")


def run_trl(a, trainer: str, paths: dict, work: Path, gc: bool, precompute: bool = False) -> dict:
    model = paths["rm"] if trainer == "reward" else paths["model"]
    lr = a.lr_rm if trainer == "reward" else a.lr_dpo
    tag = f"trl-{trainer}-gc{'on' if gc else 'off'}{'-preref' if precompute else ''}"
    cmd = [str(TRL_PY), str(TRL_RUN), "--trainer", trainer, "--model", str(model), "--data", str(paths["data"]),
           "--steps", str(a.steps), "--batch-size", str(a.batch_size), "--max-length", str(a.max_length),
           "--lr", str(lr), "--beta", str(a.beta), "--seed", str(a.seed), "--out", str(work / tag),
           "--torch-threads", str(a.threads), "--lr-scheduler", "linear", "--max-grad-norm", "1.0",
           "--gradient-checkpointing" if gc else "--no-gradient-checkpointing"]
    if precompute:
        cmd.append("--precompute-ref-log-probs")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=_env(a.threads), cwd=ROOT)
    return _last_json(proc, f"TRL {trainer}", work / f"{tag}.log")


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--small", action="store_true", help="2 layers × 64 instead of 4 × 256 (a quick check)")
    ap.add_argument("--vocab", type=int, default=8000, help="BPE vocabulary size")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per optimiser step")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lr-rm", type=float, default=1e-4)
    ap.add_argument("--lr-dpo", type=float, default=5e-5)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads on both sides (also OMP/MKL)")
    ap.add_argument("--trainers", default="reward,dpo")
    ap.add_argument("--ours-gc", action="store_true", help="also run rlhfkit with gradient checkpointing")
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default bench/out/vs_trl[-small])")
    ap.add_argument("--log", type=Path, default=None,
                    help="results log (default bench/results/vs_trl.txt; with --small bench/out/vs_trl-small.txt)")
    # worker mode (internal)
    ap.add_argument("--worker", choices=["ours"], help=argparse.SUPPRESS)
    ap.add_argument("--trainer", choices=["reward", "dpo"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-share-prefix", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker_ours(a)))
        return

    if not TRL_PY.exists():
        raise SystemExit(f"{TRL_PY} missing: run bash bench/peers/setup_trl.sh first")
    os.environ.update(_env(a.threads))
    import torch

    torch.set_num_threads(a.threads)
    work = a.work or HERE / "out" / ("vs_trl-small" if a.small else "vs_trl")
    work.mkdir(parents=True, exist_ok=True)
    log_path = a.log or (HERE / "out" / "vs_trl-small.txt" if a.small else HERE / "results" / "vs_trl.txt")
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    probe = "import trl, transformers, torch; print(trl.__version__, transformers.__version__, torch.__version__)"
    trl_versions = subprocess.run([str(TRL_PY), "-c", probe], check=False, capture_output=True, text=True,
                                  env=_env(a.threads)).stdout.split()
    import transformers

    say(f"rlhfkit vs TRL — {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()} {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    say(f"rlhfkit: torch {torch.__version__}, transformers {transformers.__version__}; TRL {trl_versions[0]}: "
        f"transformers {trl_versions[1]}, torch {trl_versions[2]}; {a.threads} torch thread(s) on both sides, fp32")
    say(f"settings: {a.steps} steps, batch {a.batch_size} pairs, max_length {a.max_length}, lr {a.lr_rm} (reward) / "
        f"{a.lr_dpo} (DPO, β {a.beta}), linear decay without warm-up, clip 1.0, weight decay 0, seed {a.seed}")
    paths = prepare(a, work, say)

    rows: list[tuple[str, str, dict]] = []
    for trainer in [t.strip() for t in a.trainers.split(",") if t.strip()]:
        print(f"... {trainer}: rlhfkit", flush=True)
        rows.append((trainer, "rlhfkit", run_ours(a, trainer, paths, work)))
        print(f"... {trainer}: rlhfkit, each sequence alone (no shared prompt prefix)", flush=True)
        rows.append((trainer, "rlhfkit, no prefix sharing", run_ours(a, trainer, paths, work, share=False)))
        if a.ours_gc:
            print(f"... {trainer}: rlhfkit, gradient checkpointing", flush=True)
            rows.append((trainer, "rlhfkit, grad ckpt", run_ours(a, trainer, paths, work, gc=True)))
        for gc in (True, False):
            print(f"... {trainer}: TRL, gradient checkpointing {'on' if gc else 'off'}", flush=True)
            rows.append((trainer, f"TRL, grad ckpt {'on (default)' if gc else 'off'}",
                         run_trl(a, trainer, paths, work, gc)))
        if trainer == "dpo":
            print("... dpo: TRL, gradient checkpointing off, precomputed reference", flush=True)
            rows.append((trainer, "TRL, ckpt off, precomp ref", run_trl(a, trainer, paths, work, False, True)))

    say()
    head = (f"{'trainer':<7} {'library':<28} {'initial loss':>12} {'final loss':>10} {'steps':>5} {'train s':>8} "
            f"{'tokens/s':>9} {'ours/TRL':>8} {'max |Δloss|':>11}")
    say(head)
    say("-" * len(head))
    ok = True
    notes: list[str] = []
    for trainer in dict.fromkeys(t for t, _, _ in rows):
        mine = [(lib, r) for t, lib, r in rows if t == trainer]
        ours = next(r for lib, r in mine if lib == "rlhfkit")
        for lib, r in mine:
            is_trl = lib.startswith("TRL")
            ratio = f"{ours['tokens_per_s'] / r['tokens_per_s']:8.2f}" if is_trl and r["tokens_per_s"] else f"{'':>8}"
            n = min(len(ours["losses"]), len(r["losses"]))
            dev = f"{max(abs(x - y) for x, y in zip(ours['losses'][:n], r['losses'][:n])):11.2e}" if is_trl else ""
            say(f"{trainer:<7} {lib:<28} {r['initial_loss']:12.7f} {r['losses'][-1]:10.5f} {r['steps']:5d} "
                f"{r['wall_s']:8.2f} {r['tokens_per_s']:9.0f} {ratio} {dev:>11}")
        say()
        # checks
        expect = ours["initial_loss"] if trainer == "reward" else LN2
        for lib, r in mine:
            good = abs(r["initial_loss"] - expect) <= 1e-5 and (trainer == "reward" or
                                                                 abs(ours["initial_loss"] - LN2) <= 1e-5)
            ok &= good
            what = "rlhfkit's" if trainer == "reward" else "ln 2"
            notes.append(f"{'PASS' if good else 'FAIL'}  {trainer}: initial loss of {lib} = {r['initial_loss']:.7f}, "
                         f"{what} {expect:.7f} (|Δ| {abs(r['initial_loss'] - expect):.1e}, tolerance 1e-5)")
        for lib, r in mine:
            if lib.startswith("TRL"):
                good = r["tokens"] == ours["tokens"] and r["steps"] == ours["steps"] == a.steps
                ok &= good
                notes.append(f"{'PASS' if good else 'FAIL'}  {trainer}: pair tokens {lib} {r['tokens']} (TRL's own "
                             f"num_tokens {r.get('trl_num_tokens')}), rlhfkit {ours['tokens']}; steps "
                             f"{r['steps']} / {ours['steps']}")
        alone = next((r for lib, r in mine if lib == "rlhfkit, no prefix sharing"), None)
        if alone is not None:
            notes.append(f"note  {trainer}: sharing each pair's prompt prefix: {ours['tokens_per_s']:.0f} vs "
                         f"{alone['tokens_per_s']:.0f} tokens/s ({ours['tokens_per_s'] / alone['tokens_per_s']:.2f}×); "
                         "both count every token of both sequences; the initial losses differ by "
                         f"{abs(ours['initial_loss'] - alone['initial_loss']):.1e}")
        if trainer == "dpo":
            ref_s = ours["call_s"] - ours["wall_s"]
            notes.append(f"note  dpo: rlhfkit computes the reference log-probs once before its loop ({ref_s:.2f} s "
                         "with tokenisation, not in 'train s'); TRL computes them in every step unless "
                         "precompute_ref_log_probs=True (the 'precomp ref' row: in its __init__, also untimed)")
    say("\n".join(notes))
    say("\ntokens/s: non-padding tokens of the chosen and rejected sequences (prompt + completion + EOS) through the "
        "policy / reward model in training forward passes, over the training loop's wall time (no evaluation, no "
        "model loading or tokenisation; reference forwards not counted). rlhfkit: Fitted.tokens_per_s, counted by "
        "the loop; TRL: the same count over the rows its sequential sampler fed (trl_run.py, cross-checked against "
        "TRL's num_tokens), over on_train_begin → on_train_end. Same rows on both sides, so the counts must be equal.")
    say("max |Δloss|: the largest per-step training-loss gap to rlhfkit over the run (same batches; AdamW fused in "
        "TRL vs foreach here, so only rounding should separate them).")
    say(f"overall: {'PASS' if ok else 'FAIL'}; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("\n".join(lines) + "\n")
    print(f"log: {log_path}; run logs and data in {work}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
