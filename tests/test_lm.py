"""Language RLHF library: losses by hand, log-probs against naive loops, tiny models, the
training loop, small "it learns" runs of SFT / reward model / DPO, and saving.

Every model here is tiny (1 layer, d_model 32) and every run a few dozen steps at most, so the
file runs in seconds on one CPU thread.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhfkit.choice import bradley_terry_nll
from rlhfkit.language import reward as rw
from rlhfkit.language.data import PreferenceExample, RankedExample, SFTExample, load_data
from rlhfkit.language.dpo import DPOSettings, dpo_loss, evaluate_dpo, train_dpo
from rlhfkit.language.logprobs import Encoded, encode, pad, sequence_logprobs, token_logprobs
from rlhfkit.language.models import load_causal_lm, load_reward_model, load_tokenizer, save_model
from rlhfkit.language.reward import (
    _items_loss,
    encode_preferences,
    evaluate_reward_model,
    reward_pair_loss,
    score,
    train_reward_model,
)
from rlhfkit.language.sft import encode_sft, sft_loss, train_sft
from rlhfkit.language.tiny import EOS, PAD, TinySpec, build_tiny, texts_of
from rlhfkit.language.train import TrainArgs, fit, length_grouped_batches

HH = Path(__file__).parent / "data" / "hh_rlhf_harmless_200.jsonl"
SMALL = TinySpec(arch="llama", n_layers=1, d_model=32, n_heads=2, vocab_size=400, max_positions=256)

# -log σ(x) for the x the hand computations below need: log(1 + e^{-x})
NLS_1 = math.log1p(math.exp(-1.0))  # 0.3132617
NLS_M1 = math.log1p(math.exp(1.0))  # 1.3132617
LN2 = math.log(2.0)


# one torch thread: tests/conftest.py's autouse fixture


TOPICS = ["apples", "rivers", "music", "trains", "cats", "rain", "books", "stars"]


def yes_no(n: int, start: int = 0) -> list[PreferenceExample]:
    """A trivially learnable preference: the chosen answer says yes, the rejected one no."""
    return [PreferenceExample(prompt=f"Question {i}: do you like {TOPICS[i % 8]}?",
                              chosen=f" yes, {TOPICS[(3 * i) % 8]}", rejected=f" no, {TOPICS[(3 * i) % 8]}")
            for i in range(start, start + n)]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """One tiny llama (1 layer, d 32) with a 400-token BPE trained on HH-RLHF + the synthetic text."""
    texts = texts_of(load_data(HH).examples) + texts_of(yes_no(96)) + ["naïve ☃ café"]
    return build_tiny(texts, tmp_path_factory.mktemp("tiny") / "llama", SMALL)


@pytest.fixture(scope="session")
def tok(tiny_dir):
    return load_tokenizer(tiny_dir)


# ----------------------------------------------------------------------------------------------
# Losses by hand
# ----------------------------------------------------------------------------------------------


def _t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_dpo_sigmoid_cdpo_ipo_by_hand():
    pc, pr, rc, rr = _t(-10.0), _t(-12.0), _t(-11.0), _t(-11.0)
    # h = (log π_c - log π_ref,c) - (log π_r - log π_ref,r) = (-10 + 11) - (-12 + 11) = 1 - (-1) = 2
    # sigmoid, β = 0.5: -log σ(β h) = -log σ(1) = log(1 + e^-1) = 0.313262
    loss, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert loss.item() == pytest.approx(0.313262, abs=1e-6)
    assert loss.item() == pytest.approx(NLS_1, abs=1e-12)
    # rewards β (log π - log π_ref): chosen 0.5 · 1 = 0.5, rejected 0.5 · (-1) = -0.5
    assert chosen_r.item() == pytest.approx(0.5) and rejected_r.item() == pytest.approx(-0.5)
    # cDPO, ε = 0.1: -0.9 log σ(1) - 0.1 log σ(-1) = 0.9 · 0.313262 + 0.1 · 1.313262 = 0.413262
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="cdpo", label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.9 * NLS_1 + 0.1 * NLS_M1, abs=1e-12)
    assert loss.item() == pytest.approx(0.413262, abs=1e-6)
    # IPO: (h - 1/(2β))² = (2 - 1/(2 · 0.5))² = (2 - 1)² = 1; with β = 0.1: (2 - 5)² = 9
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo")
    assert loss.item() == pytest.approx(1.0)
    loss, chosen_r, _ = dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="ipo")
    assert loss.item() == pytest.approx(9.0) and chosen_r.item() == pytest.approx(0.1)


def test_simpo_by_hand_ignores_the_reference():
    # SimPO (Meng et al. 2024, Eq. 6) on length-averaged log-probs ℓ_c = -1.0, ℓ_r = -1.5, β = 2, γ = 0.4:
    # -log σ(β ℓ_c - β ℓ_r - γ) = -log σ(-2 + 3 - 0.4) = -log σ(0.6) = log(1 + e^-0.6) = 0.437488
    for ref in (_t(0.0), _t(-7.0)):  # no reference term: any value gives the same loss
        loss, cr, rr = dpo_loss(_t(-1.0), _t(-1.5), ref, ref, beta=2.0, loss_type="simpo", margin=0.4)
        assert loss.item() == pytest.approx(math.log1p(math.exp(-0.6)), abs=1e-12)
        assert loss.item() == pytest.approx(0.437488, abs=1e-6)
        assert cr.item() == pytest.approx(-2.0) and rr.item() == pytest.approx(-3.0)  # β ℓ
    # the margin moves the loss; DPO's sigmoid takes it too (Llama 2's margin) but defaults to 0
    loss0, _, _ = dpo_loss(_t(-1.0), _t(-1.5), _t(0.0), _t(0.0), beta=2.0, loss_type="simpo")
    assert loss0.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)
    with pytest.raises(ValueError, match="margin"):
        dpo_loss(_t(1), _t(1), _t(1), _t(1), beta=0.1, loss_type="simpo", margin=-1.0)
    with pytest.raises(ValueError, match="margin"):
        DPOSettings(loss_type="simpo", margin=-0.5)


def test_dpo_batch_of_pairs_policy_equal_reference_and_bad_input():
    # policy = reference: h = 0 for every pair, -log σ(0) = ln 2, rewards 0
    lp = _t(-3.0, -7.5, -1.0)
    loss, cr, rr = dpo_loss(lp, lp - 1, lp, lp - 1, beta=0.3)
    assert torch.allclose(loss, torch.full((3,), LN2, dtype=torch.float64))
    assert torch.all(cr == 0) and torch.all(rr == 0)
    # per-pair values in a batch: h = [2, -2]; β = 0.5 → [-log σ(1), -log σ(-1)]
    loss, _, _ = dpo_loss(_t(-10, -12), _t(-12, -10), _t(-11, -11), _t(-11, -11), beta=0.5)
    assert torch.allclose(loss, _t(NLS_1, NLS_M1))
    # gradients flow to the policy, not through the returned rewards
    pc = _t(-10.0).requires_grad_()
    loss, cr, _ = dpo_loss(pc, _t(-12.0), _t(-11.0), _t(-11.0), beta=0.5)
    loss.sum().backward()
    # d/dpc -log σ(β h) = -β σ(-β h) = -0.5 σ(-1)
    assert pc.grad.item() == pytest.approx(-0.5 / (1 + math.e))
    assert not cr.requires_grad
    with pytest.raises(ValueError, match="share one"):
        dpo_loss(_t(1, 2), _t(1), _t(1), _t(1), beta=0.1)
    with pytest.raises(ValueError, match="share one"):
        dpo_loss(*(torch.zeros(2, 2),) * 4, beta=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(_t(1), _t(1), _t(1), _t(1), beta=0.1, loss_type="kto")  # type: ignore[arg-type]
    for bad in (dict(beta=0), dict(loss_type="hinge"), dict(label_smoothing=0.5)):
        with pytest.raises(ValueError):
            DPOSettings(**bad)  # type: ignore[arg-type]


def test_reward_pair_loss_by_hand():
    # (B,): [-log σ(2 - 1), -log σ(0 - 0)] = [0.313262, ln 2]
    loss = reward_pair_loss(_t(2.0, 0.0), _t(1.0, 0.0))
    assert loss.shape == (2,) and torch.allclose(loss, _t(NLS_1, LN2))
    # tie, target ½, r_c - r_r = 1: -(½ log σ(1) + ½ log σ(-1)) = ½ (0.313262 + 1.313262) = 0.813262
    loss = reward_pair_loss(_t(1.0), _t(0.0), _t(0.5))
    assert loss.item() == pytest.approx(0.5 * (NLS_1 + NLS_M1)) and loss.item() == pytest.approx(0.813262, abs=1e-6)
    # margin 1 (Llama 2): -log σ(2 - 1 - 1) = ln 2; as a (B,) tensor, per pair
    assert reward_pair_loss(_t(2.0), _t(1.0), margin=1.0).item() == pytest.approx(LN2)
    loss = reward_pair_loss(_t(2.0, 2.0), _t(1.0, 1.0), margin=_t(1.0, -1.0))  # [-log σ(0), -log σ(2)]
    assert torch.allclose(loss, _t(LN2, math.log1p(math.exp(-2.0))))
    # (B, E) = (1, 2): heads' differences [1, -1] → mean(0.313262, 1.313262) = 0.813262
    rc, rr = _t(2.0, 0.0).view(1, 2), _t(1.0, 1.0).view(1, 2)
    assert reward_pair_loss(rc, rr).item() == pytest.approx(0.5 * (NLS_1 + NLS_M1))
    # bootstrap weights (B, E): [2, 0] → (2 · 0.313262 + 0) / 2; [0, 3] → 3 · 1.313262 / 2 = 1.969893
    assert reward_pair_loss(rc, rr, weights=_t(2.0, 0.0).view(1, 2)).item() == pytest.approx(NLS_1)
    assert reward_pair_loss(rc, rr, weights=_t(0.0, 3.0).view(1, 2)).item() == pytest.approx(1.5 * NLS_M1)
    # the target broadcasts over heads: tie on (1, 2) → each head -(½ log σ(d) + ½ log σ(-d)), d = ±1
    assert reward_pair_loss(rc, rr, _t(0.5)).item() == pytest.approx(0.5 * (NLS_1 + NLS_M1))
    with pytest.raises(ValueError, match="differ in shape"):
        reward_pair_loss(_t(1.0, 2.0), _t(1.0))
    with pytest.raises(ValueError, match=r"weights must be \(B, E\)"):
        reward_pair_loss(rc, rr, weights=_t(1.0, 1.0))


def test_reward_pair_loss_with_one_head_is_bradley_terry():
    g = torch.Generator().manual_seed(0)
    rc, rr = torch.randn(7, generator=g), torch.randn(7, generator=g)
    target, margin = torch.rand(7, generator=g), torch.rand(7, generator=g)
    expected = bradley_terry_nll(rc, rr, target, margin=margin)
    assert torch.allclose(reward_pair_loss(rc, rr, target, margin=margin), expected)
    assert torch.allclose(reward_pair_loss(rc.view(7, 1), rr.view(7, 1), target, margin=margin), expected)
    assert torch.allclose(reward_pair_loss(rc, rr), bradley_terry_nll(rc, rr))


def test_plackett_luce_list_of_two_equals_the_pair_loss(tok):
    # a ranked list of K = 2 (no tie) goes through Plackett-Luce; a pair through Bradley-Terry:
    # with two items both are -log σ(r_best - r_worst)
    rewards = _t(0.7, -0.4).float().view(2, 1)  # (2 responses, E = 1), best first
    ranked = encode_preferences(tok, [RankedExample("Q:", (" yes", " no"), (0, 1))], 16)
    pair = encode_preferences(tok, [PreferenceExample("Q:", " yes", " no")], 16)
    assert ranked[0].target is None and pair[0].target == 1.0
    pl, _ = _items_loss(rewards, ranked, seed=0)
    bt, metrics = _items_loss(rewards, pair, seed=0)
    assert pl.item() == pytest.approx(bt.item()) and bt.item() == pytest.approx(math.log1p(math.exp(-1.1)))
    assert metrics["train/accuracy"] == (1.0, 1.0)


def _batch_ab() -> tuple[list[Encoded], object]:
    # the example of pad's docstring: a = [5, 6] + [7, eos], b = [5] + [8, 9, 10, eos]; eos = 2, pad = 0
    a, b = Encoded((5, 6, 7, 2), 2), Encoded((5, 8, 9, 10, 2), 1)
    return [a, b], pad([a, b], 0)


def test_sft_loss_by_hand():
    _, batch = _batch_ab()
    V = 11
    # uniform logits: every scored token has log-prob -log V; a scores 7 and eos (2 tokens), b scores
    # 8, 9, 10, eos (4 tokens); prompt tokens (6 in a, none after position 0 in b) and padding excluded
    logits = torch.zeros(2, 5, V)
    loss, n = sft_loss(logits, batch)
    assert int(n) == 6 and loss.item() == pytest.approx(6 * math.log(V))
    # logits that predict prompt tokens (a: position 0 predicts 6) or padding (a: position 3 predicts
    # the pad) or nothing (the last position) do not count
    changed = logits.clone()
    changed[0, 0] = torch.randn(V)
    changed[0, 3] = torch.randn(V)
    changed[:, 4] = torch.randn(2, V)
    assert sft_loss(changed, batch)[0].item() == pytest.approx(6 * math.log(V))
    # a: position 1 predicts the completion token 7; give it logit ln 5 (others 0):
    # log p = ln 5 - ln(5 + 10) = -ln 3, so loss = 5 ln 11 + ln 3
    changed = logits.clone()
    changed[0, 1, 7] = math.log(5.0)
    assert sft_loss(changed, batch)[0].item() == pytest.approx(5 * math.log(V) + math.log(3.0))


def test_sft_loss_counts_only_scored_tokens_with_an_empty_prompt():
    # prompt "" → n_prompt 0; tokens [8, 9, eos]: only 9 and eos can be predicted (from 8, then 9)
    batch = pad([Encoded((8, 9, 2), 0)], 0)
    loss, n = sft_loss(torch.zeros(1, 3, 11), batch)
    assert loss.item() == pytest.approx(2 * math.log(11))
    assert int(n) == 2  # got 3: the per-token loss is (2/3) log V, biased low


# ----------------------------------------------------------------------------------------------
# Log-probabilities
# ----------------------------------------------------------------------------------------------


def test_pad_reproduces_its_docstring_example():
    examples, batch = _batch_ab()
    assert batch.input_ids.tolist() == [[5, 6, 7, 2, 0], [5, 8, 9, 10, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    F, T = False, True
    assert batch.completion_mask.tolist() == [[F, F, T, T, F], [F, T, T, T, T]]
    assert batch.input_ids.dtype == torch.long and batch.completion_mask.dtype == torch.bool
    assert batch.n_tokens == 9
    assert pad(examples, 0, pad_to_multiple_of=4).input_ids.shape == (2, 8)
    with pytest.raises(ValueError, match="empty batch"):
        pad([], 0)


def test_encode_layout(tok):
    p_ids = tok("The sky is", add_special_tokens=True)["input_ids"]
    c_ids = tok(" blue.", add_special_tokens=False)["input_ids"]
    e = encode(tok, "The sky is", " blue.", max_length=64)
    assert e.input_ids == tuple(p_ids + c_ids + [tok.eos_token_id])
    assert e.n_prompt == len(p_ids) and not e.truncated and len(e) == len(p_ids) + len(c_ids) + 1
    assert encode(tok, "The sky is", " blue.", max_length=64, add_eos=False).input_ids == tuple(p_ids + c_ids)
    assert encode(tok, "", " blue.", max_length=64) == Encoded(tuple(c_ids + [tok.eos_token_id]), 0)
    with pytest.raises(ValueError, match="max_length"):
        encode(tok, "a", "b", max_length=1)
    with pytest.raises(ValueError, match="empty completion"):
        encode(tok, "a", "", max_length=8, add_eos=False)


LONG_PROMPT = "Human: what is the weather like today in the town?\n\nAssistant:"
LONG_COMPLETION = " It is rainy and cold, with a strong wind from the north."


def _ids(tok, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    return tok(prompt)["input_ids"], tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_encode_truncates_the_prompt_from_the_left(tok):
    p, c = _ids(tok, LONG_PROMPT, " ok")
    assert len(p) > 10 and len(c) <= 5
    # too long by len(p) - 5 tokens: the prompt keeps its last 5 tokens, the completion (and EOS) is intact
    e = encode(tok, LONG_PROMPT, " ok", max_length=len(c) + 5)
    assert e.truncated and len(e) == len(c) + 5 and e.n_prompt == 5
    assert e.input_ids == tuple(p[-5:] + c)
    # a completion longer than max_length is cut from the right (the EOS goes too)
    p, c = _ids(tok, "", LONG_COMPLETION)
    e = encode(tok, "", LONG_COMPLETION, max_length=6)
    assert e == Encoded(tuple(c[:6]), 0, True)
    # exactly max_length: not truncated
    p, c = _ids(tok, LONG_PROMPT, " ok")
    assert not encode(tok, LONG_PROMPT, " ok", max_length=len(p) + len(c)).truncated


def test_encode_cuts_the_completion_only_after_the_prompt(tok):
    p, c = _ids(tok, LONG_PROMPT, LONG_COMPLETION)
    assert len(p) > 8 and len(c) > 12
    # max_length = len(c) + 2: the documented rule drops all but the last 2 prompt tokens and keeps
    # the whole completion; the code keeps max_length // 2 prompt tokens and cuts the completion
    e = encode(tok, LONG_PROMPT, LONG_COMPLETION, max_length=len(c) + 2)
    assert e.truncated and len(e) == len(c) + 2
    assert (e.n_prompt, e.input_ids) == (2, tuple(p[-2:] + c))


def test_token_logprobs_equals_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    B, T, V = 2, 6, 9
    logits = torch.randn(B, T, V, generator=g) * 3
    ids = torch.randint(0, V, (B, T), generator=g)
    got = token_logprobs(logits, ids)
    expected = torch.zeros(B, T)
    for b in range(B):
        for t in range(1, T):
            expected[b, t] = torch.log_softmax(logits[b, t - 1], -1)[ids[b, t]]
    assert got.shape == (B, T) and torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        token_logprobs(logits, ids[:, :-1])


def test_sequence_logprobs_naive_and_independent_of_padding(tiny_dir, tok):
    torch.manual_seed(0)
    model = load_causal_lm(tiny_dir).eval()
    short = encode(tok, "Human: hi", " Hello there!", max_length=64)
    long = encode(tok, "Human: what is the weather like today in the town?", " Rainy, I am afraid.", max_length=64)
    assert len(short) < len(long)
    batch = pad([short, long], tok.pad_token_id)
    with torch.no_grad():
        lp, n = sequence_logprobs(model, batch)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        for i, e in enumerate((short, long)):
            expected = sum(float(torch.log_softmax(logits[i, t - 1], -1)[e.input_ids[t]])
                           for t in range(e.n_prompt, len(e)))
            assert lp[i].item() == pytest.approx(expected, abs=1e-4)
            assert int(n[i]) == len(e) - e.n_prompt
            alone, _ = sequence_logprobs(model, pad([e], tok.pad_token_id))
            assert abs(alone.item() - lp[i].item()) < 1e-5  # padding after an example does not change it
        avg, n2 = sequence_logprobs(model, batch, average=True)
    assert torch.allclose(avg, lp / n) and torch.equal(n, n2)
    assert torch.all(lp < 0)


# ----------------------------------------------------------------------------------------------
# Tiny models
# ----------------------------------------------------------------------------------------------


def test_build_tiny_llama_loads_with_auto_classes(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, local_files_only=True)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 1
    assert len(tok) == 400 and model.config.vocab_size == 400
    assert tok.eos_token == EOS and tok.pad_token == PAD and tok.pad_token_id != tok.eos_token_id
    for text in ("naïve ☃", "héllo wörld 日本語 🙂", "\n\nHuman: hi\n\nAssistant:"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # byte-level: no unknown token, exact round trip
    assert tok("x", add_special_tokens=True)["input_ids"] == tok("x", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([tok("hello", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (1, ids.shape[1], 400)
    info = json.loads((tiny_dir / "tiny.json").read_text())
    assert info["arch"] == "llama" and info["d_model"] == 32 and info["parameters"] > 0
    assert (tiny_dir / "model.safetensors").is_file()


def test_build_tiny_gpt2(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = ["the quick brown fox", "jumps over the lazy dog", "naïve ☃"] * 3
    out = build_tiny(texts, tmp_path / "gpt2", TinySpec(arch="gpt2", n_layers=1, d_model=32, n_heads=2,
                                                        vocab_size=300, max_positions=64))
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert model.config.model_type == "gpt2" and model.config.n_positions == 64
    assert tok.pad_token_id != tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    assert tok.decode(tok("naïve ☃")["input_ids"]) == "naïve ☃"
    with pytest.raises(ValueError, match="no text"):
        build_tiny(["", ""], tmp_path / "empty", TinySpec(n_layers=1, d_model=32, n_heads=2, vocab_size=300))


@pytest.mark.parametrize("bad, match", [
    (dict(arch="gpt3"), "arch"),
    (dict(n_layers=0), "n_layers must be positive"),
    (dict(d_model=-32), "d_model must be positive"),
    (dict(d_model=30, n_heads=4), "divisible"),
    (dict(vocab_size=100), "vocab_size must be at least 262"),
])
def test_tiny_spec_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        TinySpec(**bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


def _padding(lengths, batches) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("group", [True, False])
def test_length_grouped_batches_cover_each_index_at_most_once(group):
    lengths = np.random.default_rng(0).integers(1, 500, size=100).tolist()
    batches = length_grouped_batches(lengths, 8, np.random.default_rng(1), group=group, mega=4)
    assert len(batches) == 12 and all(len(b) == 8 for b in batches)  # 100 = 12 · 8 + 4: the 4 are dropped
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == len(flat) == 96 and set(flat) <= set(range(100))
    again = length_grouped_batches(lengths, 8, np.random.default_rng(1), group=group, mega=4)
    assert again == batches  # a function of the generator only
    assert length_grouped_batches([3, 1, 2], 8, np.random.default_rng(0), group=group) != []  # < 1 batch: kept
    assert sorted(length_grouped_batches([3, 1, 2], 8, np.random.default_rng(0), group=group)[0]) == [0, 1, 2]


def test_length_grouping_reduces_padding():
    lengths = np.random.default_rng(0).integers(1, 500, size=256).tolist()
    grouped = length_grouped_batches(lengths, 8, np.random.default_rng(1), group=True)
    plain = length_grouped_batches(lengths, 8, np.random.default_rng(1), group=False)
    assert _padding(lengths, grouped) < 0.25 * _padding(lengths, plain)


@pytest.mark.parametrize("bad", [dict(lr=0), dict(epochs=0), dict(batch_size=0), dict(max_length=-1),
                                 dict(val_fraction=1.0), dict(val_fraction=-0.1), dict(schedule="step")])
def test_train_args_validation(bad):
    with pytest.raises(ValueError):
        TrainArgs(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [dict(max_steps=-1), dict(micro_batch_size=-1), dict(log_every=0)])
def test_train_args_rejects_values_fit_cannot_use(bad):
    with pytest.raises(ValueError):
        TrainArgs(**bad)


def _linear_fit(args: TrainArgs, out=None, evaluate=None, select=("val/loss", "min")):
    """Fit y = 3x with a 1-parameter linear model through the shared loop."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1, bias=False)
    items = [float(x) for x in np.linspace(-1, 1, 32)]

    def collate(xs):
        return torch.tensor(xs).view(-1, 1)

    def loss_sum(m, x):
        loss = ((m(x) - 3 * x) ** 2).sum()
        return loss, {"train/loss": (loss.item(), len(x))}

    return fit(model, items, items[:8], collate=collate, loss_sum=loss_sum, units=len, lengths=[1] * len(items),
               args=args, evaluate=evaluate, select=select, out=out, n_tokens=len)


