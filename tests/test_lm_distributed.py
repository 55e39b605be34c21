"""Data-parallel training equals one process with the whole batch (rlhfkit.language.train.fit).

The worker (tests/_lm_dist_worker.py) runs a few optimiser steps of the reward model (one head,
and a 2-head bootstrap ensemble), DPO and SFT (also with micro-batches of one example, i.e.
gradient accumulation under ``no_sync``) on a tiny Llama, batch 4, length-grouped batches.
It runs once as a plain process and once as two gloo processes under ``accelerate launch``;
every step's ``train/loss`` and ``train/grad_norm`` must agree. SFT is the telling case: its loss
is a mean over completion tokens and the two processes hold different numbers of them.

``accelerate launch --cpu --num_processes 2`` starts ONE process in accelerate 1.x (its "simple"
launcher; multi-CPU needs mpirun or torchrun), so the test uses ``--multi_gpu --num_processes 2``,
which goes through ``torch.distributed.run``; the worker's ``Accelerator(cpu=True)`` then sees
``LOCAL_RANK`` and picks ``MULTI_CPU`` with gloo, GPU or not. The worker reports its process
count, so a launcher that silently runs one process fails the test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
WORKER = HERE / "_lm_dist_worker.py"
DATA = HERE / "data" / "hh_rlhf_harmless_200.jsonl"
TRAINERS = ["reward", "reward_ensemble", "dpo", "sft", "sft_micro1"]
TOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path) -> dict[str, str]:
    # HF_HOME: keep any accelerate default_config.yaml of the user's out of the launch
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, dict]:
    import torch

    from rlhfkit.language.data import load_data
    from rlhfkit.language.models import load_reward_model, load_tokenizer
    from rlhfkit.language.tiny import TinySpec, build_tiny, texts_of

    tmp = tmp_path_factory.mktemp("lm_dist")
    examples = load_data(DATA, kind="preference", skip_bad=True).examples
    model = build_tiny(texts_of(examples), tmp / "tiny", TinySpec(n_layers=1, d_model=32, n_heads=2, vocab_size=400))
    tok = load_tokenizer(model)
    heads = {}
    for n in (1, 2):  # one saved reward checkpoint per head count: every run starts from the same head
        torch.manual_seed(0)
        heads[n] = tmp / f"rm{n}"
        load_reward_model(model, num_heads=n, pad_token_id=tok.pad_token_id).save_pretrained(heads[n])
        tok.save_pretrained(heads[n])
    worker_args = [str(WORKER), "--model", str(model), "--rm", str(heads[1]), "--rm-ensemble", str(heads[2]),
                   "--data", str(DATA)]
    env = _env(tmp)

    one = tmp / "one.json"
    proc = subprocess.run([sys.executable, *worker_args, "--out", str(one)], check=False, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, f"single-process worker failed:\n{proc.stderr[-3000:]}"

    two = tmp / "two.json"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    try:
        proc = subprocess.run([*launch, *worker_args, "--out", str(two)], check=False, env=env, capture_output=True, text=True,
                              timeout=180)
        failed, tail = proc.returncode != 0, proc.stderr[-3000:]
    except subprocess.TimeoutExpired as e:
        failed, tail = True, f"timed out after {e.timeout} s\n{(e.stderr or b'')[-3000:]!r}"
    if failed and not Path(str(two) + ".started").exists():
        pytest.skip(f"accelerate could not start 2 gloo processes on this machine (the process group never came "
                    f"up):\n{tail}")
    assert not failed, f"2-process worker failed after the process group came up:\n{tail}"
    return json.loads(one.read_text()), json.loads(two.read_text())


def test_two_processes_really_ran(runs):
    one, two = runs
    assert one["num_processes"] == 1
    assert two["num_processes"] == 2, "accelerate launch ran one process: the comparison below would be vacuous"
    assert two["backend"] == "gloo" and two["distributed_type"].endswith("MULTI_CPU")
    # the SFT shards hold different completion-token counts, so token weighting is exercised
    assert any(abs(a - b) > 50 for a, b in two["sft_completion_tokens_by_half"])


@pytest.mark.parametrize("trainer", TRAINERS)
def test_two_processes_equal_one(runs, trainer):
    one, two = runs
    a, b = one[trainer], two[trainer]
    assert len(a["loss"]) == len(b["loss"]) > 1
    for key in ("loss", "grad_norm"):
        for step, (x, y) in enumerate(zip(a[key], b[key]), 1):
            assert y == pytest.approx(x, rel=TOL, abs=TOL), f"{trainer} step {step} {key}: 1 process {x}, 2 {y}"


def test_cli_dpo_under_accelerate_launch_equals_one_process(runs, tmp_path):
    """`accelerate launch --num_processes 2 rlhf lm dpo …` trains like `rlhf lm dpo …`, and only
    the main process writes the run directory."""
    from rlhfkit.language.data import load_data
    from rlhfkit.language.tiny import TinySpec, build_tiny, texts_of

    examples = load_data(DATA, kind="preference", skip_bad=True).examples
    model = build_tiny(texts_of(examples), tmp_path / "tiny", TinySpec(n_layers=1, d_model=32, n_heads=2,
                                                                     vocab_size=400))
    rlhf = Path(sys.executable).parent / "rlhf"
    cli = ["lm", "dpo", "--model", str(model), "--data", str(DATA), "--skip-bad", "--max-steps", "3",
           "--batch-size", "4", "--max-length", "128", "--val-fraction", "0.05", "--lr", "1e-3"]
    env = _env(tmp_path)
    one = subprocess.run([str(rlhf), *cli, "--out", str(tmp_path / "one")], check=False, env=env,
                         capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    two = subprocess.run([*launch, str(rlhf), *cli, "--out", str(tmp_path / "two")], check=False, env=env,
                         capture_output=True, text=True, timeout=180)
    # (the `runs` fixture skips this test where 2 gloo processes cannot start)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]

    def losses(run: str) -> list[float]:
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r["train/loss"] for r in rows if "train/loss" in r]

    a, b = losses("one"), losses("two")
    assert len(a) == len(b) == 3
    assert b == pytest.approx(a, rel=TOL, abs=TOL)
    for f in ("summary.json", "curves.png", "train_args.json", "model.safetensors"):
        assert (tmp_path / "two" / f).is_file(), f
    # one writer: were the processes not joined, each would train alone on all the data (the same
    # losses!) and both would write metrics.jsonl and print the summary
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == \
        len((tmp_path / "one" / "metrics.jsonl").read_text().splitlines())
    assert two.stdout.count("model, metrics.jsonl and curves.png in") == 1


GRPO_WORKER = HERE / "_lm_grpo_dist_worker.py"


def test_grpo_two_processes_equal_one(tmp_path):
    """GRPO over 2 gloo processes (prompts split, rewards gathered for the advantages, loss normalisers
    summed, groups without signal skipped unevenly) gives the same updates as one process."""
    from rlhfkit.language.tiny import TinySpec, build_tiny

    model = build_tiny(["Q: 1+2= A: 3"], tmp_path / "char", TinySpec(vocab_size=262, n_layers=1, d_model=32,
                                                                    n_heads=2, max_positions=64))
    env = _env(tmp_path)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    proc = subprocess.run([sys.executable, str(GRPO_WORKER), "--model", str(model), "--out", str(one)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    proc = subprocess.run([*launch, str(GRPO_WORKER), "--model", str(model), "--out", str(two)], env=env,
                          capture_output=True, text=True, timeout=180)
    if proc.returncode and not Path(str(two) + ".started").exists():
        pytest.skip(f"accelerate could not start 2 gloo processes:\n{proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (a["num_processes"], b["num_processes"]) == (1, 2)
    for name in ("grpo", "grpo_mu2_micro", "reinforce_pp_seq"):
        assert any(0 < f < 1 for f in a[name]["reward/zero_std_fraction"])  # some groups idle, some not
        for key in ("loss/policy", "train/grad_norm", "reward/mean"):
            assert b[name][key] == pytest.approx(a[name][key], rel=TOL, abs=TOL), (name, key)
        assert b[name]["checksum"] == pytest.approx(a[name]["checksum"], rel=1e-6)
        assert a[name]["train/grad_norm"][0] > 0
