"""TRL peer for the GRPO benchmark: TRL's own GRPOTrainer on a verifiable-reward task, under a wall-clock budget.

Runs inside bench/.venv-trl (see setup_trl.sh) and does not import rlhfkit.  It trains a local Hugging Face
causal LM with ``trl.GRPOTrainer`` on prompt/answer JSONL (``{"prompt": "Q: 37+58= A:", "answer": " 95"}``),
reward 1.0 when the decoded completion (special tokens skipped) equals ``answer`` exactly, else 0.0.  It
evaluates greedy exact-match accuracy on a held-out JSONL at step 0, every ``--eval-every-s`` seconds of
TRAINING time and at the end, and prints ONE JSON object on the last line of stdout.  TRL/transformers logs
and one line per optimiser step go to stderr.

    bench/.venv-trl/bin/python bench/peers/trl_grpo.py --model DIR --prompts train.jsonl \
        --eval eval.jsonl --budget-s 900 --eval-every-s 60 --seed 0 --out /tmp/trl-grpo

Clocks.  ``train_wall_s`` is a training clock that starts after the step-0 evaluation (in ``on_train_begin``)
and is paused while every evaluation runs, so evaluation time is excluded from it and from the budget; it
covers generation, reward scoring, the training forward/backward, the optimiser step and the Trainer's own
per-step work (logging, callbacks, dataloader).  ``gen_s`` is the time inside
``GRPOTrainer._generate_and_score_completions`` (tokenise the prompts, ``model.generate``, decode, reward,
group advantages; with this recipe no extra log-prob forward happens there, see the README);
``train_s = train_wall_s - gen_s``.  ``generate_s`` (the ``model.generate`` path alone) and ``reward_s`` are
the parts of ``gen_s``; ``fwd_bwd_s`` is ``training_step`` time minus the generation inside it, and
``optim_other_s = train_s - fwd_bwd_s`` (grad clipping, optimiser, scheduler, logging, callbacks).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BIG_MAX_STEPS = 1_000_000  # TRL's Trainer needs max_steps; the budget stops training long before this


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="local Hugging Face model directory (model + tokenizer)")
    p.add_argument("--prompts", required=True, help="training JSONL with prompt/answer strings")
    p.add_argument("--eval", required=True, help="held-out JSONL with prompt/answer strings (greedy exact match)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="training wall-clock budget in seconds (training clock, evaluation excluded)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    p.add_argument("--eval-every-s", type=float, default=60.0,
                   help="evaluate whenever this much training time has passed since the last evaluation")
    p.add_argument("--eval-batch-size", type=int, default=256, help="prompts per greedy generate call in evaluation")
    p.add_argument("--num-generations", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="completions per optimiser step (per_device_train_batch_size = generation_batch_size)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-scheduler", default="constant",
                   help="lr_scheduler_type (TRL's default is 'linear' decay to 0 over max_steps)")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (TRL's default 1.0)")
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient (0: no reference model)")
    p.add_argument("--max-new-tokens", type=int, default=5, help="max_completion_length (also used in evaluation)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 disables top-k filtering (TRL 1.16's default)")
    p.add_argument("--num-iterations", type=int, default=1, help="optimisation passes per generation batch (mu)")
    p.add_argument("--loss-type", default=None, help="TRL loss_type (default: TRL's, 'dapo' in 1.16)")
    p.add_argument("--scale-rewards", default=None, choices=["group", "batch", "none"],
                   help="TRL scale_rewards (default: TRL's, 'group' in 1.16)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="default: TRL's, which is ON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--out", required=True, help="TRL output_dir (nothing is saved there)")
    p.add_argument("--show-completions", type=int, default=4,
                   help="print this many decoded eval completions to stderr at each evaluation")
    args = p.parse_args(argv)
    if args.budget_s is None and args.max_steps is None:
        p.error("give --budget-s and/or --max-steps")
    if args.batch_size % args.num_generations:
        p.error("--batch-size must be a multiple of --num-generations")
    return args


def read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            for key in ("prompt", "answer"):
                if not isinstance(row.get(key), str):
                    raise SystemExit(f"{path}:{n}: field {key!r} missing or not a string")
            rows.append({"prompt": row["prompt"], "answer": row["answer"]})
    if not rows:
        raise SystemExit(f"{path}: no rows")
    return rows


def exact_match(prompts, completions, answer, **kwargs):
    """TRL-style reward function: 1.0 iff the decoded completion equals the ``answer`` column exactly."""
    return [1.0 if c == a else 0.0 for c, a in zip(completions, answer)]


class TrainClock:
    """Wall clock that can be paused (during evaluation)."""

    def __init__(self):
        self.total, self.t0 = 0.0, None

    def start(self):
        if self.t0 is None:
            self.t0 = time.perf_counter()

    def pause(self):
        if self.t0 is not None:
            self.total += time.perf_counter() - self.t0
            self.t0 = None

    def now(self) -> float:
        return self.total + (time.perf_counter() - self.t0 if self.t0 is not None else 0.0)


def main(argv=None) -> None:
    args = parse_args(argv)

    import accelerate
    import datasets
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    transformers.set_seed(args.seed)

    train_rows = read_jsonl(args.prompts)
    eval_rows = read_jsonl(args.eval)
    train_ds = Dataset.from_list(train_rows)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        print("warning: the tokenizer has no pad token distinct from EOS", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)

    cfg = dict(
        output_dir=args.out,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        # One generation batch = one optimiser step: generation_batch_size = per_device_train_batch_size
        # x num_processes x steps_per_generation = batch_size (GRPOConfig.__post_init__ derives
        # generation_batch_size from steps_per_generation; setting both raises).
        steps_per_generation=1,
        num_generations=args.num_generations,
        num_iterations=args.num_iterations,
        learning_rate=args.lr,
        lr_scheduler_type=args.lr_scheduler,
        warmup_steps=0,
        max_grad_norm=args.max_grad_norm,
        beta=args.beta,
        max_completion_length=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_steps=args.max_steps if args.max_steps is not None else BIG_MAX_STEPS,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,  # TRL's _BaseConfig defaults bf16 to True (CPU autocast); we want fp32
        fp16=False,
        dataloader_num_workers=0,
        seed=args.seed,
        data_seed=args.seed,
        disable_tqdm=True,
    )
    if args.loss_type is not None:
        cfg["loss_type"] = args.loss_type
    if args.scale_rewards is not None:
        cfg["scale_rewards"] = args.scale_rewards
    if args.gradient_checkpointing is not None:
        cfg["gradient_checkpointing"] = args.gradient_checkpointing
    config = GRPOConfig(**cfg)
    assert config.generation_batch_size == args.batch_size and config.steps_per_generation == 1, (
        config.generation_batch_size, config.steps_per_generation)

    clock = TrainClock()
    stats = dict(gen_s=0.0, generate_s=0.0, reward_s=0.0, step_s=0.0, gen_calls=0, completions=0,
                 completion_tokens=0, completion_positions=0, trained_tokens=0, trained_positions=0,
                 trained_sequences=0, reward_sum=0.0, reward_n=0)
    since_eval = dict(reward_sum=0.0, reward_n=0)

    # ---- evaluation: greedy exact match, batched, left padding, stop at EOS --------------------------------
    def evaluate(trainer) -> tuple[float, list[str]]:
        m = trainer.accelerator.unwrap_model(trainer.model)
        was_training = m.training
        m.eval()
        eos_ids = list(trainer.eos_token_ids)
        pad_id = tokenizer.pad_token_id
        gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=args.max_new_tokens, eos_token_id=eos_ids,
                                   pad_token_id=pad_id, bos_token_id=tokenizer.bos_token_id,
                                   disable_compile=True)
        # As TRL does around its own generate: switch gradient checkpointing off, back on afterwards.
        gc_on = bool(getattr(m, "is_gradient_checkpointing", False))
        if gc_on:
            m.gradient_checkpointing_disable()
        correct, shown = 0, []
        try:
            with torch.no_grad():
                for i in range(0, len(eval_rows), args.eval_batch_size):
                    chunk = eval_rows[i:i + args.eval_batch_size]
                    # Tokenised exactly as GRPOTrainer._tokenize_prompts does for plain-text prompts.
                    ids = tokenizer(text=[r["prompt"] for r in chunk])["input_ids"]
                    L = max(len(x) for x in ids)
                    input_ids = torch.tensor([[pad_id] * (L - len(x)) + x for x in ids])
                    attn = torch.tensor([[0] * (L - len(x)) + [1] * len(x) for x in ids])
                    out = m.generate(input_ids=input_ids.to(m.device), attention_mask=attn.to(m.device),
                                     generation_config=gen_cfg)
                    comp = out[:, L:].cpu().tolist()
                    cut = []
                    for c in comp:  # keep up to and including the first EOS, as TRL does before decoding
                        j = next((k for k, t in enumerate(c) if t in eos_ids), None)
                        cut.append(c if j is None else c[:j + 1])
                    texts = tokenizer.batch_decode(cut, skip_special_tokens=True)
                    r = exact_match([x["prompt"] for x in chunk], texts, [x["answer"] for x in chunk])
                    correct += int(sum(r))
                    if len(shown) < args.show_completions:
                        shown += [f"{x['prompt']!r} -> {t!r} (answer {x['answer']!r}, reward {v})"
                                  for x, t, v in zip(chunk, texts, r)][: args.show_completions - len(shown)]
        finally:
            if gc_on:
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)
            m.train(was_training)
        return correct / len(eval_rows), shown

    class BudgetEval(TrainerCallback):
        def __init__(self):
            self.trainer = None
            self.curve, self.eval_s, self.last_eval_train_s, self.last_eval_step = [], 0.0, 0.0, None
            self.t_train_end = None

        def _eval(self, state):
            t_train = clock.now()
            t0 = time.perf_counter()
            acc, shown = evaluate(self.trainer)
            dt = time.perf_counter() - t0
            self.eval_s += dt
            n = since_eval["reward_n"]
            point = {"train_s": round(t_train, 3), "step": state.global_step, "accuracy": acc,
                     "mean_reward": (since_eval["reward_sum"] / n) if n else None, "eval_s": round(dt, 3)}
            since_eval.update(reward_sum=0.0, reward_n=0)
            self.curve.append(point)
            self.last_eval_train_s, self.last_eval_step = t_train, state.global_step
            print("eval " + json.dumps(point), file=sys.stderr)
            for line in shown:
                print("  " + line, file=sys.stderr)

        def on_train_begin(self, a, state, control, **kw):
            self._eval(state)  # step 0, weights as loaded; before the training clock starts
            clock.start()

        def on_step_end(self, a, state, control, **kw):
            t = clock.now()
            if args.budget_s is not None and t >= args.budget_s:
                control.should_training_stop = True
            # DefaultFlowCallback runs before this one, so a max_steps stop is already flagged here.
            stop = control.should_training_stop or state.global_step >= state.max_steps
            if stop:
                clock.pause()  # the training clock ends with the last optimiser step
                return
            # The last evaluation happens in on_train_end (whatever stopped training).
            if t - self.last_eval_train_s >= args.eval_every_s:
                clock.pause()
                try:
                    self._eval(state)
                finally:
                    clock.start()

        def on_log(self, a, state, control, logs=None, **kw):
            print(f"step {state.global_step}: " + json.dumps(logs or {}), file=sys.stderr)

        def on_train_end(self, a, state, control, **kw):
            clock.pause()
            self.t_train_end = clock.now()
            if self.last_eval_step != state.global_step:
                self._eval(state)

    cb = BudgetEval()
    trainer = GRPOTrainer(model=model, reward_funcs=[exact_match], args=config, train_dataset=train_ds,
                          processing_class=tokenizer, callbacks=[cb])
    cb.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # keep stdout for the one JSON line

    # ---- timers around TRL's own methods (instance attributes shadow the class methods) ----------------
    def timed(name, fn, after=None):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            stats[name] += time.perf_counter() - t0
            if after is not None:
                after(a, k, out)
            return out
        return wrapper

    def after_gen_and_score(a, k, out):
        stats["gen_calls"] += 1

    def after_generate(a, k, out):  # _generate_single_turn -> (completion_ids: list[list[int]] cut after EOS, logprobs)
        completion_ids = out[0]
        stats["completions"] += len(completion_ids)
        stats["completion_tokens"] += sum(len(c) for c in completion_ids)
        # generate() runs until the longest sequence of the batch ends: positions actually decoded
        stats["completion_positions"] += len(completion_ids) * max((len(c) for c in completion_ids), default=0)

    def after_rewards(a, k, out):  # rewards_per_func: (B, n_funcs)
        r = out[:, 0].detach().float()
        r = r[~torch.isnan(r)]
        stats["reward_sum"] += float(r.sum())
        stats["reward_n"] += int(r.numel())
        since_eval["reward_sum"] += float(r.sum())
        since_eval["reward_n"] += int(r.numel())

    trainer._generate_and_score_completions = timed("gen_s", trainer._generate_and_score_completions,
                                                    after_gen_and_score)
    trainer._generate_single_turn = timed("generate_s", trainer._generate_single_turn, after_generate)
    trainer._calculate_rewards = timed("reward_s", trainer._calculate_rewards, after_rewards)
    trainer.training_step = timed("step_s", trainer.training_step)

    orig_compute_loss = trainer.compute_loss

    def compute_loss(model_, inputs, *a, **k):
        if model_.training:  # the training forward: count what goes through it
            pm, cm = inputs["prompt_mask"], inputs["completion_mask"]
            stats["trained_tokens"] += int(pm.sum()) + int(cm.sum())
            stats["trained_positions"] += pm.numel() + cm.numel()
            stats["trained_sequences"] += pm.shape[0]
        return orig_compute_loss(model_, inputs, *a, **k)

    trainer.compute_loss = compute_loss

    t0 = time.perf_counter()
    trainer.train()
    train_call_s = time.perf_counter() - t0

    steps = trainer.state.global_step
    wall = cb.t_train_end
    gen_s = stats["gen_s"]
    train_s = wall - gen_s
    fwd_bwd_s = stats["step_s"] - gen_s
    curve = [{k: p[k] for k in ("train_s", "step", "accuracy", "mean_reward")} for p in cb.curve]
    trl_tokens = int(trainer.state.num_input_tokens_seen)
    if args.num_iterations == 1 and trl_tokens != stats["trained_tokens"]:
        print(f"warning: trained_tokens {stats['trained_tokens']} != TRL's num_input_tokens_seen {trl_tokens}",
              file=sys.stderr)
    targs = trainer.args
    sched = targs.lr_scheduler_type
    out = {
        "library": "trl",
        "versions": {
            "trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
            "accelerate": accelerate.__version__, "datasets": datasets.__version__,
            "python": platform.python_version(),
        },
        "config": {
            "model": os.path.abspath(args.model), "prompts": os.path.abspath(args.prompts),
            "eval": os.path.abspath(args.eval), "train_prompts": len(train_rows), "eval_prompts": len(eval_rows),
            "budget_s": args.budget_s, "max_steps": targs.max_steps, "eval_every_s": args.eval_every_s,
            "eval_batch_size": args.eval_batch_size, "eval_decoding": "greedy",
            "num_generations": targs.num_generations, "batch_size": targs.per_device_train_batch_size,
            "prompts_per_step": targs.generation_batch_size // targs.num_generations,
            "generation_batch_size": targs.generation_batch_size, "steps_per_generation": targs.steps_per_generation,
            "gradient_accumulation_steps": targs.gradient_accumulation_steps,
            "num_iterations": targs.num_iterations, "lr": targs.learning_rate,
            "lr_scheduler": str(getattr(sched, "value", sched)), "warmup_steps": targs.warmup_steps,
            "optim": str(getattr(targs.optim, "value", targs.optim)), "weight_decay": targs.weight_decay,
            "adam_betas": [targs.adam_beta1, targs.adam_beta2], "adam_epsilon": targs.adam_epsilon,
            "max_grad_norm": targs.max_grad_norm, "beta": targs.beta, "epsilon": targs.epsilon,
            "epsilon_high": targs.epsilon_high, "loss_type": targs.loss_type, "scale_rewards": targs.scale_rewards,
            "importance_sampling_level": targs.importance_sampling_level,
            "mask_truncated_completions": targs.mask_truncated_completions,
            "max_new_tokens": targs.max_completion_length, "temperature": targs.temperature, "top_p": targs.top_p,
            "top_k": targs.top_k, "min_p": targs.min_p, "repetition_penalty": targs.repetition_penalty,
            "shuffle_dataset": targs.shuffle_dataset, "disable_dropout": targs.disable_dropout,
            "gradient_checkpointing": bool(targs.gradient_checkpointing),
            "model_checkpointing_active": bool(getattr(trainer.model, "is_gradient_checkpointing", False)),
            "use_vllm": targs.use_vllm, "bf16": targs.bf16, "fp16": targs.fp16, "dtype": str(model.dtype),
            "seed": args.seed, "torch_threads": torch.get_num_threads(), "reward": "exact_match",
        },
        "curve": curve,
        "initial_accuracy": curve[0]["accuracy"] if curve else None,
        "final_accuracy": curve[-1]["accuracy"] if curve else None,
        "steps": steps,
        "steps_per_s": steps / wall if wall > 0 else None,
        "train_wall_s": wall,  # training clock: evaluation excluded
        "eval_s": cb.eval_s,
        "evals": len(cb.curve),
        "train_call_s": train_call_s,  # the whole trainer.train() call, evaluations included
        "gen_s": gen_s,  # generate + decode + reward + advantages (_generate_and_score_completions)
        "generate_s": stats["generate_s"],  # model.generate path only (part of gen_s)
        "reward_s": stats["reward_s"],  # reward functions (part of gen_s)
        "train_s": train_s,  # train_wall_s - gen_s
        "fwd_bwd_s": fwd_bwd_s,  # training_step minus its generation: the loss forward + backward
        "optim_other_s": train_s - fwd_bwd_s,  # clip + optimiser + scheduler + logging/callbacks/dataloader
        "completions": stats["completions"],
        "completion_tokens": stats["completion_tokens"],  # generated tokens up to and including EOS
        "completion_positions": stats["completion_positions"],  # batch x longest completion, per generate call
        "trained_tokens": stats["trained_tokens"],  # non-pad prompt+completion tokens through the training forward
        "trained_positions": stats["trained_positions"],  # padded positions through the training forward
        "trl_num_input_tokens_seen": trl_tokens,
        "completions_per_s": stats["completions"] / wall if wall > 0 else None,
        "trained_tokens_per_s": stats["trained_tokens"] / wall if wall > 0 else None,
        "mean_train_reward": stats["reward_sum"] / stats["reward_n"] if stats["reward_n"] else None,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