def test_fit_steps_metrics_and_gradient_accumulation(tmp_path):
    # max_grad_norm 1e9: never clips, but logs train/grad_norm
    args = TrainArgs(lr=0.05, batch_size=8, max_steps=5, warmup_ratio=0.0, max_grad_norm=1e9, schedule="constant")
    whole = _linear_fit(args, out=tmp_path)
    assert whole.steps == 5 and whole.tokens == 40
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5]
    assert "summary/tokens_per_s" in rows[-1]
    # micro-batches of 2 accumulate to the same update as the whole batch of 8
    micro = _linear_fit(replace(args, micro_batch_size=2))
    assert torch.allclose(whole.model.weight, micro.model.weight, atol=1e-6)
    # (Adam hides a constant gradient scale: the logged gradient norms show it)
    norms = [[r["train/grad_norm"] for r in f.history] for f in (whole, micro)]
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)
    assert [r["train/loss"] for r in whole.history] == pytest.approx([r["train/loss"] for r in micro.history])
    # epochs: 32 items / 8 = 4 steps per epoch
    assert _linear_fit(TrainArgs(lr=0.05, batch_size=8, epochs=1.5)).steps == 6
    with pytest.raises(ValueError, match="fewer than one batch"):
        _linear_fit(TrainArgs(batch_size=64))


