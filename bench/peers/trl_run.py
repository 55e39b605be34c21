"""TRL peer for the language benchmark: one reward-model or DPO run with TRL's own trainers.

Runs inside bench/.venv-trl (see setup_trl.sh) and does not import rlhfkit.  It trains a local
Hugging Face model with ``trl.RewardTrainer`` / ``trl.DPOTrainer`` on explicit-prompt JSONL
(``prompt``, ``chosen``, ``rejected`` strings) and prints ONE JSON object on the last line of
stdout.  TRL/transformers logs and the per-step losses go to stderr.

    bench/.venv-trl/bin/python bench/peers/trl_run.py --trainer dpo --model DIR \
        --data train.jsonl --eval eval.jsonl --steps 5 --batch-size 4 --max-length 256 \
        --lr 1e-6 --beta 0.1 --seed 0 --out /tmp/trl-dpo

What TRL 1.16 does with the data (read from its sources; our side must do the same to match):
- Both trainers append ``tokenizer.eos_token`` to each completion *as text* (unless it already
  ends with it) and tokenize ``prompt + completion + eos`` as ONE string with the tokenizer's
  default ``add_special_tokens=True`` (so a BOS is added iff the tokenizer's post-processor
  adds one).  Padding is on the right with ``tokenizer.pad_token_id``.
- RewardTrainer does not truncate: rows where either prompt+chosen or prompt+rejected is longer
  than ``max_length`` tokens are DROPPED from the dataset.  The reward is read at the last
  non-pad token (the EOS) by the sequence-classification head; loss = mean(-logsigmoid(r_c - r_r)).
- DPOTrainer tokenizes the prompt alone too; the completion starts where the prompt's ids and
  the prompt+completion ids diverge.  Rows whose prompt alone has >= max_length tokens are
  dropped; the rest are truncated per sequence in the collator with ``keep_start`` (the END of
  prompt+completion is cut, i.e. the completion loses its tail, EOS included).  Log-probs are
  summed over completion tokens only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainer", choices=["reward", "dpo"], required=True)
    p.add_argument("--model", required=True, help="local Hugging Face model directory (model + tokenizer)")
    p.add_argument("--data", required=True, help="training JSONL with prompt/chosen/rejected")
    p.add_argument("--eval", default=None, help="optional eval JSONL (same format) for eval_accuracy")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="optimisation steps (max_steps)")
    length.add_argument("--epochs", type=float, help="epochs over the (filtered) training set")
    p.add_argument("--batch-size", type=int, required=True, help="pairs per step (per_device_train_batch_size)")
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta (ignored by the reward trainer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output_dir for TRL (nothing is saved; logs go to stderr)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="default: TRL's default (on in TRL 1.16)")
    # TRL's defaults, exposed so both sides can be put on the same schedule if wanted.
    p.add_argument("--lr-scheduler", default="linear", help="lr_scheduler_type (TRL/transformers default: linear)")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (default 1.0, as TRL)")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--precompute-ref-log-probs", action="store_true",
                   help="DPO: compute the reference log-probs once in the trainer's __init__ (outside the timed "
                        "loop) instead of a reference forward every step (TRL's default: off)")
    return p.parse_args(argv)


def read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            for key in ("prompt", "chosen", "rejected"):
                if not isinstance(row.get(key), str):
                    raise SystemExit(f"{path}:{n}: field {key!r} missing or not a string")
            rows.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
    if not rows:
        raise SystemExit(f"{path}: no rows")
    return rows


def consumed_rows(n_rows: int, batch_size: int, steps: int) -> list[list[int]]:
    """Row indices of each step's batch: a sequential sampler, no drop_last, restarting every epoch."""
    per_epoch = math.ceil(n_rows / batch_size)
    batches = []
    for s in range(steps):
        j = s % per_epoch
        batches.append(list(range(j * batch_size, min((j + 1) * batch_size, n_rows))))
    return batches


def pair_tokens(row: dict, trainer_kind: str, max_length: int) -> int:
    """Non-padding tokens of one pair as the trainer feeds it (chosen sequence + rejected sequence)."""
    if trainer_kind == "reward":
        # Already filtered to <= max_length; prompt is inside chosen_ids/rejected_ids.
        return len(row["chosen_ids"]) + len(row["rejected_ids"])
    p = len(row["prompt_ids"])
    return min(p + len(row["chosen_ids"]), max_length) + min(p + len(row["rejected_ids"]), max_length)


