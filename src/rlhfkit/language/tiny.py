"""Tiny causal language models built here, from a config and the dataset's own text.

Nothing can be downloaded at run time, so the whole language pipeline runs on a model this
module builds: a byte-level BPE tokenizer trained with ``tokenizers`` on the training text
(Radford et al. 2019's GPT-2 byte-level BPE: no unknown tokens, any text round-trips) and a
randomly initialised GPT-2- or Llama-style ``transformers`` model, saved together as a normal
Hugging Face directory. Everything downstream loads it with ``AutoModelForCausalLM`` /
``AutoTokenizer`` exactly as it would load a downloaded model.

Special tokens: ``<|endoftext|>`` (EOS, appended to every completion), ``<|pad|>`` (padding,
distinct from EOS so that a sequence-classification head finds the last real token) and the
chat-template markers ``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|end|>``.

    from rlhfkit.language.tiny import TinySpec, build_tiny
    build_tiny(texts, "runs/tiny", TinySpec(arch="llama", n_layers=4, d_model=256))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "TinySpec", "build_tiny", "train_tokenizer", "tiny_model", "texts_of"]

EOS, PAD = "<|endoftext|>", "<|pad|>"
SPECIAL_TOKENS = [EOS, PAD, "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""A minimal chat template over the special tokens (one message per block)."""


@dataclass(frozen=True)
class TinySpec:
    """The size of a tiny model and its tokenizer."""

    arch: Literal["llama", "gpt2"] = "llama"
    """``llama`` (RMSNorm, SwiGLU, rotary positions) or ``gpt2`` (LayerNorm, GELU, learned positions)."""
    vocab_size: int = 8000
    """BPE vocabulary size, special tokens included."""
    n_layers: int = 4
    """Transformer blocks."""
    d_model: int = 256
    """Hidden size."""
    n_heads: int = 4
    """Attention heads (``d_model`` must be divisible by it)."""
    mlp_size: int = 0
    """Inner size of each block's MLP (0: the architecture's default, ``8/3 · d_model`` rounded up to
    a multiple of 64 for Llama's SwiGLU, ``4 · d_model`` for GPT-2)."""
    max_positions: int = 1024
    """Longest sequence, in tokens."""
    min_frequency: int = 2
    """A pair must occur this often to be merged by BPE."""
    seed: int = 0
    """Seed of the weight initialisation."""

    def __post_init__(self) -> None:
        if self.arch not in ("llama", "gpt2"):
            raise ValueError(f"arch must be 'llama' or 'gpt2', got {self.arch!r}")
        for name in ("vocab_size", "n_layers", "d_model", "n_heads", "max_positions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.mlp_size < 0:
            raise ValueError(f"mlp_size must be >= 0 (0: the default), got {self.mlp_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (the 256 bytes and the "
                             f"special tokens), got {self.vocab_size}")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, *, min_frequency: int = 2,
                    max_length: int = 1024) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.

    Args:
        texts: the training text (e.g. every prompt and response of the dataset).
        vocab_size: vocabulary size including the special tokens.
        min_frequency: minimum pair count to merge.
        max_length: the tokenizer's ``model_max_length``.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with EOS ``<|endoftext|>``, pad ``<|pad|>`` and
        :data:`CHAT_TEMPLATE`; no BOS token and no special tokens added on encode.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, model_max_length=max_length,
                                   chat_template=CHAT_TEMPLATE, padding_side="right")


def tiny_model(spec: TinySpec, tokenizer: Any) -> Any:
    """A randomly initialised causal LM of ``spec``'s size for ``tokenizer`` (seeded by ``spec.seed``)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    common = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    if spec.arch == "llama":
        mlp = spec.mlp_size or int(8 * spec.d_model / 3 + 63) // 64 * 64
        config = LlamaConfig(hidden_size=spec.d_model, intermediate_size=mlp,
                             num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads,
                             num_key_value_heads=spec.n_heads, max_position_embeddings=spec.max_positions,
                             rms_norm_eps=1e-5, **common)
    else:
        config = GPT2Config(n_embd=spec.d_model, n_layer=spec.n_layers, n_head=spec.n_heads, n_inner=spec.mlp_size or None,
                            n_positions=spec.max_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            **common)  # no dropout: DPO's policy must equal its reference at step 0
    torch.manual_seed(spec.seed)
    return AutoModelForCausalLM.from_config(config)


def texts_of(examples: Sequence[Any]) -> list[str]:
    """Every string of prompts and responses in ``examples`` (any record of :mod:`rlhfkit.language.data`).

    Conversations contribute their messages' content.
    """
    out: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str):
            if value:
                out.append(value)
        elif isinstance(value, (list, tuple)):
            for v in value:
                add(v)
        elif isinstance(value, dict):
            add(value.get("content", ""))

    for ex in examples:
        for name in ("prompt", "chosen", "rejected", "completion", "responses"):
            add(getattr(ex, name, None))
    return out


def build_tiny(texts: Iterable[str], out_dir: str | Path, spec: TinySpec = TinySpec()) -> Path:
    """Train a tokenizer on ``texts``, build a model of ``spec`` and save both to ``out_dir``.

    The directory loads with ``AutoTokenizer.from_pretrained(out_dir)`` and
    ``AutoModelForCausalLM.from_pretrained(out_dir)`` (weights in safetensors); ``tiny.json``
    records the spec.

    Raises:
        ValueError: if ``texts`` is empty.
    """
    import json

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("no text to train the tokenizer on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, spec.vocab_size, min_frequency=spec.min_frequency,
                                max_length=spec.max_positions)
    model = tiny_model(spec, tokenizer)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    (out / "tiny.json").write_text(json.dumps({**asdict(spec), "n_texts": len(texts),
                                               "parameters": sum(p.numel() for p in model.parameters())}, indent=2))
    return out