def test_fit_keeps_the_best_weights_and_stops_early():
    # a "validation" score that is best at the 2nd evaluation, then worse: patience 2 stops at the 4th
    scores = iter([5.0, 1.0, 2.0, 3.0, 4.0, 6.0])
    weights = []

    def evaluate(m, items):
        weights.append(m.weight.detach().clone())
        return {"val/loss": next(scores)}

    args = TrainArgs(lr=0.05, batch_size=8, max_steps=6, eval_every=1, patience=2, warmup_ratio=0.0)
    fitted = _linear_fit(args, evaluate=evaluate)
    assert fitted.steps == 4 and len(weights) == 4
    assert fitted.best == {"step": 2, "val/loss": 1.0}
    assert torch.equal(fitted.model.weight, weights[1])


# ----------------------------------------------------------------------------------------------
# It learns (a few seconds each)
# ----------------------------------------------------------------------------------------------


def _sft_val_loss(model, tok, demos) -> float:
    batch = pad(encode_sft(tok, demos, 64), tok.pad_token_id)
    with torch.no_grad():
        loss, n = sft_loss(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
    return loss.item() / int(n)


def test_sft_lowers_validation_loss(tiny_dir, tok, tmp_path):
    demos = [SFTExample("Human: say hi\n\nAssistant:", " Hello! How can I help?"),
             SFTExample("Human: count\n\nAssistant:", " one two three four"),
             SFTExample("Human: colour of the sky?\n\nAssistant:", " The sky is blue."),
             SFTExample("Human: bye\n\nAssistant:", " Goodbye, see you soon.")]
    model = load_causal_lm(tiny_dir)
    before = _sft_val_loss(model.eval(), tok, demos)
    assert before > 4.0  # ≈ ln 400 = 5.99 for an untrained model
    args = TrainArgs(lr=1e-2, batch_size=8, max_steps=40, warmup_ratio=0.0, max_length=64, eval_every=20)
    fitted = train_sft(model, tok, demos * 4, demos, args, out=tmp_path)
    after = fitted.best["val/loss"]
    assert fitted.steps == 40 and fitted.best["step"] == 40
    assert after < 0.5 * before
    assert after == pytest.approx(_sft_val_loss(fitted.model.eval(), tok, demos), rel=1e-4)
    assert fitted.best["val/perplexity"] == pytest.approx(math.exp(after), rel=1e-5)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val/loss" in r] == [20, 40]


def test_reward_model_learns_yes_over_no(tiny_dir, tok, tmp_path):
    train, val = yes_no(64), yes_no(16, start=64)
    torch.manual_seed(0)  # the score head is initialised from the global generator
    rm = load_reward_model(tiny_dir, pad_token_id=tok.pad_token_id)
    pad_id = tok.pad_token_id
    before = evaluate_reward_model(rm.eval(), pad_id, encode_preferences(tok, val, 64))
    assert before["val/loss"] == pytest.approx(LN2, abs=0.05)  # a fresh head scores ≈ 0: -log σ(0)
    args = TrainArgs(lr=3e-3, batch_size=16, epochs=4, warmup_ratio=0.0, max_length=64)
    fitted = train_reward_model(rm, tok, train, val, args, out=tmp_path)
    assert fitted.steps == 16
    assert fitted.best["val/accuracy"] >= 0.9
    assert fitted.best["val/margin"] > 0 and fitted.best["val/loss"] < LN2
    assert "val/disagreement" not in fitted.best
    # the saved reward model gives the same scores
    save_model(fitted.model, tok, tmp_path / "rm")
    again = load_reward_model(tmp_path / "rm")
    batch = pad([r for it in encode_preferences(tok, val[:4], 64) for r in it.responses], pad_id)
    with torch.no_grad():
        s1, s2 = score(fitted.model.eval(), batch), score(again.eval(), batch)
    assert s1.shape == (8, 1) and torch.equal(s1, s2)
    assert torch.all(s1[0::2] > s1[1::2])


def test_reward_ensemble_reports_disagreement_and_saves(tiny_dir, tok, tmp_path):
    torch.manual_seed(0)
    rm = load_reward_model(tiny_dir, num_heads=3, pad_token_id=tok.pad_token_id)
    args = TrainArgs(lr=3e-3, batch_size=16, max_steps=4, warmup_ratio=0.0, max_length=64)
    fitted = train_reward_model(rm, tok, yes_no(32), yes_no(8, start=32), args)
    best = fitted.best
    assert {"val/loss", "val/accuracy", "val/margin", "val/disagreement"} <= set(best)
    assert math.isfinite(best["val/disagreement"]) and best["val/disagreement"] > 0
    save_model(fitted.model, tok, tmp_path / "rm3")
    again = load_reward_model(tmp_path / "rm3", num_heads=3)
    batch = pad([it.responses[0] for it in encode_preferences(tok, yes_no(3), 64)], tok.pad_token_id)
    with torch.no_grad():
        s1, s2 = score(fitted.model.eval(), batch), score(again.eval(), batch)
    assert s1.shape == (3, 3) and torch.equal(s1, s2)


def test_saved_ensemble_reward_model_loads_as_is(tiny_dir, tok, tmp_path):
    rm = load_reward_model(tiny_dir, num_heads=2, pad_token_id=tok.pad_token_id)
    save_model(rm, tok, tmp_path / "rm2")
    assert load_reward_model(tmp_path / "rm2").config.num_labels == 2


def test_ranked_examples_plackett_luce_and_ties(tok):
    ranked = RankedExample("Q:", (" ok", " best", " worst"), (1, 0, 2))
    items = encode_preferences(tok, [ranked], 32)
    assert len(items) == 1 and items[0].target is None
    expected = [encode(tok, "Q:", r, max_length=32) for r in (" best", " ok", " worst")]  # rank order
    assert list(items[0].responses) == expected
    tied = RankedExample("Q:", (" a", " b", " c"), (0, 0, 1))
    items = encode_preferences(tok, [tied], 32)
    enc = {r: encode(tok, "Q:", r, max_length=32) for r in (" a", " b", " c")}
    assert [(it.responses, it.target) for it in items] == [((enc[" a"], enc[" b"]), 0.5),
                                                           ((enc[" a"], enc[" c"]), 1.0),
                                                           ((enc[" b"], enc[" c"]), 1.0)]
    # a preference pair: (chosen, rejected), tie → ½, margin kept
    items = encode_preferences(tok, [PreferenceExample("Q:", " a", " b", tie=True),
                                     PreferenceExample("Q:", " a", " b", margin=2.0)], 32)
    assert [(it.target, it.margin, it.index) for it in items] == [(0.5, 0.0, 0), (1.0, 2.0, 1)]


def test_reward_model_trains_on_ranked_lists(tiny_dir, tok):
    # Plackett-Luce on K = 3 (yes ≻ maybe ≻ no) with pair validation
    ranked = [RankedExample(f"Question {i}: do you like {TOPICS[i % 8]}?", (" no", " yes", " maybe"), (2, 0, 1))
              for i in range(16)]
    torch.manual_seed(0)
    rm = load_reward_model(tiny_dir, pad_token_id=tok.pad_token_id)
    args = TrainArgs(lr=3e-3, batch_size=8, max_steps=6, warmup_ratio=0.0, max_length=64)
    fitted = train_reward_model(rm, tok, ranked, yes_no(8, start=16), args)
    assert fitted.steps == 6
    losses = [r["train/loss"] for r in fitted.history if "train/loss" in r]
    assert losses[0] == pytest.approx(math.log(6), abs=0.3)  # PL over 3 items at random: ln 3! = 1.79
    assert losses[-1] < losses[0]
    assert "train/accuracy" not in fitted.history[0]  # no pairs in the training data


def test_reward_model_validates_on_ranked_lists(tiny_dir, tok):
    ranked = [RankedExample(f"Q{i}:", (" yes", " maybe", " no"), (0, 1, 2)) for i in range(12)]
    torch.manual_seed(0)
    rm = load_reward_model(tiny_dir, pad_token_id=tok.pad_token_id)
    fitted = train_reward_model(rm, tok, ranked[:8], ranked[8:], TrainArgs(batch_size=4, max_steps=1, max_length=32))
    assert "val/loss" in fitted.best


def test_dpo_learns_yes_over_no(tiny_dir, tok, tmp_path):
    train, val = yes_no(64), yes_no(16, start=64)
    policy, ref = load_causal_lm(tiny_dir), load_causal_lm(tiny_dir)
    settings = DPOSettings(beta=0.1)
    before = evaluate_dpo(policy, ref, tok, val, settings, max_length=64)
    assert before["val/loss"] == pytest.approx(LN2, abs=1e-5)  # π = π_ref
    assert before["val/rewards/accuracies"] == 0.0
    args = TrainArgs(lr=3e-3, batch_size=16, epochs=3, warmup_ratio=0.0, max_length=64)
    fitted = train_dpo(policy, tok, train, val, args, settings, out=tmp_path)
    best = fitted.best
    assert fitted.steps == 12
    assert best["val/rewards/accuracies"] >= 0.9
    assert best["val/rewards/chosen"] > best["val/rewards/rejected"]
    assert best["val/rewards/margins"] > 0 and best["val/loss"] < LN2
    after = evaluate_dpo(fitted.model, ref, tok, val, settings, max_length=64)
    assert after["val/rewards/accuracies"] == pytest.approx(best["val/rewards/accuracies"])
    # the policy itself now prefers the chosen answers: log π(y_c|x) - log π_ref(y_c|x) > the rejected's
    c = pad([encode(tok, ex.prompt, ex.chosen, max_length=64) for ex in val], tok.pad_token_id)
    r = pad([encode(tok, ex.prompt, ex.rejected, max_length=64) for ex in val], tok.pad_token_id)
    with torch.no_grad():
        ratio_c = sequence_logprobs(fitted.model.eval(), c)[0] - sequence_logprobs(ref, c)[0]
        ratio_r = sequence_logprobs(fitted.model, r)[0] - sequence_logprobs(ref, r)[0]
    assert ratio_c.mean() > ratio_r.mean()
    # and the saved policy reloads as a causal LM with the same log-probs
    save_model(fitted.model, tok, tmp_path / "policy")
    with torch.no_grad():
        reloaded = sequence_logprobs(load_causal_lm(tmp_path / "policy").eval(), c)[0]
        assert torch.allclose(reloaded, sequence_logprobs(fitted.model, c)[0], atol=1e-6)
    assert load_tokenizer(tmp_path / "policy").pad_token_id == tok.pad_token_id


def test_dpo_ipo_and_cdpo_run(tiny_dir, tok):
    args = TrainArgs(lr=3e-3, batch_size=8, max_steps=2, warmup_ratio=0.0, max_length=64)
    for settings in (DPOSettings(beta=0.5, loss_type="ipo"), DPOSettings(loss_type="cdpo", label_smoothing=0.1)):
        fitted = train_dpo(load_causal_lm(tiny_dir), tok, yes_no(8) + [PreferenceExample("Q:", " a", " b", tie=True)],
                           yes_no(4, start=8), args, settings)
        assert fitted.steps == 2 and math.isfinite(fitted.best["val/loss"])
        first = fitted.history[0]
        # the first step starts at π = π_ref: IPO loss (0 - 1/(2β))² = 1; cDPO -log σ(0) = ln 2
        expected = 1.0 if settings.loss_type == "ipo" else LN2
        assert first["train/loss"] == pytest.approx(expected, abs=1e-5)


def test_simpo_trains_without_a_reference(tiny_dir, tok):
    class NoReference:  # any use of a reference model would fail
        def __getattr__(self, name):
            raise AssertionError(f"SimPO touched the reference model ({name})")

    args = TrainArgs(lr=3e-3, batch_size=8, max_steps=6, warmup_ratio=0.0, max_length=64, eval_every=3)
    settings = DPOSettings(beta=2.0, loss_type="simpo", margin=0.5)
    fitted = train_dpo(load_causal_lm(tiny_dir), tok, yes_no(16), yes_no(8, start=16), args, settings,
                       ref_model=NoReference())
    assert fitted.steps == 6
    # the rewards reported are β × the length-averaged log-prob itself (negative), not a log-ratio near 0
    steps = [h for h in fitted.history if "train/loss" in h]
    assert steps[0]["train/rewards/chosen"] < -0.5
    assert steps[-1]["train/loss"] < steps[0]["train/loss"]


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_mean_and_sum_pooled_rewards_pool_the_per_token_head_outputs(tiny_dir, tok, tmp_path, pooling):
    rm = load_reward_model(tiny_dir, num_heads=2, pad_token_id=tok.pad_token_id, pooling=pooling).eval()
    a = encode(tok, "Q:", " yes yes", max_length=32)
    b = encode(tok, "Q: longer prompt", " no", max_length=32)
    batch = pad([a, b], tok.pad_token_id)
    with torch.no_grad():
        got = rw.score(rm, batch)  # (2, 2)
        for i, e in enumerate((a, b)):
            ids = torch.tensor([e.input_ids])
            h = rm.base_model(input_ids=ids).last_hidden_state  # (1, T, d)
            per_token = rm.score(h)[0, e.n_prompt:]  # the response tokens and EOS
            want = per_token.mean(0) if pooling == "mean" else per_token.sum(0)
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-5)
    save_model(rm, tok, tmp_path / "rm")
    assert load_reward_model(tmp_path / "rm").config.reward_pooling == pooling
    with pytest.raises(ValueError, match="pooling"):
        load_reward_model(tiny_dir, pooling="max")


