"""Reward models on an encoder backbone (BERT here; DeBERTa loads the same way): `rlhf lm rm` trains one
from a local directory whose tokenizer has no EOS token, and it scores completions as a reward function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.language.data import load_data

HH = Path(__file__).parent / "data" / "hh_rlhf_harmless_200.jsonl"


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A 1-layer BERT (hidden 32) with a WordPiece tokenizer trained on the HH sample: [CLS] … [SEP], no EOS."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    texts = [t for e in load_data(HH).examples for t in (e.prompt, e.chosen, e.rejected)]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=600, special_tokens=[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    out = tmp_path_factory.mktemp("bert") / "bert"
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64,
                                                     max_position_embeddings=512, num_labels=1,
                                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model.save_pretrained(out)
    fast.save_pretrained(out)
    assert fast.eos_token_id is None
    return out


def test_encode_ends_an_encoder_pair_with_sep(bert_dir):
    from rlhfkit.language.logprobs import encode
    from rlhfkit.language.models import load_tokenizer

    tok = load_tokenizer(bert_dir)
    e = encode(tok, "hello there", " general", max_length=32)
    assert e.input_ids[0] == tok.cls_token_id and e.input_ids[-1] == tok.sep_token_id
    assert e.input_ids[e.n_prompt - 1] == tok.sep_token_id  # [CLS] prompt [SEP] completion [SEP]


def test_rlhf_lm_rm_trains_an_encoder_and_it_scores_as_a_reward_function(bert_dir, tmp_path):
    out = tmp_path / "rm"
    result = CliRunner().invoke(app, ["lm", "rm", "--model", str(bert_dir), "--data", str(HH), "--skip-bad",
                                      "--out", str(out), "--max-steps", "4", "--batch-size", "8", "--max-length",
                                      "128", "--lr", "1e-3"], env={"COLUMNS": "200", "OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    config = json.loads((out / "config.json").read_text())
    assert config["reward_pooling"] == "first" and config["architectures"] == ["BertForSequenceClassification"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 4 and all(0 < x < 5 for x in losses)

    from rlhfkit.language.rewards import load_reward_function

    reward = load_reward_function(str(out))
    a, b = reward.func(["Human: hi Assistant:"] * 2, [" hello, how can I help?", " go away"])
    assert isinstance(a, float) and a != b
    bad = CliRunner().invoke(app, ["lm", "rm", "--model", str(bert_dir), "--data", str(HH), "--skip-bad", "--out",
                                   str(tmp_path / "bad"), "--pooling", "mean", "--max-steps", "1"],
                             env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "pools its first token itself" in " ".join(bad.output.split())
