"""Worker for tests/test_lm_distributed.py (pytest does not collect it: no test_ prefix).

Runs a few optimiser steps of the reward-model (1 head, and optionally a 2-head ensemble), DPO
and SFT trainers on a tiny model and writes each step's ``train/loss``, ``train/grad_norm`` and
the loop's token count to a JSON file (main process only). Run it as one plain process or as two
(``accelerate launch --multi_gpu --num_processes 2``, which on a CPU machine gives gloo
processes; ``--cpu --num_processes 2`` would start only one): the global batch is the same, so
the numbers must be too.

    python tests/_lm_dist_worker.py --model DIR --rm DIR [--rm-ensemble DIR] --data FILE --out losses.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="tiny causal-LM directory")
    ap.add_argument("--rm", required=True, help="reward-model (sequence-classification) directory")
    ap.add_argument("--rm-ensemble", default=None, help="reward-model directory with 2 heads (optional)")
    ap.add_argument("--data", required=True, help="preference JSONL")
    ap.add_argument("--out", required=True, help="JSON file for the losses (written by the main process)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--n", type=int, default=24, help="preference pairs used")
    ap.add_argument("--max-length", type=int, default=256)
    a = ap.parse_args()

    import numpy as np
    import torch
    from accelerate import Accelerator

    from rlhfkit.language.data import load_data, sft_from_preferences
    from rlhfkit.language.dpo import train_dpo
    from rlhfkit.language.models import load_causal_lm, load_reward_model, load_tokenizer
    from rlhfkit.language.reward import train_reward_model
    from rlhfkit.language.sft import encode_sft, train_sft
    from rlhfkit.language.train import TrainArgs, length_grouped_batches

    acc = Accelerator(cpu=True)
    acc.wait_for_everyone()  # the process group works: from here on a failure is the trainers'
    if acc.is_main_process:
        Path(a.out + ".started").write_text(str(acc.num_processes))

    prefs = load_data(a.data, kind="preference", skip_bad=True).examples[:a.n]
    tok = load_tokenizer(a.model)
    args = TrainArgs(lr=1e-3, max_steps=a.steps, batch_size=4, max_length=a.max_length, val_fraction=0.0,
                     group_by_length=True, warmup_ratio=0.0, schedule="linear", seed=0)
    record: dict = {"num_processes": acc.num_processes, "distributed_type": str(acc.distributed_type),
                    "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None}

    def keep(name: str, fitted) -> None:
        rows = [h for h in fitted.history if "train/loss" in h]
        record[name] = {"loss": [h["train/loss"] for h in rows], "grad_norm": [h["train/grad_norm"] for h in rows],
                        "tokens": fitted.tokens}

    torch.manual_seed(0)
    keep("reward", train_reward_model(load_reward_model(a.rm), tok, prefs, [], args, accelerator=acc))
    if a.rm_ensemble:  # two score heads, each with its own Poisson bootstrap weights
        torch.manual_seed(0)
        keep("reward_ensemble", train_reward_model(load_reward_model(a.rm_ensemble, num_heads=2), tok, prefs, [], args,
                                                   accelerator=acc))
    torch.manual_seed(0)
    keep("dpo", train_dpo(load_causal_lm(a.model), tok, prefs, [], args, accelerator=acc))
    torch.manual_seed(0)
    keep("sft", train_sft(load_causal_lm(a.model), tok, sft_from_preferences(prefs), [], args, accelerator=acc))
    # gradient accumulation: one example per forward pass, DDP's sync only on the last micro-batch
    torch.manual_seed(0)
    keep("sft_micro1", train_sft(load_causal_lm(a.model), tok, sft_from_preferences(prefs), [],
                                 TrainArgs(**{**args.__dict__, "micro_batch_size": 1}), accelerator=acc))
    # SFT's completion tokens on each process per step (fit's first-epoch batches, recomputed)
    enc = encode_sft(tok, sft_from_preferences(prefs), args.max_length)
    batches = length_grouped_batches([len(e) for e in enc], args.batch_size, np.random.default_rng(args.seed))
    half = args.batch_size // 2
    record["sft_completion_tokens_by_half"] = [
        [sum(len(enc[i]) - enc[i].n_prompt for i in b[:half]), sum(len(enc[i]) - enc[i].n_prompt for i in b[half:])]
        for b in batches[:a.steps]]
    if acc.is_main_process:
        Path(a.out).write_text(json.dumps(record))
    acc.wait_for_everyone()
    acc.end_training()  # destroys the gloo group: its threads left running abort the process at exit


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