def test_length_chunks_respect_the_token_budget_and_keep_every_index():
    from rlhfkit.language.logprobs import length_chunks

    lengths = [5, 100, 7, 60, 61, 3]
    chunks = length_chunks(lengths, 130)
    # longest first: [100] (2 × 100 > 130), [61, 60] (122), [7, 5, 3] (21)
    assert chunks == [[1], [4, 3], [2, 0, 5]]
    assert length_chunks(lengths, 0) == [list(range(6))]
    assert length_chunks([500], 10) == [[0]]  # a chunk holds at least one sequence


def test_chunked_scoring_gives_the_same_rewards_and_gradients_as_one_padded_batch(tiny_dir, tok):
    from rlhfkit.language.logprobs import run_chunked

    rm = load_reward_model(tiny_dir, num_heads=2, pad_token_id=tok.pad_token_id)
    seqs = [encode(tok, "Q:" + " word" * k, " yes" * (1 + k % 3), max_length=64) for k in (9, 1, 5, 0, 12)]
    whole = rw.score(rm, pad(seqs, tok.pad_token_id))  # (5, 2)
    g_whole = torch.autograd.grad(whole.sum(), rm.score.weight)[0]
    chunked = run_chunked(lambda pb: rw.score(rm, pb), seqs, tok.pad_token_id, max_tokens=40)
    g_chunked = torch.autograd.grad(chunked.sum(), rm.score.weight)[0]
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g_chunked, g_whole, atol=1e-5, rtol=1e-4)


