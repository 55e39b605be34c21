"""TRL peer for the InstructGPT PPO benchmark: TRL's own experimental PPOTrainer on a learned reward model.

Runs inside bench/.venv-trl-ppo (``bash bench/peers/setup_trl.sh ppo``: TRL 1.12.0, the last release that ships
``trl.experimental.ppo``; 1.13.0 removed PPO) and does not import rlhfkit.  It trains a local causal LM (the SFT
policy; the reference is a second copy loaded from the same directory) with ``PPOTrainer`` against a local
``AutoModelForSequenceClassification`` reward model, with a value model initialised from the reward model (TRL's
recipe, ``examples/scripts/ppo/ppo.py``), on prompt/answer JSONL (``{"prompt": "Q: 37+58= A:", "answer": " 95"}``).
The ``answer`` column is never seen by the trainer: it scores the held-out greedy exact match and the "gold"
reward of the training samples (watched, never optimised).  Prints ONE JSON object on the last line of stdout;
TRL/transformers logs and one line per PPO step go to stderr.

    bench/.venv-trl-ppo/bin/python bench/peers/trl_ppo.py throughput --steps 20 --model SFT --reward-model RM \
        --prompts train.jsonl --eval eval.jsonl --torch-threads 2 --out /tmp/trl-ppo
    bench/.venv-trl-ppo/bin/python bench/peers/trl_ppo.py race --budget-s 600 --eval-every-s 60 --model SFT \
        --reward-model RM --prompts train.jsonl --eval eval.jsonl --torch-threads 2 --out /tmp/trl-ppo
    bench/.venv-trl-ppo/bin/python bench/peers/trl_ppo.py race --reward-kind simpo --reward-model SIMPO_LM \
        --value-model RM ...
    bench/.venv-trl-ppo/bin/python bench/peers/trl_ppo.py check-simpo --reward-model SIMPO_LM --cases cases.json

Reward.  ``--reward-kind seqcls`` (the default): ``--reward-model`` is an ``AutoModelForSequenceClassification``
directory, read by TRL at the last non-pad token.  ``--reward-kind simpo``: ``--reward-model`` is a SimPO-trained
causal LM, scored by its implicit reward ``(β/|y|) log π(y | x)`` (``--simpo-beta``) through :class:`SimPOReward`,
which gives exactly rlhfkit's ``simpo:DIR,BETA`` reward; PPO's value model is then not initialisable from the reward
model, so ``--value-model`` (a sequence-classification directory, e.g. the benchmark's scalar RM
``bench/out/instructgpt_arith/rm``) is required.  ``check-simpo`` scores the prompt/response cases of ``--cases``
(``{"prompts": [str], "responses": [[token id]]}``, raw samples of one length, TRL truncates them after the first
EOS) through TRL's own ``get_reward`` and prints their rewards, for ``bench/ppo_vs_trl.py check-simpo`` to compare
with rlhfkit's.

Modes.  ``throughput``: exactly ``--steps`` PPO steps (rollout batches), no evaluation.  ``race``: train until the
training clock reaches ``--budget-s`` (and/or ``--max-steps``), evaluating at step 0, every ``--eval-every-s``
seconds of training time and at the end.

Stopping.  TRL 1.12's ``PPOTrainer.train`` runs ``num_total_batches = ceil(total_episodes / batch_size)`` updates
and ignores ``control.should_training_stop``; we give it ``total_episodes`` for 1,000,000 batches and stop it from
the callback by raising ``_Stop`` at the end of the step that reaches the budget or the step count (the
constant-lr schedule makes the nominal length irrelevant).

Clocks.  ``train_wall_s`` starts after the step-0 evaluation (``on_train_begin``), pauses during every evaluation
and stops at the end of the last PPO step (``on_step_end``); it covers everything TRL does per step.  Module-level
functions of ``trl.experimental.ppo.ppo_trainer`` are wrapped to split it: ``generate_s`` (``batch_generation``:
``model.generate`` of the rollout, with its scores), ``reward_s`` (``get_reward`` on the reward model),
``rollout_fwd_s`` (the no-grad reference forward and ``get_reward`` on the value model), ``fwd_s`` (the training
forwards of policy + value model, without their backward), ``gc_s`` (the trainer's own ``gc.collect()`` calls,
two per step); ``train_s = train_wall_s - generate_s - reward_s`` —
the same split as rlhfkit's ``OnlineResult`` (its ``train_s`` also holds the no-grad log-prob/value/reference
forwards, GAE and the PPO epochs).

Counts.  ``trained_tokens``: the non-pad tokens (prompt + completion up to and including EOS) of every sequence
through every training forward — once per PPO epoch, as rlhfkit's ``OnlineResult.trained_tokens``;
``trained_positions`` the padded size of those inputs.  ``completion_tokens``: generated tokens up to and including
EOS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from types import SimpleNamespace

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

BIG_BATCHES = 1_000_000  # TRL's PPOTrainer needs a length; the callback stops training long before this


class _Stop(Exception):
    """Raised from the callback to end ``PPOTrainer.train`` (it ignores ``should_training_stop``)."""


class SimPOReward(torch.nn.Module):
    """A SimPO-trained causal LM as a reward model that TRL's ``get_reward`` can read.

    ``r(x, y) = (β / |y|) Σ_t log π(y_t | x, y_<t)`` (Meng et al. 2024, Eq. 4), in nats × β, exactly as rlhfkit's
    ``ImplicitReward(model_dir, None, beta)`` (the reward spec ``simpo:DIR,BETA``) scores a PPO sample: the
    completion is decoded with special tokens dropped, re-encoded without special tokens and EOS is appended, so
    ``|y|`` counts the completion's tokens and one EOS — also for a completion cut at the length limit without EOS.

    TRL 1.12's ``get_reward(model, query_responses, pad_token_id, context_length)`` runs
    ``getattr(model, model.base_model_prefix)(input_ids=, attention_mask=, ...)`` and ``model.score`` on its last
    hidden state, and reads the result at the last non-pad response token.  The backbone sees neither the context
    length nor the pad id (pads arrive as id 0 with attention 0; queries are left-padded to the context length,
    responses right-padded after EOS), so the caller sets :attr:`context_length` before each call; the backbone
    returns each row's reward at every position, ``(B, T, 1)``, and ``score`` is the identity, so whichever
    position TRL reads holds the reward.

    Args:
        lm: the causal LM.
        tokenizer: the tokenizer of the policy's samples (the LM's must be the same).
        beta: SimPO's β.
    """

    base_model_prefix = "backbone"

    def __init__(self, lm, tokenizer, beta: float):
        super().__init__()
        self.lm = lm.eval()
        self.tokenizer, self.beta = tokenizer, beta
        self.context_length: int | None = None

    @torch.no_grad()
    def backbone(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> SimpleNamespace:
        """``input_ids``, ``attention_mask`` ``(B, T)`` (query + response) → ``hidden_states[-1]`` ``(B, T, 1)``."""
        C, tok = self.context_length, self.tokenizer
        if C is None:
            raise RuntimeError("SimPOReward: set context_length (the query width) before calling get_reward")
        rows = []
        for ids, keep in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = [t for t, k in zip(ids[:C], keep[:C]) if k]
            response = [t for t, k in zip(ids[C:], keep[C:]) if k]
            text = tok.decode(response, skip_special_tokens=True)
            rows.append((prompt, tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
        B, T = input_ids.shape
        L = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((B, L), tok.pad_token_id, dtype=torch.long)  # right padding, as rlhfkit scores it
        attn = torch.zeros((B, L), dtype=torch.long)
        completion = torch.zeros((B, L), dtype=torch.bool)
        for i, (p, c) in enumerate(rows):
            n = len(p) + len(c)
            ids[i, :n] = torch.tensor(p + c)
            attn[i, :n] = 1
            completion[i, max(len(p), 1):n] = True
        ids, attn, completion = ids.to(input_ids.device), attn.to(input_ids.device), completion.to(input_ids.device)
        logits = self.lm(input_ids=ids, attention_mask=attn).logits[:, :-1].float()  # (B, L-1, V)
        lp = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, -1)  # (B, L-1)
        m = completion[:, 1:]
        r = self.beta * ((lp * m).sum(-1) / m.sum(-1))  # (B,)
        return SimpleNamespace(hidden_states=(r[:, None, None].expand(B, T, 1),))

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["throughput", "race", "check-simpo"])
    p.add_argument("--model", default=None, help="the SFT policy: a local HF causal-LM directory (model + tokenizer)")
    p.add_argument("--reward-model", required=True,
                   help="seqcls: a local AutoModelForSequenceClassification directory; simpo: a causal-LM directory")
    p.add_argument("--reward-kind", choices=["seqcls", "simpo"], default="seqcls",
                   help="the reward model's kind: a scalar head, or a SimPO-trained LM's implicit reward")
    p.add_argument("--simpo-beta", type=float, default=2.0, help="simpo: the β of (β/|y|) log π(y | x)")
    p.add_argument("--value-model", default=None,
                   help="initial value model, a sequence-classification directory (default: the reward model, TRL's "
                        "recipe; required with --reward-kind simpo)")
    p.add_argument("--cases", default=None, help="check-simpo: JSON {prompts: [str], responses: [[token id]]}")
    p.add_argument("--prompts", default=None, help="training JSONL with prompt/answer strings")
    p.add_argument("--eval", default=None, help="held-out JSONL with prompt/answer strings (greedy exact match)")
    p.add_argument("--steps", type=int, default=None, help="throughput: PPO steps (rollout batches) to run")
    p.add_argument("--budget-s", type=float, default=None, help="race: training-clock budget (evaluation excluded)")
    p.add_argument("--max-steps", type=int, default=None, help="race: also stop after this many PPO steps")
    p.add_argument("--eval-every-s", type=float, default=60.0,
                   help="race: evaluate whenever this much training time has passed since the last evaluation")
    p.add_argument("--eval-batch-size", type=int, default=256, help="prompts per greedy generate call in evaluation")
    p.add_argument("--prompts-per-step", type=int, default=32,
                   help="rollout batch: prompts (= completions) per PPO step (per_device_train_batch_size)")
    p.add_argument("--ppo-epochs", type=int, default=2, help="num_ppo_epochs")
    p.add_argument("--mini-batches", type=int, default=2, help="num_mini_batches (optimiser steps per epoch)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-scheduler", default="constant", help="lr_scheduler_type (TRL's default is 'linear')")
    p.add_argument("--kl-coef", type=float, default=0.05, help="TRL's fixed KL coefficient (no adaptive controller)")
    p.add_argument("--kl-estimator", default="k1", choices=["k1", "k3"])
    p.add_argument("--max-new-tokens", type=int, default=5, help="response_length (also used in evaluation)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--missing-eos-penalty", type=float, default=None,
                   help="subtracted from the score of completions without EOS (TRL's default: none)")
    p.add_argument("--whiten-rewards", action="store_true")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="default: TRL's, which is ON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--out", default=None, help="TRL output_dir (nothing is saved there)")
    p.add_argument("--show-completions", type=int, default=4,
                   help="print this many decoded eval completions to stderr at each evaluation")
    args = p.parse_args(argv)
    if args.mode == "check-simpo":
        if not args.cases:
            p.error("check-simpo needs --cases")
        return args
    for flag in ("model", "prompts", "out"):
        if getattr(args, flag) is None:
            p.error(f"{args.mode} needs --{flag}")
    if args.reward_kind == "simpo" and not args.value_model:
        p.error("--reward-kind simpo needs --value-model (a sequence-classification directory, e.g. the scalar RM)")
    if args.mode == "throughput" and not args.steps:
        p.error("throughput needs --steps")
    if args.mode == "race" and args.budget_s is None and args.max_steps is None:
        p.error("race needs --budget-s and/or --max-steps")
    if args.mode == "race" and not args.eval:
        p.error("race needs --eval")
    if args.prompts_per_step % args.mini_batches:
        p.error("--prompts-per-step must be a multiple of --mini-batches")
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


def check_simpo(args: argparse.Namespace) -> None:
    """Score ``--cases`` with :class:`SimPOReward` through TRL's own ``truncate_response`` and ``get_reward``, as
    ``PPOTrainer.train`` does in the rollout (queries left-padded to one width, responses truncated after the first
    EOS), and print ``{"rewards": [...]}``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.ppo.ppo_trainer import truncate_response
    from trl.experimental.utils import get_reward

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with open(args.cases, encoding="utf-8") as f:
        cases = json.load(f)
    tok = AutoTokenizer.from_pretrained(args.reward_model, padding_side="left")
    model = SimPOReward(AutoModelForCausalLM.from_pretrained(args.reward_model, dtype=torch.float32), tok,
                        args.simpo_beta)
    pad_id = tok.pad_token_id
    queries = [tok(text=p)["input_ids"] for p in cases["prompts"]]
    C = max(len(q) for q in queries)
    queries = torch.tensor([[pad_id] * (C - len(q)) + q for q in queries])  # (B, C), as TRL's collator pads
    responses = truncate_response(tok.eos_token_id, pad_id, torch.tensor(cases["responses"]))  # (B, R)
    model.context_length = C
    with torch.no_grad():
        _, scores, _ = get_reward(model, torch.cat((queries, responses), 1), pad_id, C)
    print(json.dumps({"rewards": scores.tolist(), "context_length": C, "postprocessed_responses": responses.tolist()}))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.mode == "check-simpo":
        check_simpo(args)
        return

    import accelerate
    import datasets
    import transformers
    import trl
    import trl.experimental.ppo.ppo_trainer as ppo_mod
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        GenerationConfig,
        PrinterCallback,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    transformers.set_seed(args.seed)

    train_rows = read_jsonl(args.prompts)
    eval_rows = read_jsonl(args.eval) if args.eval else []
    answer_of = {r["prompt"]: r["answer"] for r in train_rows}

    # Left padding: PPOTrainer generates from the collated (padded) queries.  The addition prompts all have the
    # same length, so nothing is padded here anyway.
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise SystemExit("the tokenizer needs a pad token distinct from EOS (TRL's PPO masks pad ids everywhere)")
    f32 = {"dtype": torch.float32}
    policy = AutoModelForCausalLM.from_pretrained(args.model, **f32)
    ref_policy = AutoModelForCausalLM.from_pretrained(args.model, **f32)  # the reference: a copy of the SFT model
    value_model = AutoModelForSequenceClassification.from_pretrained(args.value_model or args.reward_model,
                                                                     num_labels=1, **f32)
    if args.reward_kind == "simpo":
        reward_tok = AutoTokenizer.from_pretrained(args.reward_model)
        if (reward_tok.get_vocab(), reward_tok.eos_token_id) != (tokenizer.get_vocab(), tokenizer.eos_token_id):
            raise SystemExit(f"the SimPO reward model {args.reward_model} needs the policy's tokenizer (it scores the "
                             "policy's token ids)")
        reward_model = SimPOReward(AutoModelForCausalLM.from_pretrained(args.reward_model, **f32), tokenizer,
                                   args.simpo_beta)
    else:
        reward_model = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1, **f32)
    for m in (reward_model, value_model):
        if isinstance(m, transformers.PreTrainedModel) and m.config.pad_token_id is None:
            m.config.pad_token_id = tokenizer.pad_token_id

    def tokenize(rows):
        return Dataset.from_dict({"input_ids": [tokenizer(text=r["prompt"])["input_ids"] for r in rows]})

    train_ds = tokenize(train_rows)
    eval_ds = tokenize(eval_rows[: args.prompts_per_step] or train_rows[: args.prompts_per_step])  # unused (see below)

    P = args.prompts_per_step
    n_batches = BIG_BATCHES
    cfg = {
        "output_dir": args.out,
        # The rollout batch.  PPOTrainer's batch_size = per_device_train_batch_size x gradient_accumulation_steps x
        # processes, mini_batch_size = batch_size / num_mini_batches; its micro-batch loop slices each mini-batch
        # in per_device_train_batch_size chunks, so with per_device 32 and 2 mini-batches every forward/backward is
        # one whole mini-batch of 16 and the optimiser steps after each (gradient_accumulation_steps 1).
        "per_device_train_batch_size": P,
        "gradient_accumulation_steps": 1,
        "num_mini_batches": args.mini_batches,
        "num_ppo_epochs": args.ppo_epochs,
        "local_rollout_forward_batch_size": P,  # generation and the no-grad forwards in one chunk (TRL default 64)
        "total_episodes": n_batches * P,
        "learning_rate": args.lr,
        "lr_scheduler_type": args.lr_scheduler,
        "warmup_steps": 0,
        "kl_coef": args.kl_coef,
        "kl_estimator": args.kl_estimator,
        "response_length": args.max_new_tokens,
        "temperature": args.temperature,
        "stop_token": "eos",  # generation stops at EOS; the reward is read at the EOS (TRL's default: no stop token)
        "missing_eos_penalty": args.missing_eos_penalty,
        "whiten_rewards": args.whiten_rewards,
        "num_sample_generations": 0,  # no debugging generations inside the training loop (TRL default 10)
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "bf16": False,  # TRL's _BaseConfig defaults bf16 to True (CPU autocast); we want fp32
        "fp16": False,
        "dataloader_num_workers": 0,
        "seed": args.seed,
        "data_seed": args.seed,
        "disable_tqdm": True,
    }
    if args.gradient_checkpointing is not None:
        cfg["gradient_checkpointing"] = args.gradient_checkpointing
    config = PPOConfig(**cfg)

    clock = TrainClock()
    stats = {k: 0.0 for k in ("generate_s", "reward_s", "rollout_fwd_s", "fwd_s", "gc_s", "score_sum", "gold_sum")}
    stats.update({k: 0 for k in ("completions", "completion_tokens", "clipped", "trained_tokens", "trained_positions",
                                 "trained_sequences", "train_forwards", "gold_n")})
    since_eval = {"score_sum": 0.0, "gold_sum": 0.0, "n": 0}
    step_logs: list[dict] = []
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id

    def cut_at_eos(rows: list[list[int]]) -> list[list[int]]:
        out = []
        for c in rows:
            j = next((k for k, t in enumerate(c) if t == eos_id), None)
            out.append(c if j is None else c[: j + 1])
        return out

    # ---- evaluation: greedy exact match, batched, left padding, stop at EOS --------------------------------
    def evaluate(trainer) -> tuple[float, list[str]]:
        m = trainer.accelerator.unwrap_model(trainer.model).policy
        was_training = m.training
        m.eval()
        gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=args.max_new_tokens, eos_token_id=[eos_id],
                                   pad_token_id=pad_id, disable_compile=True)
        gc_on = bool(getattr(m, "is_gradient_checkpointing", False))
        if gc_on:
            m.gradient_checkpointing_disable()
        correct, shown = 0, []
        try:
            with torch.no_grad():
                for i in range(0, len(eval_rows), args.eval_batch_size):
                    chunk = eval_rows[i:i + args.eval_batch_size]
                    ids = tokenizer(text=[r["prompt"] for r in chunk])["input_ids"]  # as the training queries
                    L = max(len(x) for x in ids)
                    input_ids = torch.tensor([[pad_id] * (L - len(x)) + x for x in ids])
                    attn = torch.tensor([[0] * (L - len(x)) + [1] * len(x) for x in ids])
                    out = m.generate(input_ids=input_ids.to(m.device), attention_mask=attn.to(m.device),
                                     generation_config=gen_cfg)
                    texts = tokenizer.batch_decode(cut_at_eos(out[:, L:].cpu().tolist()), skip_special_tokens=True)
                    hits = [float(t == r["answer"]) for t, r in zip(texts, chunk)]
                    correct += int(sum(hits))
                    if len(shown) < args.show_completions:
                        shown += [f"{r['prompt']!r} -> {t!r} (answer {r['answer']!r})"
                                  for r, t in zip(chunk, texts)][: args.show_completions - len(shown)]
        finally:
            if gc_on:
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)
            m.train(was_training)
        return correct / len(eval_rows), shown

    class BudgetEval(TrainerCallback):
        def __init__(self):
            self.trainer = None
            self.curve, self.eval_s, self.last_eval_train_s, self.last_eval_step = [], 0.0, 0.0, None
            self.t_train_end, self.steps = None, 0

        def eval_point(self, step: int):
            t_train = clock.now()
            t0 = time.perf_counter()
            acc, shown = evaluate(self.trainer)
            dt = time.perf_counter() - t0
            self.eval_s += dt
            n = since_eval["n"]
            point = {"train_s": round(t_train, 3), "step": step, "accuracy": acc,
                     "mean_score": since_eval["score_sum"] / n if n else None,
                     "mean_gold": since_eval["gold_sum"] / n if n else None, "eval_s": round(dt, 3)}
            since_eval.update(score_sum=0.0, gold_sum=0.0, n=0)
            self.curve.append(point)
            self.last_eval_train_s, self.last_eval_step = t_train, step
            print("eval " + json.dumps(point), file=sys.stderr)
            for line in shown:
                print("  " + line, file=sys.stderr)

        def on_train_begin(self, a, state, control, **kw):
            if args.mode == "race":
                self.eval_point(0)  # step 0, weights as loaded; before the training clock starts
            clock.start()

        def on_step_end(self, a, state, control, **kw):
            t = clock.now()
            self.steps = state.global_step
            stop = ((args.steps is not None and args.mode == "throughput" and state.global_step >= args.steps)
                    or (args.max_steps is not None and state.global_step >= args.max_steps)
                    or (args.budget_s is not None and args.mode == "race" and t >= args.budget_s))
            if stop:
                clock.pause()  # the training clock ends with the last PPO step
                self.t_train_end = clock.now()
                raise _Stop
            if args.mode == "race" and t - self.last_eval_train_s >= args.eval_every_s:
                clock.pause()
                try:
                    self.eval_point(state.global_step)
                finally:
                    clock.start()

        def on_log(self, a, state, control, logs=None, **kw):
            logs = dict(logs or {})
            step_logs.append(logs)
            print(f"step {state.global_step}: " + json.dumps(logs), file=sys.stderr)

    cb = BudgetEval()
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                         reward_model=reward_model, train_dataset=train_ds, value_model=value_model,
                         eval_dataset=eval_ds, callbacks=[cb])
    cb.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # keep stdout for the one JSON line
    targs = trainer.args
    assert targs.batch_size == P and targs.local_mini_batch_size == P // args.mini_batches, (
        targs.batch_size, targs.local_mini_batch_size)

    # ---- timers and counters around the module-level functions PPOTrainer.train calls --------------------
    orig_batch_generation, orig_get_reward, orig_forward = ppo_mod.batch_generation, ppo_mod.get_reward, ppo_mod.forward

    def batch_generation(model, queries, *a, **k):
        t0 = time.perf_counter()
        query_responses, logits = orig_batch_generation(model, queries, *a, **k)
        stats["generate_s"] += time.perf_counter() - t0
        L = queries.shape[1]
        responses = cut_at_eos(query_responses[:, L:].tolist())
        stats["completions"] += len(responses)
        stats["completion_tokens"] += sum(len(c) for c in responses)
        stats["clipped"] += sum(1 for c in responses if not c or c[-1] != eos_id)
        # the gold reward of the samples (watched, never optimised): the decoded completion == the answer
        prompts = tokenizer.batch_decode(queries.tolist(), skip_special_tokens=True)
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        gold = [float(t == answer_of.get(p)) for p, t in zip(prompts, texts)]
        stats["gold_sum"] += sum(gold)
        stats["gold_n"] += len(gold)
        since_eval["gold_sum"] += sum(gold)
        return query_responses, logits

    def get_reward(model, query_responses, pad_token_id, context_length):
        if isinstance(model, SimPOReward):
            model.context_length = context_length  # its backbone cannot see it (see SimPOReward)
        t0 = time.perf_counter()
        out = orig_get_reward(model, query_responses, pad_token_id, context_length)
        dt = time.perf_counter() - t0
        if model is reward_model:
            stats["reward_s"] += dt
            s = out[1].detach().float()
            stats["score_sum"] += float(s.sum())
            since_eval["score_sum"] += float(s.sum())
            since_eval["n"] += int(s.numel())
        else:
            stats["rollout_fwd_s"] += dt
        return out

    def forward(model, query_responses, pad_token_id):
        t0 = time.perf_counter()
        out = orig_forward(model, query_responses, pad_token_id)
        dt = time.perf_counter() - t0
        if torch.is_grad_enabled():  # the training forward (policy + value model) of one micro-batch
            stats["fwd_s"] += dt
            stats["trained_tokens"] += int((query_responses != pad_token_id).sum())
            stats["trained_positions"] += query_responses.numel()
            stats["trained_sequences"] += query_responses.shape[0]
            stats["train_forwards"] += 1
        else:  # the reference model's no-grad forward in the rollout
            stats["rollout_fwd_s"] += dt
        return out

    ppo_mod.batch_generation, ppo_mod.get_reward, ppo_mod.forward = batch_generation, get_reward, forward

    class _TimedGC:  # PPOTrainer.train calls gc.collect() twice per step; time it (part of train_s)
        def __getattr__(self, name):
            import gc
            return getattr(gc, name)

        @staticmethod
        def collect(*a, **k):
            import gc
            t0 = time.perf_counter()
            n = gc.collect(*a, **k)
            stats["gc_s"] += time.perf_counter() - t0
            return n

    ppo_mod.gc = _TimedGC()

    t0 = time.perf_counter()
    try:
        trainer.train()
    except _Stop:
        pass
    train_call_s = time.perf_counter() - t0
    steps = trainer.state.global_step
    if cb.t_train_end is None:  # TRL ran out of its own batches (never with BIG_BATCHES)
        clock.pause()
        cb.t_train_end = clock.now()
    if args.mode == "race" and cb.last_eval_step != steps:
        cb.eval_point(steps)

    wall = cb.t_train_end
    gen_s = stats["generate_s"] + stats["reward_s"]
    curve = [{k: p[k] for k in ("train_s", "step", "accuracy", "mean_score", "mean_gold")} for p in cb.curve]

    def mean_log(key):
        xs = [lg[key] for lg in step_logs if key in lg]
        return sum(xs) / len(xs) if xs else None

    sched = targs.lr_scheduler_type
    out = {
        "library": "trl",
        "mode": args.mode,
        "versions": {
            "trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
            "accelerate": accelerate.__version__, "datasets": datasets.__version__,
            "python": platform.python_version(),
        },
        "config": {
            "model": os.path.abspath(args.model), "reward_model": os.path.abspath(args.reward_model),
            "reward_kind": args.reward_kind, "simpo_beta": args.simpo_beta if args.reward_kind == "simpo" else None,
            "value_model": os.path.abspath(args.value_model or args.reward_model),
            "prompts": os.path.abspath(args.prompts), "eval": os.path.abspath(args.eval) if args.eval else None,
            "train_prompts": len(train_rows), "eval_prompts": len(eval_rows),
            "steps": args.steps, "budget_s": args.budget_s, "max_steps": args.max_steps,
            "eval_every_s": args.eval_every_s if args.mode == "race" else None, "eval_decoding": "greedy",
            "prompts_per_step": targs.batch_size, "completions_per_prompt": 1,
            "per_device_train_batch_size": targs.per_device_train_batch_size,
            "gradient_accumulation_steps": targs.gradient_accumulation_steps,
            "num_mini_batches": targs.num_mini_batches, "mini_batch_size": targs.mini_batch_size,
            "num_ppo_epochs": targs.num_ppo_epochs,
            "local_rollout_forward_batch_size": targs.local_rollout_forward_batch_size,
            "optimizer_steps_per_ppo_step": targs.num_ppo_epochs * targs.num_mini_batches,
            "lr": targs.learning_rate, "lr_scheduler": str(getattr(sched, "value", sched)),
            "warmup_steps": targs.warmup_steps, "optim": str(getattr(targs.optim, "value", targs.optim)),
            "weight_decay": targs.weight_decay, "adam_betas": [targs.adam_beta1, targs.adam_beta2],
            "adam_epsilon": targs.adam_epsilon,
            "max_grad_norm": None,  # TrainingArguments has 1.0, but PPOTrainer 1.12 never clips gradients
            "kl_coef": targs.kl_coef, "kl_controller": "fixed (TRL has no adaptive KL controller)",
            "kl_estimator": targs.kl_estimator, "cliprange": targs.cliprange, "vf_coef": targs.vf_coef,
            "cliprange_value": targs.cliprange_value, "gamma": targs.gamma, "lam": targs.lam,
            "whiten_rewards": targs.whiten_rewards, "advantage_whitening": True,
            "max_new_tokens": targs.response_length, "temperature": targs.temperature, "top_k": 0, "top_p": 1.0,
            "stop_token": targs.stop_token, "missing_eos_penalty": targs.missing_eos_penalty,
            "num_sample_generations": targs.num_sample_generations,
            "gradient_checkpointing": bool(targs.gradient_checkpointing),
            "model_checkpointing_active": bool(getattr(policy, "is_gradient_checkpointing", False)),
            "bf16": targs.bf16, "fp16": targs.fp16, "dtype": str(policy.dtype),
            "seed": args.seed, "torch_threads": torch.get_num_threads(),
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
        "gen_s": gen_s,  # generate + reward model (rlhfkit's generate_s + reward_s)
        "generate_s": stats["generate_s"],
        "reward_s": stats["reward_s"],
        "train_s": wall - gen_s,  # everything else: no-grad ref/value forwards, GAE, PPO epochs, TRL's per-step work
        "rollout_fwd_s": stats["rollout_fwd_s"],  # part of train_s: reference + value-model no-grad forwards
        "fwd_s": stats["fwd_s"],  # part of train_s: training forwards (policy + value model), backward excluded
        "gc_s": stats["gc_s"],  # part of train_s: PPOTrainer's own gc.collect() calls
        "completions": stats["completions"],
        "completion_tokens": stats["completion_tokens"],
        "clipped_ratio": stats["clipped"] / stats["completions"] if stats["completions"] else None,
        "trained_tokens": stats["trained_tokens"],
        "trained_positions": stats["trained_positions"],
        "trained_sequences": stats["trained_sequences"],
        "train_forwards": stats["train_forwards"],
        "completions_per_s": stats["completions"] / wall if wall > 0 else None,
        "trained_tokens_per_s": stats["trained_tokens"] / wall if wall > 0 else None,
        "mean_train_score": stats["score_sum"] / stats["completions"] if stats["completions"] else None,
        "mean_train_gold": stats["gold_sum"] / stats["gold_n"] if stats["gold_n"] else None,
        "mean_kl": mean_log("objective/kl"),
        "final_kl": step_logs[-1].get("objective/kl") if step_logs else None,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