def main(argv=None) -> None:
    args = parse_args(argv)

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    transformers.set_seed(args.seed)  # before loading: a fresh score head is drawn from this seed

    train_rows = read_jsonl(args.data)
    eval_rows = read_jsonl(args.eval) if args.eval else None
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows is not None else None

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        print("warning: the tokenizer has no pad token distinct from EOS; the RM reads the reward at the last "
              "non-pad token, so pad == eos shifts it", file=sys.stderr)

    common = dict(
        output_dir=args.out,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        lr_scheduler_type=args.lr_scheduler,
        max_grad_norm=args.max_grad_norm,
        max_length=args.max_length,
        max_steps=args.steps if args.steps is not None else -1,
        num_train_epochs=args.epochs if args.epochs is not None else 1.0,
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,  # TRL's _BaseConfig defaults bf16 to True (CPU autocast); we want fp32
        fp16=False,
        train_sampling_strategy="sequential",  # no shuffling: step k gets rows [kB, (k+1)B) of the prepared set
        dataloader_num_workers=0,
        dataloader_drop_last=False,
        seed=args.seed,
        data_seed=args.seed,
        disable_tqdm=True,
    )
    if args.gradient_checkpointing is not None:
        common["gradient_checkpointing"] = args.gradient_checkpointing

    if args.trainer == "reward":
        from transformers import AutoModelForSequenceClassification
        from trl import RewardConfig, RewardTrainer

        config = RewardConfig(**common)
        # A causal-LM checkpoint gets a new score head (drawn under the seed set above); a saved
        # sequence-classification checkpoint with num_labels=1 loads as is.
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, dtype=torch.float32)
        make = lambda cb: RewardTrainer(model=model, args=config, train_dataset=train_ds, eval_dataset=eval_ds,
                                        processing_class=tokenizer, callbacks=cb)
        acc_key = "accuracy"  # RewardTrainer: mean(r(chosen) > r(rejected)) per batch
    else:
        from transformers import AutoModelForCausalLM
        from trl import DPOConfig, DPOTrainer

        config = DPOConfig(**common, beta=args.beta, loss_type=["sigmoid"],
                           precompute_ref_log_probs=args.precompute_ref_log_probs)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        ref_model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)  # frozen copy
        make = lambda cb: DPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=train_ds,
                                     eval_dataset=eval_ds, processing_class=tokenizer, callbacks=cb)
        acc_key = "rewards/accuracies"  # DPOTrainer: mean(beta*(logratio_c - logratio_r) > 0) per batch

    class Record(TrainerCallback):
        """Per-step losses from the Trainer's logs.  With logging_steps=1 the loss logged at
        global_step k is the loss of step k's batch, computed in the forward pass BEFORE step k's
        optimizer update; so the step-1 entry is the initial loss (weights as loaded)."""

        def __init__(self):
            self.losses, self.logs, self.t_begin, self.t_end = [], [], None, None

        def on_train_begin(self, a, state, control, **kw):
            self.t_begin = time.perf_counter()

        def on_train_end(self, a, state, control, **kw):
            self.t_end = time.perf_counter()

        def on_log(self, a, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if "loss" in logs:
                self.losses.append(float(logs["loss"]))
                self.logs.append(logs)
                print(f"step {state.global_step}: " + json.dumps(logs), file=sys.stderr)

    rec = Record()
    trainer = make([rec])
    trainer.remove_callback(PrinterCallback)  # keep stdout for the one JSON line

    tds = trainer.train_dataset  # tokenized (and for RM, length-filtered) dataset the trainer uses
    t0 = time.perf_counter()
    trainer.train()
    train_call_s = time.perf_counter() - t0
    steps = trainer.state.global_step

    tokens = 0
    for batch in consumed_rows(len(tds), args.batch_size, steps):
        for i in batch:
            tokens += pair_tokens(tds[i], args.trainer, args.max_length)
    trl_num_tokens = rec.logs[-1].get("num_tokens") if rec.logs else None
    if trl_num_tokens is not None and int(trl_num_tokens) != tokens:
        print(f"warning: token count {tokens} != TRL's num_tokens {trl_num_tokens}", file=sys.stderr)

    wall_s = (rec.t_end - rec.t_begin) if rec.t_begin and rec.t_end else train_call_s
    out = {
        "trainer": args.trainer,
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "initial_loss": rec.losses[0] if rec.losses else None,
        "losses": rec.losses,
        "steps": steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "train_rows": len(train_rows),
        "train_rows_used": len(tds),  # after TRL's length filter
        "wall_s": wall_s,  # on_train_begin -> on_train_end (training loop only)
        "train_call_s": train_call_s,  # the whole trainer.train() call (adds optimizer/accelerate setup)
        "tokens": tokens,
        "trl_num_tokens": trl_num_tokens,
        "tokens_per_s": tokens / wall_s if wall_s > 0 else None,
        # The config flag (TRL 1.16 defaults it to True) and what the model actually ran with.
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "model_checkpointing_active": bool(getattr(trainer.model, "is_gradient_checkpointing", False)),
        "lr_scheduler": str(trainer.args.lr_scheduler_type.value if hasattr(trainer.args.lr_scheduler_type, "value")
                            else trainer.args.lr_scheduler_type),
        "max_grad_norm": trainer.args.max_grad_norm,
        "seed": args.seed,
    }
    if args.trainer == "dpo":
        out["beta"] = args.beta
        out["precompute_ref_log_probs"] = bool(trainer.args.precompute_ref_log_probs)

    if eval_ds is not None:
        # Exact fraction over all eval pairs, using TRL's own compute_loss metric `acc_key` batch by
        # batch (trainer.evaluate() would report the unweighted mean of per-batch means as
        # "eval_" + acc_key, which differs when the last batch is short).
        eds = trainer.eval_dataset
        model_ = trainer.model
        model_.eval()
        correct, pairs = 0.0, 0
        with torch.no_grad():
            for batch in trainer.get_eval_dataloader(eds):
                batch = trainer._prepare_inputs(batch)
                n = batch["input_ids"].shape[0] // 2
                trainer.compute_loss(model_, batch)
                correct += trainer._metrics["eval"][acc_key][-1] * n
                pairs += n
        trainer._metrics["eval"].clear()
        out["eval_accuracy"] = round(correct) / pairs if pairs else None
        out["eval_pairs"] = pairs
        out["eval_rows"] = len(eval_rows)
        out["eval_metric"] = f"TRL {type(trainer).__name__} metric '{acc_key}', pair-weighted"

    print(json.dumps(out))


if __name__ == "__main__":
    main()