def test_sharing_the_prompt_prefix_leaves_reward_dpo_and_sft_training_unchanged(tiny_dir, tok):
    """Packed (shared-prefix) forwards give the same per-step losses as one sequence per row."""
    pairs = load_data(HH).examples[:24]  # real multi-turn prompts: long shared prefixes
    args = TrainArgs(lr=1e-3, max_steps=3, batch_size=8, max_length=128, val_fraction=0.0, shuffle=False,
                     warmup_ratio=0.0)

    def losses(train, make, **kw):
        out = []
        for share in (True, False):
            torch.manual_seed(0)  # the same fresh reward head
            fitted = train(make(), tok, pairs, [], replace(args, share_prefix=share), **kw)
            out.append([h["train/loss"] for h in fitted.history if "train/loss" in h])
        return out

    shared, alone = losses(train_reward_model, lambda: load_reward_model(tiny_dir, pad_token_id=tok.pad_token_id))
    assert len(shared) == 3 and shared[0] != shared[-1]
    np.testing.assert_allclose(shared, alone, atol=1e-5)
    shared, alone = losses(train_dpo, lambda: load_causal_lm(tiny_dir), settings=DPOSettings(beta=0.1))
    np.testing.assert_allclose(shared, alone, atol=1e-5)
    assert shared[0] == pytest.approx(LN2, abs=1e-6)


