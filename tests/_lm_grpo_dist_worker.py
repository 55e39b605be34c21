"""Worker for tests/test_lm_distributed.py's GRPO case (pytest does not collect it: no test_ prefix).

Trains GRPO for a few steps with a deterministic stand-in generator (each prompt's G completions
follow from its token ids, so one process and two processes see the same completions however the
prompts are split), and writes each step's ``loss/policy``, ``train/grad_norm`` and
``reward/mean`` plus a checksum of the final weights to a JSON file (main process only). Half of
the prompts get G identical completions, so their groups have no learning signal and are skipped
— unevenly over the processes.

    python tests/_lm_grpo_dist_worker.py --model DIR --out losses.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


class FixedGenerator:
    """Completions that depend only on the prompt (the :class:`Generator` protocol, no sampling)."""

    def __init__(self, eos_id: int, pad_id: int):
        self.eos_id, self.pad_id = eos_id, pad_id

    def sync(self, model) -> None:
        pass

    def generate(self, prompt_ids, params, *, seed):
        import torch

        from rlhfkit.language.generation import Rollout

        rows = []
        for p in prompt_ids:
            h = sum(p)
            for k in range(params.n):
                kk = 0 if h % 2 == 0 else k  # even prompts: G identical completions (an idle group)
                rows.append([10 + (h + 7 * kk + 3 * j) % 80 for j in range(1 + kk % 3)] + [self.eos_id])
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.pad_id)
        mask = torch.zeros((len(rows), T), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = True
        return Rollout(tuple(tuple(p) for p in prompt_ids), ids, mask, torch.ones(len(rows), dtype=torch.bool),
                       torch.zeros(len(rows), T), params.n)


def low_ids(prompts, completions, completion_ids, **kw):
    return [sum(t < 50 for t in ids) / len(ids) for ids in completion_ids]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()

    import torch
    from accelerate import Accelerator

    from rlhfkit.language.grpo import GRPOSettings, train_grpo
    from rlhfkit.language.models import load_causal_lm, load_tokenizer
    from rlhfkit.language.prompts import PromptExample
    from rlhfkit.language.rewards import RewardFunction
    from rlhfkit.language.train import TrainArgs

    acc = Accelerator(cpu=True)
    acc.wait_for_everyone()
    if acc.is_main_process:
        Path(a.out + ".started").write_text(str(acc.num_processes))
    tok = load_tokenizer(a.model)
    prompts = [PromptExample(f"Q: {i}+{2 * i}= A:", {}) for i in range(16)]
    args = TrainArgs(lr=1e-2, max_steps=a.steps, max_length=32, warmup_ratio=0.0, seed=0)
    record: dict = {"num_processes": acc.num_processes}
    for name, extra in (("grpo", {}), ("grpo_mu2_micro", {"num_iterations": 2, "mini_batches": 3}),
                        ("reinforce_pp_seq", {"estimator": "reinforce_pp", "aggregation": "sequence_mean"})):
        torch.manual_seed(0)
        model = load_causal_lm(a.model)
        settings = GRPOSettings(num_generations=4, prompts_per_step=4, max_new_tokens=4, **extra)
        micro = TrainArgs(**{**args.__dict__, "micro_batch_size": 4}) if name == "grpo_mu2_micro" else args
        r = train_grpo(model, tok, prompts, [RewardFunction("low_ids", low_ids)], micro, settings,
                       generator=FixedGenerator(tok.eos_token_id, tok.pad_token_id), accelerator=acc)
        rows = [h for h in r.history if "reward/mean" in h]
        record[name] = {k: [h[k] for h in rows] for k in ("loss/policy", "train/grad_norm", "reward/mean",
                                                             "reward/zero_std_fraction")}
        record[name]["checksum"] = float(sum(p.double().sum() for p in r.model.parameters()))
    if acc.is_main_process:
        Path(a.out).write_text(json.dumps(record))
    acc.wait_for_everyone()
    acc.end_training()  # destroys the gloo group: its threads left running abort the process at exit


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
