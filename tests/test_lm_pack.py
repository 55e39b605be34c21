"""Shared-prefix packing: the layout by hand, and packed forwards equal to one-sequence-per-row
forwards (values and gradients) for Llama and GPT-2, SDPA and eager attention; the trainers give
the same losses with and without sharing."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from rlhfkit.language.logprobs import (
    Encoded,
    can_pack,
    pack,
    packed_logprobs,
    pad,
    run_chunked,
    run_packed,
    sequence_logprobs,
    shared_prefix_length,
)
from rlhfkit.language.reward import packed_rewards, rewards_of, score

V = 24
PAD = 0

# A pair sharing prompt [1, 5, 6, 7]; a prompt-less singleton; a triple whose third member
# starts differently (nothing shared: the row is three sequences side by side); a pair whose
# prompts were cut from the left by different amounts (they share nothing).
GROUPS = [
    [Encoded((1, 5, 6, 7, 8, 2), 4), Encoded((1, 5, 6, 7, 9, 9, 2), 4)],
    [Encoded((3, 4, 2), 0)],
    [Encoded((1, 5, 9, 2), 2), Encoded((1, 5, 8, 8, 8, 2), 2), Encoded((7, 5, 8, 2), 2)],
    [Encoded((6, 7, 8, 10, 2), 3, True), Encoded((7, 8, 11, 12, 13, 2), 2, True)],
]
FLAT = [e for g in GROUPS for e in g]


def _config(arch: str, attn: str, **kw):
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, pad_token_id=PAD, bos_token_id=1,
                          eos_token_id=2, **kw)
    else:
        cfg = GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=PAD,
                         bos_token_id=1, eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **kw)
    cfg._attn_implementation = attn
    return cfg


def _lm(arch: str, attn: str = "sdpa", **kw):
    torch.manual_seed(0)
    cls = LlamaForCausalLM if arch == "llama" else GPT2LMHeadModel
    return cls(_config(arch, attn, **kw)).eval()


def _rm(arch: str, attn: str = "sdpa", pooling: str = "last"):
    torch.manual_seed(0)
    cls = LlamaForSequenceClassification if arch == "llama" else GPT2ForSequenceClassification
    m = cls(_config(arch, attn, num_labels=2)).eval()
    m.config.reward_pooling = pooling
    return m


def _grads(model, out: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape)  # every output counts differently
    gs = torch.autograd.grad((out * weights).sum(), [p for p in model.parameters()], allow_unused=True)
    return torch.cat([g.flatten() for g in gs if g is not None])


def test_pack_reproduces_its_docstring_example():
    b = pack([[Encoded((5, 6, 7, 8, 2), 3), Encoded((5, 6, 7, 9, 2), 3)]], PAD)
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 2, 7, 9, 2]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4, 2, 3, 4]]
    assert b.segment.tolist() == [[0, 0, 1, 1, 1, 2, 2, 2]]
    assert b.last.tolist() == [4, 7]
    assert b.completion.tolist() == [3, 4, 6, 7]  # 8, eos | 9, eos
    assert b.completion_seq.tolist() == [0, 0, 1, 1]
    assert b.n_tokens == 8 and b.n_sequences == 2
    allowed = b.attention_mask[0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0, 1, 0, 0],  # the second tail sees the prefix and itself, not the first tail
        [1, 1, 0, 0, 0, 1, 1, 0],
        [1, 1, 0, 0, 0, 1, 1, 1],
    ]


def test_pack_of_single_sequences_is_the_ordinary_padded_batch():
    seqs = [Encoded((5, 6, 7, 2), 2), Encoded((5, 8, 2), 0)]
    b, p = pack([[s] for s in seqs], PAD), pad(seqs, PAD)
    assert b.attention_mask.ndim == 2
    assert torch.equal(b.input_ids, p.input_ids) and torch.equal(b.attention_mask, p.attention_mask)
    assert b.completion.tolist() == p.completion_mask.flatten().nonzero().squeeze(-1).tolist()


def test_padding_positions_attend_only_to_themselves():
    b = pack(GROUPS, PAD)
    mask = b.attention_mask[:, 0]  # (R, T, T)
    pad_q = b.segment < 0
    assert bool((mask.sum(-1)[pad_q] == 1).all())
    keys_pad = pad_q.unsqueeze(1).expand_as(mask) & ~torch.eye(mask.shape[-1], dtype=torch.bool)
    assert not bool((mask & keys_pad).any())  # nobody attends to padding except padding itself


@pytest.mark.parametrize("group, expected", [
    ([Encoded((1, 5, 6, 7, 8, 2), 4), Encoded((1, 5, 6, 7, 9, 2), 4)], 3),  # whole prompt but its last token
    ([Encoded((1, 5, 6, 7, 8, 2), 4)], 0),  # alone: nothing to share
    ([Encoded((1, 5, 8, 2), 2), Encoded((7, 5, 8, 2), 2)], 0),  # different first token
    ([Encoded((1, 5, 6, 2), 3), Encoded((1, 5, 9, 9, 2), 2)], 1),  # shorter prompt bounds it
    ([Encoded((8, 2), 0), Encoded((9, 2), 0)], 0),  # no prompt
    ([Encoded((1, 5, 6, 7, 8, 2), 4), Encoded((1, 5, 6, 7, 9, 2), 4), Encoded((1, 5, 4, 7, 9, 2), 4)], 2),
])
def test_shared_prefix_length(group, expected):
    assert shared_prefix_length(group) == expected


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logprobs_equal_one_sequence_per_row(arch, attn):
    model = _lm(arch, attn)
    assert can_pack(model)
    want, n_want = sequence_logprobs(model, pad(FLAT, PAD))
    g_want = _grads(model, want)
    got, n = packed_logprobs(model, pack(GROUPS, PAD))
    g_got = _grads(model, got)
    assert n.tolist() == n_want.tolist() == [2, 3, 2, 2, 4, 2, 2, 4]
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(g_got, g_want, atol=2e-5, rtol=1e-4)
    avg, _ = packed_logprobs(model, pack(GROUPS, PAD), average=True)
    torch.testing.assert_close(avg, want / n_want, atol=2e-5, rtol=1e-5)


def test_packed_logprobs_through_full_logits_when_the_head_transforms_them():
    model = _lm("llama", final_logit_softcapping=30.0)  # Llama ignores it, so values must still agree
    want, _ = sequence_logprobs(model, pad(FLAT, PAD))
    got, _ = packed_logprobs(model, pack(GROUPS, PAD))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("pooling", ["last", "mean", "sum"])
def test_packed_rewards_equal_one_sequence_per_row(arch, attn, pooling):
    rm = _rm(arch, attn, pooling)
    want = score(rm, pad(FLAT, PAD))  # (S, 2)
    g_want = _grads(rm, want)
    got = packed_rewards(rm, pack(GROUPS, PAD))
    g_got = _grads(rm, got)
    assert got.shape == (8, 2)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(g_got, g_want, atol=2e-5, rtol=1e-4)


def test_run_packed_returns_sequences_in_input_order_over_several_chunks():
    model = _lm("llama")
    want, _ = sequence_logprobs(model, pad(FLAT, PAD))
    for budget in (0, 8, 12, 1000):
        for share in (True, False):
            got = run_packed(lambda pb: packed_logprobs(model, pb)[0], GROUPS, PAD, max_tokens=budget,
                             share_prefix=share)
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    rm = _rm("llama")
    r_want = run_chunked(lambda pb: score(rm, pb), FLAT, PAD, max_tokens=0)
    torch.testing.assert_close(rewards_of(rm, GROUPS, PAD, max_tokens=10), r_want, atol=2e-5, rtol=1e-5)


def test_a_shared_prefix_computes_fewer_tokens():
    b = pack(GROUPS, PAD)
    assert b.n_tokens == sum(len(e) for e in FLAT) - 3  # the first pair shares [1, 5, 6]
    assert pack([[e] for e in FLAT], PAD).n_tokens == sum(len(e) for e in FLAT)


def test_pack_rejects_empty_input():
    with pytest.raises(ValueError, match="at least one group"):
        pack([], PAD)
    with pytest.raises(ValueError, match="no empty group"):
        pack([[]], PAD)