def test_sft_trainer_loss_equals_sft_loss_on_full_logits(tiny_dir, tok):
    """The trainer projects only completion positions to the vocabulary; its first loss must equal
    sft_loss on a full forward of the same batch."""
    demos = [SFTExample(prompt=f"Question {i}: colour?", completion=f" blue {TOPICS[i % 8]}") for i in range(8)]
    demos += [SFTExample(prompt="", completion=" no prompt at all")]
    model = load_causal_lm(tiny_dir)
    enc = encode_sft(tok, demos, 64)
    batch = pad(enc, tok.pad_token_id)
    with torch.no_grad():
        loss, n = sft_loss(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
    args = TrainArgs(lr=1e-3, max_steps=1, batch_size=len(demos), max_length=64, val_fraction=0.0, shuffle=False)
    fitted = train_sft(model, tok, demos, [], args)
    assert fitted.history[0]["train/loss"] == pytest.approx(float(loss / n), rel=1e-5)


def test_lora_dpo_trains_only_the_adapters_and_saves_them_merged(tiny_dir, tok, tmp_path):
    from rlhfkit.language.logprobs import pack, packed_logprobs
    from rlhfkit.language.models import apply_lora

    policy = apply_lora(load_causal_lm(tiny_dir), r=4, alpha=8.0)
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    args = TrainArgs(lr=1e-2, max_steps=4, batch_size=8, max_length=64, val_fraction=0.0, shuffle=False)
    fitted = train_dpo(policy, tok, yes_no(16), [], args, DPOSettings(beta=0.5))
    changed = {k for k, v in policy.named_parameters() if not torch.equal(v.detach(), before[k])}
    assert changed and all("lora_" in k for k in changed)  # the base weights never move
    assert fitted.history[-1]["train/loss"] < fitted.history[0]["train/loss"]
    save_model(policy, tok, tmp_path / "merged")
    merged = load_causal_lm(tmp_path / "merged")
    seqs = [[encode(tok, ex.prompt, ex.chosen, max_length=64)] for ex in yes_no(4)]
    policy.eval()
    with torch.no_grad():
        want, _ = packed_logprobs(policy, pack(seqs, tok.pad_token_id))
        got, _ = packed_logprobs(merged, pack(seqs, tok.pad_token_id))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_lora_reward_model_shares_prefixes_trains_head_and_adapters(tiny_dir, tok, tmp_path):
    from rlhfkit.language.models import apply_lora

    torch.manual_seed(0)
    rm = apply_lora(load_reward_model(tiny_dir, pad_token_id=tok.pad_token_id), r=4, alpha=8.0, task="SEQ_CLS")
    items = encode_preferences(tok, load_data(HH).examples[:6], 128)
    groups = [it.responses for it in items]
    from rlhfkit.language.logprobs import can_pack

    assert can_pack(rm) and hasattr(rm, "score")  # the packed path runs through peft's wrapper
    with torch.no_grad():
        torch.testing.assert_close(rw.rewards_of(rm, groups, tok.pad_token_id),
                                   rw.rewards_of(rm, groups, tok.pad_token_id, share_prefix=False),
                                   atol=2e-5, rtol=1e-5)
    before = {k: v.detach().clone() for k, v in rm.named_parameters()}
    args = TrainArgs(lr=1e-2, max_steps=3, batch_size=8, max_length=64, val_fraction=0.0, shuffle=False)
    train_reward_model(rm, tok, yes_no(16), [], args)
    changed = {k for k, v in rm.named_parameters() if not torch.equal(v.detach(), before[k])}
    assert any("lora_" in k for k in changed) and any("score" in k for k in changed)
    assert all("lora_" in k or "score" in k for k in changed)
    save_model(rm, tok, tmp_path / "rm")
    loaded = load_reward_model(tmp_path / "rm")
    rm.eval()
    with torch.no_grad():
        torch.testing.assert_close(rw.rewards_of(loaded, groups, tok.pad_token_id),
                                   rw.rewards_of(rm, groups, tok.pad_token_id), atol=1e-4, rtol=1e-4)
